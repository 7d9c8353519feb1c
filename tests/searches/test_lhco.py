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


@pytest.mark.slow
def test_idealized_anomaly_detector_reaches_max_sic_12(shared_data):
    """Must-show: data vs pure background, out-of-fold evaluation, mean over 5 seeds."""
    rd = load_rd_slice(shared_data / "lhco-rd-sr")
    options = BoostingOptions(n_repeats=3)
    sics = [idealized_detector(rd, seed=seed, options=options).curve.max_sic for seed in range(5)]
    assert np.mean(sics) >= 12.0


@pytest.mark.slow
def test_supervised_reference_beats_idealized(shared_data):
    rd = load_rd_slice(shared_data / "lhco-rd-sr")
    result = supervised_reference(rd, seed=0, options=BoostingOptions(n_repeats=1))
    assert result.curve.max_sic > 15.0
