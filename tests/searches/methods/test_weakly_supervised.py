from __future__ import annotations

import numpy as np
import pytest

from searches.methods.weakly_supervised import (
    CathodeMethod,
    CwolaMethod,
    WeaklySupervisedOptions,
)
from tests.searches.methods.simulated_dijet import M_X, dijet_slice

FAST = {"n_folds": 3, "max_iter": 50, "mass_range": (0.7 * M_X, 1.3 * M_X)}


@pytest.mark.slow
@pytest.mark.parametrize("method", [CwolaMethod(), CathodeMethod()])
def test_finds_injected_resonance_at_the_right_mass(method):
    data, n_signal = dijet_slice(n_background=30_000, s_over_sqrt_b=2.0, seed=1)
    assert n_signal > 0
    options = WeaklySupervisedOptions(
        **FAST, flow={"epochs": 10, "oversampling": 2}, sculpting_check=True
    )
    (result,) = method.run(data, options=options, seed=1)
    assert result.z_local >= 3.0
    assert result.region.low <= M_X * 1.05 and result.region.high >= M_X * 0.95
    assert result.selection.observable == "m_j_j"
    assert result.to_json()


@pytest.mark.slow
def test_no_injection_stays_within_look_elsewhere_expectation():
    """20 background-only pseudo-datasets: the Šidák-corrected p is uniform or conservative,
    so p_tilde < 0.05 happens in at most a few of them (binomial 95 % bound for 20 trials)."""
    method = CwolaMethod()
    options = WeaklySupervisedOptions(**FAST, sculpting_check=False)
    p_tilde = []
    for seed in range(20):
        data, _ = dijet_slice(n_background=8_000, s_over_sqrt_b=0.0, seed=100 + seed)
        (result,) = method.run(data, options=options, seed=seed)
        p_tilde.append(result.p_tilde)
    assert np.sum(np.array(p_tilde) < 0.05) <= 3
