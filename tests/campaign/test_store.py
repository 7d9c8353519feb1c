from __future__ import annotations

from pathlib import Path

import pytest

from campaign.store import RESULTS_VERSION, Store, StoreError, TaskRecord


def record(key: str, status: str = "done", **extra: object) -> TaskRecord:
    return TaskRecord(
        key=key,
        kind="search",
        name=f"search/{key}",
        status=status,  # type: ignore[arg-type]
        execution_id=f"exec-{key}",
        started_at=1.0,
        finished_at=2.0,
        **extra,  # type: ignore[arg-type]
    )


def test_initialise_then_reopen_same_campaign(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    store.initialise(spec_text="name: a\n", spec_json={"name": "a"})
    Store(tmp_path / "s").initialise(spec_text="name: a\n", spec_json={"name": "a"})
    with pytest.raises(StoreError, match="another campaign"):
        Store(tmp_path / "s").initialise(spec_text="name: b\n", spec_json={"name": "b"})
    assert store.read_text("campaign.yaml") == "name: a\n"


def test_a_store_of_other_results_is_read_but_not_continued(tmp_path: Path) -> None:
    """Continuing a store whose numbers older code computed would mix two versions of the
    statistics in one table; it is refused, and nothing is written."""
    store = Store(tmp_path / "s")
    store.initialise(spec_text="name: a\n", spec_json={"name": "a"})
    assert store.results_version() == RESULTS_VERSION
    store.write_json("store.json", {"results_version": RESULTS_VERSION - 1})
    (tmp_path / "s" / "ledger" / "k.json").write_text("{}")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(StoreError, match=f"results version {RESULTS_VERSION - 1}; this one"):
        Store(tmp_path / "s").initialise(spec_text="name: a\n", spec_json={"name": "a"})
    (tmp_path / "s" / "store.json").unlink()
    assert Store(tmp_path / "s").results_version() == 1, "stores from before store.json"
    with pytest.raises(StoreError, match="results version 1; this one"):
        Store(tmp_path / "s").initialise(spec_text="name: a\n", spec_json={"name": "a"})
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert after == [p for p in before if p.name != "store.json"]


def test_finished_task_is_never_overwritten_but_failed_can_be_retried(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.initialise(spec_text="", spec_json={})
    store.record(record("k1", status="failed", error="boom"))
    store.record(record("k1"))
    assert store.finished()["k1"].execution_id == "exec-k1"
    with pytest.raises(StoreError, match="already finished"):
        store.record(record("k1"))


def test_writes_are_atomic_and_leave_no_temporaries(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.write_json("a/b.json", {"x": 1})
    assert store.read_json("a/b.json") == {"x": 1}
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["b.json"]


def test_commit_moves_staged_artifacts(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.write_text("staging/e1/results.json", "[]")
    committed = store.commit_artifacts(
        {"results": "staging/e1/results.json"}, kind="search", key="k"
    )
    assert committed == {"results": "artifacts/search/k/results.json"}
    assert store.read_text(committed["results"]) == "[]"
    store.clear_staging()
    assert not store.exists("staging")


def test_file_uri_store(tmp_path: Path) -> None:
    store = Store(f"file://{tmp_path}/remote")
    store.initialise(spec_text="x", spec_json={"x": 1})
    store.record(record("k"))
    assert list(Store(f"file://{tmp_path}/remote").finished()) == ["k"]
