import numpy as np
import pytest
from pydantic import ValidationError
from scipy import stats

from searches import events, signatures
from searches.methods.base import ClassSlice
from searches.methods.bumphunt import (
    BumpHuntOptions,
    bumphunt,
    design_matrix,
    fit_spectrum,
    hunt,
)
from searches.methods.registry import get_method
from searches.result import SearchResult
from searches.stats import lee

EDGES = np.linspace(500.0, 3000.0, 51)
CENTRES = 0.5 * (EDGES[1:] + EDGES[:-1])


def dijet_spectrum() -> np.ndarray:
    x = CENTRES / 13_000.0
    return 2e-3 * (1 - x) ** 10 / x ** (4.5 + 0.1 * np.log(x)) * np.diff(EDGES)


def test_fit_recovers_a_dijet_spectrum():
    mu = dijet_spectrum()
    design = design_matrix("dijet", CENTRES, sqrt_s=13_000.0, low=EDGES[0], high=EDGES[-1])
    fit = fit_spectrum(mu[None, :], design, np.diff(EDGES))
    assert fit.converged.all()
    assert np.allclose(fit.mu[0], mu, rtol=1e-6)


@pytest.mark.slow
def test_no_bump_gives_nothing_significant():
    mu = dijet_spectrum()
    options = BumpHuntOptions(pseudo_rounds=60)
    p_tildes = []
    for seed in range(20):
        observed = np.random.default_rng(seed).poisson(mu).astype(float)
        out = hunt(observed, EDGES, options=options, seed=1000 + seed)
        p_tildes.append(lee.p_tilde(out["pvalues"][out["index"]], out["minima"]))
        assert 0.3 < out["chi2"] / out["ndf"] < 2.5
    assert stats.kstest(p_tildes, "uniform").pvalue > 0.001


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_injected_bump_is_found_at_its_mass(seed):
    rng = np.random.default_rng(seed)
    mu = dijet_spectrum()
    signal = np.exp(-0.5 * ((CENTRES - 1500.0) / 50.0) ** 2)
    window = np.abs(CENTRES - 1500.0) < 100.0
    signal *= 5.0 * np.sqrt(mu[window].sum()) / signal.sum()
    observed = rng.poisson(mu + signal).astype(float)
    out = hunt(observed, EDGES, options=BumpHuntOptions(pseudo_rounds=100), seed=seed)
    windows, best = out["windows"], out["index"]
    assert EDGES[windows.first[best]] - 100.0 <= 1500.0 <= EDGES[windows.stop[best]] + 100.0
    assert lee.p_tilde(out["pvalues"][best], out["minima"]) < 0.1
    assert stats.norm.isf(out["pvalues"][best]) > 3.5


def dimuon_events(masses: np.ndarray) -> "events.ak.Array":
    n = len(masses)
    muons = events.make_collection(
        np.full(n, 2),
        pt=np.repeat(masses / 2.0, 2),
        eta=np.zeros(2 * n),
        phi=np.tile([0.0, np.pi], n),
        mass=np.zeros(2 * n),
        charge=np.tile([1, -1], n),
    )
    return events.make_events(
        {"muon": muons}, met=np.zeros(n), met_phi=np.zeros(n), weight=np.ones(n)
    )


def test_method_on_events_finds_a_resonance_and_round_trips():
    rng = np.random.default_rng(8)
    masses = np.concatenate([60.0 + rng.exponential(80.0, 20_000), rng.normal(300.0, 4.0, 250)])
    data = ClassSlice(
        event_class="2mu",
        signatures=signatures.SignatureConfig().model_dump(),
        observed=dimuon_events(masses),
        background=events.empty_events(),
        observables=("m_mu_mu",),
    )
    options = BumpHuntOptions(
        function="expo", low=60.0, high=600.0, pseudo_rounds=50, bin_min_count=10.0
    )
    (result,) = get_method("bumphunt").run(data, options=options, seed=4)
    assert result.method == "bumphunt"
    assert result.region.low - 10.0 <= 300.0 <= result.region.high + 10.0
    assert result.details["direction"] == "excess"
    assert result.details["ndf"] == len(result.observed) - 4
    assert SearchResult.from_json(result.to_json()) == result
    assert bumphunt.run(data, options=options, seed=4)[0].pseudo_p_min == result.pseudo_p_min


def test_options_and_inputs_are_checked():
    with pytest.raises(ValidationError):
        BumpHuntOptions(function="poly")
    with pytest.raises(ValueError, match="0 < m < sqrt_s"):
        design_matrix("dijet", np.array([100.0, 20_000.0]), sqrt_s=13_000.0, low=0, high=1)
    with pytest.raises(ValueError, match="more bins than fit parameters"):
        hunt(np.ones(3), np.arange(4.0) + 1000.0, options=BumpHuntOptions(), seed=0)
