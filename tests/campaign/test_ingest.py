from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

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
    list_classes,
    read_class,
)
from searches.events import SCHEMA_METADATA_KEY, SCHEMA_VERSION, concatenate, write_parquet
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
