from __future__ import annotations

import math

import awkward as ak
import numpy as np
import pytest
from scipy import stats

from searches.events import COLLECTIONS, concatenate, validate_events
from theory.background import PROCESSES
from theory.models import MODELS, get_model
from theory.simulate import FastSimulator, Simulator, expected_counts, pseudo_data

LUMI = 140.0


@pytest.fixture(scope="module")
def sim() -> FastSimulator:
    return FastSimulator()


@pytest.fixture(scope="module")
def background(sim: FastSimulator) -> ak.Array:
    return sim.background(n_events=40_000, luminosity_fb=LUMI, seed=11)


def pair_mass(first: ak.Array, second: ak.Array) -> np.ndarray:
    def cartesian(c: ak.Array) -> tuple[np.ndarray, ...]:
        pt, eta, phi, m = (
            ak.to_numpy(c[f]).astype(np.float64) for f in ("pt", "eta", "phi", "mass")
        )
        px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
        return px, py, pz, np.sqrt(px**2 + py**2 + pz**2 + m**2)

    a, b = cartesian(first), cartesian(second)
    e, x, y, z = a[3] + b[3], a[0] + b[0], a[1] + b[1], a[2] + b[2]
    return np.sqrt(np.maximum(e**2 - x**2 - y**2 - z**2, 0))


def flat(events: ak.Array) -> dict[str, np.ndarray]:
    out = {f: ak.to_numpy(events[f]) for f in ("met", "met_phi", "weight")}
    for name in (*COLLECTIONS, "fatjet"):
        for field in events[name].fields:
            out[f"{name}.{field}"] = ak.to_numpy(ak.flatten(events[name][field]))
        out[f"{name}.n"] = ak.to_numpy(ak.num(events[name]))
    return out


def test_protocol_and_validation(sim: FastSimulator, background: ak.Array) -> None:
    assert isinstance(sim, Simulator)
    validate_events(background)
    assert len(background) == 40_000
    assert "fatjet" in background.fields
    for name in COLLECTIONS:
        pt = background[name].pt
        assert ak.all(pt[:, 1:] <= pt[:, :-1])
    assert ak.to_numpy(ak.flatten(background.jet.pt)).dtype == np.float32


def test_fixed_seed_gives_identical_events(sim: FastSimulator) -> None:
    a = flat(sim.background(n_events=5000, luminosity_fb=LUMI, seed=5))
    b = flat(sim.background(n_events=5000, luminosity_fb=LUMI, seed=5))
    c = flat(sim.background(n_events=5000, luminosity_fb=LUMI, seed=6))
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert not np.array_equal(a["met"], c["met"])


def test_weights_normalised_to_luminosity(sim: FastSimulator, background: ak.Array) -> None:
    total = sum(p.xsec_pb for p in PROCESSES.values()) * LUMI * 1000
    assert expected_counts(background) == pytest.approx(total, rel=1e-9)
    allocation = sim.allocate(40_000)
    assert sum(allocation.values()) == 40_000
    assert min(allocation.values()) >= 0.02 * 40_000 - 1
    assert allocation["qcd"] > allocation["wjets"] > allocation["ttbar"]


def test_allocation_floor_and_process_subset() -> None:
    sim = FastSimulator(processes=("zmumu", "ttbar"), min_fraction=0.1)
    allocation = sim.allocate(1001)
    assert sum(allocation.values()) == 1001
    share = 0.1 + 0.8 * 2000 / 2832
    assert abs(allocation["zmumu"] - 1001 * share) <= 1
    events = sim.background(n_events=2000, luminosity_fb=1.0, seed=1)
    assert expected_counts(events) == pytest.approx((2000 + 832) * 1000)


def test_bad_options_name_the_allowed_values(sim: FastSimulator) -> None:
    with pytest.raises(ValueError, match="allowed: qcd, wjets"):
        FastSimulator(processes=("qcd", "susy"))
    with pytest.raises(KeyError, match="allowed: qcd"):
        sim.process("higgs", n_events=10, luminosity_fb=1, seed=0)
    with pytest.raises(ValueError, match="n_events = 0"):
        sim.background(n_events=0, luminosity_fb=1, seed=0)
    with pytest.raises(ValueError, match="luminosity_fb = -1"):
        sim.background(n_events=10, luminosity_fb=-1, seed=0)
    with pytest.raises(ValueError, match="outside"):
        sim.signal(get_model("wprime"), {"mass": 10.0}, n_events=10, luminosity_fb=1, seed=0)


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_simulates_valid_events(sim: FastSimulator, name: str) -> None:
    model = get_model(name)
    point = model.space.as_dicts(model.space.sample(1, seed=4))[0]
    events = sim.signal(model, point, n_events=3000, luminosity_fb=LUMI, seed=2)
    validate_events(events, source=name)
    assert expected_counts(events) == pytest.approx(model.cross_section_pb(point) * LUMI * 1000)
    again = sim.signal(model, point, n_events=3000, luminosity_fb=LUMI, seed=2)
    np.testing.assert_array_equal(ak.to_numpy(events.met), ak.to_numpy(again.met))
    validate_events(
        concatenate([events, sim.process("ttbar", n_events=100, luminosity_fb=1, seed=1)])
    )


def test_z_to_mumu_multiplicity_and_peak(sim: FastSimulator) -> None:
    events = sim.process("zmumu", n_events=30_000, luminosity_fb=LUMI, seed=3)
    n_mu = ak.to_numpy(ak.num(events.muon))
    assert np.mean(n_mu == 2) > 0.5
    assert np.mean(n_mu == 2) > np.mean(n_mu == 1) + np.mean(n_mu == 0)
    two = events.muon[n_mu == 2]
    opposite = ak.to_numpy(two.charge[:, 0] * two.charge[:, 1]) == -1
    assert np.mean(opposite) > 0.999, "only a fake muon (random charge) may give a same-sign pair"
    mass = pair_mass(two[:, 0], two[:, 1])
    weight = ak.to_numpy(events.weight[n_mu == 2])
    peak = (mass > 81) & (mass < 101)
    assert np.ptp(weight[peak]) < 1e-9 * weight[peak].max(), "the Z peak is not reweighted"
    assert np.median(mass[peak]) == pytest.approx(91.19, abs=0.5)
    assert 1.0 < stats.iqr(mass[peak]) / 2 < 4.0
    assert 0.005 < weight[mass > 120].sum() / weight.sum() < 0.03
    assert np.mean(mass > 120) > 0.15, "the Drell-Yan mass tail gets a quarter of the events"


def test_w_transverse_mass_has_jacobian_edge(sim: FastSimulator) -> None:
    events = sim.process("wjets", n_events=30_000, luminosity_fb=LUMI, seed=4)
    one = ak.to_numpy(ak.num(events.muon)) == 1
    mu = events.muon[one][:, 0]
    met, met_phi = ak.to_numpy(events.met[one]), ak.to_numpy(events.met_phi[one])
    pt, phi = ak.to_numpy(mu.pt), ak.to_numpy(mu.phi)
    mt = np.sqrt(2 * pt * met * (1 - np.cos(phi - met_phi)))
    counts, edges = np.histogram(mt, bins=np.arange(0, 160, 5))
    peak = edges[np.argmax(counts)]
    assert 60 <= peak <= 85
    assert np.mean(mt > 100) < 0.05
    assert np.mean((mt > 50) & (mt < 90)) > 0.5


def test_top_pairs_have_b_jets_and_qcd_has_jets(sim: FastSimulator) -> None:
    tt = sim.process("ttbar", n_events=10_000, luminosity_fb=LUMI, seed=5)
    n_b = ak.to_numpy(ak.sum(tt.jet.btag, axis=1))
    assert n_b.mean() > 1.2
    assert np.mean(n_b >= 1) > 0.8
    assert ak.mean(ak.num(tt.jet)) > 4
    qcd = sim.process("qcd", n_events=10_000, luminosity_fb=LUMI, seed=5)
    assert np.mean(ak.to_numpy(ak.num(qcd.jet)) >= 2) > 0.9
    assert ak.mean(ak.num(qcd.muon)) < 0.01
    assert ak.mean(ak.sum(qcd.jet.btag, axis=1)) < 0.2
    znunu = sim.process("znunu", n_events=10_000, luminosity_fb=LUMI, seed=5)
    assert np.median(ak.to_numpy(znunu.met)) > 100
    gamma = sim.process("gammajets", n_events=10_000, luminosity_fb=LUMI, seed=5)
    assert np.mean(ak.to_numpy(ak.num(gamma.photon)) >= 1) > 0.75


def test_zprime_to_mumu_peaks_at_its_mass(sim: FastSimulator) -> None:
    model = get_model("zprime", channels=("mumu",))
    events = sim.signal(
        model, {"mass": 1500.0, "g": 0.3}, n_events=10_000, luminosity_fb=LUMI, seed=7
    )
    two = events.muon[ak.num(events.muon) >= 2]
    assert len(two) > 0.7 * 10_000
    mass = pair_mass(two[:, 0], two[:, 1])
    assert np.median(mass) == pytest.approx(1500, rel=0.01)
    assert stats.iqr(mass) / 2 < 0.05 * 1500


def test_x_to_yz_gives_two_prong_fat_jets(sim: FastSimulator) -> None:
    signal = sim.signal(
        get_model("x_yz"), {"m_X": 3500.0, "m_Y": 500.0}, n_events=5000, luminosity_fb=LUMI, seed=1
    )
    fat = signal.fatjet[ak.num(signal.fatjet) >= 2][:, :2]
    masses = np.sort(ak.to_numpy(fat.mass), axis=1)
    y_window = masses[:, 1][(masses[:, 1] > 350) & (masses[:, 1] < 650)]
    z_window = masses[:, 0][(masses[:, 0] > 50) & (masses[:, 0] < 150)]
    assert len(y_window) > 0.5 * len(signal) and len(z_window) > 0.5 * len(signal)
    assert np.median(y_window) == pytest.approx(500, rel=0.03)
    assert np.median(z_window) == pytest.approx(100, rel=0.05)
    qcd = sim.process("qcd", n_events=5000, luminosity_fb=LUMI, seed=1)
    signal_tau21 = np.median(ak.to_numpy(ak.flatten(fat.tau21)))
    qcd_tau21 = np.median(ak.to_numpy(ak.flatten(qcd.fatjet.tau21)))
    assert signal_tau21 < qcd_tau21 - 0.15


def test_dark_matter_gives_jet_plus_met(sim: FastSimulator) -> None:
    events = sim.signal(
        get_model("dm_mediator"),
        {"m_med": 1000.0, "m_chi": 10.0},
        n_events=5000,
        luminosity_fb=LUMI,
        seed=1,
    )
    assert np.median(ak.to_numpy(events.met)) > 150
    assert np.mean(ak.to_numpy(ak.num(events.jet)) >= 1) > 0.95


def test_tail_boost_keeps_distributions_and_fills_tails() -> None:
    plain = FastSimulator(processes=("gammajets",))
    boosted = FastSimulator(processes=("gammajets",), tail_boost=3.0)
    a = plain.background(n_events=40_000, luminosity_fb=1.0, seed=1)
    b = boosted.background(n_events=40_000, luminosity_fb=1.0, seed=1)

    def hard_photon(events: ak.Array) -> np.ndarray:
        pt = ak.to_numpy(ak.fill_none(ak.firsts(events.photon.pt), 0.0))
        return pt > 600

    wa, wb = ak.to_numpy(a.weight), ak.to_numpy(b.weight)
    ha, hb = hard_photon(a), hard_photon(b)
    assert hb.sum() > 5 * ha.sum() > 0
    frac_a, frac_b = wa[ha].sum() / wa.sum(), wb[hb].sum() / wb.sum()
    err = math.hypot(math.sqrt((wa[ha] ** 2).sum()), math.sqrt((wb[hb] ** 2).sum())) / wa.sum()
    assert abs(frac_a - frac_b) < 4 * err


def test_pseudo_data_expectation_equals_sum_of_weights(background: ak.Array) -> None:
    events = background[:2000]
    events = ak.with_field(events, ak.to_numpy(events.weight) * 1e-6, "weight")
    expected = expected_counts(events)
    totals = np.array([expected_counts(pseudo_data(events, seed=s)) for s in range(300)])
    assert abs(totals.mean() - expected) < 4 * math.sqrt(expected / 300)
    assert totals.var(ddof=1) == pytest.approx(expected, rel=0.25)
    one = pseudo_data(events, seed=1)
    validate_events(one)
    weights = ak.to_numpy(one.weight)
    assert (weights >= 1).all() and (weights == np.round(weights)).all()
    np.testing.assert_array_equal(
        ak.to_numpy(pseudo_data(events, seed=3).met), ak.to_numpy(pseudo_data(events, seed=3).met)
    )


def test_pseudo_data_counts_in_a_selection_are_poisson(background: ak.Array) -> None:
    events = ak.with_field(background, ak.to_numpy(background.weight) * 2e-7, "weight")
    mask_of = lambda e: ak.to_numpy(ak.num(e.jet)) >= 4  # noqa: E731
    expected = expected_counts(events, mask_of(events))
    counts = [
        expected_counts(d, mask_of(d)) for d in (pseudo_data(events, seed=s) for s in range(200))
    ]
    assert (
        stats.kstest(
            stats.norm.cdf((np.array(counts) - expected) / math.sqrt(expected)), "uniform"
        ).pvalue
        > 0.001
    )


def test_unit_weight_pseudo_data(background: ak.Array) -> None:
    events = ak.with_field(background[:3000], np.full(3000, 0.5), "weight")
    sizes = [len(pseudo_data(events, seed=s, unit_weights=True)) for s in range(200)]
    assert abs(np.mean(sizes) - 1500) < 4 * math.sqrt(1500 / 200)
    data = pseudo_data(events, seed=1, unit_weights=True)
    assert (ak.to_numpy(data.weight) == 1).all()
    with pytest.raises(ValueError, match="max_events=10"):
        pseudo_data(events, seed=1, unit_weights=True, max_events=10)
    negative = ak.with_field(events, np.full(3000, -1.0), "weight")
    with pytest.raises(ValueError, match="field 'weight' has negative values"):
        pseudo_data(negative, seed=1)
