"""Published likelihoods evaluated as part of a campaign: Ray tasks, ledger, per-point table."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pyhf
import pytest

from campaign.published import collect, patch_tasks, save
from campaign.store import Store, TaskRecord
from campaign.testing import lamppost
from searches.likelihoods import PublishedLikelihood, SignalPatch, load_likelihoods
from searches.stats.batched import patched_spec
from searches.stats.robust import build_model
from searches.testing import SBOTTOM_REFERENCE, SBOTTOM_TARBALL

pytestmark = pytest.mark.slow
TARBALL = SBOTTOM_TARBALL
REFERENCE = {
    key: value for key, value in SBOTTOM_REFERENCE.items() if key[1] != "sbottom_1500_850_60"
}
"""Four of the five reference points (pyhf's regression values), one per region at least."""


@pytest.fixture
def store(reference_run: Path, tmp_path: Path) -> Path:
    target = tmp_path / "store"
    shutil.copytree(reference_run, target)
    return target


def test_patches_are_evaluated_on_ray_and_tabled(store: Path, shared_data: Path) -> None:
    names = sorted({patch for _, patch in REFERENCE} | {"sbottom_1000_131_1"})
    args = [f"--patch={name}" for name in names]
    done = lamppost(
        "reinterpret", str(store), "--patchset", str(shared_data / TARBALL), *args, "--json"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    rows = {(r["region"], r["patch"]): r for r in report["rows"]}
    for key, (observed, expected) in REFERENCE.items():
        assert rows[key]["cls_obs"] == pytest.approx(observed, rel=1e-5), key
        if expected is not None:  # published bands carry scipy's default tolerance (~1e-5)
            assert rows[key]["cls_exp"] == pytest.approx(list(expected), rel=1e-4), key
    assert rows[("RegionA", "sbottom_1300_205_60")]["parameters"] == {
        "m_sbottom": 1300.0,
        "m_chi2": 205.0,
        "m_chi1": 60.0,
    }
    hard = rows[("RegionB", "sbottom_1000_131_1")]
    assert hard["status"] in ("recovered", "failed") and hard["reason"], hard
    records = [json.loads(p.read_text()) for p in (store / "ledger").glob("*.json")]
    patches = [r for r in records if r["kind"] == "patches"]
    assert {r["status"] for r in patches} == {"done"} and len(patches) == 3, "one per region"
    table = pq.read_table(store / report["saved"] / "results.parquet")
    assert table.schema.metadata[b"lamppost.published.schema_version"] == b"2"
    assert table.num_rows == len(rows) >= len(names)
    assert set(table.column_names) >= {"region", "patch", "m_sbottom", "m_chi2", "cls_obs"}

    again = lamppost(
        "reinterpret", str(store), "--patchset", str(shared_data / TARBALL), *args, "--json"
    )
    assert again.returncode == 0
    assert json.loads(again.stdout)["rows"] == report["rows"], "the ledger answers the rerun"


def test_upper_limits_of_published_patches_join_the_table(
    store: Path, shared_data: Path, pyhf_on_minuit
) -> None:
    """μ95 < 1 exactly where the CLs at μ = 1 is below 0.05; pyhf's own hypotest gives
    CLs = 0.05 at one observed limit; the CLs tasks of an earlier run are not run again."""
    source = str(shared_data / TARBALL)
    args = ["--patch=sbottom_1400_950_60", "--patch=sbottom_1300_205_60"]
    first = lamppost("reinterpret", str(store), "--patchset", source, *args, "--json")
    assert first.returncode == 0, first.stderr[-3000:]
    assert all(r["mu_limit_obs"] is None for r in json.loads(first.stdout)["rows"])
    before = {path: path.read_text() for path in (store / "ledger").glob("*.json")}
    done = lamppost("reinterpret", str(store), "--patchset", source, *args, "--limits", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    records = [json.loads(p.read_text()) for p in (store / "ledger").glob("*.json")]
    kinds = [r["kind"] for r in records if r["kind"] in ("patches", "patch_limits")]
    assert sorted(kinds) == ["patch_limits"] * 3 + ["patches"] * 3, "one of each per region"
    assert all(path.read_text() == text for path, text in before.items()), "nothing ran again"
    rows = {(r["region"], r["patch"]): r for r in report["rows"]}
    assert len(rows) == 6
    for key, row in rows.items():
        assert row["limit_reason"] == "" and row["status"] != "failed", key
        assert (row["mu_limit_obs"] < 1) == (row["cls_obs"] < 0.05), key
        assert (row["mu_limit_exp"][2] < 1) == (row["cls_exp"][2] < 0.05), key
        assert row["mu_limit_exp"] == sorted(row["mu_limit_exp"]), key
    excluded = rows[("RegionA", "sbottom_1400_950_60")]
    assert excluded["mu_limit_obs"] < 1 < rows[("RegionA", "sbottom_1300_205_60")]["mu_limit_obs"]
    region = next(i for i in load_likelihoods(source) if i.name == "RegionA")
    model, data = build_model(
        patched_spec(region.background, region.patch(excluded["patch"]).to_json())
    )
    at_limit = pyhf.infer.hypotest(excluded["mu_limit_obs"], data, model, test_stat="qtilde")
    assert float(at_limit) == pytest.approx(0.05, rel=1e-3)
    table = pq.read_table(store / report["saved"] / "results.parquet")
    assert table.schema.field("mu_limit_obs").type == pa.float64()
    assert table.schema.field("mu_limit_exp_median").type == pa.float64()

    shown = lamppost("reinterpret", str(store), "--patchset", source, *args, "--limits")
    assert shown.returncode == 0 and "mu95" in shown.stdout, shown.stderr[-3000:]


def test_chunks_cover_every_patch_once(shared_data: Path) -> None:
    source = shared_data / TARBALL
    likelihoods = load_likelihoods(source)
    tasks = patch_tasks(source, likelihoods, chunk=50)
    covered = [(t.payload["region"], name) for t in tasks for name in t.payload["patches"]]
    assert len(covered) == len(set(covered)) == 650
    assert all(len(t.payload["patches"]) <= 50 for t in tasks)
    with pytest.raises(KeyError, match="no patch named \\['sbottom_1_2_3'\\]"):
        patch_tasks(source, likelihoods, select=["sbottom_1_2_3"])


def test_bad_likelihoods_give_one_clear_error(
    store: Path, tmp_path: Path, shared_data: Path
) -> None:
    broken = tmp_path / "broken"
    with tarfile.open(shared_data / TARBALL) as archive:
        member = next(m for m in archive.getmembers() if m.name.endswith("RegionA/BkgOnly.json"))
        (broken / "RegionA").mkdir(parents=True)
        text = archive.extractfile(member).read().decode()
    (broken / "RegionA" / "BkgOnly.json").write_text(text[: len(text) // 2])
    done = lamppost("reinterpret", str(store), "--patchset", str(broken))
    assert done.returncode == 2
    assert "BkgOnly.json" in done.stderr and "line" in done.stderr
    missing = lamppost("reinterpret", str(store), "--patchset", str(tmp_path / "nowhere.tar.gz"))
    assert missing.returncode == 2 and "no such file or folder" in missing.stderr


def test_limit_tasks_are_their_own_and_a_failed_one_leaves_its_rows_without_limits(
    tmp_path: Path,
) -> None:
    """No Ray and no shared data: two patches, a CLs task and a limit task each; the second
    limit task never finished."""
    region = PublishedLikelihood(
        name="SR",
        background={"channels": []},
        patches=tuple(
            SignalPatch(name=name, parameters={"m": m}, operations=(), source="test")
            for name, m in (("p1", 1.0), ("p2", 2.0))
        ),
        source="test",
        digest="d",
    )
    source = tmp_path / "likelihood"
    tasks = patch_tasks(source, [region], chunk=1, limits=True, limit_chunk=1)
    assert [t.kind for t in tasks] == ["patches"] * 2 + ["patch_limits"] * 2
    assert len({t.key for t in tasks}) == 4
    assert [t.key for t in tasks[:2]] == [t.key for t in patch_tasks(source, [region], chunk=1)]
    assert all(t.payload["level"] == 0.05 for t in tasks[2:])
    store = Store(tmp_path / "store")
    finished = {}
    for n, task in enumerate(tasks[:3]):
        (name,) = task.payload["patches"]
        if task.kind == "patches":
            artifact = {"cls": f"t{n}/cls.json"}
            body = [
                {
                    "region": "SR",
                    "name": name,
                    "cls_obs": 0.01,
                    "cls_exp": [0.1] * 5,
                    "status": "ok",
                }
            ]
        else:
            artifact = {"limits": f"t{n}/limits.json"}
            body = [
                {
                    "region": "SR",
                    "name": name,
                    "observed": 0.5,
                    "expected": [0.4, 0.5, 0.6, 0.7, 0.8],
                    "reason": "",
                }
            ]
        store.write_text(next(iter(artifact.values())), json.dumps(body))
        finished[task.key] = TaskRecord(
            key=task.key,
            kind=task.kind,
            name=task.name,
            status="done",
            execution_id="e",
            started_at=0.0,
            finished_at=1.0,
            artifacts=artifact,
        )
    results = collect(source, [region], tasks, finished, store)
    assert results.missing == () and results.missing_limits == ("SR/p2",)
    first, second = results.rows
    assert (first["mu_limit_obs"], first["mu_limit_exp"][2]) == (0.5, 0.6)
    assert (second["mu_limit_obs"], second["mu_limit_exp"], second["cls_obs"]) == (None, None, 0.01)
    table = pq.read_table(store.local_path(save(store, results)) / "results.parquet")
    assert table.column("mu_limit_obs").to_pylist() == [0.5, None]
    assert table.schema.field("mu_limit_obs").type == pa.float64()
