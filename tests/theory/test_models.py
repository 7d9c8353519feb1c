from __future__ import annotations

import json
import math

import numpy as np
import pytest

from theory.kinematics import ELECTRON, INVISIBLE, JET, MUON, PHOTON
from theory.models import MODELS, get_model, log_interp, resonance
from theory.models.resonances import ZPRIME_CHANNELS, ZPRIME_XSEC

MASS_PARAMETER = {
    "zprime": "mass",
    "wprime": "mass",
    "qstar": "mass",
    "leptoquark": "mass",
    "dm_mediator": "m_med",
    "x_yz": "m_X",
    "resonance": "mass",
}


def midpoint(name: str) -> dict[str, float]:
    model = get_model(name)
    point = model.space.as_dicts(model.space.from_unit(np.full(model.space.dim, 0.5)))[0]
    if name == "dm_mediator":
        point["m_chi"] = 1.0
    return point


def test_registry_lists_allowed_names() -> None:
    with pytest.raises(KeyError, match="allowed: zprime, wprime, qstar"):
        get_model("zprim")
    with pytest.raises(TypeError, match="unknown options \\['colour'\\]"):
        get_model("zprime", colour="red")
    assert set(MASS_PARAMETER) == set(MODELS)


@pytest.mark.parametrize("name", list(MODELS))
def test_cross_section_falls_with_mass(name: str) -> None:
    model = get_model(name)
    mass_name = MASS_PARAMETER[name]
    parameter = model.space[mass_name]
    point = midpoint(name)
    sigmas = []
    for mass in np.geomspace(parameter.low, parameter.high, 25):
        point[mass_name] = float(mass)
        if name == "x_yz":
            point["m_Y"] = min(point["m_Y"], 0.5 * mass)
        sigmas.append(model.cross_section_pb(point))
    sigmas = np.array(sigmas)
    assert (sigmas > 0).all()
    assert (np.diff(sigmas) < 0).all()
    assert sigmas[0] / sigmas[-1] > 100


@pytest.mark.parametrize("name", ["zprime", "resonance"])
def test_cross_section_scales_with_coupling_squared(name: str) -> None:
    model = get_model(name)
    point = midpoint(name)
    point["g"] = 0.1
    low = model.cross_section_pb(point)
    point["g"] = 0.4
    assert model.cross_section_pb(point) == pytest.approx(16 * low, rel=1e-12)


def test_zprime_reference_value_and_channels() -> None:
    full = get_model("zprime")
    assert full.cross_section_pb({"mass": 1000.0, "g": 0.5}) == pytest.approx(6.0)
    mumu = get_model("zprime", channels=("mumu",))
    assert mumu.cross_section_pb({"mass": 1000.0, "g": 0.5}) == pytest.approx(6.0 * 0.04)
    assert sum(c[4] for c in ZPRIME_CHANNELS.values()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="allowed: ee, mumu, tautau, jj, bb"):
        get_model("zprime", channels=("gg",))


def test_log_interp_hits_nodes_and_extrapolates_monotonically() -> None:
    masses = np.array([m for m, _ in ZPRIME_XSEC])
    np.testing.assert_allclose(log_interp(masses, ZPRIME_XSEC), [s for _, s in ZPRIME_XSEC])
    outside = log_interp(np.array([100.0, 150.0, 8000.0, 9000.0]), ZPRIME_XSEC)
    assert outside[0] > outside[1] > ZPRIME_XSEC[0][1]
    assert ZPRIME_XSEC[-1][1] > outside[2] > outside[3] > 0


def test_dark_matter_phase_space_and_constraint() -> None:
    model = get_model("dm_mediator")
    light = model.cross_section_pb({"m_med": 1000.0, "m_chi": 1.0})
    heavy = model.cross_section_pb({"m_med": 1000.0, "m_chi": 400.0})
    r = 0.4
    assert heavy / light == pytest.approx(
        math.sqrt(1 - 4 * r * r) * (1 + 2 * r * r) / (math.sqrt(1 - 4e-6) * (1 + 2e-6))
    )
    with pytest.raises(ValueError, match="violates constraints \\['m_chi < m_med / 2'\\]"):
        model.cross_section_pb({"m_med": 1000.0, "m_chi": 600.0})


def test_points_are_checked() -> None:
    model = get_model("zprime")
    with pytest.raises(ValueError, match="missing \\['g'\\]"):
        model.cross_section_pb({"mass": 1000.0})
    with pytest.raises(ValueError, match=r"'mass' = 50.0 outside \[200.0, 6000.0\]"):
        model.cross_section_pb({"mass": 50.0, "g": 0.1})
    with pytest.raises(ValueError, match="allowed: e, mu, tau, gamma, j, b"):
        resonance("e", "nu")
    with pytest.raises(ValueError, match="allowed: e, mu, tau"):
        get_model("leptoquark", lepton="q")


@pytest.mark.parametrize("name", list(MODELS))
def test_models_describe_themselves_as_json(name: str) -> None:
    description = get_model(name).describe()
    text = json.dumps(description)
    assert name in text and description["signature"]


@pytest.mark.parametrize("name", list(MODELS))
def test_truth_is_seeded_and_sized(name: str) -> None:
    model = get_model(name)
    point = midpoint(name)
    a, wa = model.truth(point, 500, np.random.default_rng(1))
    b, _ = model.truth(point, 500, np.random.default_rng(1))
    c, _ = model.truth(point, 500, np.random.default_rng(2))
    np.testing.assert_array_equal(a.pt, b.pt)
    assert not np.array_equal(a.pt, c.pt)
    assert wa.shape == (500,)
    assert a.event.min() == 0 and a.event.max() == 499
    assert np.isfinite(a.pt).all() and (a.pt >= 0).all()


def test_leptoquark_beta_sets_channel_mixture() -> None:
    model = get_model("leptoquark", lepton="e")
    beta, n = 0.6, 20_000
    truth, _ = model.truth({"mass": 1000.0, "beta": beta}, n, np.random.default_rng(0))
    electrons = np.bincount(truth.event[truth.kind == ELECTRON], minlength=n)
    fractions = np.bincount(electrons, minlength=3) / n
    expected = [(1 - beta) ** 2, 2 * beta * (1 - beta), beta**2]
    np.testing.assert_allclose(fractions, expected, atol=4 * math.sqrt(0.25 / n))
    assert (np.bincount(truth.event[truth.kind == JET], minlength=n) == 2).all()


def test_resonance_products_and_width() -> None:
    model = resonance("e", "mu")
    point = {"mass": 2000.0, "g": 0.2, "width": 0.1}
    truth, _ = model.truth(point, 5000, np.random.default_rng(3))
    assert set(np.unique(truth.kind)) == {ELECTRON, MUON}
    charges = truth.charge[truth.kind == ELECTRON] * truth.charge[truth.kind == MUON]
    assert (charges == -1).all()
    narrow, _ = model.truth({**point, "width": 0.0}, 5000, np.random.default_rng(3))
    assert model.signature == "X -> e mu"
    assert narrow.pt.std() < truth.pt.std()


def test_qstar_and_wprime_products() -> None:
    qstar, _ = get_model("qstar").truth({"mass": 3000.0}, 1000, np.random.default_rng(0))
    assert sorted(np.unique(qstar.kind)) == [PHOTON, JET]
    wprime, _ = get_model("wprime").truth({"mass": 3000.0}, 1000, np.random.default_rng(0))
    assert (np.bincount(wprime.event[wprime.kind == INVISIBLE]) == 1).all()


def test_x_to_yz_daughters_merge_into_two_prong_jets() -> None:
    model = get_model("x_yz")
    truth, _ = model.truth({"m_X": 3500.0, "m_Y": 500.0}, 2000, np.random.default_rng(0))
    merged = truth.prongs == 2
    # Y (500 GeV) merges when its pT exceeds 2m/0.8, i.e. for sin(theta*) > 0.73: ~68 %.
    assert 0.6 * 2000 < (merged & (truth.mass > 300)).sum() < 0.76 * 2000
    assert (merged & (truth.mass < 300)).sum() > 0.95 * 2000
    masses = np.sort(truth.mass[merged])
    assert np.median(masses[masses > 300]) == pytest.approx(500, rel=0.02)
    assert np.median(masses[masses < 300]) == pytest.approx(100, rel=0.02)
