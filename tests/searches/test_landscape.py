"""The two-body landscape: composites, injected resonances, calibration, limits against pyhf."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pydantic
import pyhf
import pytest
import vector
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from searches import composites
from searches.events import concatenate, make_collection, make_events
from searches.landscape import (
    LIMIT_MU_MAX,
    Landscape,
    LandscapeOptions,
    prepare,
    scan_landscape,
)
from searches.signatures import SignatureConfig
from theory.models import resonance
from theory.simulate import FastSimulator, pseudo_data

LUMINOSITY_FB = 0.001
"""Small enough that simulated events weigh ~0.1: pseudo-data counts are small integers."""
PROCESSES = ("ttbar", "singletop", "gammajets", "diboson")


def _simulator() -> FastSimulator:
    return FastSimulator(tail_boost=3.0, processes=PROCESSES)


@pytest.fixture(scope="module")
def background() -> ak.Array:
    return _simulator().background(n_events=30_000, luminosity_fb=LUMINOSITY_FB, seed=1)


def _one_event(jets, electrons=(), fatjets=None) -> ak.Array:
    """One event from (pt, eta, phi, mass) tuples; jets carry a b-tag flag as 5th entry."""
    jet = make_collection(
        np.array([len(jets)]),
        pt=np.array([j[0] for j in jets], np.float32),
        eta=np.array([j[1] for j in jets], np.float32),
        phi=np.array([j[2] for j in jets], np.float32),
        mass=np.array([j[3] for j in jets], np.float32),
        btag=np.array([j[4] for j in jets], bool),
    )
    electron = make_collection(
        np.array([len(electrons)]),
        pt=np.array([e[0] for e in electrons], np.float32),
        eta=np.array([e[1] for e in electrons], np.float32),
        phi=np.array([e[2] for e in electrons], np.float32),
        mass=np.zeros(len(electrons), np.float32),
        charge=np.array([e[3] for e in electrons], np.int8),
    )
    collections = {"jet": jet, "electron": electron}
    if fatjets is not None:
        collections["fatjet"] = make_collection(
            np.array([len(fatjets)]),
            **{
                name: np.array([f[i] for f in fatjets], np.float32)
                for i, name in enumerate(("pt", "eta", "phi", "mass", "tau21", "tau32"))
            },
        )
    zero = np.zeros(1)
    return make_events(collections, met=zero, met_phi=zero, weight=np.ones(1))


def _p4(pt, eta, phi, mass):
    return vector.obj(pt=pt, eta=eta, phi=phi, mass=mass)


def test_resolved_w_is_a_composite_whose_jets_are_not_reused() -> None:
    dphi = float(np.arccos(1.0 - 80.0**2 / (2 * 100.0**2)))
    jets = [
        (100.0, 0.0, 0.0, 0.0, False),
        (100.0, 0.0, dphi, 0.0, False),
        (70.0, 1.0, -2.0, 0.0, False),
    ]
    event = _one_event(jets, electrons=[(60.0, 0.5, 3.0, -1)])
    masses = composites.pair_masses(event, SignatureConfig(), ("e", "j", "V"))
    w = _p4(*jets[0][:4]) + _p4(*jets[1][:4])
    assert masses["j_j"][0] == pytest.approx(80.0, rel=1e-5)
    assert masses["e_V"][0] == pytest.approx((w + _p4(60.0, 0.5, 3.0, 0.0)).mass, rel=1e-5)
    assert masses["j_V"][0] == pytest.approx((w + _p4(*jets[2][:4])).mass, rel=1e-5)


def test_boosted_candidate_wins_and_its_jets_are_not_paired_with_it() -> None:
    fat = (400.0, 0.2, 1.0, 90.0, 0.3, 0.8)
    inside = (380.0, 0.25, 1.05, 30.0, False)
    away = (200.0, -1.0, -2.0, 10.0, False)
    event = _one_event([inside, away], fatjets=[fat])
    masses = composites.pair_masses(event, SignatureConfig(), ("j", "V", "H"))
    assert masses["j_V"][0] == pytest.approx((_p4(*fat[:4]) + _p4(*away[:4])).mass, rel=1e-5)
    assert np.isnan(masses["j_H"][0])
    assert "V_V" not in masses and composites.pair_names(("V", "j")) == [("j", "j"), ("j", "V")]


def test_bad_configuration_gives_one_clear_error() -> None:
    with pytest.raises(pydantic.ValidationError, match="'W' not allowed; allowed: e, mu, tau"):
        LandscapeOptions(objects=("e", "W"))
    with pytest.raises(pydantic.ValidationError, match="even; allowed: an odd number"):
        LandscapeOptions(window_bins=4)
    with pytest.raises(pydantic.ValidationError, match="Extra inputs are not permitted"):
        LandscapeOptions.model_validate({"objects": ["e"], "pseudo": 3})
    with pytest.raises(ValueError, match=r"unknown object type\(s\) 'W'; allowed: e, mu"):
        composites.pair_names(("W",))


@pytest.mark.slow
def test_injected_tau_b_and_gamma_b_resonances_are_found_in_their_cells(background) -> None:
    sim = _simulator()
    signals = []
    for (a, b, mass, events), seed in zip(
        (("tau", "b", 600.0, 40.0), ("gamma", "b", 800.0, 25.0)), (2, 3), strict=True
    ):
        signal = sim.signal(
            resonance(a, b),
            {"mass": mass, "g": 0.5, "width": 0.0},
            n_events=2000,
            luminosity_fb=LUMINOSITY_FB,
            seed=seed,
        )
        signals.append(
            ak.with_field(signal, signal["weight"] * events / ak.sum(signal["weight"]), "weight")
        )
    observed = pseudo_data(concatenate([background, *signals]), seed=4)
    landscape = scan_landscape(
        background,
        observed,
        config=SignatureConfig(),
        options=LandscapeOptions(pseudo_experiments=300, min_events=50),
        luminosity_fb=LUMINOSITY_FB,
        seed=5,
    )
    best = landscape.best
    assert best is not None and best.pair == "gamma_b"
    window = int(np.argmin(best.p_local))
    assert best.low[window] <= 800.0 < best.high[window]
    assert abs(best.best_mass - 800.0) < 0.1 * 800.0
    assert landscape.p_global == pytest.approx(1 / 301)
    assert landscape.z_global == pytest.approx(stats.norm.isf(1 / 301), rel=1e-6)
    ranked = sorted(landscape.cells, key=lambda c: c.best_p_local)
    assert {c.pair for c in ranked[:3]} == {"gamma_b", "tau_b"}
    tau_b = next(c for c in ranked if c.pair == "tau_b")
    assert 0.6 * 600.0 < tau_b.best_mass < 600.0
    assert tau_b.z_local > 4.0 and tau_b.p_tilde == pytest.approx(1 / 301)
    assert landscape.n_cells == len(landscape.cells) > 100
    assert landscape.table()["cells"][3][5]["best_class"] == best.event_class
    assert Landscape.from_json(landscape.to_json()) == landscape


@pytest.mark.slow
def test_global_p_value_is_uniform_without_injection(background) -> None:
    options = LandscapeOptions(
        objects=("e", "mu", "tau", "gamma", "j", "b"), pseudo_experiments=49, min_events=50
    )
    model = prepare(
        background, config=SignatureConfig(), options=options, luminosity_fb=LUMINOSITY_FB
    )
    p_global = np.array(
        [
            model.scan(pseudo_data(background, seed=100 + i), seed=1000 + i, limits=False).p_global
            for i in range(60)
        ]
    )
    assert stats.kstest(p_global, "uniform").pvalue > 0.01
    small = int(np.count_nonzero(p_global <= 0.2))
    assert stats.binomtest(small, 60, 0.2).pvalue > 0.01
    again = model.scan(pseudo_data(background, seed=100), seed=1000, limits=False)
    assert again.p_global == p_global[0]


@pytest.fixture
def precise_pyhf():
    backend, optimizer = pyhf.get_backend()
    pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer(tolerance=1e-12))
    yield
    pyhf.set_backend(backend, optimizer)


def _per_fb_model(b: float, sigma: float, per_fb: float, mu_max: float) -> pyhf.pdf.Model:
    """Signal of ``per_fb`` events at μ = 1, shapesys background (with ``per_fb`` the events
    of 1 fb in the window, μ is the visible cross section in fb)."""
    spec = {
        "channels": [
            {
                "name": "window",
                "samples": [
                    {
                        "name": "signal",
                        "data": [per_fb],
                        "modifiers": [{"name": "mu", "type": "normfactor", "data": None}],
                    },
                    {
                        "name": "background",
                        "data": [b],
                        "modifiers": [{"name": "bkg", "type": "shapesys", "data": [sigma]}],
                    },
                ],
            }
        ],
        "parameters": [{"name": "mu", "bounds": [[0.0, mu_max]]}],
    }
    return pyhf.Model(spec, poi_name="mu")


@pytest.mark.slow
def test_generic_gaussian_limits_and_p_values_agree_with_pyhf(background, precise_pyhf) -> None:
    observed = pseudo_data(background, seed=9)
    landscape = scan_landscape(
        background,
        observed,
        config=SignatureConfig(),
        options=LandscapeOptions(objects=("gamma", "b", "j"), pseudo_experiments=0, min_events=50),
        luminosity_fb=LUMINOSITY_FB,
        seed=0,
    )
    cell = next(c for c in landscape.cells if c.name == "gamma_b/inclusive")
    picks = sorted({int(np.argmin(cell.p_local)), 0, len(cell.masses) // 2, len(cell.masses) - 1})
    for i in picks:
        n, b, sigma = cell.observed_counts[i], cell.background[i], cell.uncertainty[i]
        per_fb = cell.signal_fraction[i] * LUMINOSITY_FB
        scale = 1.0 + np.sqrt(b + sigma**2)
        model = _per_fb_model(b, sigma, per_fb, LIMIT_MU_MAX * scale / per_fb)
        data = [n, *model.config.auxdata]
        fast = min(cell.limit_observed_fb[i], cell.limit_expected_fb[i])
        limit_observed, limit_expected = pyhf.infer.intervals.upper_limits.toms748_scan(
            data, model, 0.2 * fast, 5.0 * fast, level=0.05, rtol=1e-5
        )
        assert cell.limit_observed_fb[i] == pytest.approx(float(limit_observed), rel=3e-3)
        assert cell.limit_expected_fb[i] == pytest.approx(float(limit_expected[2]), rel=3e-3)
        discovery = _per_fb_model(b, sigma, scale, 1000.0)
        p0 = pyhf.infer.hypotest(0.0, [n, *discovery.config.auxdata], discovery, test_stat="q0")
        assert cell.p_local[i] == pytest.approx(float(p0), rel=2e-3, abs=1e-9)
    assert cell.reference_limit_fb is not None and cell.sensitive
    reference = int(np.argmin(np.abs(np.asarray(cell.masses) - 1000.0)))
    assert cell.reference_limit_fb == cell.limit_expected_fb[reference]


def test_json_round_trip_and_schema_version(background) -> None:
    small = background[:4000]
    landscape = scan_landscape(
        small,
        pseudo_data(small, seed=1),
        config=SignatureConfig(),
        options=LandscapeOptions(objects=("b", "j"), pseudo_experiments=20, min_events=20),
        luminosity_fb=LUMINOSITY_FB,
        seed=3,
    )
    data = landscape.to_dict()
    assert data["schema_version"] == "1" and data["cells"][0]["a"] == "j"
    assert Landscape.from_dict(data) == landscape
    with pytest.raises(ValueError, match="schema_version '0' not supported"):
        Landscape.from_dict({**data, "schema_version": "0"})
    with pytest.raises(ValueError, match="luminosity_fb = 0"):
        prepare(small, config=SignatureConfig(), options=LandscapeOptions(), luminosity_fb=0)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(1.0, 2000.0),
            st.floats(-4.0, 4.0),
            st.floats(-3.14, 3.14),
            st.floats(0.0, 200.0),
        ),
        min_size=2,
        max_size=2,
    )
)
def test_pair_mass_matches_four_vector_sums(objects) -> None:
    (a, b) = (
        {k: np.array([v]) for k, v in zip(("pt", "eta", "phi", "mass"), o, strict=True)}
        for o in objects
    )
    reference = (_p4(*objects[0]) + _p4(*objects[1])).mass
    assert composites.pair_mass(a, b)[0] == pytest.approx(abs(reference), rel=1e-6, abs=1e-3)
    assert composites.pair_mass(b, a)[0] == pytest.approx(composites.pair_mass(a, b)[0], rel=1e-12)
