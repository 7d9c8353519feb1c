from __future__ import annotations

import tempfile
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot
import vector
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from searches.events import EventValidationError, validate_events, write_parquet
from searches.readers import (
    PRESETS,
    BranchMap,
    BranchMapError,
    CollectionMap,
    InputFileError,
    MetMap,
    Sample,
    get_preset,
    inspect_root,
    iterate_root,
    normalise,
    parse_cut,
    read_events,
    read_root,
    sum_of_weights,
)

HEPTUTORIAL = {"qcd": 142, "single_top": 5684, "ww": 4580, "wz": 3367, "zz": 2421}
NANOAOD = "cms-opendata/nanoAOD_2015_CMS_Open_Data_ttbar.root"
ZMUMU = "cms-opendata/zmumu_skim.root"
RNTUPLE = "cms-opendata/Run2012BC_DoubleMuParked_Muons_1000evts_rntuple_v1-0-0-0.root"


def _descending(pt: ak.Array) -> bool:
    return bool(ak.all(pt[:, 1:] <= pt[:, :-1]))


def _same_objects(ours: ak.Array, raw: ak.Array) -> bool:
    """Per event, the same multiset of values (our order is by pt, the file's need not be)."""
    if ak.to_list(ak.num(ours)) != ak.to_list(ak.num(raw)):
        return False
    left = ak.to_numpy(ak.flatten(ak.sort(ours, axis=1))).astype(np.float64)
    right = ak.to_numpy(ak.flatten(ak.sort(raw, axis=1))).astype(np.float64)
    return bool(np.allclose(left, right, rtol=1e-5, atol=1e-5))


# --- real files ---------------------------------------------------------------------------


def test_nanoaod_preset_reads_the_ttbar_file(shared_data: Path) -> None:
    path = shared_data / NANOAOD
    events = read_root(path, preset="nanoaod")
    raw = uproot.open(path)["Events"].arrays(
        ["Jet_pt", "Jet_btagCSVV2", "Electron_pt", "Muon_pt", "Tau_pt", "genWeight", "MET_pt"]
    )
    assert len(events) == 200
    validate_events(events)
    assert ak.sum(ak.num(events.jet)) == ak.sum(ak.num(raw.Jet_pt)) > 0
    assert int(ak.sum(events.jet.btag)) == int(ak.sum(raw.Jet_btagCSVV2 > 0.8)) > 0
    assert ak.sum(ak.num(events.electron)) > 0 and ak.sum(ak.num(events.muon)) > 0
    assert _same_objects(events.tau.pt, raw.Tau_pt)
    assert "fatjet" in events.fields
    for name in ("electron", "muon", "tau", "photon", "jet", "fatjet"):
        assert _descending(events[name].pt), name
    np.testing.assert_array_equal(events.weight, np.asarray(raw.genWeight, dtype=np.float64))
    np.testing.assert_allclose(events.met, np.asarray(raw.MET_pt), rtol=1e-6)


def test_heptutorial_preset_converts_cartesian_momenta(shared_data: Path) -> None:
    for name, expected in HEPTUTORIAL.items():
        path = shared_data / "heptutorial-mc" / f"{name}.root"
        events = read_root(path, preset="heptutorial")
        raw = uproot.open(path)["events"].arrays()
        assert len(events) == expected
        np.testing.assert_allclose(
            ak.sum(events.weight), ak.sum(raw.EventWeight), rtol=1e-6, err_msg=name
        )
        muons = vector.zip(
            {"px": raw.Muon_Px, "py": raw.Muon_Py, "pz": raw.Muon_Pz, "E": raw.Muon_E}
        )
        assert _same_objects(events.muon.eta, muons.eta)
        assert _same_objects(events.muon.pt, muons.pt)
        assert ak.all(events.muon.mass >= 0)
        good_jets = raw.Jet_Px[raw.Jet_ID]
        assert ak.to_list(ak.num(events.jet)) == ak.to_list(ak.num(good_jets))
        assert int(ak.sum(events.jet.btag)) == int(ak.sum(raw.Jet_btag[raw.Jet_ID] > 1.74))
        met = np.hypot(np.asarray(raw.MET_px, np.float64), np.asarray(raw.MET_py, np.float64))
        np.testing.assert_allclose(events.met, met, rtol=1e-6)
        assert ak.sum(ak.num(events.tau)) == 0
        assert _descending(events.jet.pt) and _descending(events.electron.pt)


def test_dimuon_preset_on_the_zmumu_skim(shared_data: Path) -> None:
    events = read_root(shared_data / ZMUMU, preset="dimuon")
    assert len(events) == 83_343
    assert int(ak.sum(ak.num(events.muon) == 2)) == 48_976
    assert _descending(events.muon.pt)
    assert set(np.unique(ak.to_numpy(ak.flatten(events.muon.charge)))) <= {-1, 1}
    assert ak.all(events.met == 0) and ak.all(events.weight == 1)
    for name in ("electron", "tau", "photon", "jet"):
        assert ak.sum(ak.num(events[name])) == 0


def test_rntuple_is_detected_and_read(shared_data: Path) -> None:
    path = shared_data / RNTUPLE
    assert inspect_root(path, preset="dimuon") == ("RNTuple", 1000)
    assert inspect_root(shared_data / ZMUMU, preset="dimuon") == ("TTree", 83_343)
    events = read_root(path, preset="dimuon")
    assert len(events) == 1000
    raw = uproot.open(path)["Events"]["Muon_pt"].array()
    assert _same_objects(events.muon.pt, raw)
    assert _descending(events.muon.pt)


def test_iterate_root_gives_bounded_chunks_that_add_up(shared_data: Path) -> None:
    path = shared_data / ZMUMU
    chunks = list(iterate_root(path, preset="dimuon", step_size=20_000))
    assert [len(c) for c in chunks] == [20_000] * 4 + [3_343]
    whole = read_root(path, preset="dimuon", entry_start=39_990, entry_stop=40_010)
    joined = ak.concatenate([c.muon.pt for c in chunks])[39_990:40_010]
    assert ak.to_list(whole.muon.pt) == ak.to_list(joined)
    tail = read_root(path, preset="dimuon", entry_start=-10)
    assert len(tail) == 10


def test_parquet_round_trip_through_read_events(shared_data: Path, tmp_path: Path) -> None:
    events = read_events(shared_data / "heptutorial-mc" / "zz.root", preset="heptutorial")
    write_parquet(events, tmp_path / "zz.parquet")
    back = read_events(tmp_path / "zz.parquet")
    assert back.fields == events.fields
    assert ak.to_list(back) == ak.to_list(events)
    assert len(read_events(tmp_path / "zz.parquet", entry_start=100, entry_stop=200)) == 100
    with pytest.raises(BranchMapError, match="Parquet files hold the schema"):
        read_events(tmp_path / "zz.parquet", preset="heptutorial")
    (tmp_path / "zz.csv").write_text("x")
    with pytest.raises(InputFileError, match=r"zz\.csv.*'\.csv'; allowed: \.root, \.parquet"):
        read_events(tmp_path / "zz.csv")


def test_sum_of_weights_matches_the_branch(shared_data: Path) -> None:
    path = shared_data / "heptutorial-mc" / "ww.root"
    expected = float(np.sum(np.asarray(uproot.open(path)["events"]["EventWeight"].array(), float)))
    assert sum_of_weights(path, preset="heptutorial", step_size=1000) == pytest.approx(expected)
    assert sum_of_weights(shared_data / ZMUMU, preset="dimuon") == 83_343


# --- Delphes-like file ----------------------------------------------------------------------


def _delphes_file(path: Path, *, n: int = 60, seed: int = 3, with_event: bool = True) -> dict:
    rng = np.random.default_rng(seed)

    def collection(fields: dict) -> ak.Array:
        counts = rng.integers(0, 4, n)
        total = int(counts.sum())
        return ak.zip({k: ak.unflatten(make(total), counts) for k, make in fields.items()})

    def kinematics() -> dict:
        return {
            "PT": lambda m: rng.uniform(5, 300, m).astype(np.float32),
            "Eta": lambda m: rng.uniform(-2.5, 2.5, m).astype(np.float32),
            "Phi": lambda m: rng.uniform(-3.1, 3.1, m).astype(np.float32),
        }

    def charge(m: int) -> np.ndarray:
        return rng.choice([-1, 1], m).astype(np.int32)

    one = np.ones(n, dtype=np.int64)
    data = {
        "Electron": collection({**kinematics(), "Charge": charge}),
        "Muon": collection({**kinematics(), "Charge": charge}),
        "Photon": collection(kinematics()),
        "Jet": collection(
            {
                **kinematics(),
                "Mass": lambda m: rng.uniform(1, 30, m).astype(np.float32),
                "BTag": lambda m: rng.integers(0, 4, m).astype(np.uint32),
                "TauTag": lambda m: (rng.uniform(size=m) < 0.2).astype(np.uint32),
                "Charge": charge,
            }
        ),
        "MissingET": ak.zip(
            {
                "MET": ak.unflatten(rng.uniform(0, 400, n).astype(np.float32), one),
                "Phi": ak.unflatten(rng.uniform(-3.1, 3.1, n).astype(np.float32), one),
            }
        ),
    }
    if with_event:
        data["Event"] = ak.zip({"Weight": ak.unflatten(rng.uniform(0.5, 2, n), one)})
    with uproot.recreate(path) as file:
        file.mktree(
            "Delphes",
            {k: v.type.content for k, v in data.items()},
            field_name=lambda outer, inner: f"{outer}.{inner}",
            counter_name=lambda counted: f"{counted}_size",
        )
        file["Delphes"].extend(data)
    return data


def test_delphes_preset_on_a_delphes_like_file(tmp_path: Path) -> None:
    path = tmp_path / "delphes.root"
    raw = _delphes_file(path)
    events = read_root(path, preset="delphes")
    validate_events(events)
    assert len(events) == 60
    jets = raw["Jet"]
    is_tau = jets.TauTag != 0
    assert _same_objects(events.tau.pt, jets.PT[is_tau])
    assert _same_objects(events.jet.pt, jets.PT[~is_tau])
    assert int(ak.sum(events.jet.btag)) == int(ak.sum((jets.BTag[~is_tau] & 1) != 0))
    assert _same_objects(events.electron.pt, raw["Electron"].PT)
    assert np.allclose(ak.flatten(events.electron.mass), 0.000511)
    assert np.allclose(ak.flatten(events.muon.mass), 0.10566, rtol=1e-6)
    assert ak.sum(events.tau.charge) == ak.sum(jets.Charge[is_tau])
    np.testing.assert_allclose(events.met, ak.flatten(raw["MissingET"].MET), rtol=1e-6)
    np.testing.assert_allclose(events.weight, ak.flatten(raw["Event"].Weight))
    for name in ("electron", "muon", "tau", "photon", "jet"):
        assert _descending(events[name].pt)

    no_weight = tmp_path / "noweight.root"
    _delphes_file(no_weight, with_event=False)
    assert ak.all(read_root(no_weight, preset="delphes").weight == 1)


def test_collections_of_unequal_length_are_caught(tmp_path: Path) -> None:
    path = tmp_path / "delphes.root"
    _delphes_file(path)
    mixed = get_preset("delphes").model_copy(
        update={
            "electron": CollectionMap(
                pt="Electron.PT", eta="Muon.Eta", phi="Electron.Phi", mass=0.0, charge=0
            )
        }
    )
    with pytest.raises(BranchMapError, match=r"Muon\.Eta.*different number of electron"):
        read_root(path, branch_map=mixed)


@settings(max_examples=15, deadline=None)
@given(
    st.lists(
        st.lists(st.floats(0, 1000, allow_nan=False, width=32), max_size=6),
        min_size=1,
        max_size=12,
    )
)
def test_objects_come_out_sorted_by_descending_pt(pts: list[list[float]]) -> None:
    flat = np.array([p for event in pts for p in event], dtype=np.float32)
    counts = np.array([len(event) for event in pts], dtype=np.int64)
    jagged = ak.unflatten(flat, counts)
    zeros = ak.unflatten(np.zeros_like(flat), counts)
    branch_map = BranchMap(
        tree="t", jet=CollectionMap(pt="pt", eta="eta", phi="eta", mass="eta", btag="pt > 500")
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "jets.root"
        with uproot.recreate(path) as file:
            file["t"] = {"pt": jagged, "eta": zeros}
        events = read_root(path, branch_map=branch_map)
    assert _descending(events.jet.pt)
    assert ak.to_list(events.jet.pt) == ak.to_list(ak.sort(jagged, axis=1, ascending=False))
    assert ak.to_list(events.jet.btag) == ak.to_list(events.jet.pt > 500)


# --- strictness -----------------------------------------------------------------------------


def _truncated(source: Path, target: Path, fraction: float) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * fraction)])
    return target


def test_truncated_file_names_file_and_branch(shared_data: Path, tmp_path: Path) -> None:
    bad = _truncated(shared_data / ZMUMU, tmp_path / "cut.root", 0.5)
    with pytest.raises(InputFileError) as info:
        read_root(bad, preset="dimuon")
    assert info.value.source == str(bad)
    assert info.value.field.startswith("Muon_")
    assert "truncated" in str(info.value)

    tiny = _truncated(shared_data / ZMUMU, tmp_path / "tiny.root", 0.001)
    with pytest.raises(InputFileError, match=r"tiny\.root: field 'Events'"):
        read_root(tiny, preset="dimuon")

    (tmp_path / "text.root").write_text("not a ROOT file\n")
    with pytest.raises(InputFileError, match=r"text\.root: field '<file>': not a readable ROOT"):
        read_root(tmp_path / "text.root", preset="dimuon")
    with pytest.raises(InputFileError, match="does not exist"):
        read_root(tmp_path / "absent.root", preset="dimuon")


def test_missing_branch_lists_similar_branches_and_presets(
    shared_data: Path, tmp_path: Path
) -> None:
    with pytest.raises(BranchMapError) as info:
        read_root(shared_data / ZMUMU, preset="nanoaod")
    assert info.value.source == str(shared_data / ZMUMU)
    assert info.value.field == "Electron_pt"
    assert "allowed presets: nanoaod, delphes, heptutorial, dimuon" in str(info.value)
    assert "Muon_pt" in str(info.value)

    typo = BranchMap(tree="Events", muon=CollectionMap(**{**_muon_map(), "pt": "Muon_ptt"}))
    with pytest.raises(BranchMapError, match=r"field 'Muon_ptt'.*similar: Muon_pt"):
        read_root(shared_data / ZMUMU, branch_map=typo)

    with pytest.raises(BranchMapError, match=r"field 'events': no such tree.*: Events"):
        read_root(shared_data / NANOAOD, preset="heptutorial")

    with pytest.raises(BranchMapError, match="unknown preset 'NanoAOD'; allowed: nanoaod"):
        read_root(shared_data / NANOAOD, preset="NanoAOD")


def _muon_map() -> dict:
    return {
        "pt": "Muon_pt",
        "eta": "Muon_eta",
        "phi": "Muon_phi",
        "mass": "Muon_mass",
        "charge": "Muon_charge",
    }


def test_wrong_typed_branches_are_named(shared_data: Path) -> None:
    flat = BranchMap(tree="Events", muon=CollectionMap(**{**_muon_map(), "pt": "nMuon_pt"}))
    with pytest.raises(BranchMapError, match=r"field 'nMuon_pt': expected one value per object"):
        read_root(shared_data / ZMUMU, branch_map=flat, entry_stop=100)

    charge = BranchMap(tree="Events", muon=CollectionMap(**{**_muon_map(), "charge": "Muon_pt"}))
    with pytest.raises(BranchMapError, match=r"field 'Muon_pt': charge .* allowed: -1, 0, 1"):
        read_root(shared_data / ZMUMU, branch_map=charge, entry_stop=100)

    met = BranchMap(tree="Events", met=MetMap(pt="Muon_pt", phi="Muon_phi"))
    with pytest.raises(BranchMapError, match=r"field 'Muon_pt': expected one value per event"):
        read_root(shared_data / ZMUMU, branch_map=met, entry_stop=100)


def test_errors_are_event_validation_errors(shared_data: Path) -> None:
    with pytest.raises(EventValidationError):
        read_root(shared_data / ZMUMU, preset="heptutorial")


def test_branch_map_configuration_is_checked() -> None:
    with pytest.raises(ValidationError, match="either all of pt, eta, phi, mass or all of px"):
        CollectionMap(pt="a", eta="b", phi="c")
    with pytest.raises(ValidationError, match="cannot parse cut"):
        CollectionMap(pt="a", eta="b", phi="c", mass=0.0, btag="Jet_btag >> 1")
    with pytest.raises(ValidationError, match="give either pt and phi, or px and py"):
        MetMap(pt="MET_pt")
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        BranchMap.model_validate({"tree": "t", "muons": {}})
    assert parse_cut("Jet_btagCSVV2 > 0.8") == ("Jet_btagCSVV2", ">", 0.8)
    assert parse_cut("Jet.BTag & 1") == ("Jet.BTag", "&", 1.0)
    assert parse_cut("Jet_ID") == ("Jet_ID", None, None)
    round_trip = BranchMap.model_validate(PRESETS["nanoaod"].model_dump())
    assert round_trip == PRESETS["nanoaod"]


# --- samples and normalisation -------------------------------------------------------------


def test_normalise_gives_cross_section_times_luminosity(shared_data: Path) -> None:
    events = read_root(shared_data / NANOAOD, preset="nanoaod")
    total = float(ak.sum(events.weight))
    scaled = normalise(events, xsec_pb=832.0, luminosity_fb=140.0, sum_of_weights=total)
    assert float(ak.sum(scaled.weight)) == pytest.approx(832.0 * 1000 * 140.0)
    half = normalise(events[:100], xsec_pb=832.0, luminosity_fb=140.0, sum_of_weights=total)
    rest = normalise(events[100:], xsec_pb=832.0, luminosity_fb=140.0, sum_of_weights=total)
    assert float(ak.sum(half.weight) + ak.sum(rest.weight)) == pytest.approx(832.0e3 * 140.0)
    with pytest.raises(ValueError, match="sum_of_weights"):
        normalise(events, xsec_pb=1.0, luminosity_fb=1.0, sum_of_weights=0.0)


def test_sample_configuration(shared_data: Path) -> None:
    sample = Sample(name="ttbar", paths=str(shared_data / NANOAOD), preset="nanoaod", xsec_pb=832.0)
    assert sample.files() == [str(shared_data / NANOAOD)]
    assert sample.needs_sum_of_weights()
    assert sample.scale(luminosity_fb=2.0, measured_sum_of_weights=4.0) == pytest.approx(
        832.0 * 1000 * 2.0 / 4.0
    )
    fixed = Sample(name="t", paths="x.root", preset="nanoaod", xsec_pb=2.0, n_generated=1000)
    assert fixed.scale(luminosity_fb=10.0) == pytest.approx(2.0 * 1000 * 10.0 / 1000)
    tutorial = Sample(
        name="ww",
        paths=str(shared_data / "heptutorial-mc" / "*.root"),
        preset="heptutorial",
        weights_luminosity_fb=0.05,
    )
    assert len(tutorial.files()) == 5
    assert tutorial.scale(luminosity_fb=0.1) == pytest.approx(2.0)
    assert Sample(name="d", paths="d.root", preset="dimuon", kind="data").scale(
        luminosity_fb=5.0
    ) == pytest.approx(1.0)
    with pytest.raises(ValidationError, match="unknown preset 'cms'; allowed: nanoaod"):
        Sample(name="x", paths="x.root", preset="cms")
    with pytest.raises(ValidationError, match="allowed only for kind='mc'"):
        Sample(name="x", paths="x.root", preset="dimuon", kind="data", xsec_pb=1.0)
    with pytest.raises(ValidationError, match="exactly one of preset"):
        Sample(name="x", paths="x.root")
    with pytest.raises(ValidationError, match="String should match pattern"):
        Sample(name="a/b", paths="x.root", preset="dimuon")
    empty = Sample(name="x", paths=str(shared_data / "nothing-*.root"), preset="dimuon")
    with pytest.raises(InputFileError, match="no file matches"):
        empty.files()
