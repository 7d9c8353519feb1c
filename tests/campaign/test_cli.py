"""The ``lamppost`` command line: where resume looks, how bad input is refused, submit's flags."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from campaign.cli import _stored_campaign, app
from campaign.spec import load_spec
from campaign.store import Store
from campaign.submit import FLAGS, TARGETS
from campaign.testing import BAD_SUBMIT_VALUES, LAMPPOST, small_campaign, write_campaign

GOLDEN = Path(__file__).parent / "golden"


def _cli(*args: str) -> tuple[int, str]:
    """Exit code and stderr of the CLI run in-process, with rich's boxes and wrapping removed."""
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.stderr).split())


def _lamppost_in(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LAMPPOST, *args],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "CI": "1"},
        cwd=cwd,
        check=False,
    )


def _tiny_campaign(store: Path) -> dict:
    return small_campaign(
        store,
        data={
            "background": {"simulator": "builtin", "events": 20000},
            "observed": {"pseudo": True},
        },
        signatures={"muon": {"pt": 25, "abs_eta": 2.5}, "views": ["exclusive"]},
        observables=["minv"],
        searches=[{"method": "scan", "pseudo_rounds": 50, "bin_width_sigma": 2}],
    )


# ------------------------------------------------------------------------------------ resume


@pytest.mark.slow
def test_resume_continues_the_given_store_from_any_directory(tmp_path: Path) -> None:
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    write_campaign(project / "c.yaml", _tiny_campaign(Path("runs/tiny")))
    first = _lamppost_in(project, "run", "c.yaml")
    assert first.returncode == 0, first.stderr[-3000:]
    store = project / "runs" / "tiny"
    finished = {r.key: r for r in Store(store).records()}
    assert finished

    uri = f"file://{store}"
    for cwd, argument in ((elsewhere, str(store)), (project / "runs", "tiny"), (elsewhere, uri)):
        resumed = _lamppost_in(cwd, "resume", argument)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert not (cwd / "runs").exists(), f"resume from {cwd} started a new store"
        assert {r.key: r for r in Store(store).records()} == finished
    shown = _lamppost_in(elsewhere, "status", uri)
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert "Most significant searches" in shown.stdout


def test_resume_reads_the_stored_spec_with_its_absolute_sample_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    (project / "bkg.parquet").touch()
    document = _tiny_campaign(Path("runs/tiny"))
    document["data"] = {"background": {"files": [{"path": "bkg.parquet", "xsec_pb": 10}]}}
    file = write_campaign(project / "c.yaml", document)
    monkeypatch.chdir(project)
    spec = load_spec(file)
    Store(spec.store).initialise(spec_text=file.read_text(), spec_json=spec.model_dump(mode="json"))

    monkeypatch.chdir(elsewhere)
    stored, text = _stored_campaign("../project/runs/tiny")
    assert stored.store == str((project / "runs" / "tiny").absolute())
    assert stored.data.background.files[0].path == str(project / "bkg.parquet")
    assert text == file.read_text()
    uri = f"file://{project / 'runs' / 'tiny'}"
    assert _stored_campaign(uri)[0].store == uri, "a store URI must reach the store as given"


@pytest.mark.parametrize("command", [["status"], ["status", "--json"], ["resume"], ["report"]])
def test_a_store_uri_pyarrow_cannot_open_is_one_clear_error(command: list[str]) -> None:
    code, message = _cli(*command, "nosuchscheme://bucket/run")
    assert code == 2
    assert "nosuchscheme://bucket/run: not a store location pyarrow can open" in message
    assert "allowed: a local folder, file:///absolute/path" in message


def test_resume_of_a_store_of_older_results_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    file = write_campaign(tmp_path / "c.yaml", _tiny_campaign(Path("runs/tiny")))
    spec = load_spec(file)
    store = Store(spec.store)
    store.initialise(spec_text=file.read_text(), spec_json=spec.model_dump(mode="json"))
    store.write_json("store.json", {"results_version": 1})
    code, message = _cli("resume", "runs/tiny")
    assert code == 2
    assert "its results were computed by another Lamppost (results version 1" in message
    assert list(store.records()) == []
    code, message = _cli("status", "runs/tiny")
    assert code == 0, f"status still reads it: {message}"


def test_resume_of_a_folder_without_a_campaign_names_it(tmp_path: Path) -> None:
    code, message = _cli("resume", str(tmp_path))
    assert code == 2
    assert f"{tmp_path}: not a campaign store (no spec.json)" in message
    assert list(tmp_path.iterdir()) == []


def test_report_of_a_folder_without_a_campaign_names_it(tmp_path: Path) -> None:
    code, message = _cli("report", str(tmp_path))
    assert code == 2
    assert message == f"error: {tmp_path}: not a campaign store (no spec.json)"
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------- errors


def test_errors_keep_bracketed_text(tmp_path: Path) -> None:
    document = _tiny_campaign(tmp_path / "store")
    document["theory"] = {"models": [{"name": "zprime", "space": {"mass": [3000, 500]}}]}
    code, message = _cli("validate", str(write_campaign(tmp_path / "c.yaml", document)))
    assert code == 2
    assert "expected [low, high] with low < high" in message


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--model", "zprime", "--n-events", "-5"], "'--n-events'"),
        (["--model", "zprime", "--max-fits", "-1"], "'--max-fits'"),
        (["--events", "signal.parquet", "--xsec-pb", "-1"], "'--xsec-pb': -1.0 is not allowed"),
        (["--events", "signal.parquet", "--xsec-pb", "nan"], "allowed: a finite number > 0"),
    ],
)
def test_reinterpret_refuses_impossible_numbers(
    flags: list[str], named: str, tmp_path: Path
) -> None:
    code, message = _cli("reinterpret", str(tmp_path), *flags)
    assert code == 2, message
    assert named in message
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------- submit


def test_submit_flags_reach_the_slurm_script(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, message = _cli(
        "submit", "--target", "slurm", str(GOLDEN / "campaign.yaml"), "--dry-run",
        "--out", "out", "--time", "2-00:00:00", "--partition", "gpu", "--account", "hep",
        "--setup", "module load cuda/12.8",
    )  # fmt: skip
    assert code == 0, message
    script = (tmp_path / "out" / "dilepton-and-friends-2026.sbatch").read_text()
    for line in ("--time=2-00:00:00", "--partition=gpu", "--account=hep"):
        assert f"#SBATCH {line}\n" in script
    assert "\nmodule load cuda/12.8\n" in script


def test_submit_flags_reach_the_rayjob(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, message = _cli(
        "submit", "--target", "k8s", str(GOLDEN / "campaign.yaml"), "--dry-run", "--out", "out",
        "--namespace", "physics", "--env-secret", "store-credentials",
    )  # fmt: skip
    assert code == 0, message
    job = yaml.safe_load((tmp_path / "out" / "rayjob.yaml").read_text())
    assert job["metadata"]["namespace"] == "physics"
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert head["envFrom"] == [{"secretRef": {"name": "store-credentials"}}]


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--target", "slurm", "--namespace", "x"], "--namespace: only for --target k8s"),
        (["--target", "k8s", "--setup", "module load x"], "--setup: only for --target slurm"),
        (["--target", "slurm", "--time", "one day"], "--time (time_limit): String should match"),
        (["--target", "k8s", "--env-secret", "Bad_Name"], "--env-secret (env_secret):"),
        (
            ["--target", "slurm", "--time", "one day", "--account", "hep group"],
            "(got 'one day'); account: String should match",
        ),
        (["--target", "nomad"], "--target: 'nomad' is not allowed; allowed: k8s, slurm"),
    ],
)
def test_submit_refuses_a_misplaced_or_bad_flag_before_writing(
    flags: list[str], expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, message = _cli("submit", str(GOLDEN / "campaign.yaml"), "--dry-run", *flags)
    assert code == 2
    assert expected in message
    assert list(tmp_path.iterdir()) == []


BAD_FLAG_VALUES = {k: v for k, v in BAD_SUBMIT_VALUES.items() if isinstance(v, str)}
"""The bad values a command line can give (``--setup`` takes any text)."""


@pytest.mark.parametrize("option", sorted(FLAGS))
def test_every_submit_flag_is_named_in_its_errors(
    option: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flag of the table reaches its option, and an error about it names what was typed."""
    assert set(BAD_FLAG_VALUES) == set(FLAGS) - {"setup"}, "give the new flag a bad value here"
    flag = FLAGS[option]
    (other,) = set(TARGETS) - {flag.target}
    monkeypatch.chdir(tmp_path)
    campaign = str(GOLDEN / "campaign.yaml")
    code, message = _cli("submit", campaign, "--dry-run", "--target", other, flag.flag, "x")
    assert code == 2
    assert message.startswith(f"error: {flag.flag}: only for --target {flag.target};")
    if option in BAD_FLAG_VALUES:
        bad = BAD_FLAG_VALUES[option]
        code, message = _cli(
            "submit", campaign, "--dry-run", "--target", flag.target, flag.flag, bad
        )
        assert code == 2
        renamed = {"time_limit": "--time (time_limit)", "env_secret": "--env-secret (env_secret)"}
        named = renamed.get(option, option)
        assert message.startswith(f"error: {named}: ") and repr(bad) in message
    assert list(tmp_path.iterdir()) == []
