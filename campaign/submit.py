"""Render a campaign for a cluster: a KubeRay ``RayJob`` (Kubernetes) or an sbatch script (Slurm).

The same campaign file runs on a laptop, on Kubernetes and on a Slurm allocation; only the place
where Ray lives changes. A RayJob retry and a Slurm requeue both start a *fresh* Ray cluster, so
every rendered entrypoint is ``lamppost run FILE --resume``: the store, not the cluster, carries
the campaign's progress, and a restart costs time, not results.

Rendering is pure (campaign in, file name → text out) so it is golden-tested; :func:`apply` writes
the files and hands them to ``kubectl`` or ``sbatch``. The driver connects to the cluster through
``RAY_ADDRESS``, which Ray Jobs set on Kubernetes and the sbatch script exports on Slurm.

Example:
    >>> from campaign.spec import load_spec
    >>> spec = load_spec("campaign.yaml", check_store=False)  # doctest: +SKIP
    >>> files = render("k8s", spec, spec_text=open("campaign.yaml").read())  # doctest: +SKIP
    >>> sorted(files)  # doctest: +SKIP
    ['configmap.yaml', 'pvc.yaml', 'raycluster.yaml', 'rayjob.yaml']
"""

from __future__ import annotations

import hashlib
import json
import math
import posixpath
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal

import jinja2
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from campaign import __version__
from campaign.spec import CampaignSpec, expand_path, load_spec

Target = Literal["k8s", "slurm"]
TARGETS: tuple[str, ...] = ("k8s", "slurm")
DEFAULT_IMAGE = f"lamppost:{__version__}"
DEFAULT_CPUS_PER_WORKER = 4
CAMPAIGN_MOUNT = "/etc/lamppost"
WORKDIR = "/lamppost/work"
CAMPAIGN_KEY = "campaign.yaml"
BASE_NAME_LENGTH = 40
"""Longest base name: KubeRay caps RayJob names at 47 and RayCluster names at 53 characters."""

_QUANTITY = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$"
_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
_DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
_SLURM_NAME = r"^[A-Za-z0-9_.,-]+$"


Problem = tuple[str | None, str]
"""``(field, detail)``: the option or campaign field at fault (``None`` when no one field is),
and what is wrong with it and what is allowed."""


class SubmitError(ValueError):
    """A submission that cannot be rendered or applied; the message names field and remedy.

    The field is kept apart from the text (``problems``, ``field``) so that a caller can call it
    by its own name: ``lamppost submit`` names the flag that was typed, not the option it sets.
    """

    def __init__(
        self, detail: str = "", *, field: str | None = None, problems: Sequence[Problem] = ()
    ) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems) or ((field, detail),)
        super().__init__(self.describe())

    @property
    def field(self) -> str | None:
        """The field at fault (the first one when several are)."""
        return self.problems[0][0]

    def describe(self, name: Callable[[str], str] = str) -> str:
        """The message, with every field called ``name(field)``."""
        return "; ".join(
            detail if field is None else f"{name(field)}: {detail}"
            for field, detail in self.problems
        )


def _check_target(target: str) -> None:
    if target not in TARGETS:
        raise SubmitError(
            f"{target!r} is not supported; allowed: {', '.join(TARGETS)}", field="target"
        )


def _ray_version() -> str:
    try:
        return metadata.version("ray")
    except metadata.PackageNotFoundError:
        return "2.60.0"


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    workers: Annotated[int, Field(ge=1, le=10_000)] | None = None
    cpus_per_worker: Annotated[int, Field(ge=1, le=1024)] | None = None
    gpus_per_worker: Annotated[int, Field(ge=0, le=64)] | None = None
    auth: bool = True


class K8sOptions(_Options):
    """Knobs of the Kubernetes rendering beyond what the campaign file says."""

    head_cpus: Annotated[int, Field(ge=1, le=1024)] = 2
    head_memory: Annotated[str, Field(pattern=_QUANTITY)] = "8Gi"
    worker_memory: Annotated[str, Field(pattern=_QUANTITY)] = "16Gi"
    store_size: Annotated[str, Field(pattern=_QUANTITY)] = "50Gi"
    storage_class: Annotated[str, Field(pattern=_DNS_SUBDOMAIN, max_length=253)] | None = None
    env_secret: Annotated[str, Field(pattern=_DNS_SUBDOMAIN, max_length=253)] | None = None
    ray_version: Annotated[str, Field(pattern=r"^[0-9]+\.[0-9]+\.[0-9]+$")] = _ray_version()
    backoff_limit: Annotated[int, Field(ge=0, le=100)] = 2
    active_deadline_s: Annotated[int, Field(ge=1)] = 7 * 24 * 3600
    ttl_s: Annotated[int, Field(ge=0)] = 3600


class SlurmOptions(_Options):
    """Knobs of the Slurm rendering beyond what the campaign file says."""

    campaign_path: Annotated[str, Field(min_length=1, pattern=r"^\S+$")] = CAMPAIGN_KEY
    workdir: Annotated[str, Field(pattern=r"^/\S*$")] | None = None
    time_limit: Annotated[str, Field(pattern=r"^([0-9]+-)?[0-9]+(:[0-9]{2}){0,2}$")] = "24:00:00"
    partition: Annotated[str, Field(pattern=_SLURM_NAME)] | None = None
    account: Annotated[str, Field(pattern=_SLURM_NAME)] | None = None
    memory: Annotated[str, Field(pattern=r"^[0-9]+[KMGT]?$")] | None = None
    setup: str = ""
    requeue: bool = True
    ray_port: Annotated[int, Field(ge=1024, le=65535)] = 6379


OPTIONS: Mapping[str, type[_Options]] = MappingProxyType({"k8s": K8sOptions, "slurm": SlurmOptions})
"""Each target's options model: the options it takes and their allowed values."""


@dataclass(frozen=True)
class Flag:
    """A ``lamppost submit`` flag: the option of :func:`submit` it sets and the target it is for.

    :data:`FLAGS` is the one place that ties them together: the CLI declares its flags and their
    help from it, refuses a flag given with the other target, and names the flag in an error
    about its option. The allowed values are those of the option in the target's model in
    :data:`OPTIONS`, or of :func:`render`'s own check for ``image`` and ``namespace``.
    """

    option: str
    flag: str
    target: Target
    help: str


FLAGS: Mapping[str, Flag] = MappingProxyType(
    {
        flag.option: flag
        for flag in (
            Flag("image", "--image", "k8s", "Container image (k8s)."),
            Flag(
                "namespace", "--namespace", "k8s", "Kubernetes namespace (k8s; default: default)."
            ),
            Flag(
                "env_secret",
                "--env-secret",
                "k8s",
                "Secret whose keys become environment variables of every Ray container (k8s), "
                "e.g. object-store credentials.",
            ),
            Flag(
                "time_limit",
                "--time",
                "slurm",
                "Job time limit (slurm; default 24:00:00), e.g. 2-00:00:00.",
            ),
            Flag("partition", "--partition", "slurm", "Partition (slurm)."),
            Flag("account", "--account", "slurm", "Account (slurm)."),
            Flag(
                "setup",
                "--setup",
                "slurm",
                "Shell lines run before Ray starts (slurm), e.g. 'module load cuda'.",
            ),
        )
    }
)
"""The flags of ``lamppost submit`` that set an option of :func:`submit`, by option."""


@dataclass(frozen=True)
class Layout:
    """The Ray worker nodes a campaign asks for: ``workers`` nodes of equal size."""

    workers: int
    cpus_per_worker: int
    gpus_per_worker: int


@dataclass(frozen=True)
class Submission:
    """What :func:`apply` did: the files it wrote and the command it ran (``None`` on dry run)."""

    target: str
    out_dir: Path
    files: tuple[Path, ...]
    command: tuple[str, ...] | None
    output: str


def layout(
    spec: CampaignSpec,
    *,
    workers: int | None = None,
    cpus_per_worker: int | None = None,
    gpus_per_worker: int | None = None,
) -> Layout:
    """Size the worker nodes from the campaign's resource requests.

    Each node gets at least the largest single search request (rounded up to whole devices), so
    every task fits somewhere; with GPUs, enough nodes to hold ``execution.num_gpus``; CPUs are
    ``execution.num_cpus`` spread over the nodes, or :data:`DEFAULT_CPUS_PER_WORKER` when the
    campaign leaves CPUs uncapped. Explicit arguments override; one too small for a search is an
    error rather than a cluster on which that search would wait forever.
    """
    need_cpus = max(search.resources.cpus for search in spec.searches)
    need_gpus = max(search.resources.gpus for search in spec.searches)
    gpus = math.ceil(need_gpus) if gpus_per_worker is None else gpus_per_worker
    if gpus < need_gpus:
        index = _largest(spec, "gpus")
        raise SubmitError(
            f"gpus_per_worker={gpus} is less than searches.{index}.resources.gpus={need_gpus}; "
            f"allowed: gpus_per_worker >= {math.ceil(need_gpus)}"
        )
    if workers is None:
        total_gpus = max(math.ceil(spec.execution.num_gpus), gpus)
        workers = math.ceil(total_gpus / gpus) if gpus else 1
    if cpus_per_worker is None:
        num_cpus = spec.execution.num_cpus
        spread = math.ceil(num_cpus / workers) if num_cpus else DEFAULT_CPUS_PER_WORKER
        cpus_per_worker = max(math.ceil(need_cpus), spread, 1)
    elif cpus_per_worker < need_cpus:
        index = _largest(spec, "cpus")
        raise SubmitError(
            f"cpus_per_worker={cpus_per_worker} is less than searches.{index}.resources.cpus="
            f"{need_cpus}; allowed: cpus_per_worker >= {math.ceil(need_cpus)}"
        )
    return Layout(workers=workers, cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus)


def _largest(spec: CampaignSpec, field: str) -> int:
    values = [getattr(search.resources, field) for search in spec.searches]
    return values.index(max(values))


def k8s_name(text: str, *, max_length: int = BASE_NAME_LENGTH) -> str:
    """An RFC 1035 label (lowercase, ``[a-z0-9-]``, starts with a letter) for ``text``.

    Long names keep a hash of the original, so two campaigns sharing a long prefix still get
    different Kubernetes objects.
    """
    name = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    if not name or not name[0].isalpha():
        name = f"lp-{name}".rstrip("-")
    if len(name) > max_length:
        digest = hashlib.sha256(text.encode()).hexdigest()[:6]
        name = f"{name[: max_length - 7].rstrip('-')}-{digest}"
    return name


def store_mount(store: str) -> str | None:
    """Where a local store lives inside the head container; ``None`` for object-store URIs.

    A relative store resolves under :data:`WORKDIR` (the driver's working directory), an
    absolute one stays where the campaign file says, so the campaign file needs no edit.
    """
    if "://" in store and not store.startswith("file://"):
        return None
    path = posixpath.normpath(posixpath.join(WORKDIR, store.removeprefix("file://")))
    if path == "/" or path == CAMPAIGN_MOUNT or path.startswith(CAMPAIGN_MOUNT + "/"):
        raise SubmitError(
            f"{store!r} would be mounted at {path}; allowed: a directory other than "
            f"/ and {CAMPAIGN_MOUNT}, or an object-store URI such as s3://bucket/path",
            field="store",
        )
    return path


def yaml_block(text: str, indent: int) -> str:
    """``text`` as a YAML scalar that reads back exactly: a literal block when that is safe.

    The campaign file is shipped in a ConfigMap; a literal block keeps it readable in
    ``kubectl describe``. Text a literal block cannot carry exactly (leading blank or indented
    first line, trailing spaces, tabs, YAML line-break characters) becomes a double-quoted scalar.
    """
    lines = text.rstrip("\n").split("\n")
    safe = (
        text.strip() != ""
        and not text.startswith((" ", "\n"))
        and all(ch == "\n" or (ch.isprintable() and ch not in _UNSAFE) for ch in text)
        and all(line == line.rstrip() for line in lines)
    )
    if not safe:
        return yaml_quoted(text)
    trailing = len(text) - len(text.rstrip("\n"))
    chomp = "-" if trailing == 0 else "" if trailing == 1 else "+"
    pad = " " * indent
    body = "\n".join(pad + line if line else "" for line in lines)
    return f"|{chomp}\n{body}" + "\n" * max(trailing - 1, 0)


_UNSAFE = frozenset("\t\ufeff\x85\u2028\u2029")


def yaml_quoted(text: str) -> str:
    """``text`` as a YAML double-quoted scalar (escapes everything YAML treats specially)."""
    out = []
    for ch in text:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif code < 0x20 or 0x7F <= code <= 0x9F or ch in _UNSAFE or code in (0xFFFE, 0xFFFF):
            out.append(f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("campaign", "templates"),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
    autoescape=False,
)
_ENV.filters["json"] = json.dumps
_ENV.filters["yaml_quoted"] = yaml_quoted
_ENV.filters["shquote"] = shlex.quote
_ENV.filters["yaml_block"] = yaml_block


def render(
    target: Target,
    spec: CampaignSpec,
    *,
    spec_text: str,
    image: str = DEFAULT_IMAGE,
    namespace: str = "default",
    **options: Any,
) -> dict[str, str]:
    """Render the files that launch ``spec`` on ``target``.

    Args:
        target: ``"k8s"`` (ConfigMap, PVC for a local store, RayJob, interactive RayCluster)
            or ``"slurm"`` (an sbatch script and the campaign file it runs).
        spec: the validated campaign.
        spec_text: the campaign file as written; it is shipped verbatim so the cluster runs
            exactly what was validated here.
        image: container image with Lamppost installed (Kubernetes only).
        namespace: Kubernetes namespace (Kubernetes only).
        **options: fields of :class:`K8sOptions` or :class:`SlurmOptions`.

    Returns:
        File name → file text.

    Raises:
        SubmitError: unknown target, or an option outside its allowed values.
    """
    _check_target(target)
    model = OPTIONS[target]
    try:
        opts = model.model_validate(options)
    except ValidationError as err:
        raise SubmitError(problems=_problems(err, model)) from None
    size = layout(
        spec,
        workers=opts.workers,
        cpus_per_worker=opts.cpus_per_worker,
        gpus_per_worker=opts.gpus_per_worker,
    )
    context: dict[str, Any] = {
        "campaign": spec.name,
        "base": k8s_name(spec.name),
        "layout": size,
        "opts": opts,
        "spec_text": spec_text,
        "version": __version__,
    }
    if target == "k8s":
        return _render_k8s(context, image=image, namespace=namespace, store=spec.store)
    return _render_slurm(context)


def _render_k8s(
    context: dict[str, Any], *, image: str, namespace: str, store: str
) -> dict[str, str]:
    if not re.fullmatch(_DNS_LABEL, namespace):
        raise SubmitError(
            f"{namespace!r} is not an RFC 1123 label; allowed: at most 63 lowercase "
            "letters, digits and '-', starting and ending with a letter or digit",
            field="namespace",
        )
    if not image or any(ch.isspace() for ch in image):
        raise SubmitError(
            f"{image!r} is not an image reference; allowed: e.g. repo/name:tag", field="image"
        )
    mount = store_mount(store)
    context = {
        **context,
        "image": image,
        "namespace": namespace,
        "store_mount": mount,
        "campaign_mount": CAMPAIGN_MOUNT,
        "campaign_key": CAMPAIGN_KEY,
        "workdir": WORKDIR,
        "entrypoint": (
            f"mkdir -p {WORKDIR} && cd {WORKDIR} && "
            f"lamppost run {CAMPAIGN_MOUNT}/{CAMPAIGN_KEY} --resume"
        ),
    }
    files = {
        "configmap.yaml": _ENV.get_template("k8s-configmap.yaml.j2").render(context),
        "rayjob.yaml": _ENV.get_template("k8s-rayjob.yaml.j2").render(context),
        "raycluster.yaml": _ENV.get_template("k8s-raycluster.yaml.j2").render(context),
    }
    if mount is not None:
        files["pvc.yaml"] = _ENV.get_template("k8s-pvc.yaml.j2").render(context)
    return dict(sorted(files.items()))


def _render_slurm(context: dict[str, Any]) -> dict[str, str]:
    script = _ENV.get_template("slurm.sbatch.j2").render(context)
    return {f"{context['base']}.sbatch": script, CAMPAIGN_KEY: context["spec_text"]}


def _problems(err: ValidationError, model: type[BaseModel]) -> list[Problem]:
    """Every option ``model`` refused, not just the first, so one rerun can fix them all."""
    problems: list[Problem] = []
    for error in err.errors():
        field = ".".join(str(part) for part in error["loc"])
        if error["type"] == "extra_forbidden":
            allowed = ", ".join(sorted(model.model_fields))
            problems.append((field, f"unknown option; allowed: {allowed}"))
        else:
            problems.append((field, f"{error['msg']} (got {error.get('input')!r})"))
    return problems


def apply_order(target: Target, files: dict[str, str]) -> list[str]:
    """The rendered files that :func:`apply` submits, in order (the RayCluster is interactive)."""
    if target == "k8s":
        return [name for name in ("configmap.yaml", "pvc.yaml", "rayjob.yaml") if name in files]
    return [name for name in files if name.endswith(".sbatch")]


def apply(
    target: Target, rendered: dict[str, str], *, out_dir: str | Path, dry_run: bool = False
) -> Submission:
    """Write the rendered files into ``out_dir`` and, unless ``dry_run``, submit them.

    Kubernetes: ``kubectl apply -f`` the ConfigMap, the PVC (if any) and the RayJob. Slurm:
    ``sbatch`` the script. The files are written first in every case, so a failed submission
    leaves something to inspect and retry by hand.

    Raises:
        SubmitError: the submit command is not on ``PATH``, or it failed (its stderr included).
    """
    _check_target(target)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in rendered.items():
        path = out / name
        path.write_text(text)
        if name.endswith(".sbatch"):
            path.chmod(0o755)
        written.append(path)
    if dry_run:
        return Submission(target, out, tuple(written), None, "")
    tool = "kubectl" if target == "k8s" else "sbatch"
    executable = shutil.which(tool)
    if executable is None:
        raise SubmitError(
            f"{tool} not found on PATH; install it, or rerun with --dry-run and submit the "
            f"files in {out} yourself"
        )
    paths = [str(out / name) for name in apply_order(target, rendered)]
    if target == "k8s":
        command = [executable, "apply", *(arg for path in paths for arg in ("-f", path))]
    else:
        command = [executable, *paths]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SubmitError(
            f"{tool} failed (exit {result.returncode}): {result.stderr.strip() or result.stdout.strip()}"
        )
    return Submission(target, out, tuple(written), tuple(command), result.stdout)


def _relative_samples(document: Any, spec: CampaignSpec) -> list[tuple[str, int, str, str]]:
    """``(role, index, path as written, absolute path)`` of every sample path written relative.

    Such a path means "next to the campaign file", which only holds where the file was
    validated: the Slurm copy lives in another folder and the Kubernetes ConfigMap is mounted
    alone at :data:`CAMPAIGN_MOUNT`.
    """
    found = []
    for role in ("background", "observed"):
        written = ((document.get("data") or {}).get(role) or {}).get("files") or []
        expanded = getattr(getattr(spec.data, role), "files", None) or []
        for index, (raw, sample) in enumerate(zip(written, expanded, strict=True)):
            if not Path(expand_path(raw["path"])).is_absolute() and "://" not in sample.path:
                found.append((role, index, raw["path"], sample.path))
    return found


def _shipped_text(target: Target, path: Path, spec: CampaignSpec) -> str:
    """The campaign file as shipped to ``target``: verbatim, unless a sample path is relative.

    Slurm jobs run on a shared filesystem, so the copy gets those paths made absolute (they
    name the files validated here). A pod sees its image and volumes, with the campaign file
    alone in its ConfigMap mount, so Kubernetes refuses them here rather than when the job
    starts. The copy is the user's document with only those paths changed, not a dump of
    ``spec``, which has every variable expanded and every default filled in (and no longer
    says which paths were written relative), so the file is read here as written.
    """
    text = path.read_text()
    document = yaml.safe_load(text)
    relative = _relative_samples(document, spec)
    if not relative:
        return text
    if target == "k8s":
        named = ", ".join(
            f"data.{role}.files.{index}.path ({written!r})" for role, index, written, _ in relative
        )
        raise SubmitError(
            f"{path}: {named}: relative to the campaign file, which the pods see alone at "
            f"{CAMPAIGN_MOUNT}; allowed on Kubernetes: an absolute path inside the image or a "
            "mounted volume, or a remote URI (root://, s3://, gs://)"
        )
    for role, index, _, absolute in relative:
        document["data"][role]["files"][index]["path"] = absolute
    header = f"# Copy of {path.resolve()} for Slurm; relative sample paths made absolute.\n"
    return header + yaml.safe_dump(document, sort_keys=False, allow_unicode=True)


def submit(
    target: Target,
    file: str | Path,
    *,
    out_dir: str | Path | None = None,
    image: str = DEFAULT_IMAGE,
    namespace: str = "default",
    dry_run: bool = False,
    **options: Any,
) -> Submission:
    """``lamppost submit``: validate ``file``, render it for ``target``, write and submit.

    The store is not checked locally (it lives on the cluster). For Slurm, the job reads the
    copy of the campaign file written to ``out_dir`` and runs in the current directory, so a
    relative store resolves where it would on this machine; relative sample paths are made
    absolute in the copy, so they still name the files next to ``file``. Kubernetes refuses
    relative sample paths (see :func:`_shipped_text`).

    Args:
        target: ``"k8s"`` or ``"slurm"``.
        file: the campaign file.
        out_dir: where the rendered files go; default ``lamppost-submit/<name>-<target>``.
        image, namespace: see :func:`render`.
        dry_run: write the files only.
        **options: :class:`K8sOptions` or :class:`SlurmOptions` fields.

    Raises:
        campaign.spec.SpecError: the campaign file is invalid.
        SubmitError: rendering or submission failed.
    """
    path = Path(file)
    spec = load_spec(path, check_store=False)
    out = (
        Path(out_dir)
        if out_dir is not None
        else Path("lamppost-submit") / (f"{k8s_name(spec.name)}-{target}")
    )
    if target == "slurm":
        options.setdefault("campaign_path", str((out / CAMPAIGN_KEY).absolute()))
        options.setdefault("workdir", str(Path.cwd().absolute()))
    rendered = render(
        target,
        spec,
        spec_text=_shipped_text(target, path, spec),
        image=image,
        namespace=namespace,
        **options,
    )
    return apply(target, rendered, out_dir=out, dry_run=dry_run)
