from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import awkward as ak
import dask
import numpy as np
import pyarrow.parquet as pq
import pytest
import uproot

from campaign.ingest import (
    MANIFEST,
    SAMPLE_METADATA_KEY,
    IngestError,
    ingest,
    inspect_file,
    list_classes,
    read_chunk,
    read_class,
)
from campaign.inputs import (
    gather,
    inspect_task,
    inspect_tasks,
    read_parts,
    read_task,
    read_tasks,
)
from campaign.spec import parse_spec
from campaign.status import read_classes
from campaign.store import Store, TaskRecord
from campaign.testing import lamppost, search_results, write_campaign
from searches.events import (
    SCHEMA_METADATA_KEY,
    SCHEMA_VERSION,
    EventValidationError,
    concatenate,
    make_events,
    write_parquet,
)
from searches.readers import BranchMapError, Sample, read_root
from searches.signatures import SignatureConfig, exclusive_class_names

HEPTUTORIAL = ("qcd", "single_top", "ww", "wz", "zz")
NANOAOD = "cms-opendata/nanoAOD_2015_CMS_Open_Data_ttbar.root"
ZMUMU = "cms-opendata/zmumu_skim.root"
RNTUPLE = "cms-opendata/Run2012BC_DoubleMuParked_Muons_1000evts_rntuple_v1-0-0-0.root"
CONFIG = SignatureConfig(muon={"pt": 20.0, "abs_eta": 2.4}, jet={"pt": 30.0, "abs_eta": 2.5})


def _tutorial(shared_data: Path) -> list[Sample]:
    return [
        Sample(
            name=n, paths=str(shared_data / "heptutorial-mc" / f"{n}.root"), preset="heptutorial"
        )
        for n in HEPTUTORIAL
    ]


def _direct(events: ak.Array) -> tuple[Counter, dict[str, float]]:
    names = exclusive_class_names(events, CONFIG)
    weights = ak.to_numpy(events.weight)
    sums: dict[str, float] = {}
    for name in np.unique(names):
        sums[name] = float(weights[names == name].sum())
    return Counter(names.tolist()), sums


@pytest.mark.slow
def test_ingest_writes_class_partitions_equal_to_direct_classification(
    shared_data: Path, tmp_path: Path
) -> None:
    samples = [
        *_tutorial(shared_data),
        Sample(name="ttbar", paths=str(shared_data / NANOAOD), preset="nanoaod", xsec_pb=832.0),
        Sample(name="rntuple", paths=str(shared_data / RNTUPLE), preset="dimuon", kind="data"),
    ]
    report = ingest(
        samples, out_dir=tmp_path / "ds", signatures=CONFIG, luminosity_fb=2.0, chunk_size=4000
    )
    ttbar = read_root(shared_data / NANOAOD, preset="nanoaod")
    ttbar = ak.with_field(
        ttbar, ttbar.weight * 832.0e3 * 2.0 / float(ak.sum(ttbar.weight)), "weight"
    )
    direct = concatenate(
        [
            *(read_root(s.paths[0], preset="heptutorial") for s in samples[:5]),
            ttbar,
            read_root(shared_data / RNTUPLE, preset="dimuon"),
        ]
    )
    counts, weights = _direct(direct)
    assert report.class_counts == dict(sorted(counts.items()))
    assert report.class_weights.keys() == weights.keys()
    for name, value in weights.items():
        assert report.class_weights[name] == pytest.approx(value, rel=1e-9)
    assert list_classes(tmp_path / "ds") == report.class_counts
    assert report.events_read == {
        "qcd": 142, "single_top": 5684, "ww": 4580, "wz": 3367, "zz": 2421,
        "ttbar": 200, "rntuple": 1000,
    }  # fmt: skip
    assert report.samples[5].weighted_events == pytest.approx(832.0e3 * 2.0)
    assert report.skipped == ()

    biggest = max(counts, key=counts.get)
    events = read_class(tmp_path / "ds", biggest)
    assert len(events) == counts[biggest]
    assert set(exclusive_class_names(events, CONFIG)) == {biggest}
    only_ww = read_class(tmp_path / "ds", biggest, samples=["ww"])
    ww_names = exclusive_class_names(read_root(samples[2].paths[0], preset="heptutorial"), CONFIG)
    assert len(only_ww) == int(np.sum(ww_names == biggest))

    part = next((tmp_path / "ds" / f"event_class={biggest}").glob("part-*.parquet"))
    metadata = pq.read_schema(part).metadata
    assert metadata[SCHEMA_METADATA_KEY] == SCHEMA_VERSION.encode()
    assert metadata[SAMPLE_METADATA_KEY].decode() in {s.name for s in samples}
    manifest = json.loads((tmp_path / "ds" / MANIFEST).read_text())
    assert manifest["class_counts"] == report.class_counts


def _multi_basket_copy(source: Path, target: Path, *, baskets: int = 8) -> int:
    """A dimuon file written in several baskets, so truncation breaks only its last entries."""
    arrays = uproot.open(source)["Events"].arrays(
        ["Muon_pt", "Muon_eta", "Muon_phi", "Muon_mass", "Muon_charge"], entry_stop=16_000
    )
    muons = ak.zip({k.removeprefix("Muon_"): arrays[k] for k in arrays.fields})
    with uproot.recreate(target) as file:
        file.mktree("Events", {"Muon": muons.type.content})
        for piece in np.array_split(np.arange(len(muons)), baskets):
            file["Events"].extend({"Muon": muons[piece[0] : piece[-1] + 1]})
    return len(muons)


def test_bad_files_are_skipped_and_recorded(shared_data: Path, tmp_path: Path) -> None:
    good = _multi_basket_copy(shared_data / ZMUMU, tmp_path / "good.root")
    _multi_basket_copy(shared_data / ZMUMU, tmp_path / "whole.root")
    data = (tmp_path / "whole.root").read_bytes()
    truncated = tmp_path / "truncated.root"
    truncated.write_bytes(data[: int(len(data) * 0.85)])
    first_chunk = read_root(truncated, preset="dimuon", entry_stop=2000)
    assert len(first_chunk) == 2000

    missing = tmp_path / "missing.root"
    with uproot.recreate(missing) as file:
        file["Events"] = {"Muon_pt": ak.Array([[30.0], [40.0, 25.0]])}

    sample = Sample(
        name="dimuon", paths=[str(p) for p in (truncated, tmp_path / "good.root", missing)],
        preset="dimuon", kind="data",
    )  # fmt: skip
    with pytest.raises(BranchMapError, match=r"missing\.root: field 'Muon_eta'"):
        ingest(
            [sample], out_dir=tmp_path / "fail", signatures=CONFIG, luminosity_fb=1.0,
            chunk_size=2000,
        )  # fmt: skip

    report = ingest(
        [sample], out_dir=tmp_path / "skip", signatures=CONFIG, luminosity_fb=1.0,
        chunk_size=2000, on_bad_file="skip",
    )  # fmt: skip
    skipped = {Path(s.path).name: s.error for s in report.skipped}
    assert set(skipped) == {"truncated.root", "missing.root"}
    assert "truncated" in skipped["truncated.root"] and "Muon_" in skipped["truncated.root"]
    assert "Muon_eta" in skipped["missing.root"] and "similar: Muon_pt" in skipped["missing.root"]
    assert report.events_read == {"dimuon": good}
    assert report.samples[0].files_read == 1
    counts, _ = _direct(read_root(tmp_path / "good.root", preset="dimuon"))
    assert report.class_counts == dict(sorted(counts.items()))
    assert list_classes(tmp_path / "skip") == report.class_counts
    leftovers = list((tmp_path / "skip").glob("event_class=*/part-dimuon-00000-*.parquet"))
    assert leftovers == []


@pytest.mark.slow
def test_schedulers_agree(shared_data: Path, tmp_path: Path) -> None:
    samples = _tutorial(shared_data)[4:]
    coarse = SignatureConfig(
        electron={"pt": 40.0, "abs_eta": 2.5}, photon={"pt": 60.0, "abs_eta": 2.5}
    )
    reports = [
        ingest(
            samples, out_dir=tmp_path / str(i), signatures=coarse, luminosity_fb=1.0,
            chunk_size=1000, scheduler=scheduler, num_workers=workers,
        )
        for i, (scheduler, workers) in enumerate(
            [("threads", 2), ("synchronous", None), (dask.get, None)]
        )
    ]  # fmt: skip
    assert reports[0].class_counts == reports[1].class_counts == reports[2].class_counts
    assert reports[0].total_events == 2421
    with pytest.raises(IngestError, match="unknown scheduler 'ray'; allowed: threads"):
        ingest(
            samples, out_dir=tmp_path / "x", signatures=CONFIG, luminosity_fb=1.0, scheduler="ray"
        )


@pytest.mark.slow
def test_process_scheduler_matches_threads(shared_data: Path, tmp_path: Path) -> None:
    sample = Sample(name="zmumu", paths=str(shared_data / ZMUMU), preset="dimuon", kind="data")
    kwargs = {"signatures": CONFIG, "luminosity_fb": 1.0, "chunk_size": 30_000}
    threads = ingest([sample], out_dir=tmp_path / "t", **kwargs)
    processes = ingest(
        [sample], out_dir=tmp_path / "p", scheduler="processes", num_workers=2, **kwargs
    )
    assert threads.class_counts == processes.class_counts
    assert threads.total_events == processes.total_events == 83_343
    two_muons = read_class(tmp_path / "p", "2mu")
    assert len(two_muons) == threads.class_counts["2mu"]


def test_out_dir_and_arguments_are_checked(shared_data: Path, tmp_path: Path) -> None:
    samples = _tutorial(shared_data)[:1]
    kwargs = {"signatures": CONFIG, "luminosity_fb": 1.0}
    first = ingest(samples, out_dir=tmp_path, **kwargs)
    with pytest.raises(IngestError, match=r"already holds .* overwrite=True"):
        ingest(samples, out_dir=tmp_path, **kwargs)
    again = ingest(samples, out_dir=tmp_path, overwrite=True, **kwargs)
    assert again.class_counts == first.class_counts
    with pytest.raises(IngestError, match="repeated: qcd"):
        ingest(samples * 2, out_dir=tmp_path / "d", **kwargs)
    with pytest.raises(IngestError, match="'sometimes'; allowed: fail, skip"):
        ingest(samples, out_dir=tmp_path / "e", on_bad_file="sometimes", **kwargs)
    with pytest.raises(IngestError, match="no class 'nothing'; present: "):
        read_class(tmp_path, "nothing")


@pytest.mark.slow
def test_parquet_inputs_ingest_like_root(shared_data: Path, tmp_path: Path) -> None:
    root = shared_data / "heptutorial-mc" / "zz.root"
    one_group = write_parquet(read_root(root, preset="heptutorial"), tmp_path / "zz.parquet")
    table = pq.read_table(one_group)
    pq.write_table(table, tmp_path / "zz_groups.parquet", row_group_size=700)
    assert pq.ParquetFile(tmp_path / "zz_groups.parquet").num_row_groups == 4
    kwargs = {"signatures": CONFIG, "luminosity_fb": 1.0, "chunk_size": 1000}
    from_root = ingest(
        [Sample(name="zz", paths=str(root), preset="heptutorial")], out_dir=tmp_path / "r", **kwargs
    )
    parquet = Sample(
        name="zz", paths=[str(one_group), str(tmp_path / "zz_groups.parquet")], kind="mc"
    )
    from_parquet = ingest([parquet], out_dir=tmp_path / "p", **kwargs)
    assert from_parquet.events_read == {"zz": 2 * 2421}
    assert {k: 2 * v for k, v in from_root.class_counts.items()} == from_parquet.class_counts
    name = max(from_root.class_counts, key=from_root.class_counts.get)
    assert ak.to_list(read_class(tmp_path / "r", name).jet.pt) * 2 == ak.to_list(
        read_class(tmp_path / "p", name).jet.pt
    )


# --------------------------------------------------------------------------------------------
# Campaigns: file inputs read as chunk tasks on the campaign's executor (campaign.inputs)
# --------------------------------------------------------------------------------------------

DIMUON = SignatureConfig(muon={"pt": 3.0, "abs_eta": 2.4}, views=["exclusive"])


def _file_campaign(
    store: Path, paths: list[str], *, on_bad_file: str = "fail", chunk_size: int = 4000
) -> dict[str, Any]:
    """Recorded dimuon files, no simulated background, one quick bump hunt at the Z."""
    return {
        "name": "dimuon-files",
        "seed": 5,
        "luminosity_fb": 11.6,
        "data": {
            "background": None,
            "observed": {
                "files": [{"path": p, "preset": "dimuon", "label": "dimuon"} for p in paths],
                "on_bad_file": on_bad_file,
                "chunk_size": chunk_size,
            },
        },
        "signatures": DIMUON.model_dump(mode="json"),
        "observables": ["m_mu_mu"],
        "class_selection": {"min_expected": 100, "min_mc_events": 100},
        "searches": [
            {
                "method": "bumphunt",
                "classes": ["2mu"],
                "function": "expo",
                "low": 70,
                "high": 110,
                "pseudo_rounds": 20,
            },
        ],
        "execution": {"address": "local", "num_cpus": 2, "min_task_seconds": 0},
        "store": str(store),
    }


def _ledger(store: Path) -> dict[str, list[TaskRecord]]:
    kinds: dict[str, list[TaskRecord]] = {}
    for record in Store(store).records():
        kinds.setdefault(record.kind, []).append(record)
    return kinds


def _run_campaign(tmp_path: Path, document: dict[str, Any]) -> CompletedProcess[str]:
    tmp_path.mkdir(exist_ok=True)
    return lamppost("run", "--json", str(write_campaign(tmp_path / "campaign.yaml", document)))


@pytest.mark.slow
def test_campaign_reads_files_as_chunk_tasks_and_resume_reads_nothing_again(
    shared_data: Path, tmp_path: Path
) -> None:
    files = [tmp_path / f"dimuon_{i}.root" for i in range(3)]
    entries = [_multi_basket_copy(shared_data / ZMUMU, file) for file in files]
    store = tmp_path / "store"
    done = _run_campaign(tmp_path, _file_campaign(store, [str(tmp_path / "dimuon_*.root")]))
    assert done.returncode == 0, done.stderr[-3000:]

    first = _ledger(store)
    assert len(first["inspect"]) == 3
    assert len(first["read"]) == sum(-(-n // 4000) for n in entries) == 12
    assert all(r.status == "done" for records in first.values() for r in records)
    assert len(first["search"]) == 1

    direct = concatenate([read_root(file, preset="dimuon") for file in files])
    names = exclusive_class_names(direct, DIMUON)
    classify_record = first["classify"][0]
    classes = read_classes(Store(store), classify_record.artifacts["classes"])
    assert {n: int(c["observed"]) for n, c in classes.items()} == dict(Counter(names.tolist()))
    assert "bkg_parts" not in classes["2mu"] and len(classes["2mu"]["obs_parts"]) == 12
    two_muons = read_parts(Store(store), classes["2mu"]["obs_parts"])
    assert ak.to_list(two_muons.muon.pt) == ak.to_list(direct[names == "2mu"].muon.pt)
    results = search_results(store)

    for kind in ("observed", "classify", "search", "lee"):
        for record in first[kind]:
            (store / "ledger" / f"{record.key}.json").unlink()
    resumed = lamppost("resume", str(store))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    second = _ledger(store)
    assert second["inspect"] == first["inspect"] and second["read"] == first["read"]
    assert second["classify"][0].execution_id != classify_record.execution_id
    assert search_results(store) == results


@pytest.mark.slow
def test_campaign_bad_files_fail_naming_file_and_branch_or_are_skipped(
    shared_data: Path, tmp_path: Path
) -> None:
    good = tmp_path / "good.root"
    entries = _multi_basket_copy(shared_data / ZMUMU, good)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.root"
    truncated.write_bytes(data[: int(len(data) * 0.85)])
    missing = tmp_path / "missing.root"
    with uproot.recreate(missing) as file:
        file["Events"] = {"Muon_pt": ak.Array([[30.0], [40.0, 25.0]])}
    paths = [str(p) for p in (truncated, good, missing)]

    opened = _run_campaign(tmp_path / "a", _file_campaign(tmp_path / "a" / "s", paths[1:]))
    assert opened.returncode == 1
    (failure,) = json.loads(opened.stdout)["failures"]
    assert failure.startswith("inspect/observed/dimuon/missing.root: BranchMapError: ")
    assert f"{missing}: field 'Muon_eta'" in failure and "similar: Muon_pt" in failure
    assert "read" not in _ledger(tmp_path / "a" / "s")

    read = _run_campaign(tmp_path / "b", _file_campaign(tmp_path / "b" / "s", paths[:2]))
    assert read.returncode == 1
    (failure,) = json.loads(read.stdout)["failures"]
    assert failure.startswith("read/observed/dimuon/truncated.root:")
    assert f"{truncated}: field 'Muon_" in failure and "truncated file" in failure
    assert "classify" not in _ledger(tmp_path / "b" / "s")

    store = tmp_path / "c" / "s"
    skipped = _run_campaign(tmp_path / "c", _file_campaign(store, paths, on_bad_file="skip"))
    assert skipped.returncode == 0, skipped.stderr[-3000:]
    ledger = _ledger(store)
    assert all(r.status == "done" for records in ledger.values() for r in records)
    index = json.loads((store / ledger["observed"][0].artifacts["index"]).read_text())
    assert {Path(s["path"]).name for s in index["skipped"]} == {"truncated.root", "missing.root"}
    assert index["samples"] == {"dimuon": {"files": 1, "events": entries, "weighted": entries}}
    classes = read_classes(Store(store), ledger["classify"][0].artifacts["classes"])
    names = exclusive_class_names(read_root(good, preset="dimuon"), DIMUON)
    assert {n: int(c["observed"]) for n, c in classes.items()} == dict(Counter(names.tolist()))
    parts = {part for c in classes.values() for part, _ in c["obs_parts"]}
    assert len(parts) == -(-entries // 4000)


@pytest.mark.slow
def test_campaign_read_tasks_normalise_to_the_cross_section_like_one_read(
    shared_data: Path, tmp_path: Path
) -> None:
    luminosity = 2.0
    spec = parse_spec(
        {
            "name": "ttbar",
            "luminosity_fb": luminosity,
            "data": {
                "background": {
                    "files": [
                        {"path": str(shared_data / NANOAOD), "preset": "nanoaod", "xsec_pb": 832}
                    ],
                    "chunk_size": 64,
                },
            },
            "signatures": CONFIG.model_dump(mode="json"),
            "searches": [{"method": "scan"}],
            "store": str(tmp_path / "store"),
        },
        check_store=False,
    )
    store = Store(tmp_path / "store")
    (opened,) = inspect_tasks(spec, "background")
    assert opened.payload["measure_weights"]
    inspected = inspect_task(opened.payload, store, "staging/inspect")
    reads = read_tasks(spec, "background", [opened], [inspected["summary"]])
    assert [(t.payload["start"], t.payload["stop"]) for t in reads] == [
        (0, 64), (64, 128), (128, 192), (192, 200),
    ]  # fmt: skip
    outputs = [read_task(t.payload, store, f"staging/read{i}") for i, t in enumerate(reads)]
    gathered = gather(
        {
            "inputs": {
                "inspect": [inspected["artifacts"]],
                "read": [o["artifacts"] for o in outputs],
            }
        },
        store,
        "staging/gather",
    )
    index = store.read_json(gathered["artifacts"]["index"])

    direct = read_root(shared_data / NANOAOD, preset="nanoaod")
    scale = 832.0 * 1000.0 * luminosity / float(ak.sum(direct.weight))
    direct = ak.with_field(direct, direct.weight * scale, "weight")
    counts, weights = _direct(direct)
    assert index["weighted"] == pytest.approx(832.0e3 * luminosity, rel=1e-12)
    assert {n: c["events"] for n, c in index["classes"].items()} == dict(counts)
    for name, entry in index["classes"].items():
        assert entry["weight"] == pytest.approx(weights[name], rel=1e-12)
        events = read_parts(store, entry["parts"])
        expected = direct[exclusive_class_names(direct, CONFIG) == name]
        assert ak.to_list(events.weight) == pytest.approx(ak.to_list(expected.weight), rel=1e-12)
    assert index["samples"][str(shared_data / NANOAOD)]["files"] == 1


def _schema_file(path: Path, *, drop: str | None = None) -> Path:
    """Five events in the event schema, optionally without one top-level column."""
    weights = np.arange(1.0, 6.0)
    write_parquet(make_events({}, met=weights, met_phi=0 * weights, weight=weights), path)
    if drop is not None:
        pq.write_table(pq.read_table(path).drop_columns([drop]), path)
    return path


def test_parquet_without_a_weight_column_is_a_bad_file_that_skip_can_skip(
    tmp_path: Path,
) -> None:
    path = str(_schema_file(tmp_path / "noweight.parquet", drop="weight"))
    with pytest.raises(EventValidationError) as caught:
        inspect_file(path, branch_map=None, measure_weights=True)
    assert (caught.value.source, caught.value.field) == (path, "weight")
    assert str(caught.value) == (
        f"{path}: field 'weight': missing event-level field; required: met, met_phi, weight"
    )
    payload = {"path": path, "preset": None, "measure_weights": True, "on_bad_file": "skip"}
    skipped = inspect_task(payload, Store(tmp_path / "store"), "staging/inspect")
    assert skipped["summary"]["error"] == str(caught.value)
    with pytest.raises(EventValidationError, match="field 'met': missing event-level field"):
        inspect_file(
            str(_schema_file(tmp_path / "nomet.parquet", drop="met")),
            branch_map=None,
            measure_weights=False,
        )


def test_parquet_is_read_from_uris_through_pyarrow_filesystems(tmp_path: Path) -> None:
    path = _schema_file(tmp_path / "events.parquet")
    assert inspect_file(path.as_uri(), branch_map=None, measure_weights=True) == (5, 15.0)
    events = read_chunk(path.as_uri(), branch_map=None, start=1, stop=4)
    assert ak.to_list(events.weight) == [2.0, 3.0, 4.0]
    absent = (tmp_path / "absent.parquet").as_uri()
    with pytest.raises(EventValidationError, match="does not exist or is not a file"):
        inspect_file(absent, branch_map=None, measure_weights=False)
    with pytest.raises(EventValidationError, match=r"cannot be reached .*allowed: a local path"):
        inspect_file("ftp://host/events.parquet", branch_map=None, measure_weights=False)
