from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from searches.ml.classifiers import cross_fit, ensemble_score, fit_classifier, fold_score
from searches.ml.device import select_device, torch_threads, use_mixed_precision
from searches.ml.kfold import fold_labels, out_of_fold
from searches.ml.networks import build_network, load_state, save_state
from searches.ml.training import TrainingOptions, predict, train_autoencoder, train_classifier


def test_folds_are_balanced_and_seeded():
    a = fold_labels(103, 5, seed=3)
    assert np.array_equal(a, fold_labels(103, 5, seed=3))
    assert not np.array_equal(a, fold_labels(103, 5, seed=4))
    assert set(np.bincount(a)) <= {20, 21}
    with pytest.raises(ValueError, match="n_folds"):
        fold_labels(10, 1, seed=0)


def test_out_of_fold_never_scores_a_training_event():
    def fit_predict(train, test, fold):
        assert not set(train) & set(test)
        return np.full(len(test), float(fold))

    folds = fold_labels(50, 4, seed=1)
    scores = out_of_fold(50, fit_predict, n_folds=4, seed=1)
    assert np.array_equal(scores, folds.astype(float))


def test_noise_labels_do_not_inflate_selected_region():
    """Honest statistics: with labels that carry no information, the top-scored events of
    the out-of-fold scores hold the label-1 fraction of chance; in-sample scores (the thing
    k-fold prevents) are inflated, so the test can tell the two apart."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(4000, 4))
    y = (rng.random(4000) < 0.5).astype(float)
    scores, _ = cross_fit("hgb", x, y, n_folds=4, training=TrainingOptions(), seed=1)
    top = scores >= np.quantile(scores, 0.9)
    k, n = int(y[top].sum()), int(top.sum())
    assert stats.binomtest(k, n, y.mean()).pvalue > 1e-3
    in_sample = fit_classifier("hgb", x, y, training=TrainingOptions(), seed=1).score(x)
    top_in = in_sample >= np.quantile(in_sample, 0.9)
    assert stats.binomtest(int(y[top_in].sum()), int(top_in.sum()), y.mean()).pvalue < 1e-6


def test_state_dict_roundtrip_gives_identical_scores(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 5)).astype(np.float32)
    y = (x[:, 0] > 0).astype(float)
    options = TrainingOptions(hidden=(8,), epochs=3, device="cpu", n_threads=1)
    model, log = train_classifier(x, y, options=options, seed=2)
    assert log.device == "cpu" and log.events_per_second > 0
    path = save_state(model, tmp_path / "m.pt")
    loaded = load_state({"type": "classifier", "n_features": 5, "hidden": [8]}, path)
    assert np.array_equal(predict(model, x), predict(loaded, x))
    again, _ = train_classifier(x, y, options=options, seed=2)
    assert np.array_equal(predict(model, x), predict(again, x))


def test_autoencoder_scores_outliers_higher():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3000, 6)) @ rng.normal(size=(6, 6)) * 0.1
    x[:, 3:] = x[:, :3] * 2
    model, _ = train_autoencoder(
        x,
        options=TrainingOptions(hidden=(16,), latent=3, epochs=10, device="cpu", n_threads=1),
        seed=0,
    )
    outliers = rng.normal(size=(200, 6))
    assert np.median(predict(model, outliers)) > 5 * np.median(predict(model, x))


def test_device_and_precision_rules():
    assert select_device("cpu") == torch.device("cpu")
    assert not use_mixed_precision(torch.device("cpu"))
    assert use_mixed_precision(torch.device("cuda"))
    with pytest.raises(ValueError, match="allowed"):
        select_device("tpu")  # type: ignore[arg-type]
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no GPU"):
            select_device("cuda")
    with pytest.raises(ValueError, match="type"):
        build_network({"type": "transformer", "n_features": 3})


def test_fold_score_uses_one_model_per_event():
    """Events no model trained on get one fold model's score (same spread as out-of-fold
    scores), not the narrower ensemble mean."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(900, 3))
    y = (x[:, 0] + rng.normal(size=900) > 0).astype(float)
    _, models = cross_fit("hgb", x, y, n_folds=3, training=TrainingOptions(), seed=0)
    fresh = rng.normal(size=(300, 3))
    scores = fold_score(models, fresh, seed=5)
    folds = fold_labels(300, 3, seed=5)
    for k, model in enumerate(models):
        assert np.array_equal(scores[folds == k], model.score(fresh[folds == k]))
    assert np.std(scores) > np.std(ensemble_score(models, fresh))


def test_torch_threads_are_restored():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_networks_train_in_float32_whatever_the_default_dtype(tmp_path):
    """Same seed, same model: a float64 default dtype (BoTorch users set it; pyhf's pytorch
    backend sets it on switching) must not turn the networks into double-precision ones with
    other numbers. Inside the test suite it once made an autoencoder keep 321 events instead
    of 382."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(800, 5))
    y = (x[:, 0] + x[:, 1] > 0).astype(float)
    options = TrainingOptions(hidden=(8,), latent=2, epochs=3, device="cpu", n_threads=1)
    architecture = {"type": "autoencoder", "n_features": 5, "hidden": [8], "latent": 2}
    reference = [
        train_classifier(x, y, options=options, seed=1)[0],
        train_autoencoder(x, options=options, seed=1)[0],
    ]
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        models = [
            train_classifier(x, y, options=options, seed=1)[0],
            train_autoencoder(x, options=options, seed=1)[0],
        ]
        loaded = load_state(architecture, save_state(models[1], tmp_path / "ae.pt"))
        assert torch.get_default_dtype() == torch.float64
    finally:
        torch.set_default_dtype(previous)
    for model in [*models, loaded]:
        assert {v.dtype for v in model.state_dict().values()} == {torch.float32}
    for model, expected in zip(models, reference, strict=True):
        assert np.array_equal(predict(model, x), predict(expected, x))
    assert np.array_equal(predict(loaded, x), predict(reference[1], x))


def test_dropout_training_depends_only_on_its_seed():
    """Dropout masks come from torch's global generator. A classifier trained with dropout
    (the supervised search tunes it in [0, 0.3]) gave another model after any earlier random
    draw in the process, e.g. another task in the same Ray worker; and training must leave the
    caller's own random stream where it was."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(600, 4))
    y = (x[:, 0] - x[:, 2] > 0).astype(float)
    options = TrainingOptions(hidden=(16,), dropout=0.3, epochs=3, device="cpu", n_threads=1)
    reference = predict(train_classifier(x, y, options=options, seed=2)[0], x)
    torch.randn(100)
    assert np.array_equal(predict(train_classifier(x, y, options=options, seed=2)[0], x), reference)
    torch.manual_seed(11)
    expected_stream = torch.randn(5)
    torch.manual_seed(11)
    train_classifier(x, y, options=options, seed=3)
    assert torch.equal(torch.randn(5), expected_stream)
