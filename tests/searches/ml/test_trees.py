from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from searches.ml.classifiers import cross_fit, fit_classifier, score_by_fold
from searches.ml.kfold import hashed_folds
from searches.ml.training import TrainingOptions
from searches.ml.trees import TreeEnsemble


def _toy(seed: int, n: int = 4000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    y = (x[:, 0] + 0.5 * x[:, 1] ** 2 + rng.normal(size=n) > 0.5).astype(float)
    return x, y


def test_tree_ensemble_reloaded_weights_only_scores_bitwise_like_sklearn(tmp_path):
    x, y = _toy(0)
    fitted = fit_classifier("hgb", x, y, training=TrainingOptions(), seed=1)
    fresh = np.random.default_rng(1).normal(size=(3000, 4)) * 1.5
    path = tmp_path / "trees.pt"
    torch.save(TreeEnsemble.from_fitted(fitted).to_tensors("m"), path)
    reloaded = TreeEnsemble.from_tensors(torch.load(path, weights_only=True), "m")
    expected = fitted.score(fresh)
    assert np.array_equal(reloaded.score(fresh), expected)
    assert len(np.unique(expected)) > 100


def test_tree_ensemble_refuses_other_models_and_names_missing_keys():
    x, y = _toy(1, n=500)
    mlp = fit_classifier("mlp", x, y, training=TrainingOptions(epochs=1), seed=0)
    with pytest.raises(ValueError, match="allowed: 'hgb'"):
        TreeEnsemble.from_fitted(mlp)
    with pytest.raises(KeyError, match=r"m\.roots"):
        TreeEnsemble.from_tensors({}, "m")


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=300),
    d=st.integers(min_value=1, max_value=5),
    n_folds=st.integers(min_value=2, max_value=7),
    seed=st.integers(min_value=0, max_value=2**40),
)
def test_hashed_folds_depend_only_on_each_row(n, d, n_folds, seed):
    rows = np.random.default_rng(seed % 1000).normal(size=(n, d))
    folds = hashed_folds(rows, n_folds, seed)
    assert folds.shape == (n,) and folds.min() >= 0 and folds.max() < n_folds
    order = np.random.default_rng(seed % 997).permutation(n)
    assert np.array_equal(hashed_folds(rows[order], n_folds, seed), folds[order])
    assert np.array_equal(hashed_folds(rows[: n // 2], n_folds, seed), folds[: n // 2])


def test_hashed_folds_are_balanced_and_seeded():
    rows = np.random.default_rng(0).normal(size=(50_000, 3))
    folds = hashed_folds(rows, 5, seed=3)
    counts = np.bincount(folds, minlength=5)
    # multinomial: each count within 5 sigma of 10,000 (sigma ~ 89)
    assert np.all(np.abs(counts - 10_000) < 450)
    assert np.mean(folds == hashed_folds(rows, 5, seed=4)) == pytest.approx(0.2, abs=0.01)
    with pytest.raises(ValueError, match="n_folds"):
        hashed_folds(rows, 1, seed=0)


def test_cross_fit_with_hashed_folds_scores_out_of_fold():
    """Given hashed folds, the out-of-fold scores are exactly those of the fold models applied
    by fold — the rule an exported selection uses on events it has never seen."""
    x, y = _toy(2, n=3000)
    folds = hashed_folds(x, 3, seed=5)
    oof, models = cross_fit("hgb", x, y, n_folds=3, training=TrainingOptions(), seed=5, folds=folds)
    assert np.array_equal(score_by_fold(models, x, folds), oof)
