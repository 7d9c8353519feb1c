"""End-to-end campaigns on a real local Ray (num_cpus=2): kill/resume, failures, demo."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from campaign.store import Store
from campaign.tasks import FAULT_INJECTION_VARIABLE
from campaign.testing import (
    kill_tree,
    lamppost,
    search_results,
    small_campaign,
    start_lamppost,
    wait_for_tasks,
    write_campaign,
)

pytestmark = pytest.mark.slow


def test_uninterrupted_run_records_every_stage(reference_run: Path) -> None:
    status = lamppost("status", "--json", str(reference_run))
    assert status.returncode == 0, status.stderr
    state = json.loads(status.stdout)
    assert set(state["tasks"]) == {"background", "observed", "classify", "search", "lee"}
    assert all(set(counts) == {"done"} for counts in state["tasks"].values())
    assert state["tasks"]["search"]["done"] >= 4
    assert 0 < state["global_result"]["p_global"] <= 1
    assert state["searches"][0]["p_tilde"] is not None
    records = {r.kind: r for r in Store(reference_run).records()}
    for kind, artifact in (("classify", "classes"), ("lee", "lee")):
        written = json.loads((reference_run / records[kind].artifacts[artifact]).read_text())
        assert written["schema_version"] == "1", kind


def test_driver_killed_mid_campaign_resumes_to_identical_results(
    tmp_path: Path, reference_run: Path
) -> None:
    store = tmp_path / "store"
    file = write_campaign(tmp_path / "c.yaml", small_campaign(store))
    driver = start_lamppost("run", str(file))
    try:
        wait_for_tasks(store, kind="search", count=2, process=driver)
    finally:
        kill_tree(driver)
    before = {r.key: r for r in Store(store).records()}
    reference_keys = {p.stem for p in Path(reference_run, "ledger").glob("*.json")}
    assert len(before) < len(reference_keys), "the kill came too late to interrupt"

    resumed = lamppost("resume", str(store))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = {r.key: r for r in Store(store).records()}
    assert set(after) == reference_keys
    for key, record in before.items():
        assert after[key] == record, f"finished task {record.name} ran again after resume"
    assert search_results(store) == search_results(reference_run)
    assert not (store / "staging").exists()


def test_a_search_that_raises_is_recorded_and_the_rest_complete(
    tmp_path: Path, reference_run: Path
) -> None:
    store = tmp_path / "store"
    file = write_campaign(tmp_path / "c.yaml", small_campaign(store))
    victim = sorted(search_results(reference_run))[0].split("/")[1]
    result = lamppost("run", str(file), env={FAULT_INJECTION_VARIABLE: f"{victim}:scan"})
    assert result.returncode == 1, result.stderr[-3000:]
    records = list(Store(store).records())
    failed = [r for r in records if r.status == "failed"]
    assert [r.name for r in failed] == [f"search/{victim}/scan"]
    assert "fault injected" in failed[0].error and "Traceback" in failed[0].traceback
    others = {k: v for k, v in search_results(reference_run).items() if k.split("/")[1] != victim}
    assert search_results(store) == others
    assert any(r.kind == "lee" and r.status == "done" for r in records)
    status = json.loads(lamppost("status", "--json", str(store)).stdout)
    assert status["failures"][0]["task"] == f"search/{victim}/scan"


def test_run_refuses_an_existing_store_without_resume(tmp_path: Path, reference_run: Path) -> None:
    copy = tmp_path / "store"
    shutil.copytree(reference_run, copy)
    file = write_campaign(tmp_path / "c.yaml", small_campaign(copy))
    refused = lamppost("run", str(file))
    assert refused.returncode == 2
    assert "resume" in refused.stderr
    again = lamppost("run", "--resume", str(file))
    assert again.returncode == 0, again.stderr[-2000:]
    assert search_results(copy) == search_results(reference_run)


def test_demo_campaign_end_to_end(tmp_path: Path) -> None:
    result = lamppost("demo", "--dir", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    status = json.loads(lamppost("status", "--json", str(tmp_path / "store")).stdout)
    populated = [c for c, info in status["classes"].items() if "+" not in c and info["observed"]]
    assert len(populated) >= 20
    top = status["searches"][0]
    assert top["event_class"] in ("2mu", "2e"), top
    low, high = (float(x) for x in top["region"].strip("[] GeV").split(","))
    assert low < 1300 and high > 1000, "the region of interest misses the injected Z' (1.2 TeV)"
    assert top["p_tilde"] is not None and top["p_tilde"] < 0.01
    outcome = status["global_result"]
    if outcome["resolution_limited"]:
        # The Z' beat all 1000 rounds of its scan: the look-elsewhere numbers are bounds set by
        # the pseudo-experiments, p_global <= 1 - (1 - 1/1001)^N for N searches (Šidák).
        assert outcome["p_global"] <= outcome["p_sidak"] + 4 * (outcome["p_sidak"] / 1000) ** 0.5
        assert top["p_tilde"] == pytest.approx(1 / 1001)
    else:
        assert outcome["z_global"] > 2
    assert (tmp_path / "store" / "report.html").exists()
