"""Published likelihoods evaluated as part of a campaign: Ray tasks, ledger, per-point table."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from campaign.published import patch_tasks
from campaign.testing import lamppost
from searches.likelihoods import load_likelihoods
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
    assert table.schema.metadata[b"lamppost.published.schema_version"] == b"1"
    assert table.num_rows == len(rows) >= len(names)
    assert set(table.column_names) >= {"region", "patch", "m_sbottom", "m_chi2", "cls_obs"}

    again = lamppost(
        "reinterpret", str(store), "--patchset", str(shared_data / TARBALL), *args, "--json"
    )
    assert again.returncode == 0
    assert json.loads(again.stdout)["rows"] == report["rows"], "the ledger answers the rerun"


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
