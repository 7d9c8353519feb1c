"""One interface over the two classifier families the weakly supervised methods use.

``hgb`` (sklearn histogram gradient boosting) is fast on CPU and is what the CATHODE comparison
found as strong as neural networks on few features; ``mlp`` is the torch network of
:mod:`searches.ml.networks`, which runs on a GPU when there is one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier

from searches.ml.device import cpu_threads
from searches.ml.kfold import fold_labels
from searches.ml.training import TrainingOptions, balanced_weights, predict, train_classifier

ClassifierKind = Literal["hgb", "mlp"]


@dataclass(frozen=True)
class FittedClassifier:
    """A trained classifier; :meth:`score` maps features ``(n, d)`` to scores ``(n,)``."""

    kind: ClassifierKind
    model: object
    edges: list[np.ndarray] | None = None

    def score(self, x: np.ndarray) -> np.ndarray:
        if not len(x):
            return np.zeros(0)
        if self.kind == "hgb":
            with cpu_threads(1):
                xq = quantize(x, self.edges)  # type: ignore[arg-type]
                return self.model.predict_proba(xq)[:, 1]  # type: ignore[attr-defined]
        return predict(self.model, x)  # type: ignore[arg-type]


def quantile_edges(x: np.ndarray, n_bins: int = 255) -> list[np.ndarray]:
    """Per-feature inner bin edges from unweighted quantiles of ``x (n, d)`` (no labels used)."""
    qs = np.linspace(0.0, 1.0, n_bins + 1)[1:-1]
    return [np.unique(np.quantile(x[:, j], qs)) for j in range(x.shape[1])]


def quantize(x: np.ndarray, edges: list[np.ndarray]) -> np.ndarray:
    """Replace each value by its bin index ``(n, d)`` (at most 255 distinct values per feature).

    Gradient boosting bins features into 255 bins anyway; handing it pre-binned values lets it
    skip the weighted-percentile search that sample weights otherwise trigger in sklearn (two
    orders of magnitude slower than the fit itself).
    """
    return np.column_stack(
        [np.searchsorted(e, x[:, j], side="right") for j, e in enumerate(edges)]
    ).astype(np.float32)


def fit_classifier(
    kind: ClassifierKind,
    x: np.ndarray,
    y: np.ndarray,
    *,
    training: TrainingOptions,
    seed: int,
    max_iter: int = 100,
) -> FittedClassifier:
    """Fit a binary classifier of family ``kind`` on ``x (n, d)``, ``y (n,)``.

    Both families are trained with balanced class weights, so the score is a monotonic
    function of the likelihood ratio whatever the sample sizes.
    """
    if kind == "hgb":
        model = HistGradientBoostingClassifier(
            max_iter=max_iter,
            learning_rate=0.1,
            max_leaf_nodes=15,
            min_samples_leaf=max(20, len(x) // 200),
            early_stopping=False,
            random_state=seed,
        )
        with cpu_threads(1):
            edges = quantile_edges(x)
            model.fit(quantize(x, edges), y, sample_weight=balanced_weights(y))
        return FittedClassifier("hgb", model, edges)
    if kind == "mlp":
        model, _ = train_classifier(x, y, options=training, seed=seed)
        return FittedClassifier("mlp", model)
    raise ValueError(f"option 'classifier': {kind!r} not allowed; allowed: hgb, mlp")


def cross_fit(
    kind: ClassifierKind,
    x: np.ndarray,
    y: np.ndarray,
    *,
    n_folds: int,
    training: TrainingOptions,
    seed: int,
    max_iter: int = 100,
    folds: np.ndarray | None = None,
) -> tuple[np.ndarray, list[FittedClassifier]]:
    """Out-of-fold scores ``(n,)`` of ``x`` and the ``n_folds`` fold models.

    Event ``i`` is scored by the one model that did not train on its fold. Events never used
    in training (other data, simulation) are scored by the mean of all fold models
    (:func:`ensemble_score`) or by one fold model each (:func:`score_by_fold`).

    Args:
        folds: fold labels ``(n,)`` in ``[0, n_folds)``; default :func:`fold_labels`.
    """
    folds = fold_labels(len(x), n_folds, seed) if folds is None else np.asarray(folds)
    scores = np.full(len(x), np.nan)
    models = []
    for k in range(n_folds):
        train, test = folds != k, folds == k
        model = fit_classifier(
            kind, x[train], y[train], training=training, seed=seed + 7 * k, max_iter=max_iter
        )
        scores[test] = model.score(x[test])
        models.append(model)
    return scores, models


def fold_score(models: list[FittedClassifier], x: np.ndarray, *, seed: int) -> np.ndarray:
    """Score ``(n,)`` of each event by one fold model, drawn by seeded fold labels.

    For events no fold model trained on (CATHODE side bands, simulation in the sculpting
    check) that must be compared with a threshold set on out-of-fold scores: a single model's
    score has the same spread as an out-of-fold score, whereas the ensemble mean is narrower,
    and comparing the two across the signal-region boundary would itself create a step — a
    bump — in the selected mass spectrum.
    """
    folds = fold_labels(len(x), len(models), seed)
    scores = np.zeros(len(x))
    for k, model in enumerate(models):
        if np.any(folds == k):
            scores[folds == k] = model.score(x[folds == k])
    return scores


def score_by_fold(models: list[FittedClassifier], x: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Score ``(n,)`` of each event ``x (n, d)`` by the fold model ``models[folds[i]]``."""
    scores = np.zeros(len(x))
    for k, model in enumerate(models):
        rows = folds == k
        if np.any(rows):
            scores[rows] = model.score(x[rows])
    return scores


def ensemble_score(models: list[FittedClassifier], x: np.ndarray) -> np.ndarray:
    """Mean score ``(n,)`` of all fold models, for events none of them trained on."""
    return np.mean([m.score(x) for m in models], axis=0) if len(x) else np.zeros(0)
