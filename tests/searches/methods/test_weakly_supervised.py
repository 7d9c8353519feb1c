from __future__ import annotations

import numpy as np
import pytest

from searches.methods.weakly_supervised import (
    CathodeMethod,
    CwolaMethod,
    WeaklySupervisedOptions,
    _features,
    _MassDecorrelation,
)
from searches.ml.search import spectrum_edges
from theory.testing import M_X, dijet_slice

FAST = {"n_folds": 3, "max_iter": 50, "mass_range": (0.7 * M_X, 1.3 * M_X)}
FLOW = {"epochs": 10, "oversampling": 2}


@pytest.mark.slow
@pytest.mark.parametrize("method", [CwolaMethod(), CathodeMethod()])
def test_finds_injected_resonance_at_the_right_mass(method):
    data, n_signal = dijet_slice(n_background=30_000, s_over_sqrt_b=2.0, seed=1)
    assert n_signal > 0
    options = WeaklySupervisedOptions(**FAST, flow=FLOW, sculpting_check=True)
    (result,) = method.run(data, options=options, seed=1)
    assert result.z_local >= 3.0
    assert result.region.low <= M_X * 1.05 and result.region.high >= M_X * 0.95
    assert result.selection.observable == "m_j_j"
    # The same selection applied to independent simulated background creates no bump.
    assert result.details["sculpting"]["z"] < 3.0
    assert result.to_json()


def _null_p_tilde(method, options: WeaklySupervisedOptions, n_background: int) -> np.ndarray:
    p_tilde = []
    for seed in range(20):
        data, _ = dijet_slice(n_background=n_background, s_over_sqrt_b=0.0, seed=100 + seed)
        (result,) = method.run(data, options=options, seed=seed)
        p_tilde.append(result.p_tilde)
    return np.array(p_tilde)


@pytest.mark.slow
def test_cwola_without_injection_stays_within_look_elsewhere_expectation():
    """20 background-only pseudo-datasets: the Šidák-corrected p is uniform or conservative,
    so p_tilde < 0.05 happens in at most 3 of them (P = 1.6 % for a uniform p). Without the
    mass decorrelation at least 7 of 20 fail here (the classifier learns the dijet mass)."""
    options = WeaklySupervisedOptions(**FAST, sculpting_check=False)
    p_tilde = _null_p_tilde(CwolaMethod(), options, n_background=12_000)
    assert np.sum(p_tilde < 0.05) <= 3


@pytest.mark.slow
def test_cathode_without_injection_stays_within_look_elsewhere_expectation():
    """As for CWoLa, with one signal-region window per pseudo-dataset (one flow each) to keep
    20 flow trainings within the test budget."""
    options = WeaklySupervisedOptions(
        **{**FAST, "mass_range": (0.9 * M_X, 1.2 * M_X)},
        flow={"epochs": 5, "oversampling": 2},
        sculpting_check=False,
    )
    p_tilde = _null_p_tilde(CathodeMethod(), options, n_background=12_000)
    assert np.sum(p_tilde < 0.05) <= 3


def test_decorrelated_features_are_flat_in_mass():
    data, _ = dijet_slice(n_background=6_000, s_over_sqrt_b=0.0, seed=7)
    options = WeaklySupervisedOptions()
    _, x, mass = _features(data.observed, options, data.signatures)
    edges = spectrum_edges(mass, options.observable)
    u = _MassDecorrelation(x, mass, edges)(x, mass)
    assert np.all((u > 0) & (u < 1))
    low, high = mass < np.median(mass), mass >= np.median(mass)
    assert np.allclose(np.median(u[low], axis=0), 0.5, atol=0.05)
    assert np.allclose(np.median(u[high], axis=0), 0.5, atol=0.05)
