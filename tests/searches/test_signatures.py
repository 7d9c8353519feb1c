"""Event classes: properties over random events (hypothesis) and worked examples."""

from __future__ import annotations

import math
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from pydantic import ValidationError

from searches import signatures
from searches.events import make_collection, make_events, read_parquet, write_parquet
from searches.signatures import (
    TOKENS,
    ObjectCut,
    SignatureConfig,
    class_mask,
    class_name_from_counts,
    classify,
    exclusive_class_names,
    multiplicities,
    parse_class_name,
    populated_classes,
    select_objects,
)

COLLECTION_TOKENS = {"electron": "e", "muon": "mu", "tau": "tau", "photon": "gamma"}
CUT_VALUES = [0.0, 20.0, 25.0, 40.0, 50.0, 2.37, 2.47, 2.5, 2.8]

# ---------------------------------------------------------------- building events


def build_events(rows: list[dict]) -> ak.Array:
    """Events from per-event dicts: collection -> [(pt, eta, phi, btag)], plus met, weight."""
    collections = {}
    for name in ("electron", "muon", "tau", "photon", "jet"):
        per_event = [sorted(row.get(name, []), key=lambda o: -o[0]) for row in rows]
        counts = np.array([len(objs) for objs in per_event], dtype=np.int64)
        flat = [obj for objs in per_event for obj in objs]
        columns = {
            "pt": np.array([o[0] for o in flat], dtype=np.float32),
            "eta": np.array([o[1] for o in flat], dtype=np.float32),
            "phi": np.array([o[2] for o in flat], dtype=np.float32),
            "mass": np.zeros(len(flat), dtype=np.float32),
        }
        if name == "jet":
            columns["btag"] = np.array([o[3] for o in flat], dtype=bool)
        elif name != "photon":
            columns["charge"] = np.ones(len(flat), dtype=np.int8)
        collections[name] = make_collection(counts, **columns)
    return make_events(
        collections,
        met=np.array([row["met"] for row in rows], dtype=np.float64),
        met_phi=np.zeros(len(rows)),
        weight=np.array([row.get("weight", 1.0) for row in rows], dtype=np.float64),
    )


f32 = {"width": 32, "allow_nan": False, "allow_infinity": False}
pts = st.one_of(st.sampled_from(CUT_VALUES), st.floats(0.0, 200.0, **f32))
etas = st.one_of(
    st.sampled_from([c * s for c in CUT_VALUES for s in (-1, 1)]), st.floats(-4.0, 4.0, **f32)
)
MAX_OBJECTS = {"electron": 3, "muon": 3, "tau": 2, "photon": 2, "jet": 9}


@st.composite
def event_rows(draw, max_events: int = 15) -> list[dict]:
    """Random events as per-event dicts; columns are drawn as whole arrays (fast to generate)."""
    n = draw(st.integers(1, max_events))
    rows: list[dict] = [{} for _ in range(n)]
    for name, size in MAX_OBJECTS.items():
        counts = draw(hnp.arrays(np.int64, n, elements=st.integers(0, size)))
        total = int(counts.sum())
        pt = draw(hnp.arrays(np.float32, total, elements=pts))
        eta = draw(hnp.arrays(np.float32, total, elements=etas))
        phi = draw(hnp.arrays(np.float32, total, elements=st.floats(-3.0, 3.0, **f32)))
        btag = draw(hnp.arrays(bool, total, elements=st.booleans()))
        start = 0
        for row, count in zip(rows, counts, strict=True):
            stop = start + int(count)
            row[name] = [
                (float(pt[k]), float(eta[k]), float(phi[k]), bool(btag[k]))
                for k in range(start, stop)
            ]
            start = stop
    met = draw(
        hnp.arrays(
            np.float32,
            n,
            elements=st.one_of(st.sampled_from([0.0, 100.0, 150.0]), st.floats(0, 300, **f32)),
        )
    )
    weight = draw(hnp.arrays(np.float32, n, elements=st.floats(-1.0, 3.0, **f32)))
    for row, m, w in zip(rows, met, weight, strict=True):
        row["met"], row["weight"] = float(m), float(w)
    return rows


cuts = st.builds(
    ObjectCut, pt=st.sampled_from(CUT_VALUES[:5]), abs_eta=st.sampled_from(CUT_VALUES[5:])
)
configs = st.builds(
    SignatureConfig,
    electron=cuts,
    muon=cuts,
    tau=cuts,
    photon=cuts,
    jet=cuts,
    bjet=cuts,
    met_min=st.sampled_from([0.0, 50.0, 100.0, 150.0]),
    max_jets=st.integers(1, 7),
)

# ---------------------------------------------------------------- independent reference


def passes(obj: tuple, cut: ObjectCut) -> bool:
    pt, eta = float(np.float32(obj[0])), float(np.float32(obj[1]))
    return pt >= cut.pt and abs(eta) <= cut.abs_eta


def reference_counts(row: dict, config: SignatureConfig) -> dict[str, int]:
    counts = {
        token: sum(passes(o, getattr(config, name)) for o in row.get(name, []))
        for name, token in COLLECTION_TOKENS.items()
    }
    jets = row.get("jet", [])
    counts["j"] = sum(passes(o, config.jet) for o in jets if not o[3])
    counts["b"] = sum(passes(o, config.bjet) for o in jets if o[3])
    counts["MET"] = int(float(np.float64(row["met"])) >= config.met_min)
    return counts


def reference_capped(counts: dict[str, int], max_jets: int) -> dict[str, int]:
    b = min(counts["b"], max_jets)
    return {**counts, "b": b, "j": min(counts["j"], max_jets - b)}


def reference_name(counts: dict[str, int], max_jets: int) -> str:
    capped = reference_capped(counts, max_jets)
    overflow = counts["j"] + counts["b"] >= max_jets
    parts = [f"{capped[t]}{t}" for t in ("e", "mu", "tau", "gamma", "j", "b") if capped[t]]
    if overflow:
        index = next(i for i, p in enumerate(parts) if p.endswith("j")) if capped["j"] else -1
        parts[index] += "+"
    if capped["MET"]:
        parts.append("MET")
    return "_".join(parts) or "empty"


# ---------------------------------------------------------------- properties

SETTINGS = settings(max_examples=40, deadline=None)


@SETTINGS
@given(rows=event_rows(), config=configs)
def test_multiplicities_and_names_match_the_reference(
    rows: list[dict], config: SignatureConfig
) -> None:
    events = build_events(rows)
    counted = multiplicities(events, config)
    names = exclusive_class_names(events, config)
    assert names.dtype == object and names.shape == (len(rows),)
    for i, row in enumerate(rows):
        expected = reference_counts(row, config)
        assert {t: int(counted[t][i]) for t in TOKENS} == expected
        assert names[i] == reference_name(expected, config.max_jets)


@SETTINGS
@given(rows=event_rows(), config=configs)
def test_every_event_in_exactly_one_exclusive_class(
    rows: list[dict], config: SignatureConfig
) -> None:
    events = build_events(rows)
    names = exclusive_class_names(events, config)
    present = sorted(set(names))
    masks = np.stack([class_mask(events, name, config=config) for name in present])
    assert (masks.sum(axis=0) == 1).all()
    for name, mask in zip(present, masks, strict=True):
        assert (names[mask] == name).all()
    table = populated_classes(events, config)
    assert sum(table[name] for name in present) == len(rows)
    assert {k for k in table if not k.endswith(("+X", "+NJet"))} == set(present)


@SETTINGS
@given(rows=event_rows(), config=configs)
def test_names_parse_back_to_their_multiplicities(
    rows: list[dict], config: SignatureConfig
) -> None:
    events = build_events(rows)
    names = exclusive_class_names(events, config)
    for name, row in zip(names, rows, strict=True):
        raw = reference_counts(row, config)
        capped = reference_capped(raw, config.max_jets)
        for view, suffix in (("exclusive", ""), ("inclusive", "+X"), ("jet_inclusive", "+NJet")):
            counts, parsed_view = parse_class_name(name + suffix, config=config)
            assert parsed_view == view
            assert {t: counts[t] for t in TOKENS} == capped
            assert counts["jet_overflow"] == int(raw["j"] + raw["b"] >= config.max_jets)
        assert class_name_from_counts(capped, max_jets=config.max_jets) == name


@SETTINGS
@given(rows=event_rows(), config=configs)
def test_views_contain_their_exclusive_parents(rows: list[dict], config: SignatureConfig) -> None:
    events = build_events(rows)
    table = populated_classes(events, config)
    weighted = populated_classes(events, config, weighted=True)
    weights = events.weight.to_numpy()
    for name in set(exclusive_class_names(events, config)):
        exclusive = class_mask(events, name, config=config)
        inclusive = class_mask(events, name + "+X", config=config)
        jet_inclusive = class_mask(events, name + "+NJet", config=config)
        assert (inclusive >= exclusive).all()
        assert (jet_inclusive >= exclusive).all()
        assert (inclusive >= jet_inclusive).all()
        for key, mask in (
            (name, exclusive),
            (name + "+X", inclusive),
            (name + "+NJet", jet_inclusive),
        ):
            assert table[key] == int(mask.sum())
            assert math.isclose(weighted[key], float(weights[mask].sum()), abs_tol=1e-9)


@SETTINGS
@given(rows=event_rows(), config=configs)
def test_inclusive_view_means_at_least_those_capped_objects(
    rows: list[dict], config: SignatureConfig
) -> None:
    events = build_events(rows)
    capped = [reference_capped(reference_counts(r, config), config.max_jets) for r in rows]
    for name in set(exclusive_class_names(events, config)):
        parent, _ = parse_class_name(name)
        inclusive = class_mask(events, name + "+X", config=config)
        jet_inclusive = class_mask(events, name + "+NJet", config=config)
        for i, counts in enumerate(capped):
            assert inclusive[i] == all(counts[t] >= parent[t] for t in TOKENS)
            same = all(counts[t] == parent[t] for t in ("e", "mu", "tau", "gamma", "MET"))
            more_jets = counts["j"] >= parent["j"] and counts["b"] >= parent["b"]
            assert jet_inclusive[i] == (same and more_jets)


@SETTINGS
@given(
    rows=event_rows(), config=configs, raise_pt=st.floats(0.0, 60.0), lower_eta=st.floats(0.0, 1.0)
)
def test_tighter_thresholds_never_increase_multiplicities(
    rows: list[dict], config: SignatureConfig, raise_pt: float, lower_eta: float
) -> None:
    def tighter(cut: ObjectCut) -> ObjectCut:
        return ObjectCut(pt=cut.pt + raise_pt, abs_eta=max(cut.abs_eta - lower_eta, 0.1))

    tight = config.model_copy(
        update={
            **{
                name: tighter(getattr(config, name))
                for name in ("electron", "muon", "tau", "photon", "jet", "bjet")
            },
            "met_min": config.met_min + raise_pt,
        }
    )
    events = build_events(rows)
    loose_counts, tight_counts = multiplicities(events, config), multiplicities(events, tight)
    for token in TOKENS:
        assert (tight_counts[token] <= loose_counts[token]).all()


@SETTINGS
@given(rows=event_rows(), config=configs)
def test_objects_below_thresholds_are_never_counted(
    rows: list[dict], config: SignatureConfig
) -> None:
    events = build_events(rows)
    selected = select_objects(events, config)
    for name in ("electron", "muon", "tau", "photon", "jet", "bjet"):
        cut = getattr(config, name)
        pt = ak.flatten(selected[name].pt).to_numpy().astype(np.float64)
        eta = ak.flatten(selected[name].eta).to_numpy().astype(np.float64)
        assert (pt >= cut.pt).all() and (np.abs(eta) <= cut.abs_eta).all()
    assert not ak.any(selected.jet.btag) and ak.all(selected.bjet.btag)
    counted = multiplicities(events, config)
    for name, token in (*COLLECTION_TOKENS.items(), ("jet", "j"), ("bjet", "b")):
        assert (ak.num(selected[name], axis=1).to_numpy() == counted[token]).all()


@SETTINGS
@given(rows=event_rows(), config=configs)
def test_jet_cap(rows: list[dict], config: SignatureConfig) -> None:
    events = build_events(rows)
    raw = multiplicities(events, config)
    names = exclusive_class_names(events, config)
    for i, name in enumerate(names):
        counts, _ = parse_class_name(name)
        total = int(raw["j"][i] + raw["b"][i])
        assert counts["j"] + counts["b"] == min(total, config.max_jets)
        assert ("+" in name) == (total >= config.max_jets)
        assert counts["b"] == min(int(raw["b"][i]), config.max_jets)


@settings(max_examples=25, deadline=None)
@given(rows=event_rows(max_events=40), config=configs)
def test_key_paths_agree(rows: list[dict], config: SignatureConfig) -> None:
    events = build_events(rows)
    dense = classify(events, config)
    limit = signatures._DENSE_KEY_LIMIT
    try:
        signatures._DENSE_KEY_LIMIT = 0
        sparse = classify(events, config)
    finally:
        signatures._DENSE_KEY_LIMIT = limit
    assert dense.names == sparse.names
    assert (dense.codes == sparse.codes).all()
    assert (dense.counts == sparse.counts).all()


# ---------------------------------------------------------------- examples


def example_events() -> ak.Array:
    mu = (60.0, 0.1, 0.0, False)
    e = (30.0, -1.0, 2.0, False)
    light = (70.0, 0.5, -2.0, False)
    bjet = (80.0, 0.3, 1.0, True)
    soft_jet = (20.0, 0.0, 0.0, False)
    forward_e = (100.0, 2.6, 0.0, False)
    rows = [
        {"met": 20.0},
        {"electron": [e], "muon": [mu], "jet": [light, light, bjet], "met": 150.0},
        {"muon": [mu, mu], "jet": [soft_jet], "met": 99.9},
        {"electron": [forward_e], "jet": [light] * 7, "met": 100.0},
        {"jet": [bjet] * 7 + [light], "met": 0.0},
        {"jet": [light] * 4 + [bjet] * 2, "met": 0.0},
        {"jet": [light] * 5, "met": 0.0},
        {"photon": [(26.0, 1.0, 0.0, False)], "tau": [(45.0, 0.0, 1.0, False)], "met": 300.0},
    ]
    return build_events(rows)


def test_example_class_names() -> None:
    names = exclusive_class_names(example_events(), SignatureConfig())
    assert names.tolist() == [
        "empty",
        "1e_1mu_2j_1b_MET",
        "2mu",
        "6j+_MET",
        "6b+",
        "4j+_2b",
        "5j",
        "1tau_1gamma_MET",
    ]


def test_example_views() -> None:
    events, config = example_events(), SignatureConfig()
    assert class_mask(events, "1mu+X", config=config).tolist() == [0, 1, 1, 0, 0, 0, 0, 0]
    assert class_mask(events, "empty+NJet", config=config).tolist() == [1, 0, 0, 0, 1, 1, 1, 0]
    assert class_mask(events, "2j+X", config=config).tolist() == [0, 1, 0, 1, 0, 1, 1, 0]
    assert class_mask(events, "1b+NJet", config=config).tolist() == [0, 0, 0, 0, 1, 1, 0, 0]
    assert class_mask(events, "MET+X", config=config).tolist() == [0, 1, 0, 1, 0, 0, 0, 1]
    assert class_mask(events, "empty+X", config=config).all()
    table = populated_classes(events, config)
    assert table["empty+NJet"] == 4 and table["5j+NJet"] == 1 and table["empty+X"] == 8
    only_inclusive = populated_classes(events, config.model_copy(update={"views": ("inclusive",)}))
    assert all(name.endswith("+X") for name in only_inclusive)
    assert len(only_inclusive) == 8


def test_met_flag_threshold_is_inclusive() -> None:
    events = example_events()
    flags = multiplicities(events, SignatureConfig(met_min=100.0))["MET"]
    assert flags.tolist() == [False, True, False, True, False, False, False, True]


def test_object_on_the_threshold_is_counted() -> None:
    at = build_events([{"muon": [(25.0, 2.5, 0.0, False)], "met": 0.0}])
    above_eta = build_events([{"electron": [(30.0, 2.47, 0.0, False)], "met": 0.0}])
    assert exclusive_class_names(at, SignatureConfig()).tolist() == ["1mu"]
    # float32(2.47) is 2.4700000286..., beyond the cut at 2.47: cuts compare as float64.
    assert exclusive_class_names(above_eta, SignatureConfig()).tolist() == ["empty"]


def test_lower_jet_cap_moves_events_to_capped_classes() -> None:
    names = exclusive_class_names(example_events(), SignatureConfig(max_jets=3))
    assert names.tolist() == [
        "empty",
        "1e_1mu_2j+_1b_MET",
        "2mu",
        "3j+_MET",
        "3b+",
        "1j+_2b",
        "3j+",
        "1tau_1gamma_MET",
    ]


def test_overlap_removal_drops_jets_near_selected_leptons() -> None:
    muon = (60.0, 0.0, 3.1, False)
    jets = [(90.0, 0.1, -3.1, False), (80.0, 0.0, 0.0, True), (70.0, 1.5, 3.1, False)]
    soft_muon = (10.0, 0.0, 0.0, False)
    events = build_events([{"muon": [muon, soft_muon], "jet": jets, "met": 0.0}])
    assert exclusive_class_names(events, SignatureConfig()).tolist() == ["1mu_2j_1b"]
    cleaned = SignatureConfig(overlap_dr=0.4)
    # The first jet is ΔR ≈ 0.12 from the muon across φ = ±π; the b-jet overlaps only a
    # muon below threshold, which does not count.
    assert exclusive_class_names(events, cleaned).tolist() == ["1mu_1j_1b"]
    selected = select_objects(events, cleaned)
    assert selected.jet.pt.tolist() == [[70.0]]
    assert selected.bjet.pt.tolist() == [[80.0]]


def test_sliced_and_reread_events_classify_the_same(tmp_path: Path) -> None:
    events = example_events()
    config = SignatureConfig()
    expected = exclusive_class_names(events, config)
    sliced = events[::-1][::-1]
    assert exclusive_class_names(sliced, config).tolist() == expected.tolist()
    back = read_parquet(write_parquet(events, tmp_path / "e.parquet"))
    assert exclusive_class_names(back, config).tolist() == expected.tolist()
    odd = events[np.array([1, 3, 5])]
    assert exclusive_class_names(odd, config).tolist() == expected[[1, 3, 5]].tolist()


def test_no_events_gives_no_classes() -> None:
    events = example_events()[:0]
    config = SignatureConfig()
    assert exclusive_class_names(events, config).shape == (0,)
    assert populated_classes(events, config) == {}
    assert class_mask(events, "1mu+X", config=config).shape == (0,)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "non-empty"),
        ("1mu_1e", "out of order"),
        ("1e_1e", "out of order"),
        ("0mu", "malformed token '0mu'"),
        ("2x", "malformed token '2x'"),
        ("MET_1e", "'MET' must be the last"),
        ("1mu+Y", "malformed token"),
        ("+X", "malformed token ''"),
        ("1mu+", "jet-cap mark '+' is allowed on 'j' or 'b' only"),
        ("2j_4b+", "goes on the 'j' token"),
        ("1e__1mu", "malformed token ''"),
    ],
)
def test_malformed_names_raise_clear_errors(name: str, message: str) -> None:
    with pytest.raises(ValueError, match=r"allowed|order|last|non-empty|goes on") as caught:
        parse_class_name(name)
    assert message in str(caught.value)


def test_names_inconsistent_with_the_jet_cap() -> None:
    config = SignatureConfig(max_jets=6)
    with pytest.raises(ValueError, match=r"capped class '4j\+_2b\+X'"):
        class_mask(example_events(), "4j_2b+X", config=config)
    with pytest.raises(ValueError, match="needs j \\+ b == max_jets"):
        parse_class_name("3j+", config=config)
    counts, view = parse_class_name("6b++NJet", config=config)
    assert (counts["b"], counts["jet_overflow"], view) == (6, 1, "jet_inclusive")


def test_parse_examples() -> None:
    counts, view = parse_class_name("1e_1mu_2j_1b_MET")
    assert view == "exclusive"
    assert counts == {
        "e": 1,
        "mu": 1,
        "tau": 0,
        "gamma": 0,
        "j": 2,
        "b": 1,
        "MET": 1,
        "jet_overflow": 0,
    }
    assert parse_class_name("empty+X")[0]["MET"] == 0
    assert parse_class_name("12j_3tau+NJet".replace("12j_3tau", "3tau_12j"))[0]["j"] == 12


def test_config_defaults_and_round_trip() -> None:
    config = SignatureConfig()
    assert (config.electron.pt, config.electron.abs_eta) == (25.0, 2.47)
    assert (config.tau.pt, config.jet.pt, config.bjet.abs_eta) == (40.0, 50.0, 2.5)
    assert config.met_min == 100.0 and config.max_jets == 6
    assert SignatureConfig.model_validate(config.model_dump()) == config
    import json

    assert SignatureConfig.model_validate(json.loads(json.dumps(config.model_dump()))) == config
    with pytest.raises(ValidationError):
        config.max_jets = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("data", "field", "allowed"),
    [
        ({"views": ["exclusive", "sideways"]}, "views", "exclusive, inclusive, jet_inclusive"),
        ({"leptons": {"pt": 1}}, "leptons", "electron, muon, tau, photon, jet, bjet"),
        ({"muon": {"pt": -1, "abs_eta": 2.5}}, "muon", "greater than or equal to 0"),
        ({"jet": {"pt": 30, "abs_eta": 2.5, "eta": 1}}, "jet", "Extra inputs are not permitted"),
        ({"max_jets": 0}, "max_jets", "greater than or equal to 1"),
        ({"met_min": -5}, "met_min", "greater than or equal to 0"),
        ({"views": ["inclusive", "inclusive"]}, "views", "duplicate"),
    ],
)
def test_config_errors_name_field_and_allowed_values(data: dict, field: str, allowed: str) -> None:
    with pytest.raises(ValidationError) as caught:
        SignatureConfig.model_validate(data)
    message = str(caught.value)
    assert field in message and allowed in message


def test_classification_is_vectorised_at_scale() -> None:
    rng = np.random.default_rng(4)
    n = 200_000
    counts = rng.poisson(3.0, n)
    m = int(counts.sum())
    jets = make_collection(
        counts,
        pt=rng.uniform(20, 200, m).astype(np.float32),
        eta=rng.uniform(-3, 3, m).astype(np.float32),
        phi=rng.uniform(-3, 3, m).astype(np.float32),
        mass=np.zeros(m, dtype=np.float32),
        btag=rng.random(m) < 0.2,
    )
    events = make_events(
        {"jet": jets}, met=rng.exponential(80, n), met_phi=np.zeros(n), weight=np.ones(n)
    )
    classes = classify(events, SignatureConfig())
    assert classes.codes.shape == (n,)
    assert np.bincount(classes.codes).sum() == n
    assert all(parse_class_name(name, config=SignatureConfig()) for name in classes.names)
