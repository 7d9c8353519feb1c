"""Rendering a campaign for KubeRay and Slurm: goldens, schemas, kubernetes-validate, shellcheck.

The goldens compare exactly; after a deliberate template change regenerate them with
``LAMPPOST_REGEN_GOLDEN=1 python -m pytest tests/campaign/test_submit.py`` and review the diff.
"""

from __future__ import annotations

import copy
import inspect
import json
import os
import re
import shutil
import socket
import subprocess
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import tomllib
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from campaign.spec import load_spec, parse_spec
from campaign.submit import (
    BASE_NAME_LENGTH,
    DEFAULT_CPUS_PER_WORKER,
    FLAGS,
    OPTIONS,
    TARGETS,
    SubmitError,
    apply,
    k8s_name,
    layout,
    render,
    store_mount,
    submit,
    yaml_block,
)
from campaign.testing import BAD_SUBMIT_VALUES, REGEN_GOLDEN

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden"
DEPLOY = ROOT / "deploy"
REGEN = REGEN_GOLDEN
KUBERNETES_VERSION = "1.33.0"
"""The Kubernetes API the pod templates are validated against (offline, schemas ship in the wheel)."""

GOLDEN_OPTIONS: dict[str, dict[str, Any]] = {
    "k8s": {
        "image": "registry.example.org/physics/lamppost:0.1.0",
        "namespace": "physics",
        "ray_version": "2.60.0",
    },
    "slurm": {
        "campaign_path": "/shared/lamppost/campaign.yaml",
        "workdir": "/shared/lamppost",
        "partition": "gpu",
        "account": "hep",
        "time_limit": "12:00:00",
        "setup": "module load cuda/12.8\nsource /shared/lamppost/venv/bin/activate",
    },
}
DEPLOY_OPTIONS: dict[str, dict[str, Any]] = {
    "k8s": {"image": "lamppost:0.1.0", "ray_version": "2.60.0"},
    "slurm": {},
}


def _example(path: Path) -> tuple[Any, str]:
    return load_spec(path, check_store=False), path.read_text()


@pytest.fixture(scope="module")
def example() -> tuple[Any, str]:
    return _example(GOLDEN / "campaign.yaml")


@pytest.fixture(scope="module")
def k8s(example: tuple[Any, str]) -> dict[str, str]:
    spec, text = example
    return render("k8s", spec, spec_text=text, **GOLDEN_OPTIONS["k8s"])


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return json.loads(
        resources.files("campaign").joinpath("schemas/rayjob.schema.json").read_text()
    )


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a network connection fails: validation must work offline."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise OSError("network access is disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _compare_with(directory: Path, files: dict[str, str]) -> None:
    if REGEN:
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.iterdir():
            if stale.is_file() and stale.name not in files and stale.name != "README.md":
                stale.unlink()
        for name, text in files.items():
            (directory / name).write_text(text)
    present = {p.name for p in directory.iterdir() if p.is_file() and p.name != "README.md"}
    assert present == set(files)
    for name, text in files.items():
        assert (directory / name).read_text() == text, f"{directory / name} differs from render"


# ----------------------------------------------------------------------------------- goldens


@pytest.mark.parametrize("target", ["k8s", "slurm"])
def test_golden_files(target: str, example: tuple[Any, str]) -> None:
    spec, text = example
    files = render(target, spec, spec_text=text, **GOLDEN_OPTIONS[target])
    _compare_with(GOLDEN / target, files)


@pytest.mark.parametrize("target", ["k8s", "slurm"])
def test_deploy_examples_are_current(target: str) -> None:
    """The example manifests shipped in deploy/ are exactly what `lamppost submit` renders."""
    spec, text = _example(DEPLOY / "example-campaign.yaml")
    files = render(target, spec, spec_text=text, **DEPLOY_OPTIONS[target])
    _compare_with(DEPLOY / target, files)


def test_k8s_files_are_single_yaml_documents(k8s: dict[str, str]) -> None:
    assert sorted(k8s) == ["configmap.yaml", "pvc.yaml", "raycluster.yaml", "rayjob.yaml"]
    for name, text in k8s.items():
        documents = list(yaml.safe_load_all(text))
        assert len(documents) == 1, name
        assert documents[0]["metadata"]["namespace"] == "physics"


def test_configmap_carries_the_campaign_verbatim(k8s: dict[str, str], example: Any) -> None:
    configmap = yaml.safe_load(k8s["configmap.yaml"])
    assert configmap["data"]["campaign.yaml"] == example[1]
    assert parse_spec(yaml.safe_load(configmap["data"]["campaign.yaml"]), check_store=False)


# ------------------------------------------------------------------------- RayJob semantics


def test_rayjob_resumes_and_cleans_up(k8s: dict[str, str]) -> None:
    job = yaml.safe_load(k8s["rayjob.yaml"])
    spec = job["spec"]
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    assert spec["entrypoint"].endswith("lamppost run /etc/lamppost/campaign.yaml --resume")
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["ttlSecondsAfterFinished"] == 3600
    assert spec["activeDeadlineSeconds"] == 7 * 24 * 3600
    assert spec["backoffLimit"] == 2
    cluster = spec["rayClusterSpec"]
    assert cluster["authOptions"] == {"mode": "token"}
    assert cluster["rayVersion"] == "2.60.0"
    head = cluster["headGroupSpec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in head["containers"][0]["volumeMounts"]}
    assert mounts == {
        "campaign": "/etc/lamppost",
        "store": "/lamppost/work/runs/dilepton-and-friends",
    }
    volumes = {v["name"]: v for v in head["volumes"]}
    assert volumes["campaign"]["configMap"]["name"] == "dilepton-and-friends-2026-campaign"
    assert volumes["store"]["persistentVolumeClaim"]["claimName"] == (
        "dilepton-and-friends-2026-store"
    )
    pvc = yaml.safe_load(k8s["pvc.yaml"])
    assert pvc["metadata"]["name"] == "dilepton-and-friends-2026-store"


def test_gpu_worker_group_from_campaign_resources(k8s: dict[str, str]) -> None:
    """2 GPUs in total, at most 0.5 per search: two one-GPU workers, 16 CPUs spread over them."""
    cluster = yaml.safe_load(k8s["rayjob.yaml"])["spec"]["rayClusterSpec"]
    (group,) = cluster["workerGroupSpecs"]
    assert group["groupName"] == "gpu-workers"
    assert group["replicas"] == group["minReplicas"] == group["maxReplicas"] == 2
    pod = group["template"]["spec"]
    resources_ = pod["containers"][0]["resources"]
    for kind in ("requests", "limits"):
        assert resources_[kind]["nvidia.com/gpu"] == "1"
        assert resources_[kind]["cpu"] == "8"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    interactive = yaml.safe_load(k8s["raycluster.yaml"])
    assert interactive["kind"] == "RayCluster"
    assert interactive["metadata"]["name"] == "dilepton-and-friends-2026-interactive"
    assert len(interactive["metadata"]["name"]) <= 53
    assert interactive["spec"]["workerGroupSpecs"][0]["minReplicas"] == 0


# ------------------------------------------------------------------------------- JSON Schema


def test_rayjob_matches_schema(k8s: dict[str, str], schema: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(yaml.safe_load(k8s["rayjob.yaml"]), schema)


def test_raycluster_spec_matches_schema(k8s: dict[str, str], schema: dict[str, Any]) -> None:
    cluster_schema = {**schema["$defs"]["RayClusterSpec"], "$defs": schema["$defs"]}
    jsonschema.validate(yaml.safe_load(k8s["raycluster.yaml"])["spec"], cluster_schema)


def _drop(path: tuple[Any, ...]) -> Any:
    def mutate(job: dict[str, Any]) -> None:
        node = job
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]

    mutate.__name__ = "drop-" + ".".join(map(str, path[-2:]))
    return mutate


def _set(path: tuple[Any, ...], value: Any) -> Any:
    def mutate(job: dict[str, Any]) -> None:
        node = job
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    mutate.__name__ = f"set-{path[-1]}={value!r}"[:40]
    return mutate


CLUSTER = ("spec", "rayClusterSpec")
WORKER = (*CLUSTER, "workerGroupSpecs", 0)


@pytest.mark.parametrize(
    "mutate",
    [
        _drop((*CLUSTER, "headGroupSpec")),
        _drop((*CLUSTER, "headGroupSpec", "template")),
        _drop((*CLUSTER, "headGroupSpec", "rayStartParams")),
        _drop((*WORKER, "groupName")),
        _drop((*WORKER, "minReplicas")),
        _drop((*WORKER, "maxReplicas")),
        _drop((*WORKER, "template")),
        _drop((*WORKER, "rayStartParams")),
        _drop(("spec", "activeDeadlineSeconds")),
        _set(("spec", "shutdownAfterJobFinishes"), False),
        _set(("spec", "entrypoint"), "lamppost run /etc/lamppost/campaign.yaml"),
        _set(("spec", "ttlSecondsAfterFinshed"), 60),
        _set((*WORKER, "rayStartParams", "num-gpus"), 1),
        _set(("apiVersion",), "ray.io/v1alpha1"),
        _set(("metadata", "name"), "x" * 48),
        _set(("metadata", "name"), "1-starts-with-a-digit"),
    ],
    ids=lambda mutate: mutate.__name__,
)
def test_schema_rejects_broken_rayjobs(mutate: Any, k8s: dict[str, str], schema: dict) -> None:
    job = copy.deepcopy(yaml.safe_load(k8s["rayjob.yaml"]))
    mutate(job)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(job, schema)


# -------------------------------------------------------------------------- kubernetes-validate


def _pod_templates(k8s: dict[str, str]) -> list[tuple[str, dict[str, Any]]]:
    templates = []
    for name, cluster in (
        ("rayjob", yaml.safe_load(k8s["rayjob.yaml"])["spec"]["rayClusterSpec"]),
        ("raycluster", yaml.safe_load(k8s["raycluster.yaml"])["spec"]),
    ):
        templates.append((f"{name}-head", cluster["headGroupSpec"]["template"]))
        for group in cluster["workerGroupSpecs"]:
            templates.append((f"{name}-{group['groupName']}", group["template"]))
    return templates


def _as_pod_template(name: str, template: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PodTemplate",
        "metadata": {"name": name, "namespace": "physics"},
        "template": template,
    }


@pytest.mark.usefixtures("no_network")
def test_pod_templates_pass_kubernetes_validate(k8s: dict[str, str]) -> None:
    templates = _pod_templates(k8s)
    assert len(templates) == 4
    for name, template in templates:
        kubernetes_validate.validate(
            _as_pod_template(name, template), KUBERNETES_VERSION, strict=True
        )
    for name in ("configmap.yaml", "pvc.yaml"):
        kubernetes_validate.validate(yaml.safe_load(k8s[name]), KUBERNETES_VERSION, strict=True)


@pytest.mark.usefixtures("no_network")
def test_kubernetes_validate_catches_a_broken_pod_template(k8s: dict[str, str]) -> None:
    name, template = _pod_templates(k8s)[1]
    broken = copy.deepcopy(template)
    container = broken["spec"]["containers"][0]
    container["resourcess"] = container.pop("resources")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(
            _as_pod_template(name, broken), KUBERNETES_VERSION, strict=True
        )


# ---------------------------------------------------------------------------------- sbatch


def _sbatch(example: tuple[Any, str], **options: Any) -> str:
    spec, text = example
    files = render("slurm", spec, spec_text=text, **options)
    (script,) = (body for name, body in files.items() if name.endswith(".sbatch"))
    return script


SBATCH_VARIANTS = {
    "golden": GOLDEN_OPTIONS["slurm"],
    "defaults": {},
    "no-auth-no-requeue": {"auth": False, "requeue": False, "memory": "0"},
    "more-nodes": {"gpus_per_worker": 4, "workers": 3, "cpus_per_worker": 32},
    "cpu-only": {"workers": 3, "cpus_per_worker": 32},
}


@pytest.mark.parametrize("variant", sorted(SBATCH_VARIANTS))
def test_sbatch_passes_shellcheck(variant: str, example: Any, tmp_path: Path) -> None:
    source = (_spec(), "name: t\n") if variant == "cpu-only" else example
    script = tmp_path / "job.sbatch"
    script.write_text(_sbatch(source, **SBATCH_VARIANTS[variant]))
    syntax = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (apt-get install -y shellcheck)")
    result = subprocess.run(
        [shellcheck, "--shell=bash", "--severity=style", "--external-sources", str(script)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_sbatch_resources_and_launchers(example: Any) -> None:
    script = _sbatch(example, **GOLDEN_OPTIONS["slurm"])
    directives = dict(
        line.removeprefix("#SBATCH ").split("=", 1)
        for line in script.splitlines()
        if line.startswith("#SBATCH --") and "=" in line
    )
    assert directives["--nodes"] == "2"
    assert directives["--cpus-per-task"] == "8"
    assert directives["--gpus-per-task"] == "1"
    assert directives["--chdir"] == "/shared/lamppost"
    assert "#SBATCH --requeue" in script.splitlines()
    assert "ray symmetric-run --address" in script
    assert "ray start --head" in script and 'ray start --address="$RAY_ADDRESS"' in script
    assert script.count('lamppost run "$campaign_file" --resume') == 2
    assert 'cpus="${SLURM_CPUS_PER_TASK:-' in script and 'gpus="${SLURM_GPUS_PER_TASK:-' in script
    assert 'export RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"' in script
    assert "RAY_AUTH_TOKEN_PATH" in script
    assert "campaign_file=/shared/lamppost/campaign.yaml" in script
    cpu_only = _sbatch((_spec(), "name: t\n"))
    assert "--gpus-per-task" not in cpu_only and "#SBATCH --nodes=1" in cpu_only
    assert "RAY_AUTH_MODE:-disabled" in _sbatch(example, auth=False)


def test_sbatch_quotes_the_campaign_path(example: Any) -> None:
    with pytest.raises(SubmitError, match="campaign_path"):
        _sbatch(example, campaign_path="/path with space/campaign.yaml")
    script = _sbatch(example, campaign_path="/data/$HOME'x/campaign.yaml")
    assert "campaign_file='/data/$HOME'\"'\"'x/campaign.yaml'" in script


# --------------------------------------------------------------------------------- layout


def _spec(**overrides: Any) -> Any:
    document: dict[str, Any] = {
        "name": "t",
        "signatures": {"muon": {"pt": 25, "abs_eta": 2.5}},
        "searches": [{"method": "scan"}],
        "store": "runs/t",
    }
    document.update(overrides)
    return parse_spec(document, check_store=False)


def test_layout_cpu_only() -> None:
    assert layout(_spec()) == layout(_spec(), workers=1)
    size = layout(_spec())
    assert (size.workers, size.cpus_per_worker, size.gpus_per_worker) == (
        1,
        DEFAULT_CPUS_PER_WORKER,
        0,
    )
    size = layout(_spec(execution={"num_cpus": 12}), workers=4)
    assert (size.workers, size.cpus_per_worker) == (4, 3)


def test_layout_gpus() -> None:
    spec = _spec(
        searches=[{"method": "scan", "resources": {"cpus": 3, "gpus": 2}}],
        execution={"num_gpus": 5, "num_cpus": 6},
    )
    size = layout(spec)
    assert (size.workers, size.gpus_per_worker, size.cpus_per_worker) == (3, 2, 3)
    assert layout(spec, gpus_per_worker=8).workers == 1
    with pytest.raises(SubmitError, match=r"searches\.0\.resources\.gpus=2"):
        layout(spec, gpus_per_worker=1)
    with pytest.raises(SubmitError, match=r"searches\.0\.resources\.cpus=3"):
        layout(spec, cpus_per_worker=2)


def test_cpu_only_k8s_has_no_gpu_requests() -> None:
    files = render("k8s", _spec(), spec_text="name: t\n", ray_version="2.60.0")
    text = files["rayjob.yaml"]
    assert "nvidia.com/gpu" not in text and "tolerations" not in text
    group = yaml.safe_load(text)["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    assert group["groupName"] == "cpu-workers"


def test_object_store_uri_needs_no_volume(schema: dict[str, Any]) -> None:
    spec = _spec(store="s3://bucket/campaigns/t")
    files = render("k8s", spec, spec_text="x: 1\n", env_secret="s3-credentials", auth=False)
    assert "pvc.yaml" not in files
    job = yaml.safe_load(files["rayjob.yaml"])
    jsonschema.validate(job, schema)
    cluster = job["spec"]["rayClusterSpec"]
    assert "authOptions" not in cluster
    head = cluster["headGroupSpec"]["template"]["spec"]
    assert [v["name"] for v in head["volumes"]] == ["campaign"]
    for template in (head, cluster["workerGroupSpecs"][0]["template"]["spec"]):
        assert template["containers"][0]["envFrom"] == [{"secretRef": {"name": "s3-credentials"}}]


def test_store_mount_paths() -> None:
    assert store_mount("runs/x") == "/lamppost/work/runs/x"
    assert store_mount("/data/x/") == "/data/x"
    assert store_mount("file:///data/x") == "/data/x"
    assert store_mount("gs://bucket/x") is None
    for bad in ("/", "../../..", "/etc/lamppost/x"):
        with pytest.raises(SubmitError, match="store"):
            store_mount(bad)


# ----------------------------------------------------------------------------- names, YAML

DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=120))
def test_k8s_name_is_an_rfc1035_label(text: str) -> None:
    name = k8s_name(text)
    assert DNS_1035.fullmatch(name) and len(name) <= BASE_NAME_LENGTH
    assert k8s_name(name) == name


def test_k8s_name_examples() -> None:
    assert k8s_name("Dilepton_and_Friends 2026") == "dilepton-and-friends-2026"
    assert k8s_name("2026 run") == "lp-2026-run"
    assert k8s_name("") == "lp"
    long_a, long_b = "a" * 60 + "-one", "a" * 60 + "-two"
    assert k8s_name(long_a) != k8s_name(long_b)
    assert len(k8s_name(long_a)) == BASE_NAME_LENGTH


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(st.characters(blacklist_categories=("Cs",))),
        st.lists(st.text(st.sampled_from(list("ab: -#\t'\"|>{}[]")), max_size=12), max_size=8).map(
            "\n".join
        ),
    ),
    st.integers(0, 3),
)
def test_yaml_block_round_trips(text: str, trailing: int) -> None:
    text += "\n" * trailing
    document = f"data:\n  campaign.yaml: {yaml_block(text, 4)}\n"
    assert yaml.safe_load(document) == {"data": {"campaign.yaml": text}}


def test_yaml_block_is_literal_for_campaign_files(example: tuple[Any, str]) -> None:
    assert yaml_block(example[1], 4).startswith("|\n    # Fixed campaign")


# --------------------------------------------------------------------------- bad options


@pytest.mark.parametrize(
    ("target", "options", "match"),
    [
        ("k8s", {"namespace": "Physics"}, "namespace"),
        ("k8s", {"image": "lamppost latest"}, "image"),
        ("k8s", {"head_memory": "8 gigs"}, "head_memory"),
        ("k8s", {"partition": "gpu"}, r"partition: unknown option; allowed: .*head_cpus"),
        ("k8s", {"workers": 0}, "workers"),
        ("slurm", {"time_limit": "one day"}, "time_limit"),
        ("slurm", {"workdir": "relative/dir"}, "workdir"),
        ("slurm", {"image_pull_policy": "Always"}, "image_pull_policy: unknown option"),
        ("nomad", {}, "target: 'nomad' is not supported; allowed: k8s, slurm"),
    ],
)
def test_bad_options_name_the_field(target: str, options: dict, match: str, example: Any) -> None:
    spec, text = example
    with pytest.raises(SubmitError, match=match):
        render(target, spec, spec_text=text, **options)


@pytest.mark.parametrize("option", sorted(FLAGS))
def test_every_flag_is_checked_by_its_target(option: str, example: Any) -> None:
    """The flag table, the options models and render's own checks agree on every option."""
    assert set(BAD_SUBMIT_VALUES) == set(FLAGS), "give every flag an out-of-range value here"
    flag = FLAGS[option]
    (other,) = set(TARGETS) - {flag.target}
    assert flag.flag.startswith("--") and flag.help
    assert (
        option in OPTIONS[flag.target].model_fields
        or option in inspect.signature(render).parameters
    )
    assert option not in OPTIONS[other].model_fields
    spec, text = example
    with pytest.raises(SubmitError) as refused:
        render(flag.target, spec, spec_text=text, **{option: BAD_SUBMIT_VALUES[option]})
    assert refused.value.field == option
    assert str(refused.value).startswith(f"{option}: ")


def test_every_bad_option_is_named_at_once(example: Any) -> None:
    spec, text = example
    with pytest.raises(SubmitError) as refused:
        render("slurm", spec, spec_text=text, time_limit="one day", account="hep group")
    assert [field for field, _ in refused.value.problems] == ["time_limit", "account"]
    named = refused.value.describe(str.upper)
    assert named.startswith("TIME_LIMIT: String should match") and "; ACCOUNT: " in named


# ------------------------------------------------------------------------------- apply


@pytest.mark.parametrize("target", ["k8s", "slurm"])
def test_apply_dry_run_writes_files(target: str, example: Any, tmp_path: Path) -> None:
    spec, text = example
    files = render(target, spec, spec_text=text, **GOLDEN_OPTIONS[target])
    done = apply(target, files, out_dir=tmp_path / "out", dry_run=True)
    assert done.command is None
    assert sorted(p.name for p in done.files) == sorted(files)
    for path in done.files:
        assert path.read_text() == files[path.name]
        if path.suffix == ".sbatch":
            assert os.access(path, os.X_OK)


@pytest.mark.parametrize(("target", "tool"), [("k8s", "kubectl"), ("slurm", "sbatch")])
def test_apply_without_the_tool_says_which(
    target: str, tool: str, example: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    spec, text = example
    files = render(target, spec, spec_text=text, **GOLDEN_OPTIONS[target])
    with pytest.raises(SubmitError, match=f"{tool} not found on PATH.*--dry-run"):
        apply(target, files, out_dir=tmp_path / "out", dry_run=False)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(files)


def test_submit_slurm_dry_run_points_at_its_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    source = tmp_path / "my-campaign.yaml"
    source.write_text((GOLDEN / "campaign.yaml").read_text())
    done = submit("slurm", source, out_dir="rendered", dry_run=True)
    copy_ = tmp_path / "rendered" / "campaign.yaml"
    assert copy_.read_text() == source.read_text()
    script = (tmp_path / "rendered" / "dilepton-and-friends-2026.sbatch").read_text()
    assert f"campaign_file={copy_}" in script
    assert f"#SBATCH --chdir={tmp_path}" in script
    assert done.out_dir == Path("rendered")


def _campaign_with_relative_sample(folder: Path, written: str = "bkg.parquet") -> Path:
    """The golden campaign reading ``bkg.parquet`` beside it, as ``written`` (empty: paths only)."""
    folder.mkdir()
    (folder / "bkg.parquet").touch()
    document = yaml.safe_load((GOLDEN / "campaign.yaml").read_text())
    document["data"] = {"background": {"files": [{"path": written, "xsec_pb": 10}]}}
    file = folder / "campaign.yaml"
    file.write_text(yaml.safe_dump(document))
    return file


def test_submit_slurm_copy_keeps_relative_samples_pointing_at_the_originals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _campaign_with_relative_sample(tmp_path / "project")
    monkeypatch.chdir(tmp_path)
    submit("slurm", source, out_dir="rendered", dry_run=True)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    copied = load_spec(tmp_path / "rendered" / "campaign.yaml")
    assert copied.data.background.files[0].path == str(tmp_path / "project" / "bkg.parquet")
    assert copied.model_dump(exclude={"store"}) == load_spec(source).model_dump(exclude={"store"})


def test_submit_k8s_refuses_relative_samples_before_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _campaign_with_relative_sample(tmp_path / "project")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SubmitError, match=r"data\.background\.files\.0\.path \('bkg\.parquet'\)"):
        submit("k8s", source, out_dir="rendered", dry_run=True)
    assert not (tmp_path / "rendered").exists()
    dotted = _campaign_with_relative_sample(tmp_path / "dotted", "../dotted/bkg.parquet")
    with pytest.raises(SubmitError, match=re.escape("('../dotted/bkg.parquet')")):
        submit("k8s", dotted, out_dir="rendered", dry_run=True)


@pytest.mark.parametrize("beside", [True, False], ids=["beside-the-file", "elsewhere"])
def test_submit_ships_a_campaign_with_absolute_samples_verbatim(
    beside: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    sample = (project if beside else tmp_path) / "bkg.parquet"
    sample.touch()
    document = yaml.safe_load((GOLDEN / "campaign.yaml").read_text())
    document["data"] = {"background": {"files": [{"path": str(sample), "xsec_pb": 10}]}}
    source = project / "campaign.yaml"
    source.write_text("# the user's comment\n" + yaml.safe_dump(document))
    monkeypatch.chdir(tmp_path)
    submit("slurm", source, out_dir="slurm", dry_run=True)
    assert (tmp_path / "slurm" / "campaign.yaml").read_text() == source.read_text()
    submit("k8s", source, out_dir="k8s", dry_run=True)
    configmap = yaml.safe_load((tmp_path / "k8s" / "configmap.yaml").read_text())
    assert configmap["data"]["campaign.yaml"] == source.read_text()


def test_submit_default_out_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    done = submit("k8s", GOLDEN / "campaign.yaml", dry_run=True)
    assert done.out_dir == Path("lamppost-submit/dilepton-and-friends-2026-k8s")
    assert (tmp_path / done.out_dir / "rayjob.yaml").is_file()


# ------------------------------------------------------------------------------ Dockerfile


def test_dockerfile_installs_every_package() -> None:
    text = (DEPLOY / "docker" / "Dockerfile").read_text()
    base = re.search(r"^ARG CUDA_IMAGE=(\S+)$", text, re.M)
    assert base and re.fullmatch(r"nvidia/cuda:\d+\.\d+\.\d+-runtime-ubuntu\d+\.\d+", base[1])
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    top_level = {name.split(".")[0] for name in pyproject["tool"]["setuptools"]["packages"]}
    copied = set(re.findall(r"^COPY (\w+) \./\1$", text, re.M))
    assert copied == top_level
    ignore = (DEPLOY / "docker" / "Dockerfile.dockerignore").read_text().split()
    assert {f"!{name}/**" for name in top_level} <= set(ignore)
