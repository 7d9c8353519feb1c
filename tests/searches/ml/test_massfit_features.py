from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
from scipy import stats

from searches.events import make_collection, make_events
from searches.ml import features
from searches.ml.massfit import SQRT_S, _bin_expectation, fit_background, sidak, window_test
from searches.ml.search import spectrum_edges

EDGES = np.geomspace(1500.0, 5000.0, 21)
TRUE = np.array([np.log(2e7), 8.0, 4.0, 0.0])


def test_asimov_sideband_fit_recovers_window_expectation():
    expected = _bin_expectation(EDGES, TRUE)
    test = window_test(EDGES, expected, 8, 10)
    assert test.expected == pytest.approx(expected[8:10].sum(), rel=0.01)
    assert 0.3 < test.p_local <= 1.0


@pytest.mark.slow
def test_window_pvalues_are_uniform_under_background():
    """Pseudo-experiments: the side-band fit + Poisson⊗Gaussian p-value is not anti-conservative."""
    rng = np.random.default_rng(5)
    expected = _bin_expectation(EDGES, TRUE)
    ps = np.array([window_test(EDGES, rng.poisson(expected), 9, 11).p_local for _ in range(300)])
    # Excess-only p-values must not be anti-conservative: P(p < a) <= a (deficits give p = 1;
    # the fit uncertainty in σ makes them somewhat conservative).
    for alpha in (0.05, 0.2):
        rate = np.mean(ps < alpha)
        k = round(float(rate) * len(ps))
        assert stats.binomtest(k, len(ps), alpha, alternative="greater").pvalue > 1e-3
    assert np.mean(ps < 0.2) > 0.05


def test_fit_refuses_edges_beyond_sqrt_s():
    with pytest.raises(ValueError, match="edges"):
        fit_background(np.array([100.0, 20000.0]), np.array([3.0]), np.array([True]))


def test_sidak_bound():
    assert sidak(0.01, 1) == pytest.approx(0.01)
    assert sidak(0.01, 10) == pytest.approx(1 - 0.99**10)


def _events() -> ak.Array:
    fat = make_collection(
        np.array([2, 1, 0]),
        pt=np.array([900.0, 800.0, 700.0], dtype=np.float32),
        eta=np.zeros(3, dtype=np.float32),
        phi=np.array([0.0, 3.0, 1.0], dtype=np.float32),
        mass=np.array([500.0, 100.0, 80.0], dtype=np.float32),
        tau21=np.array([0.3, 0.2, 0.5], dtype=np.float32),
        tau32=np.array([0.5, 0.5, 0.5], dtype=np.float32),
    )
    jets = make_collection(
        np.array([2, 1, 0]),
        pt=np.array([900.0, 800.0, 700.0], dtype=np.float32),
        eta=np.array([0.5, -0.5, 0.0], dtype=np.float32),
        phi=np.array([0.0, 3.0, 1.0], dtype=np.float32),
        mass=np.array([500.0, 100.0, 80.0], dtype=np.float32),
        btag=np.array([False, False, True]),
    )
    return make_events(
        {"jet": jets, "fatjet": fat},
        met=np.array([10.0, 50.0, 5.0]),
        met_phi=np.zeros(3),
        weight=np.ones(3),
    )


def test_substructure_orders_jets_by_mass():
    x, names = features.build(_events(), "substructure")
    assert names == ("m_j1", "delta_m_j", "tau21_j1", "tau21_j2")
    assert x[0] == pytest.approx([0.1, 0.4, 0.2, 0.3])
    assert x[2] == pytest.approx([0.0, 0.0, 0.0, 0.0])


def test_objects_and_rmm_shapes_and_values():
    events = _events()
    x, names = features.build(events, "objects")
    assert x.shape == (3, len(names)) and names[-1] == "logmet"
    rmm, rnames = features.build(events, "rmm")
    k = 1 + sum(features.DEFAULT_OBJECTS.values())
    assert rmm.shape == (3, k * k) and len(rnames) == k * k
    m = rmm[0].reshape(k, k)
    p = (
        [900 * np.cos(0), 900 * np.sin(0), 900 * np.sinh(0.5)],
        [800 * np.cos(3), 800 * np.sin(3), 800 * np.sinh(-0.5)],
    )
    e = [np.sqrt(500**2 + sum(c**2 for c in p[0])), np.sqrt(100**2 + sum(c**2 for c in p[1]))]
    mass = np.sqrt((e[0] + e[1]) ** 2 - sum((a + b) ** 2 for a, b in zip(p[0], p[1], strict=True)))
    assert m[1, 2] == pytest.approx(mass / 13000.0, rel=1e-4)
    with pytest.raises(ValueError, match="allowed"):
        features.build(events, "images")


def test_spectrum_edges_stay_below_sqrt_s():
    """Sums of pT pass √s in simulated tails; the dijet function is only defined below it."""
    rng = np.random.default_rng(2)
    values = np.concatenate([rng.exponential(2000.0, 5000) + 500.0, [14_000.0, 20_000.0]])
    edges = spectrum_edges(values, "st")
    assert edges[-1] < SQRT_S and np.all(np.diff(edges) > 0)
    with pytest.raises(ValueError, match=r"fewer than 20 events .* in \(0, 13000\) GeV"):
        spectrum_edges(np.full(30, 15_000.0), "st")
