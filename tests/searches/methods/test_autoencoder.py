from __future__ import annotations

import pytest

from searches.methods.autoencoder import AutoencoderMethod, AutoencoderOptions
from searches.ml.training import TrainingOptions
from theory.testing import M_X, dijet_slice


@pytest.mark.slow
def test_anomaly_region_raises_significance_over_plain_scan(tmp_path):
    data, _ = dijet_slice(n_background=20_000, s_over_sqrt_b=2.0, seed=3)
    options = AutoencoderOptions(
        observable="m_j_j",
        features="substructure",
        efficiencies=(0.1, 0.02),
        n_folds=3,
        training=TrainingOptions(hidden=(16,), latent=2, epochs=8, device="cpu", n_threads=1),
        artifacts_dir=str(tmp_path),
    )
    (result,) = AutoencoderMethod().run(data, options=options, seed=0)
    plain = result.details["plain_scan"]["p_local"]
    assert result.p_local < plain
    assert result.region.low <= 1.05 * M_X and result.region.high >= 0.95 * M_X
    # The exported cut (fold-ensemble mean, reloaded from its state dict) reproduces the
    # anomaly region up to the difference between ensemble-mean and out-of-fold scores: the
    # ensemble includes each event's own training folds, scores it as less anomalous and keeps
    # fewer events. Measured on one AMD EPYC VM: 0.82-1.02 of the out-of-fold count over 8
    # trainings (data seeds 3, 4 x seeds 0-3; 0.95 for this test's seeds, alone or inside the
    # suite). A threshold applied the wrong way keeps 98 % of the events instead of 2 %.
    counts, _ = result.selection.histogram(data.observed)
    assert 0.75 <= counts.sum() / sum(result.observed) <= 1.15
