import numpy as np
import pyhf
import pytest
from pydantic import ValidationError

from searches import events, signatures
from searches.methods.base import ClassSlice
from searches.methods.registry import METHODS, get_method
from searches.methods.scan import ScanOptions, scan
from searches.result import SearchResult


def dimuon_events(masses: np.ndarray, weight: float) -> "events.ak.Array":
    """Back-to-back muon pairs with the given invariant masses (GeV)."""
    n = len(masses)
    pt = np.repeat(masses / 2.0, 2)
    muons = events.make_collection(
        np.full(n, 2),
        pt=pt,
        eta=np.zeros(2 * n),
        phi=np.tile([0.0, np.pi], n),
        mass=np.zeros(2 * n),
        charge=np.tile([1, -1], n),
    )
    return events.make_events(
        {"muon": muons}, met=np.zeros(n), met_phi=np.zeros(n), weight=np.full(n, weight)
    )


def falling_masses(rng: np.random.Generator, n: int) -> np.ndarray:
    return 60.0 + rng.exponential(120.0, n)


@pytest.fixture(scope="module")
def signal_slice() -> ClassSlice:
    rng = np.random.default_rng(12)
    background = dimuon_events(falling_masses(rng, 40_000), 0.25)
    bump = rng.normal(400.0, 8.0, 90)
    observed = dimuon_events(np.concatenate([falling_masses(rng, rng.poisson(10_000)), bump]), 1.0)
    config = signatures.SignatureConfig()
    return ClassSlice(
        event_class="2mu",
        signatures=config.model_dump(),
        observed=observed,
        background=background,
        observables=("m_mu_mu", "st"),
    )


def test_scan_finds_the_dimuon_bump(signal_slice):
    options = ScanOptions(pseudo_rounds=300, systematic=0.05)
    results = scan.run(signal_slice, options=options, seed=3)
    assert [r.observable for r in results] == ["m_mu_mu", "st"]
    mass = results[0]
    assert mass.method == "scan"
    assert mass.region.low <= 400.0 <= mass.region.high
    assert mass.region.observed > mass.region.expected
    assert mass.p_tilde < 0.02
    assert mass.z_local > 3.5
    assert mass.n_pseudo == 300
    assert list(mass.pseudo_p_min) == sorted(mass.pseudo_p_min)
    assert mass.details["direction"] == "excess"
    pyhf.schema.validate(dict(mass.workspace), "workspace.json")
    assert pyhf.Workspace(dict(mass.workspace)).model().config.nmaindata == len(mass.observed)


def test_result_round_trips_and_selection_reproduces_the_bins(signal_slice):
    options = ScanOptions(pseudo_rounds=50)
    result = scan.run(signal_slice, options=options, seed=1)[0]
    again = SearchResult.from_json(result.to_json())
    assert again == result
    sumw, _ = result.selection.histogram(signal_slice.observed)
    assert np.allclose(sumw, result.observed)
    bg, _ = result.selection.histogram(signal_slice.background)
    assert np.allclose(bg, result.expected)


def test_scan_is_seeded(signal_slice):
    options = ScanOptions(pseudo_rounds=100)
    first = scan.run(signal_slice, options=options, seed=5)
    again = scan.run(signal_slice, options=options, seed=5)
    other = scan.run(signal_slice, options=options, seed=6)
    assert first[0].pseudo_p_min == again[0].pseudo_p_min
    assert first[0].pseudo_p_min != other[0].pseudo_p_min


def test_observed_beyond_the_background_lands_in_the_last_bin():
    rng = np.random.default_rng(0)
    background = dimuon_events(falling_masses(rng, 5000), 1.0)
    observed = dimuon_events(np.concatenate([falling_masses(rng, 5000), [5000.0]]), 1.0)
    data = ClassSlice(
        "2mu", signatures.SignatureConfig().model_dump(), observed, background, ("m_mu_mu",)
    )
    result = scan.run(data, options=ScanOptions(pseudo_rounds=0), seed=0)[0]
    assert sum(result.observed) == 5001
    assert result.edges[-1] > 5000.0
    assert result.p_tilde is None


def test_options_are_checked():
    with pytest.raises(ValidationError):
        ScanOptions(systematic=-0.1)
    with pytest.raises(ValidationError):
        ScanOptions(min_region_bin=3)


def test_registry():
    assert get_method("scan") is scan
    assert set(METHODS) >= {"scan", "bumphunt"}
    with pytest.raises(KeyError, match=r"allowed: .*bumphunt.*scan"):
        get_method("nope")
