"""The Drell-Yan mass importance sampler: exact weighted spectrum, populated tail."""

from __future__ import annotations

import itertools
import math

import awkward as ak
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

from searches import observables, signatures
from theory.background import DRELL_YAN, DRELL_YAN_TAIL, DrellYanMass
from theory.simulate import FastSimulator

EDGES = np.array(
    [50, 70, 85, 89, 91, 93, 97, 120, 150, 200, 300, 450, 550, 800, 1200, 2000, 3000, 4500, 6000],
    dtype=np.float64,
)


def test_density_integrates_to_the_survival_function() -> None:
    """The density the weights use and the survival function the bins use agree (quad)."""
    assert float(DRELL_YAN.survival(50.0)) == pytest.approx(1.0)
    assert float(DRELL_YAN.survival(120.0)) == pytest.approx(0.0112)
    assert float(DRELL_YAN.survival(6000.0)) == 0.0
    for low, high in itertools.pairwise(EDGES):
        inside = [x for x in DRELL_YAN_TAIL[0] if low < x < high]
        numeric, _ = integrate.quad(
            lambda m: float(DRELL_YAN.density(m)), low, high, points=inside or None, limit=200
        )
        exact = float(DRELL_YAN.survival(low) - DRELL_YAN.survival(high))
        assert numeric == pytest.approx(exact, rel=1e-6, abs=1e-15)


def test_weighted_spectrum_matches_the_target_in_every_bin() -> None:
    """Weighted histogram of importance-sampled masses vs the analytic bin integrals.

    Bins are filled with ``bincount``: ``np.histogram`` with weights and uneven bins takes
    differences of a cumulative sum, which loses the 1e-10 weights of the far tail.
    """
    n = 400_000
    mass, weight = DRELL_YAN.sample(np.random.default_rng(1), n)
    bins = np.searchsorted(EDGES, mass, side="right") - 1
    content = np.bincount(bins, weights=weight, minlength=len(EDGES) - 1)
    sumw2 = np.bincount(bins, weights=weight * weight, minlength=len(EDGES) - 1)
    expected = n * (DRELL_YAN.survival(EDGES[:-1]) - DRELL_YAN.survival(EDGES[1:]))
    pulls = (content - expected) / np.sqrt(sumw2)
    assert np.all(np.abs(pulls) < 5), pulls
    assert stats.chi2.sf(np.sum(pulls**2), len(pulls)) > 1e-3
    assert abs(weight.mean() - 1.0) < 5 * weight.std() / math.sqrt(n)
    tail = mass > 120
    assert 0.24 < tail.mean() < 0.26
    per_efold = np.histogram(np.log(mass[tail]), np.log([120, 330, 900, 2400, 6000]))[0]
    assert per_efold.min() > 0.2 * tail.sum() * 0.9


def test_physical_draw_follows_the_spectrum_with_unit_weights() -> None:
    mass, weight = DRELL_YAN.sample(np.random.default_rng(2), 200_000, tail_share=None)
    assert np.all(weight == 1.0)
    assert stats.kstest(mass, lambda m: 1.0 - DRELL_YAN.survival(m)).pvalue > 1e-3
    assert np.mean(mass > 120) == pytest.approx(0.0112, abs=5 * math.sqrt(0.0112 / 200_000))


@settings(max_examples=20, deadline=None)
@given(share=st.floats(0.02, 0.9), seed=st.integers(0, 2**31))
def test_any_tail_share_keeps_the_expected_tail_fraction(share: float, seed: int) -> None:
    n = 50_000
    mass, weight = DRELL_YAN.sample(np.random.default_rng(seed), n, tail_share=share)
    tail = mass > 450
    fraction = weight[tail].sum() / n
    error = math.sqrt((weight[tail] ** 2).sum()) / n
    assert abs(fraction - float(DRELL_YAN.survival(450.0))) < 5 * error + 1e-12
    np.testing.assert_array_equal(
        mass, DRELL_YAN.sample(np.random.default_rng(seed), n, tail_share=share)[0]
    )


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match=r"tail_share = 1.0; allowed: \(0, 1\)"):
        DRELL_YAN.sample(np.random.default_rng(0), 10, tail_share=1.0)
    with pytest.raises(ValueError, match="tail_nodes"):
        DrellYanMass(tail_nodes=((100.0, 200.0), (1.0, 0.1)))


def test_dimuon_tail_has_many_monte_carlo_events_and_the_right_rate() -> None:
    """Reconstructed 2μ class at 500 ± 50 GeV: hundreds of MC events (8 before the sampler)."""
    config = signatures.SignatureConfig()
    events = FastSimulator(processes=("zmumu",)).background(
        n_events=60_000, luminosity_fb=140.0, seed=1
    )
    mask = signatures.class_mask(events, "2mu", config=config)
    mass = observables.compute(events[mask], "minv", config=config)
    weight = ak.to_numpy(events.weight[mask])
    window = (mass > 450) & (mass < 550)
    assert window.sum() > 250
    total = float(ak.sum(events.weight))
    truth = total * float(DRELL_YAN.survival(450.0) - DRELL_YAN.survival(550.0))
    assert 0.3 * truth < weight[window].sum() < 0.8 * truth, "exclusive 2μ: no jet, no MET"
    assert weight[window].max() < 0.02 * weight[window].sum()
