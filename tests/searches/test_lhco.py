from __future__ import annotations

import numpy as np
import pytest

from searches.lhco import (
    BoostingOptions,
    RDSlice,
    idealized_detector,
    load_rd_slice,
    sic_curve,
    supervised_reference,
)


def test_sic_curve_matches_brute_force():
    rng = np.random.default_rng(0)
    s, b = rng.normal(1.0, 1.0, 500), rng.normal(0.0, 1.0, 2000)
    curve = sic_curve(s, b, min_background=20)
    for tpr, fpr in zip(curve.tpr[::97], curve.fpr[::97], strict=True):
        threshold = np.sort(b)[::-1][round(fpr * len(b)) - 1]
        assert fpr == pytest.approx(np.mean(b >= threshold))
        assert tpr == pytest.approx(np.mean(s >= threshold))
    assert curve.fpr.min() >= 20 / len(b)
    assert curve.max_sic == pytest.approx(np.max(curve.tpr / np.sqrt(curve.fpr)))


def test_loader_roles(shared_data):
    rd = load_rd_slice(shared_data / "lhco-rd-sr")
    assert rd.data.shape == (120_000, 6) and rd.data[:, -1].sum() == 764
    assert len(rd.background) == 40_000 and rd.background[:, -1].sum() == 0
    assert len(rd.test_signal) == 20_000 and len(rd.extra_signal) == 54_527
    assert RDSlice.features(rd.data).shape == (120_000, 4)


def test_loader_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"innerdata_train\.npy"):
        load_rd_slice(tmp_path)
    for name in (
        "innerdata_train",
        "innerdata_val",
        "innerdata_test",
        "innerdata_extrasig_train",
        "innerdata_extrasig_val",
    ):
        np.save(tmp_path / f"{name}.npy", np.zeros((3, 6)))
    np.save(tmp_path / "innerdata_val.npy", np.zeros((3, 5)))
    with pytest.raises(ValueError, match=r"innerdata_val.npy: shape"):
        load_rd_slice(tmp_path)


# A smaller configuration than the recorded benchmark (benchmarks/RESULTS.md, "Machine-learning
# searches": 20 repeats, 5 seeds), to stay within a minute: 5-fold cross-fitting repeated 5x,
# min 1000 events per leaf, seeds 0-2.
TESTED = BoostingOptions(n_repeats=5, min_samples_leaf=1000)


@pytest.mark.slow
def test_idealized_anomaly_detector_max_sic(shared_data):
    """Data vs pure background, out-of-fold evaluation, mean over 3 seeds.

    Max SIC with the literature's cut (>= 25 test-background events, 20 % relative
    uncertainty on the background efficiency) measures 12.05, 11.71, 10.98 (mean 11.58) for
    this configuration, and 10.85, 10.81, 10.53 (mean 10.73) with >= 50 events; the test
    holds both levels minus 0.3. The recorded 20-repeat benchmark is in RESULTS.md.
    """
    rd = load_rd_slice(shared_data / "lhco-rd-sr")
    results = [idealized_detector(rd, seed=seed, options=TESTED) for seed in range(3)]
    for r in results:
        assert r.curve.n_background == 159_236 and r.curve.n_signal == 20_000
        assert r.curve.min_background == 25 and r.curve.fpr.min() >= 25 / 159_236
    assert np.mean([r.curve.max_sic for r in results]) >= 11.28
    strict = [sic_curve(r.signal_scores, r.background_scores, min_background=50) for r in results]
    assert np.mean([c.max_sic for c in strict]) >= 10.43


@pytest.mark.slow
def test_supervised_reference_beats_idealized(shared_data):
    """The supervised reference (trained on the extra signal) bounds the idealized detector."""
    rd = load_rd_slice(shared_data / "lhco-rd-sr")
    options = BoostingOptions(n_repeats=1, min_samples_leaf=1000)
    supervised = supervised_reference(rd, seed=0, options=options)
    idealized = idealized_detector(rd, seed=0, options=options)
    assert supervised.curve.max_sic >= 14.0
    assert supervised.curve.max_sic > idealized.curve.max_sic + 2.0
