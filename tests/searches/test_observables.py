"""Observables against closed forms and the ``vector`` package; resolution-scaled binning."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import vector
from hypothesis import given, settings
from hypothesis import strategies as st

from searches.events import make_collection, make_events
from searches.observables import (
    OBSERVABLES,
    RESOLUTION,
    compute,
    edges_for,
    lower_edge,
    resolution,
    resolution_binning,
)
from searches.signatures import SignatureConfig, class_mask

CONFIG = SignatureConfig()


def collection(objects: list[list[tuple]], *, kind: str) -> ak.Array:
    """A collection from per-event lists of (pt, eta, phi, mass[, btag])."""
    flat = [o for event in objects for o in event]
    columns = {
        field: np.array([o[i] for o in flat], dtype=np.float32)
        for i, field in enumerate(("pt", "eta", "phi", "mass"))
    }
    if kind == "jet":
        columns["btag"] = np.array([o[4] for o in flat], dtype=bool)
    elif kind != "photon":
        columns["charge"] = np.ones(len(flat), dtype=np.int8)
    return make_collection(np.array([len(e) for e in objects]), **columns)


def events_of(
    met: list[float], met_phi: list[float] | None = None, **collections: list[list[tuple]]
) -> ak.Array:
    n = len(met)
    return make_events(
        {name: collection(objs, kind=name) for name, objs in collections.items()},
        met=np.array(met, dtype=np.float64),
        met_phi=np.zeros(n) if met_phi is None else np.array(met_phi, dtype=np.float64),
        weight=np.ones(n),
    )


def test_back_to_back_muons_make_a_z() -> None:
    events = events_of([10.0], muon=[[(45.5, 0.0, 0.0, 0.0), (45.5, 0.0, np.pi, 0.0)]])
    assert compute(events, "minv", config=CONFIG) == pytest.approx([91.0], rel=1e-6)
    assert compute(events, "m_mu_mu", config=CONFIG) == pytest.approx([91.0], rel=1e-6)
    assert compute(events, "st", config=CONFIG) == pytest.approx([91.0], rel=1e-6)
    assert np.isnan(compute(events, "m_e_mu", config=CONFIG)).all()


@settings(max_examples=50, deadline=None)
@given(
    pt1=st.floats(30.0, 1000.0),
    pt2=st.floats(30.0, 1000.0),
    eta1=st.floats(-2.4, 2.4),
    eta2=st.floats(-2.4, 2.4),
    phi1=st.floats(-3.1, 3.1),
    phi2=st.floats(-3.1, 3.1),
)
def test_massless_pair_mass_closed_form(pt1, pt2, eta1, eta2, phi1, phi2) -> None:
    pts = np.float32([pt1, pt2]).astype(float)
    etas = np.float32([eta1, eta2]).astype(float)
    phis = np.float32([phi1, phi2]).astype(float)
    expected = np.sqrt(
        2 * pts[0] * pts[1] * (np.cosh(etas[0] - etas[1]) - np.cos(phis[0] - phis[1]))
    )
    electron = [[(pts[0], etas[0], phis[0], 0.0)]]
    muon = [[(pts[1], etas[1], phis[1], 0.0)]]
    events = events_of([0.0], electron=electron, muon=muon)
    assert compute(events, "m_e_mu", config=CONFIG)[0] == pytest.approx(
        expected, rel=1e-9, abs=1e-6
    )
    # E² − p² of the summed system loses ~1e-8 of the energy scale in float64 for collinear pairs.
    scale = pts.sum() * np.cosh(etas).max()
    assert compute(events, "minv", config=CONFIG)[0] == pytest.approx(expected, abs=1e-7 * scale)


@pytest.mark.parametrize("dphi", [0.3, 1.0, np.pi / 2, 2.5, np.pi])
def test_transverse_mass_of_lepton_and_met(dphi: float) -> None:
    pt, met = 40.0, 120.0
    events = events_of([met], [dphi - np.pi], electron=[[(pt, 0.7, -np.pi, 0.0)]])
    expected = np.sqrt(2 * pt * met * (1 - np.cos(dphi)))
    assert compute(events, "minv", config=CONFIG)[0] == pytest.approx(expected, rel=1e-6)
    below = events_of([99.0], [dphi - np.pi], electron=[[(pt, 0.7, -np.pi, 0.0)]])
    assert compute(below, "minv", config=CONFIG)[0] == pytest.approx(0.0, abs=1e-4)


def test_w_jacobian_edge() -> None:
    """A W decaying at rest in the transverse plane: m_T reaches m_W when lepton and
    neutrino are back to back with pT = m_W / 2."""
    events = events_of([40.2], [0.0], muon=[[(40.2, 1.3, np.pi, 0.105)]])
    config = SignatureConfig(met_min=30.0)
    mt = compute(events, "minv", config=config)[0]
    assert mt == pytest.approx(80.4, rel=2e-4)


def test_st_sums_selected_objects_and_flagged_met() -> None:
    jets = [
        [(120.0, 0.0, 0.0, 10.0, False), (60.0, 1.0, 1.0, 8.0, True), (30.0, 0.0, 2.0, 5.0, False)]
    ]
    muons = [[(50.0, 0.0, 0.0, 0.1), (10.0, 0.0, 1.0, 0.1)]]
    flagged = events_of([150.0], jet=jets, muon=muons)
    unflagged = events_of([90.0], jet=jets, muon=muons)
    # The 30 GeV jet and the 10 GeV muon are below threshold; MET counts only with its flag.
    assert compute(flagged, "st", config=CONFIG) == pytest.approx([120 + 60 + 50 + 150])
    assert compute(unflagged, "st", config=CONFIG) == pytest.approx([120 + 60 + 50])
    assert compute(flagged, "met", config=CONFIG).tolist() == [150.0]


def test_pairwise_masses_use_leading_selected_objects_and_nan_when_absent() -> None:
    jets = [
        [
            (300.0, 0.0, 0.0, 0.0, True),
            (200.0, 0.0, np.pi, 0.0, False),
            (100.0, 0.0, 0.0, 0.0, False),
        ],
        [(80.0, 0.0, 0.0, 0.0, False), (40.0, 0.0, np.pi, 0.0, False)],
        [],
    ]
    events = events_of([0.0, 0.0, 0.0], jet=jets)
    m_jj = compute(events, "m_j_j", config=CONFIG)
    assert m_jj[0] == pytest.approx(2 * np.sqrt(200 * 100))
    assert np.isnan(m_jj[1]) and np.isnan(m_jj[2])
    m_jb = compute(events, "m_j_b", config=CONFIG)
    assert m_jb[0] == pytest.approx(2 * np.sqrt(300 * 200))
    assert np.isnan(m_jb[1:]).all()
    assert np.isnan(compute(events, "m_b_b", config=CONFIG)).all()
    assert compute(events, "minv", config=CONFIG)[2] == 0.0


def test_massive_objects_and_events_without_objects() -> None:
    events = events_of([0.0, 0.0], tau=[[(50.0, 0.0, 0.0, 1.777)], []])
    assert compute(events, "minv", config=CONFIG) == pytest.approx([1.777, 0.0], abs=1e-5)
    assert compute(events, "st", config=CONFIG).tolist() == [50.0, 0.0]


def random_events(n: int, seed: int) -> ak.Array:
    rng = np.random.default_rng(seed)
    collections = {}
    for name, mean in {"electron": 0.8, "muon": 0.8, "tau": 0.4, "photon": 0.5, "jet": 3.0}.items():
        counts = rng.poisson(mean, n)
        m = int(counts.sum())
        pt = rng.uniform(10.0, 400.0, m).astype(np.float32)
        event = np.repeat(np.arange(n), counts)
        columns = {
            "pt": pt[np.lexsort((-pt, event))],
            "eta": rng.uniform(-3.0, 3.0, m).astype(np.float32),
            "phi": rng.uniform(-np.pi, np.pi, m).astype(np.float32),
            "mass": rng.uniform(0.0, 15.0, m).astype(np.float32),
        }
        if name == "jet":
            columns["btag"] = rng.random(m) < 0.3
        elif name != "photon":
            columns["charge"] = rng.choice(np.array([-1, 1], dtype=np.int8), m)
        collections[name] = make_collection(counts, **columns)
    return make_events(
        collections,
        met=rng.exponential(100.0, n),
        met_phi=rng.uniform(-np.pi, np.pi, n),
        weight=np.ones(n),
    )


def test_minv_and_st_agree_with_the_vector_package() -> None:
    from searches.signatures import select_objects

    vector.register_awkward()
    events = random_events(3000, seed=11)
    selected = select_objects(events, CONFIG)
    parts = []
    for name in ("electron", "muon", "tau", "photon", "jet", "bjet"):
        c = selected[name]
        parts.append(
            ak.zip(
                {
                    "pt": ak.values_astype(c.pt, np.float64),
                    "eta": ak.values_astype(c.eta, np.float64),
                    "phi": ak.values_astype(c.phi, np.float64),
                    "mass": ak.values_astype(c.mass, np.float64),
                },
                with_name="Momentum4D",
            )
        )
    visible = ak.concatenate(parts, axis=1)
    px, py, pz, energy = (
        ak.to_numpy(ak.sum(getattr(visible, f), axis=1)) for f in ("px", "py", "pz", "E")
    )
    total = vector.array({"px": px, "py": py, "pz": pz, "E": energy})
    met = events.met.to_numpy()
    neutrino = vector.array({"pt": met, "phi": events.met_phi.to_numpy()})
    et_vis = np.sqrt(np.maximum(total.mass, 0.0) ** 2 + total.pt**2)
    mt = np.sqrt(np.maximum((et_vis + met) ** 2 - (total.to_Vector2D() + neutrino).rho ** 2, 0))
    flag = met >= CONFIG.met_min
    expected = np.where(flag, mt, np.nan_to_num(total.mass))
    assert compute(events, "minv", config=CONFIG) == pytest.approx(expected, rel=1e-7, abs=1e-4)
    st_expected = ak.to_numpy(ak.sum(visible.pt, axis=1)) + np.where(flag, met, 0.0)
    assert compute(events, "st", config=CONFIG) == pytest.approx(st_expected, rel=1e-12)
    m_e_mu = compute(events, "m_e_mu", config=CONFIG)
    has = (ak.num(selected.electron) > 0) & (ak.num(selected.muon) > 0)
    assert np.isnan(m_e_mu[~has.to_numpy()]).all()
    leading = parts[0][has][:, 0] + parts[1][has][:, 0]
    assert m_e_mu[has.to_numpy()] == pytest.approx(ak.to_numpy(leading.mass), rel=1e-7, abs=1e-4)


def test_observables_on_a_class_slice() -> None:
    events = random_events(2000, seed=5)
    mask = class_mask(events, "1mu+X", config=CONFIG)
    on_slice = compute(events[mask], "st", config=CONFIG)
    assert on_slice == pytest.approx(compute(events, "st", config=CONFIG)[mask])
    assert (on_slice >= lower_edge("st", "1mu+X", config=CONFIG)).all()


def test_registry_and_unknown_names() -> None:
    assert {"st", "minv", "met", "m_e_mu", "m_mu_mu", "m_j_b", "m_gamma_j"} <= set(OBSERVABLES)
    assert len([n for n in OBSERVABLES if n.startswith("m_")]) == 21
    events = events_of([0.0], muon=[[(45.0, 0.0, 0.0, 0.0)]])
    for name in OBSERVABLES:
        values = compute(events, name, config=CONFIG)
        assert values.dtype == np.float64 and values.shape == (1,)
    for bad in ("mt", "m_mu_e", "m_x_y", "ST"):
        with pytest.raises(ValueError, match="allowed: st, minv, met") as caught:
            compute(events, bad, config=CONFIG)
        assert repr(bad) in str(caught.value)


# ---------------------------------------------------------------- binning


@pytest.mark.parametrize("name", ["st", "minv", "met", "m_mu_mu", "m_j_j", "m_e_b"])
def test_resolution_binning_is_monotone_and_follows_sigma(name: str) -> None:
    edges = resolution_binning((100.0, 3000.0), name)
    widths = np.diff(edges)
    assert edges[0] == 100.0 and edges[-1] >= 3000.0 and edges[-2] < 3000.0
    assert (widths > 0).all()
    assert (np.diff(widths) > 0).all()
    centres = (edges[:-1] + edges[1:]) / 2
    assert widths == pytest.approx(resolution(name, centres), rel=0.02)
    twice = resolution_binning((100.0, 3000.0), name, width_in_sigma=2.0)
    assert len(twice) - 1 == pytest.approx((len(edges) - 1) / 2, abs=2)


def test_widths_grow_with_resolution() -> None:
    muons = np.diff(resolution_binning((50.0, 2000.0), "m_mu_mu"))
    jets = np.diff(resolution_binning((50.0, 2000.0), "m_j_j"))
    assert len(jets) < len(muons)
    assert jets[0] > muons[0]
    for name, model in RESOLUTION.items():
        x = np.array([10.0, 100.0, 1000.0])
        sigma = model.sigma(x)
        assert (np.diff(sigma) > 0).all(), name
        assert (np.diff(sigma / x) < 0).all(), name
    # e.g. a 1 TeV dimuon resonance is binned in ~2 % of its mass, a dijet one in ~6 %.
    assert resolution("m_mu_mu", 1000.0) / 1000 == pytest.approx(0.021, abs=0.003)
    assert resolution("m_j_j", 1000.0) / 1000 == pytest.approx(0.059, abs=0.005)


def test_resolution_binning_from_values_and_errors() -> None:
    values = np.array([np.nan, 250.0, 120.0, 900.0, np.inf])
    edges = resolution_binning(values, "st")
    assert edges[0] == 120.0 and edges[-1] >= 900.0
    assert resolution_binning(values, "st", low=0.0)[0] == 0.0
    single = resolution_binning(np.array([500.0]), "met")
    assert len(single) == 2 and single[1] > 500.0
    with pytest.raises(ValueError, match="no finite values"):
        resolution_binning(np.array([np.nan]), "st")
    with pytest.raises(ValueError, match="max_bins=5"):
        resolution_binning((0.0, 1000.0), "m_mu_mu", max_bins=5)
    with pytest.raises(ValueError, match="width_in_sigma"):
        resolution_binning((0.0, 1000.0), "st", width_in_sigma=0.0)
    with pytest.raises(ValueError, match="unknown observable"):
        resolution_binning((0.0, 1000.0), "mass")


def test_edges_for_merges_to_min_expected_deterministically() -> None:
    rng = np.random.default_rng(2)
    values = 200.0 + rng.exponential(150.0, 20_000)
    weights = np.full(values.size, 0.05)
    values[::50] = np.nan
    edges = edges_for("st", values, weights, min_expected=5.0)
    again = edges_for("st", values.copy(), weights.copy(), min_expected=5.0)
    assert np.array_equal(edges, again)
    finite = np.isfinite(values)
    content, _ = np.histogram(values[finite], bins=edges, weights=weights[finite])
    assert (content >= 5.0 - 1e-9).all()
    assert content.sum() == pytest.approx(weights[finite].sum())
    assert edges[0] == values[finite].min() and edges[-1] >= values[finite].max()
    fine = resolution_binning(values, "st")
    assert set(edges) <= set(fine)
    widths = np.diff(edges)
    assert (widths >= np.diff(fine).min() - 1e-9).all()
    assert widths[-1] > widths[0]
    unmerged = edges_for("st", values, weights, min_expected=0.0)
    assert np.array_equal(unmerged, fine)


def test_edges_for_with_tiny_background_gives_one_bin_and_checks_shapes() -> None:
    values = np.array([300.0, 310.0, 800.0])
    edges = edges_for("minv", values, np.full(3, 0.01), min_expected=1.0, low=0.0)
    assert len(edges) == 2 and edges[0] == 0.0 and edges[-1] >= 800.0
    with pytest.raises(ValueError, match="same shape"):
        edges_for("minv", values, np.ones(2))


def test_lower_edge_is_the_threshold_sum() -> None:
    assert lower_edge("st", "1e_1mu_2j_1b_MET", config=CONFIG) == 25 + 25 + 2 * 50 + 50 + 100
    assert lower_edge("st", "2mu+X", config=CONFIG) == 50.0
    assert lower_edge("met", "1e_MET", config=CONFIG) == 100.0
    assert lower_edge("met", "1e", config=CONFIG) == 0.0
    assert lower_edge("minv", "2mu", config=CONFIG) == 0.0


def test_selection_histogram_uses_classes_and_observables() -> None:
    """The lead's Selection maps events through class_mask and compute: check the wiring."""
    import json

    from searches.result import Selection

    events = random_events(4000, seed=8)
    config = SignatureConfig(met_min=80.0)
    mask = class_mask(events, "1mu+X", config=config)
    values = compute(events[mask], "m_mu_mu", config=config)
    edges = edges_for("m_mu_mu", values, np.ones(values.size), min_expected=3.0)
    selection = Selection(
        event_class="1mu+X",
        signatures=config.model_dump(),
        observable="m_mu_mu",
        edges=tuple(float(e) for e in edges),
    )
    restored = Selection.from_dict(json.loads(json.dumps(selection.to_dict())))
    sumw, sumw2 = restored.histogram(events)
    expected, _ = np.histogram(values, bins=edges)
    assert np.array_equal(sumw, expected) and np.array_equal(sumw2, expected)
    assert sumw.sum() == np.isfinite(values).sum() > 0
