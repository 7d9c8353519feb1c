"""Campaigns on real inputs: the shipped examples run on the shared data (skipped without it).

* ``examples/cms_dimuon.yaml`` — real CMS 2012 dimuon events, no simulated background, bump
  hunts over m_μμ: the known resonances are found, the continuum is quiet.
* ``examples/heptutorial.yaml`` — the HEP-tutorial ntuples as a weighted multi-process
  background (pseudo-data observed): classes populated with ΣEventWeight and scanned.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import uproot
import yaml

from campaign.status import read_classes, read_global
from campaign.store import Store
from campaign.testing import lamppost, search_results, write_campaign
from searches.result import SearchResult
from searches.stats import lee

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
JPSI, UPSILON_1S, Z_MASS = 3.0969, 9.4603, 91.1876
DIMUON_ENTRIES, DIMUON_CHUNK = 83_343, 20_000


def _example(name: str, store: Path) -> dict[str, Any]:
    document = yaml.safe_load((EXAMPLES / name).read_text())
    document["store"] = str(store)
    return document


def _run(tmp_path: Path, document: dict[str, Any], data: Path) -> Path:
    file = write_campaign(tmp_path / "campaign.yaml", document)
    done = lamppost("run", str(file), env={"LAMPPOST_DATA": str(data)}, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return Path(document["store"])


def _records(store: Path) -> dict[str, Any]:
    return {r.name: r for r in Store(store).records() if r.status == "done"}


@pytest.fixture(scope="module")
def dimuon_store(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example, its one file read as chunks of 20,000 entries (five read tasks)."""
    tmp = tmp_path_factory.mktemp("dimuon")
    document = _example("cms_dimuon.yaml", tmp / "store")
    document["data"]["observed"]["chunk_size"] = DIMUON_CHUNK
    return _run(tmp, document, shared_data)


@pytest.mark.slow
def test_dimuon_bump_hunt_finds_the_known_resonances_and_nothing_else(dimuon_store: Path) -> None:
    runs = search_results(dimuon_store)
    assert len(runs) == 5 and all(name.startswith("search/2mu/bumphunt#") for name in runs)
    results = {
        name: SearchResult.from_dict(items[0]) for name, items in runs.items() if len(items) == 1
    }
    assert len(results) == 5
    by_range = {round(r.edges[0]): r for r in results.values()}
    resonances = {2: JPSI, 6: UPSILON_1S, 70: Z_MASS}
    quiet = [r for key, r in by_range.items() if key not in resonances]
    assert len(quiet) == 2
    for key, mass in resonances.items():
        result = by_range[key]
        assert result.region is not None
        assert result.region.low <= mass <= result.region.high, (key, result.region)
        assert result.region.observed > 2 * result.region.expected
        assert result.p_local < 1e-50
        assert result.p_tilde == pytest.approx(1 / (result.n_pseudo + 1))

    z_peak = by_range[70]
    assert z_peak.p_tilde == min(r.p_tilde for r in results.values())
    for result in quiet:
        assert result.p_tilde > 0.05, result.region
    quiet_global = lee.global_significance(quiet, seed=1)
    assert quiet_global.p_global > 0.05

    lee_record = next(r for r in Store(dimuon_store).records() if r.kind == "lee")
    outcome = read_global(Store(dimuon_store), lee_record.artifacts["lee"])
    assert outcome["event_class"] == "2mu" and outcome["n_searches"] == 5
    # The three resonances beat every pseudo-round of their windows: p_global is a bound set by
    # the rounds — only the one smallest round of each quiet window can reach the 1/(R+1) floor.
    assert outcome["resolution_limited"]
    assert outcome["p_global"] <= (len(quiet) + 1) / (outcome["n_rounds"] + 1)


@pytest.mark.slow
def test_dimuon_campaign_has_no_simulated_background(dimuon_store: Path) -> None:
    records = _records(dimuon_store)
    classes = read_classes(Store(dimuon_store), records["classify"].artifacts["classes"])
    assert classes["2mu"]["observed"] == 49_112
    assert all(info["expected"] == 0 and info["mc_events"] == 0 for info in classes.values())
    assert sum(info["observed"] for info in classes.values()) == DIMUON_ENTRIES


@pytest.mark.slow
def test_dimuon_file_is_read_as_chunk_tasks_into_class_row_groups(dimuon_store: Path) -> None:
    ledger = list(Store(dimuon_store).records())
    reads = sorted(
        (r for r in ledger if r.kind == "read"), key=lambda r: int(r.name.rsplit(":", 1)[1])
    )
    assert [r.kind for r in ledger].count("inspect") == 1
    assert len(reads) == -(-DIMUON_ENTRIES // DIMUON_CHUNK) == 5
    assert all(r.status == "done" and r.name.startswith("read/observed/") for r in reads)
    records = _records(dimuon_store)
    classes = read_classes(Store(dimuon_store), records["classify"].artifacts["classes"])
    assert [part for part, _ in classes["2mu"]["obs_parts"]] == [r.artifacts["part"] for r in reads]
    sizes = []
    for record in reads:
        chunk = json.loads((dimuon_store / record.artifacts["chunk"]).read_text())
        sizes.append(chunk["events"])
        groups = pq.ParquetFile(dimuon_store / record.artifacts["part"]).metadata
        assert groups.num_row_groups == len(chunk["classes"])
        for info in chunk["classes"].values():
            assert groups.row_group(info["row_group"]).num_rows == info["events"]
    assert sizes == [DIMUON_CHUNK] * 4 + [DIMUON_ENTRIES - 4 * DIMUON_CHUNK]


@pytest.mark.slow
def test_heptutorial_background_classes_are_populated_and_scanned(
    shared_data: Path, tmp_path: Path
) -> None:
    store = _run(tmp_path, _example("heptutorial.yaml", tmp_path / "store"), shared_data)
    records = _records(store)
    classes = read_classes(Store(store), records["classify"].artifacts["classes"])
    exclusive = {name: info for name, info in classes.items() if info["members"] == [name]}

    files = sorted((shared_data / "heptutorial-mc").glob("*.root"))
    assert len(files) == 5
    ledger = list(Store(store).records())
    assert [r.kind for r in ledger].count("inspect") == 5
    assert [r.kind for r in ledger].count("read") == 5
    reference_weights, reference_events = 0.0, 0
    for file in files:
        with uproot.open(file) as handle:
            weights = handle["events"]["EventWeight"].array(library="np")
        reference_weights += float(np.sum(weights))
        reference_events += len(weights)
    assert sum(i["expected"] for i in exclusive.values()) == pytest.approx(reference_weights)
    assert sum(i["mc_events"] for i in exclusive.values()) == reference_events

    scanned = {name.split("/")[1] for name in records if name.startswith("search/")}
    for name in ("2mu", "1e_1mu", "1mu_1j", "1mu_2j", "1j", "2j", "1mu_2j+NJet"):
        assert name in scanned, name
        info = classes[name]
        assert info["expected"] > 1.0 and info["mc_events"] >= 20
        assert abs(info["observed"] - info["expected"]) < 5 * np.sqrt(info["expected"]) + 5
    assert not any(name.startswith("empty") for name in scanned)
    assert "1e_1mu_1gamma" not in classes
    for items in search_results(store).values():
        for item in items:
            result = SearchResult.from_dict(item)
            assert 0 < result.p_local <= 1 and 0 < result.p_tilde <= 1
    outcome = read_global(Store(store), records["look-elsewhere"].artifacts["lee"])
    assert outcome["n_searches"] == 2 * len(scanned)
    assert np.isfinite(outcome["z_global"]) and 0 < outcome["p_global"] <= 1


def test_scan_without_background_is_refused_naming_the_field(tmp_path: Path) -> None:
    document = _example("cms_dimuon.yaml", tmp_path / "store")
    document["searches"][1] = {"method": "scan", "pseudo_rounds": 10}
    file = write_campaign(tmp_path / "campaign.yaml", document)
    done = lamppost("validate", "--json", str(file), env={"LAMPPOST_DATA": str(tmp_path)})
    assert done.returncode == 2
    problems = json.loads(done.stdout)["problems"]
    assert [p["location"] for p in problems] == ["searches.1.method"]
    message = problems[0]["message"]
    assert "'scan'" in message and "data.background is null" in message
    assert "allowed without a background: bumphunt" in message
    assert not (tmp_path / "store").exists()
