"""The two-body landscape: composites, injected resonances, calibration, limits against pyhf,
the smooth-function bump hunt of every cell."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pydantic
import pyhf
import pytest
import vector
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

from searches import composites
from searches.events import concatenate, make_collection, make_events
from searches.landscape import (
    LIMIT_MU_MAX,
    Landscape,
    LandscapeOptions,
    prepare,
    scan_landscape,
)
from searches.landscape_fit import FIT_MIN_BINS, fit_layout, simulation_chi2_ndf
from searches.methods.bumphunt import fit_and_scan
from searches.signatures import SignatureConfig
from theory.models import resonance
from theory.models.lhco import XToYZ
from theory.simulate import FastSimulator, pseudo_data

LUMINOSITY_FB = 0.001
"""Small enough that simulated events weigh ~0.1: pseudo-data counts are small integers."""
PROCESSES = ("ttbar", "singletop", "gammajets", "diboson")


def _simulator() -> FastSimulator:
    return FastSimulator(tail_boost=3.0, processes=PROCESSES)


@pytest.fixture(scope="module")
def background() -> ak.Array:
    return _simulator().background(n_events=30_000, luminosity_fb=LUMINOSITY_FB, seed=1)


RICH_LUMINOSITY_FB = 0.01
"""With 200k simulated events, weights ~0.1 where the fits are: the data, not the simulation's
own fluctuations, dominate the scatter around a smooth function."""


@pytest.fixture(scope="module")
def rich_background() -> ak.Array:
    return _simulator().background(n_events=200_000, luminosity_fb=RICH_LUMINOSITY_FB, seed=1)


def _scaled(signal: ak.Array, events: float) -> ak.Array:
    return ak.with_field(signal, signal["weight"] * events / ak.sum(signal["weight"]), "weight")


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
    assert np.isnan(masses["V_V"][0])
    assert composites.pair_names(("V", "j")) == [("j", "j"), ("j", "V"), ("V", "V")]


def test_same_type_composites_never_share_constituents() -> None:
    fat_1, fat_2 = (500.0, 0.1, 0.5, 85.0, 0.3, 0.8), (450.0, -0.7, -2.6, 92.0, 0.4, 0.8)
    two_fat = _one_event([(490.0, 0.12, 0.52, 40.0, False)], fatjets=[fat_1, fat_2])
    masses = composites.pair_masses(two_fat, SignatureConfig(), ("V",))
    assert masses["V_V"][0] == pytest.approx((_p4(*fat_1[:4]) + _p4(*fat_2[:4])).mass, rel=1e-5)
    dphi = float(np.arccos(1.0 - 80.0**2 / (2 * 100.0**2)))
    w_1 = [(100.0, 0.0, 0.0, 0.0, False), (100.0, 0.0, dphi, 0.0, False)]
    w_2 = [(90.0, 1.5, 2.5, 0.0, False), (90.0, 1.5, 2.5 + 0.95 * dphi, 0.0, False)]
    resolved = _one_event(w_1 + w_2)
    masses = composites.pair_masses(resolved, SignatureConfig(), ("V",))
    four = sum((_p4(*j[:4]) for j in w_1[1:] + w_2), _p4(*w_1[0][:4]))
    assert masses["V_V"][0] == pytest.approx(four.mass, rel=1e-5)
    three = _one_event(w_1 + w_2[:1])
    assert np.isnan(composites.pair_masses(three, SignatureConfig(), ("V",))["V_V"][0])
    near = (300.0, 0.05, 0.05, 80.0, 0.3, 0.8)
    overlapping = _one_event(w_1, fatjets=[near])
    jets_inside = composites.pair_masses(overlapping, SignatureConfig(), ("V",))
    assert np.isnan(jets_inside["V_V"][0])


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
    assert landscape.best_search == "scan" and landscape.scan.best_cell == landscape.best_cell
    assert landscape.scan.p_global == pytest.approx(1 / 301)
    assert landscape.scan.z_global == pytest.approx(stats.norm.isf(1 / 301), rel=1e-6)
    assert 1 / 301 <= landscape.p_global <= 3 / 301
    ranked = sorted(landscape.cells, key=lambda c: c.best_p_local)
    assert {c.pair for c in ranked[:3]} == {"gamma_b", "tau_b"}
    tau_b = next(c for c in ranked if c.pair == "tau_b")
    assert 0.6 * 600.0 < tau_b.best_mass < 600.0
    assert tau_b.z_local > 4.0 and tau_b.p_tilde == pytest.approx(1 / 301)
    assert landscape.n_cells == len(landscape.cells) > 100
    assert landscape.table()["cells"][3][5]["best_class"] == best.event_class
    assert Landscape.from_json(landscape.to_json()) == landscape


@pytest.mark.slow
def test_bump_hunt_finds_gamma_b_and_the_same_type_cell_finds_x_to_vv(rich_background) -> None:
    sim = _simulator()
    gamma_b = sim.signal(
        resonance("gamma", "b"),
        {"mass": 800.0, "g": 0.5, "width": 0.0},
        n_events=2000,
        luminosity_fb=RICH_LUMINOSITY_FB,
        seed=3,
    )
    vv = sim.signal(
        XToYZ(m_z=85.0),
        {"m_X": 1500.0, "m_Y": 85.0},
        n_events=2000,
        luminosity_fb=RICH_LUMINOSITY_FB,
        seed=7,
    )
    injected = concatenate([rich_background, _scaled(gamma_b, 60.0), _scaled(vv, 40.0)])
    observed = pseudo_data(injected, seed=4)
    rounds = 100
    landscape = scan_landscape(
        rich_background,
        observed,
        config=SignatureConfig(),
        options=LandscapeOptions(
            objects=("gamma", "b", "V"), pseudo_experiments=rounds, min_events=50
        ),
        luminosity_fb=RICH_LUMINOSITY_FB,
        seed=5,
    )
    assert landscape.fit is not None and landscape.fit.best_cell is not None
    best_fit = landscape.cells[landscape.fit.best_cell]
    assert best_fit.pair == "gamma_b" and best_fit.fitted
    assert abs(best_fit.fit_best_mass - 800.0) < 0.08 * 800.0
    window = int(np.argmin(best_fit.fit_p_local))
    assert best_fit.fit_low[window] <= 800.0 < best_fit.fit_high[window]
    assert best_fit.fit_z_local > 5.0 and best_fit.fit_p_tilde == pytest.approx(1 / (rounds + 1))
    assert landscape.fit.p_global == pytest.approx(1 / (rounds + 1))
    assert landscape.p_global == pytest.approx(1 / (rounds + 1))
    fitted = [c for c in landscape.cells if c.fitted]
    quiet = [c.fit_p_tilde for c in fitted if c.pair != "gamma_b" and c.fit_p_tilde is not None]
    assert len(fitted) >= 5 and min(quiet) > 0.01
    assert all(0.2 < c.fit_chi2 / c.fit_ndf < 3.0 for c in fitted if c.pair != "gamma_b")
    vv_cell = next(c for c in landscape.cells if c.name == "V_V/inclusive")
    assert vv_cell.mc_events >= 50
    p_vv, mass_vv = min(vv_cell.best_of("scan"), vv_cell.best_of("fit"))
    assert abs(mass_vv - 1500.0) < 0.1 * 1500.0 and stats.norm.isf(p_vv) > 4.0
    table = landscape.table()
    assert table["objects"] == ["gamma", "b", "V"] and table["cells"][2][2]["pair"] == "V_V"
    assert table["cells"][0][1]["fit_best_class"] == best_fit.event_class
    assert Landscape.from_json(landscape.to_json()) == landscape


def _reference_p(n: float, b: float, sigma: float) -> float:
    """P(N >= n) for N ~ Poisson(μ), μ ~ Gaussian(b, σ) truncated at 0, by scipy quadrature."""

    def integrand(mu: float) -> float:
        return stats.poisson.sf(n - 1, mu) * stats.norm.pdf(mu, b, sigma)

    value, _ = integrate.quad(integrand, max(0.0, b - 12 * sigma), b + 12 * sigma, limit=200)
    return value / stats.norm.sf(0.0, b, sigma)


@pytest.mark.slow
def test_fitted_windows_match_an_independent_reference(rich_background) -> None:
    observed = pseudo_data(rich_background, seed=11)
    landscape = scan_landscape(
        rich_background,
        observed,
        config=SignatureConfig(),
        options=LandscapeOptions(objects=("gamma", "b"), pseudo_experiments=0, min_events=50),
        luminosity_fb=RICH_LUMINOSITY_FB,
        seed=0,
    )
    cell = next(c for c in landscape.cells if c.name == "gamma_b/inclusive")
    assert cell.fitted and len(cell.fit_edges) >= FIT_MIN_BINS + 1
    p = np.asarray(cell.fit_p_local)
    n, b = np.asarray(cell.fit_observed_counts), np.asarray(cell.fit_background_window)
    sigma = np.asarray(cell.fit_uncertainty)
    assert np.all(p[n < b] == 1.0) and np.any(n < b)
    excess = np.flatnonzero(n >= b)
    picks = sorted({int(np.argmin(p)), *excess[:: max(1, len(excess) // 4)].tolist()})
    for i in picks:
        assert p[i] == pytest.approx(_reference_p(n[i], b[i], sigma[i]), rel=1e-4)
    edges = np.asarray(cell.fit_edges)
    counts = np.asarray(cell.fit_counts)
    model = prepare(
        rich_background,
        config=SignatureConfig(),
        options=LandscapeOptions(objects=("gamma", "b"), pseudo_experiments=0, min_events=50),
        luminosity_fb=RICH_LUMINOSITY_FB,
    )
    layout = next(
        lay.fit
        for lay in model.layouts
        if (lay.a, lay.b, lay.event_class) == ("gamma", "b", "inclusive")
    )
    assert layout is not None and np.array_equal(layout.edges, edges)
    _, expected, uncertainty, direct = fit_and_scan(
        counts[None, :], layout.design, layout.widths, layout.windows, 0.01, excess_only=True
    )
    np.testing.assert_allclose(direct[0], p, rtol=1e-12)
    np.testing.assert_allclose(expected[0], b, rtol=1e-12)
    np.testing.assert_allclose(uncertainty[0], sigma, rtol=1e-12)
    first, stop = np.searchsorted(edges, cell.fit_low), np.searchsorted(edges, cell.fit_high)
    cumulative = np.r_[0.0, np.cumsum(cell.fit_background)]
    np.testing.assert_allclose(cumulative[stop] - cumulative[first], b, rtol=1e-9)


def _fit_layout(fine: np.ndarray, sumw: np.ndarray, *, function: str = "dijet"):
    return fit_layout(
        fine,
        sumw,
        function=function,
        bin_width_sigma=0.5,
        fit_bin_sigma=1.0,
        fit_bin_count=2.0,
        window_bins=3,
        min_expected=0.5,
        sqrt_s=13_000.0,
        max_chi2_ndf=1.0,
    )


FINE = np.linspace(100.0, 400.0, 61)
FALLING = 200.0 * np.exp(-np.arange(60) / 12.0)


def test_fit_layout_merges_bins_and_refuses_short_spectra() -> None:
    layout, status = _fit_layout(FINE, FALLING)
    assert status == "fitted" and layout is not None and layout.groups[0] == 0
    assert np.all(layout.expected >= 2.0) and np.all(np.diff(layout.groups) >= 2)
    assert np.all(np.diff(layout.groups) * 0.5 <= 4.0)
    rising = np.r_[np.linspace(1.0, 300.0, 20), FALLING[:40]]
    layout, _ = _fit_layout(FINE, rising, function="expo")
    assert layout is not None and layout.edges[0] == pytest.approx(FINE[18])
    assert _fit_layout(FINE[:9], FALLING[:8]) == (None, "few_bins")


def test_fit_range_starts_above_a_peak_the_function_cannot_follow() -> None:
    """A Standard-Model peak on a falling spectrum (a Z in e e) stays below the fit range,
    and the function describes the simulation there to within the data's noise."""
    centres = 0.5 * (FINE[1:] + FINE[:-1])
    peaked = 50.0 * FALLING + 2.0e4 * np.exp(-0.5 * ((centres - 130.0) / 6.0) ** 2)
    layout, status = _fit_layout(FINE, peaked)
    assert status == "fitted" and layout is not None
    assert layout.edges[0] > 130.0 + 3 * 6.0
    chi2_ndf = simulation_chi2_ndf(layout.edges, layout.expected, function="dijet", sqrt_s=13_000.0)
    assert chi2_ndf[0] <= 1.0
    fine_edges_only, _ = _fit_layout(FINE, 50.0 * FALLING)
    assert fine_edges_only is not None and fine_edges_only.edges[0] == FINE[0]


def test_a_simulation_too_coarse_for_the_luminosity_is_not_fitted() -> None:
    """Simulated events each standing for ~10⁴ data events: the simulated spectrum's own
    fluctuations are ~100 times the data's noise, which no smooth function follows."""
    rng = np.random.default_rng(3)
    weight = 1.0e4
    coarse = weight * rng.poisson(FALLING)
    assert _fit_layout(FINE, coarse) == (None, "mismodelled")
    fine = rng.poisson(FALLING * 100) / 100
    assert _fit_layout(FINE, fine)[1] == "fitted"


def test_a_coarse_simulation_leaves_the_landscape_to_the_scan() -> None:
    """The demo's situation: every simulated event stands for ~80 data events, so no smooth
    function follows the simulated spectrum at the data's precision. No cell is fitted; forced
    to fit anyway, the bump hunt finds p = 0 in the data and in every pseudo-experiment, and
    the landscape's global p-value must still be the scan's, not 1."""
    coarse = _simulator().background(n_events=30_000, luminosity_fb=1.0, seed=1)
    observed = pseudo_data(coarse, seed=5)
    objects = ("e", "mu", "gamma", "j", "b")
    model = prepare(
        coarse,
        config=SignatureConfig(),
        options=LandscapeOptions(objects=objects, pseudo_experiments=49, min_events=50),
        luminosity_fb=1.0,
    )
    assert {layout.fit_status for layout in model.layouts} <= {"mismodelled", "few_bins"}
    landscape = model.scan(observed, seed=6, limits=False)
    assert landscape.p_global == landscape.scan.p_global
    forced = prepare(
        coarse,
        config=SignatureConfig(),
        options=LandscapeOptions(
            objects=objects, pseudo_experiments=49, min_events=50, fit_max_chi2_ndf=1e12
        ),
        luminosity_fb=1.0,
    ).scan(observed, seed=6, limits=False)
    assert forced.fit.p_local_min == 0.0 and forced.fit.p_global == 1.0
    assert forced.best_search == "scan" and forced.p_global == landscape.scan.p_global


@pytest.mark.slow
def test_global_p_value_is_uniform_without_injection(background) -> None:
    options = LandscapeOptions(
        objects=("e", "mu", "tau", "gamma", "j", "b"), pseudo_experiments=49, min_events=50
    )
    model = prepare(
        background, config=SignatureConfig(), options=options, luminosity_fb=LUMINOSITY_FB
    )
    landscapes = [
        model.scan(pseudo_data(background, seed=5000 + i), seed=6000 + i, limits=False)
        for i in range(60)
    ]
    p_global = np.array([landscape.p_global for landscape in landscapes])
    assert stats.kstest(p_global, "uniform").pvalue > 0.01
    small = int(np.count_nonzero(p_global <= 0.2))
    assert stats.binomtest(small, 60, 0.2).pvalue > 0.01
    for search in ("scan", "fit"):
        alone = np.array([getattr(landscape, search).p_global for landscape in landscapes])
        assert stats.kstest(alone, "uniform").pvalue > 0.01
    held_by_fit = sum(landscape.best_search == "fit" for landscape in landscapes)
    assert 5 <= held_by_fit <= 55
    assert all(sum(c.fitted for c in landscape.cells) >= 5 for landscape in landscapes)
    again = model.scan(pseudo_data(background, seed=5000), seed=6000, limits=False)
    assert again.p_global == p_global[0]


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
    assert data["schema_version"] == "2" and data["cells"][0]["a"] == "j"
    assert data["scan"]["p_local_min"] == landscape.scan.p_local_min
    assert Landscape.from_dict(data) == landscape
    with pytest.raises(ValueError, match="schema_version '0' not supported; allowed: '1', '2'"):
        Landscape.from_dict({**data, "schema_version": "0"})
    fit_keys = [k for k in data["cells"][0] if k.startswith("fit_")]
    version_1 = {
        **{k: v for k, v in data.items() if k not in ("best_search", "scan", "fit")},
        "schema_version": "1",
        "p_local_min": landscape.scan.p_local_min,
        "p_global": landscape.scan.p_global,
        "z_global": landscape.scan.z_global,
        "best_cell": landscape.scan.best_cell,
        "cells": [{k: v for k, v in c.items() if k not in fit_keys} for c in data["cells"]],
    }
    old = Landscape.from_dict(version_1)
    assert old.scan == landscape.scan and old.fit.best_cell is None
    assert old.p_global == landscape.scan.p_global and old.best_search == "scan"
    assert all(c.fit_status == "off" for c in old.cells)
    assert [c.p_local for c in old.cells] == [c.p_local for c in landscape.cells]
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
