"""End-to-end campaigns on a real local Ray (num_cpus=2): kill/resume, failures, demo."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from campaign.store import Store
from campaign.tasks import FAULT_INJECTION_VARIABLE

pytestmark = pytest.mark.slow

LAMPPOST = [sys.executable, "-c", "from campaign.cli import main; main()"]


def small_campaign(store: Path, **overrides: Any) -> dict[str, Any]:
    document = {
        "name": "small",
        "seed": 11,
        "luminosity_fb": 140,
        "data": {
            "background": {"simulator": "builtin", "events": 60000},
            "observed": {
                "pseudo": True,
                "inject": {"model": "zprime", "point": {"mass": 1000, "g": 0.3}, "events": 5000},
            },
        },
        "signatures": {"muon": {"pt": 25, "abs_eta": 2.5}, "electron": {"pt": 25, "abs_eta": 2.47}},
        "observables": ["st", "minv"],
        "class_selection": {"min_expected": 1.0, "min_mc_events": 20},
        "searches": [{"method": "scan", "pseudo_rounds": 300}],
        "execution": {"address": "local", "num_cpus": 2, "min_task_seconds": 0},
        "store": str(store),
    }
    document.update(overrides)
    return document


def write_campaign(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(document))
    return path


def lamppost(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> Any:
    return subprocess.run(
        [*LAMPPOST, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {}), "CI": "1"},
        check=False,
    )


def search_results(store: Path) -> dict[str, list[dict[str, Any]]]:
    """Search results by task name, without the run-specific execution details."""
    results = {}
    for record in Store(store).records():
        if record.kind == "search" and record.status == "done":
            results[record.name] = json.loads((store / record.artifacts["results"]).read_text())
    return results


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run of the small campaign."""
    tmp = tmp_path_factory.mktemp("reference")
    file = write_campaign(tmp / "c.yaml", small_campaign(tmp / "store"))
    done = lamppost("run", str(file))
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp / "store"


def test_uninterrupted_run_records_every_stage(reference_run: Path) -> None:
    status = lamppost("status", "--json", str(reference_run))
    assert status.returncode == 0, status.stderr
    state = json.loads(status.stdout)
    assert set(state["tasks"]) == {"background", "observed", "classify", "search", "lee"}
    assert all(set(counts) == {"done"} for counts in state["tasks"].values())
    assert state["tasks"]["search"]["done"] >= 4
    assert 0 < state["global_result"]["p_global"] <= 1
    assert state["searches"][0]["p_tilde"] is not None


def test_driver_killed_mid_campaign_resumes_to_identical_results(
    tmp_path: Path, reference_run: Path
) -> None:
    store = tmp_path / "store"
    file = write_campaign(tmp_path / "c.yaml", small_campaign(store))
    driver = subprocess.Popen(
        [*LAMPPOST, "run", str(file)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, "CI": "1"},
    )
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            done = [r for r in _records(store) if r.kind == "search"]
            if len(done) >= 2:
                break
            assert driver.poll() is None, "the campaign finished before it could be killed"
            time.sleep(0.05)
        else:
            pytest.fail("no search finished within 300 s")
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    before = {r.key: r for r in _records(store)}
    total = len(list(Path(reference_run, "ledger").glob("*.json")))
    assert len(before) < total, "the kill came too late to interrupt the campaign"

    resumed = lamppost("resume", str(store))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = {r.key: r for r in _records(store)}
    assert set(after) == {p.stem for p in Path(reference_run, "ledger").glob("*.json")}
    for key, record in before.items():
        assert after[key] == record, f"finished task {record.name} ran again after resume"
    assert search_results(store) == search_results(reference_run)
    assert not (store / "staging").exists()


def _records(store: Path) -> list[Any]:
    if not (store / "ledger").exists():
        return []
    return list(Store(store).records())


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
    others = {k: v for k, v in search_results(reference_run).items() if victim not in k}
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
    assert top["event_class"].startswith("2mu") or top["event_class"].startswith("2e")
    assert top["observable"] == "minv"
    assert top["p_tilde"] is not None and top["p_tilde"] < 0.01
    assert status["global_result"]["z_global"] > 2
    assert (tmp_path / "store" / "report.html").exists()
