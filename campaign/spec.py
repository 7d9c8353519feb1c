"""The campaign file: one YAML document that says what to search, how and where.

The models here are the single source of truth for what a campaign file may contain;
``lamppost schema`` exports them as JSON Schema for editors, and :func:`load_spec` turns every
problem into a :class:`SpecError` that lists each location with the allowed values.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import tempfile
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from searches.landscape import LandscapeOptions
from searches.methods.registry import METHODS, get_method
from searches.observables import OBSERVABLES
from searches.signatures import EMPTY_CLASS, VIEW_SUFFIX, SignatureConfig, parse_class_name
from theory.models import MODELS, get_model
from theory.space import Parameter, ParameterSpace

SPEC_VERSION = "1"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BuiltinBackground(_Strict):
    """Background from the built-in fast simulator (the embedded default)."""

    simulator: Literal["builtin"] = "builtin"
    events: Annotated[int, Field(gt=0, le=50_000_000)] = 500_000
    tail_boost: Annotated[float, Field(ge=1, le=10)] = 3.0


DATA_VARIABLE = "LAMPPOST_DATA"
_VARIABLE = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_]\w*)\}|(?P<bare>[A-Za-z_]\w*))")


def expand_path(text: str, *, base_dir: Path | None = None) -> str:
    """A sample path as the campaign means it: variables expanded, relative to the file.

    ``$VAR`` / ``${VAR}`` are environment variables; ``${LAMPPOST_DATA}``, when unset, is the
    shared data folder that :func:`searches.datapath.shared_data_dir` finds (the same lookup
    the tests use), so an example file runs unchanged wherever that folder is. A relative
    path is taken relative to the campaign file's folder (``base_dir``), not the working
    directory, so ``lamppost run`` means the same files from anywhere. A ``file://`` URI is
    a local path and becomes one, so that globs, the existence check and the task keys' file
    identity treat it like any other; other URIs (``root://``, ``s3://``) are left as they
    are, for uproot (ROOT) or pyarrow's filesystems (Parquet, :data:`PARQUET_URI_SCHEMES`).

    Raises:
        ValueError: a variable is not set (naming it), or a ``file://`` URI names a host.
    """

    def substitute(match: re.Match[str]) -> str:
        name = match["braced"] or match["bare"]
        value = os.environ.get(name)
        if value is None and name == DATA_VARIABLE:
            from searches.datapath import missing_reason, shared_data_dir

            found = shared_data_dir()
            if found is None:
                raise ValueError(f"${{{name}}} cannot be resolved: {missing_reason()}")
            value = str(found)
        if value is None:
            raise ValueError(
                f"environment variable ${{{name}}} is not set; allowed: a set variable, "
                f"${{{DATA_VARIABLE}}} (the shared data folder), or a literal path"
            )
        return value

    expanded = _VARIABLE.sub(substitute, text)
    if expanded.startswith("file://"):
        uri = urllib.parse.urlsplit(expanded)
        if uri.netloc not in ("", "localhost"):
            raise ValueError(
                f"{expanded}: a file:// URI names a file on this machine; allowed: "
                "file:///absolute/path (no host), a local path, or a remote URI (s3://, root://)"
            )
        return urllib.parse.unquote(uri.path)
    if "://" in expanded:
        return expanded
    path = Path(expanded).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return str(path)


class SampleFile(_Strict):
    """One simulated or recorded sample on disk (ROOT or Parquet), one path or glob.

    A ROOT file needs ``preset``, the name of its branch layout
    (:data:`searches.readers.PRESETS`): a campaign file cannot spell a branch map out, and
    without one the file cannot be read. Parquet files (``.parquet``, ``.parq``) are in the
    event schema (:mod:`searches.events`) and need none.

    ``path`` may use ``${LAMPPOST_DATA}`` and other environment variables and may be relative
    to the campaign file (see :func:`expand_path`); it is stored expanded, so task keys name
    the files really read. Weights: with ``xsec_pb`` they become ``w σ L / Σw`` (Σw from
    ``sum_of_weights``, else measured over the sample's files); with ``weights_luminosity_fb``
    the weight branch is taken as already normalised to that luminosity and rescaled to the
    campaign's; with neither, weights are used as read.
    """

    path: Annotated[str, Field(min_length=1)]
    preset: str | None = None
    xsec_pb: Annotated[float, Field(gt=0)] | None = None
    sum_of_weights: Annotated[float, Field(gt=0)] | None = None
    weights_luminosity_fb: Annotated[float, Field(gt=0)] | None = None
    label: str | None = None

    @field_validator("path")
    @classmethod
    def _expanded(cls, value: str, info: ValidationInfo) -> str:
        base = (info.context or {}).get("base_dir")
        return expand_path(value, base_dir=None if base is None else Path(base))

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str | None) -> str | None:
        from searches.readers import PRESETS

        if value is not None and value not in PRESETS:
            raise ValueError(f"unknown preset {value!r}; allowed: {', '.join(PRESETS)}")
        return value

    @model_validator(mode="after")
    def _one_normalisation(self) -> SampleFile:
        if self.sum_of_weights is not None and self.xsec_pb is None:
            raise ValueError("sum_of_weights: needs xsec_pb (it normalises σ × L)")
        if self.xsec_pb is not None and self.weights_luminosity_fb is not None:
            raise ValueError("give xsec_pb or weights_luminosity_fb, not both")
        return self

    def files(self) -> list[str]:
        """The files the path names (a glob expanded, sorted); empty when nothing matches."""
        if "://" in self.path:
            return [self.path]
        if glob.has_magic(self.path):
            return sorted(glob.glob(self.path))
        return [self.path] if Path(self.path).is_file() else []


DEFAULT_CHUNK_SIZE = 100_000
ChunkSize = Annotated[int, Field(ge=1, le=10_000_000)]
"""Entries per read task of a ``files`` section: bounds a worker's memory (about 1 kB per event
in flight) and sets how finely the reading spreads over the cluster (:mod:`campaign.inputs`)."""


class FileBackground(_Strict):
    """Simulated background from files: every sample normalised and added together."""

    files: Annotated[list[SampleFile], Field(min_length=1)]
    on_bad_file: Literal["fail", "skip"] = "fail"
    chunk_size: ChunkSize = DEFAULT_CHUNK_SIZE


class Injection(_Strict):
    """A signal added to pseudo-data: a theory model at one parameter point."""

    model: str
    point: dict[str, float]
    scale: Annotated[float, Field(gt=0)] = 1.0
    events: Annotated[int, Field(gt=0, le=10_000_000)] = 50_000

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        if value not in MODELS:
            raise ValueError(f"unknown model {value!r}; allowed: {', '.join(sorted(MODELS))}")
        return value

    @model_validator(mode="after")
    def _point_of_the_model(self) -> Injection:
        """The model's own point check, now rather than after the background is simulated."""
        try:
            get_model(self.model).check_point(self.point)
        except ValueError as err:
            raise ValueError(f"point: {err}") from None
        return self


class PseudoObserved(_Strict):
    """Pseudo-data drawn from an independent background sample, with an optional signal."""

    pseudo: Literal[True] = True
    inject: Injection | None = None


class FileObserved(_Strict):
    """Recorded (or externally made pseudo-) data from files; weights as read (normally 1)."""

    files: Annotated[list[SampleFile], Field(min_length=1)]
    on_bad_file: Literal["fail", "skip"] = "fail"
    chunk_size: ChunkSize = DEFAULT_CHUNK_SIZE


def _by_files(other: str, files: str) -> Callable[[Any], str]:
    """Pick the union member from the presence of ``files``, so errors name one member."""

    def member(value: Any) -> str:
        if isinstance(value, BaseModel):
            return type(value).__name__
        return files if isinstance(value, dict) and "files" in value else other

    return member


UNION_MEMBERS: dict[str, type[BaseModel]] = {
    model.__name__: model
    for model in (BuiltinBackground, FileBackground, PseudoObserved, FileObserved)
}
"""Members of the tagged unions by tag (the class name, which error locations carry)."""


DATA_DRIVEN_METHODS: tuple[str, ...] = ("bumphunt", "autoencoder", "cwola", "cathode")
"""Methods that need no simulated background (they model it from the observed data)."""


class DataSpec(_Strict):
    """Where the events come from.

    ``background: null`` means no simulated background: the observed events must come from
    files, and only :data:`DATA_DRIVEN_METHODS` can search them (the bump hunt fits the
    background shape from the data itself).
    """

    background: (
        Annotated[
            Annotated[BuiltinBackground, Tag("BuiltinBackground")]
            | Annotated[FileBackground, Tag("FileBackground")],
            Discriminator(_by_files("BuiltinBackground", "FileBackground")),
        ]
        | None
    ) = BuiltinBackground()
    observed: Annotated[
        Annotated[PseudoObserved, Tag("PseudoObserved")]
        | Annotated[FileObserved, Tag("FileObserved")],
        Discriminator(_by_files("PseudoObserved", "FileObserved")),
    ] = PseudoObserved()


class Resources(_Strict):
    """What one search task asks of the Ray cluster (fractions allowed)."""

    cpus: Annotated[float, Field(ge=0)] = 1.0
    gpus: Annotated[float, Field(ge=0)] = 0.0


class SearchSpec(BaseModel):
    """One analysis method run on every suitable class; other keys are the method's options."""

    model_config = ConfigDict(extra="allow", frozen=True)

    method: str
    resources: Resources = Resources()
    classes: list[str] | None = None

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        if value not in METHODS:
            raise ValueError(f"unknown method {value!r}; allowed: {', '.join(sorted(METHODS))}")
        return value

    @model_validator(mode="after")
    def _valid_options(self) -> SearchSpec:
        get_method(self.method).options_model.model_validate(self.options)
        return self

    @property
    def options(self) -> dict[str, Any]:
        """The method's own options (everything but method, resources and classes)."""
        return dict(self.model_extra or {})


_SPACE_PROBE = 100
"""Points drawn to check that a theory space's constraints leave some room (milliseconds)."""


class ModelSpace(_Strict):
    """A theory model to learn over: parameter ranges ``[low, high]`` or ``[low, high, log]``.

    Parameters left out keep the model's own range; ``options`` go to the model's constructor
    (e.g. ``{channels: [mumu]}`` for a Z′ seen in dimuons only).
    """

    name: str
    space: dict[str, list[float | str]] = {}
    options: dict[str, Any] = {}
    cost: Annotated[float, Field(gt=0)] = 1.0

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in MODELS:
            raise ValueError(f"unknown model {value!r}; allowed: {', '.join(sorted(MODELS))}")
        return value

    @field_validator("space")
    @classmethod
    def _ranges(cls, value: dict[str, list[float | str]]) -> dict[str, list[float | str]]:
        for name, bounds in value.items():
            numbers = [b for b in bounds if not isinstance(b, str)]
            flags = [b for b in bounds if isinstance(b, str)]
            if len(numbers) != 2 or numbers[0] >= numbers[1]:
                raise ValueError(f"parameter {name!r}: expected [low, high] with low < high")
            if any(flag not in ("log", "linear") for flag in flags):
                raise ValueError(f"parameter {name!r}: scale flag must be 'log' or 'linear'")
        return value

    @model_validator(mode="after")
    def _fits_the_model(self) -> ModelSpace:
        """Build the model and the narrowed space it is learned over, as the theory loop will.

        The loop runs only after every search has finished; a misspelled option or parameter,
        a range outside the model's, a log scale through zero or constraints that leave no
        point found there cost the whole campaign and end in a traceback.
        """
        try:
            own = get_model(self.name, **self.options).space
        except (TypeError, ValueError) as err:
            raise ValueError(f"options: {err}") from None
        unknown = sorted(set(self.space) - set(own.names))
        if unknown:
            where = f"space.{unknown[0]}" if len(unknown) == 1 else "space"
            raise ValueError(
                f"{where}: unknown parameters {unknown}; allowed: {', '.join(own.names)} "
                f"(the parameters of model {self.name!r})"
            )
        for name, bounds in self.space.items():
            declared = own[name]
            low, high = (float(b) for b in bounds if not isinstance(b, str))
            flags = [b for b in bounds if isinstance(b, str)]
            if low < declared.low or high > declared.high:
                raise ValueError(
                    f"space.{name}: [{low:g}, {high:g}] reaches outside the model's range; "
                    f"allowed: within [{declared.low:g}, {declared.high:g}]"
                )
            if (flags[0] == "log" if flags else declared.log) and low <= 0:
                raise ValueError(
                    f"space.{name}: a log scale needs low > 0 (got {low:g}); "
                    "allowed: low > 0, or the flag 'linear'"
                )
        try:
            space = campaign_space(self)
        except ValueError as err:
            detail = err.errors()[0]["msg"] if isinstance(err, ValidationError) else str(err)
            raise ValueError(f"space: {detail.removeprefix('Value error, ')}") from None
        try:
            space.sample(_SPACE_PROBE, seed=0)
        except ValueError:
            raise ValueError(
                f"space: the model's constraints {list(space.constraints)} leave (almost) no "
                f"point in these ranges; allowed: ranges where they hold for some points"
            ) from None
        return self


def campaign_space(model: ModelSpace) -> ParameterSpace:
    """The model's parameter space narrowed to the campaign's ranges (and scale flags).

    The model's constraints, checks and priors are kept; a parameter whose scale the campaign
    changes takes the default prior of the new scale (log-uniform on a log axis, else uniform),
    which is the measure its excluded volume fraction is quoted in.

    Raises:
        ValueError: naming the model, the unknown parameter and the model's parameters.
    """
    own = get_model(model.name, **model.options).space
    unknown = sorted(set(model.space) - set(own.names))
    if unknown:
        raise ValueError(
            f"theory.models[{model.name}].space: unknown parameters {unknown}; "
            f"allowed: {', '.join(own.names)}"
        )
    parameters = []
    for parameter in own.parameters:
        bounds = model.space.get(parameter.name)
        if bounds is None:
            parameters.append(parameter)
            continue
        low, high = (float(b) for b in bounds if not isinstance(b, str))
        flags = [b for b in bounds if isinstance(b, str)]
        log = flags[0] == "log" if flags else parameter.log
        prior = parameter.prior if log == parameter.log else None
        parameters.append(
            Parameter(
                name=parameter.name, low=low, high=high, log=log, prior=prior, unit=parameter.unit
            )
        )
    return ParameterSpace(
        parameters=tuple(parameters), constraints=own.constraints, checks=own.checks
    )


class ClassSelection(_Strict):
    """Which populated event classes are searched (the rest are listed as untested).

    Without a simulated background (``data.background: null``) both thresholds apply to the
    observed events of the class, the only events that describe it.
    """

    min_expected: Annotated[float, Field(ge=0)] = 0.1
    min_mc_events: Annotated[int, Field(ge=1)] = 10


class TheorySpec(_Strict):
    """The active-learning loop over theory parameters (:mod:`campaign.loop`).

    Attributes:
        models: models to learn the exclusion of; none means no loop.
        budget: evaluated points per model (each: simulate ``events`` signal events, then
            reinterpret them against the campaign); with several models, the total simulation
            cost shared by all of them (Σ cost per evaluation, each model's ``cost``).
        batch: points proposed (and simulated in parallel) per step.
        initial: points of each model's initial design (default ``max(batch, 5 × dimensions)``).
        threshold: CLs of the exclusion (0.05: 95 % CL).
        acquisition: the learner's criterion (see :class:`theory.active.ActiveOptions`).
        stop_at: stop a model early once the expected misclassified fraction is this small.
        events: signal events simulated per point.
        max_fits: searches fitted with pyhf per point, the most sensitive first.
        pyhf_attempts: plain-pyhf attempts for a fit the batched CLs engine cannot check
            (:func:`searches.stats.robust.robust_hypotest`); a search still unresolved is
            recorded ``failed``, and a point whose every fitted search failed is skipped by the
            learner. Default 0: each attempt can cost a minute on a campaign workspace, and
            proposals near the contour land there often (with one attempt, the continuous
            benchmark of ``benchmarks/bench_active_campaign.py`` had not finished after an
            hour); a skipped point costs the learner one evaluation, not the campaign an hour.
    """

    models: list[ModelSpace] = []
    budget: Annotated[int, Field(ge=0)] = 0
    batch: Annotated[int, Field(ge=1)] = 10
    initial: Annotated[int, Field(ge=2)] | None = None
    threshold: Annotated[float, Field(gt=0, lt=1)] = 0.05
    acquisition: Literal["straddle", "misclassification", "entropy", "information_gain"] = (
        "straddle"
    )
    stop_at: Annotated[float, Field(gt=0, lt=0.5)] | None = None
    events: Annotated[int, Field(ge=100)] = 5000
    max_fits: Annotated[int, Field(ge=1)] = 3
    pyhf_attempts: Annotated[int, Field(ge=0, le=4)] = 0


_HOST_PORT = r"(?:[^\s:/\[\]]+|\[[0-9A-Fa-f:.]+\]):(?P<port>\d{1,5})"
_RAY_ADDRESS = re.compile(rf"^(?:local|auto|(?:ray://)?{_HOST_PORT})$")
RAY_ADDRESS_FORMS = ("local", "auto", "ray://<host>:<port>", "<host>:<port>")
"""What ``execution.address`` may be: :func:`campaign.execute.init_ray` starts a private Ray
for ``local`` and hands anything else to ``ray.init``, which takes ``auto`` (``RAY_ADDRESS`` or
the cluster started on this machine), a Ray Client URI or a cluster's GCS ``host:port``."""


class ExecutionSpec(_Strict):
    """Where tasks run: ``local`` starts a Ray instance with these caps; else a Ray address."""

    address: str = "local"
    num_cpus: Annotated[int, Field(ge=1)] | None = None
    num_gpus: Annotated[float, Field(ge=0)] = 0
    retries: Annotated[int, Field(ge=0, le=10)] = 2
    min_task_seconds: Annotated[float, Field(ge=0)] = 0.5

    @field_validator("address")
    @classmethod
    def _ray_address(cls, value: str) -> str:
        """Checked here because Ray refuses a malformed address only once the campaign runs."""
        match = _RAY_ADDRESS.match(value)
        if match is None or (match["port"] is not None and not 0 < int(match["port"]) < 65536):
            raise ValueError(
                f"{value!r} is not a Ray address; allowed: {', '.join(RAY_ADDRESS_FORMS)} "
                "(e.g. ray://head:10001 or 10.0.0.1:6379)"
            )
        return value


class LandscapeSpec(LandscapeOptions):
    """The two-body resonance landscape (:mod:`searches.landscape`): a bump search in the
    mass of every object pair, look-elsewhere-corrected over the whole table.

    Attributes:
        seed: seed of its pseudo-experiments (default: derived from the campaign seed).
        cpus: CPUs its task asks of the executor.
    """

    seed: Annotated[int, Field(ge=0)] | None = None
    cpus: Annotated[float, Field(gt=0)] = 1.0


class ReportSpec(_Strict):
    title: str | None = None
    top: Annotated[int, Field(ge=1)] = 10


class CampaignSpec(_Strict):
    """A whole campaign (see the README walkthrough)."""

    name: Annotated[str, Field(min_length=1, max_length=200)]
    seed: Annotated[int, Field(ge=0)] = 0
    luminosity_fb: Annotated[float, Field(gt=0)] = 140.0
    data: DataSpec = DataSpec()
    signatures: SignatureConfig
    observables: Annotated[list[str], Field(min_length=1)] = ["st", "minv", "met"]
    class_selection: ClassSelection = ClassSelection()
    searches: Annotated[list[SearchSpec], Field(min_length=1)]
    theory: TheorySpec = TheorySpec()
    execution: ExecutionSpec = ExecutionSpec()
    store: str
    report: ReportSpec = ReportSpec()
    landscape: LandscapeSpec | None = Field(None, exclude_if=lambda value: value is None)

    @field_validator("signatures", mode="before")
    @classmethod
    def _nonempty_signatures(cls, value: Any) -> Any:
        if isinstance(value, dict) and not value:
            raise ValueError(
                "empty; give at least one object cut, e.g. {muon: {pt: 25, abs_eta: 2.5}}"
            )
        return value

    @field_validator("observables")
    @classmethod
    def _known_observables(cls, value: list[str]) -> list[str]:
        for name in value:
            if name not in OBSERVABLES:
                raise ValueError(
                    f"unknown observable {name!r}; allowed: {', '.join(sorted(OBSERVABLES))}"
                )
        return value

    @model_validator(mode="after")
    def _classes_exist(self) -> CampaignSpec:
        """A class name no event can carry would be dropped silently when the searches are
        planned, so a misspelling would quietly search nothing."""
        views = self.signatures.views
        for index, search in enumerate(self.searches):
            for position, name in enumerate(search.classes or []):
                where = f"searches.{index}.classes.{position}"
                if name == EMPTY_CLASS:
                    raise ValueError(
                        f"{where}: the class {EMPTY_CLASS!r} (nothing selected) is never "
                        "searched; allowed: a class with objects, e.g. 2mu, 1e_2j, 2mu+X"
                    )
                try:
                    _, view = parse_class_name(name, config=self.signatures)
                except ValueError as err:
                    raise ValueError(f"{where}: {err}") from None
                if view not in views:
                    allowed = ", ".join(f"{v} (suffix {VIEW_SUFFIX[v] or 'none'})" for v in views)
                    raise ValueError(
                        f"{where}: {name!r} is a class of the {view} view, which "
                        f"signatures.views leaves out; allowed views: {allowed}"
                    )
        return self

    @model_validator(mode="after")
    def _methods_have_a_background(self) -> CampaignSpec:
        if self.data.background is not None:
            return self
        if isinstance(self.data.observed, PseudoObserved):
            raise ValueError(
                "data.observed: pseudo-data are drawn from the background, but "
                "data.background is null; allowed: observed files ({files: [...]}), or a "
                "background (simulator: builtin, or files)"
            )
        for index, search in enumerate(self.searches):
            if search.method not in DATA_DRIVEN_METHODS:
                raise ValueError(
                    f"searches.{index}.method: {search.method!r} compares the data with a "
                    "simulated background, but data.background is null; allowed without a "
                    f"background: {', '.join(DATA_DRIVEN_METHODS)}"
                )
        return self

    @model_validator(mode="after")
    def _resources_exist(self) -> CampaignSpec:
        for index, search in enumerate(self.searches):
            if search.resources.gpus > 0 and self.execution.num_gpus == 0:
                raise ValueError(
                    f"searches.{index}.resources.gpus: asks for {search.resources.gpus} GPU "
                    "but execution.num_gpus is 0; allowed: gpus: 0, or set execution.num_gpus"
                )
            if (
                self.execution.num_cpus is not None
                and search.resources.cpus > self.execution.num_cpus
            ):
                raise ValueError(
                    f"searches.{index}.resources.cpus: {search.resources.cpus} exceeds "
                    f"execution.num_cpus={self.execution.num_cpus}"
                )
        return self

    @model_validator(mode="after")
    def _landscape_has_a_background(self) -> CampaignSpec:
        if self.landscape is not None and self.data.background is None:
            raise ValueError(
                "landscape: compares every pair mass with the simulated background, but "
                "data.background is null; allowed: a background (simulator: builtin, or "
                "files), or no landscape section"
            )
        return self

    def digest(self) -> str:
        """Content hash of the normalised spec (part of every task key)."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


class SpecError(ValueError):
    """A campaign file that cannot be used; ``problems`` are ``(location, message)`` pairs."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        lines = [f"{source}: {len(problems)} problem(s) in the campaign file"]
        lines += [f"  {location}: {message}" for location, message in problems]
        super().__init__("\n".join(lines))


def load_spec(path: str | os.PathLike[str], *, check_store: bool = True) -> CampaignSpec:
    """Read and validate a campaign file, or raise one :class:`SpecError` with every problem."""
    source = str(path)
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise SpecError(source, [("<file>", f"cannot be read ({err.strerror})")]) from err
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise SpecError(source, [("<file>", f"not valid YAML ({err})")]) from err
    return parse_spec(
        document, source=source, check_store=check_store, base_dir=Path(path).resolve().parent
    )


def parse_spec(
    document: Any,
    *,
    source: str = "<spec>",
    check_store: bool = True,
    base_dir: str | os.PathLike[str] | None = None,
) -> CampaignSpec:
    """Validate an already-parsed campaign document.

    Args:
        base_dir: folder that relative sample paths are relative to (the campaign file's;
            default the working directory).
        check_store: also check, before anything runs, that the store can be created and
            that every local sample path names at least one file.
    """
    if not isinstance(document, dict):
        raise SpecError(
            source,
            [
                (
                    "<root>",
                    "must be a mapping of campaign keys; campaign files are YAML "
                    f"(`name: my-campaign`, one key per line), this one reads as "
                    f"{'nothing' if document is None else type(document).__name__}",
                )
            ],
        )
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    try:
        spec = CampaignSpec.model_validate(document, context={"base_dir": str(base)})
    except ValidationError as err:
        raise SpecError(source, [_describe(error, document) for error in err.errors()]) from None
    if check_store:
        problems = input_problems(spec)
        problem = store_problem(spec.store)
        if problem:
            problems.append(("store", problem))
        if problems:
            raise SpecError(source, problems)
    return spec


def input_problems(spec: CampaignSpec) -> list[tuple[str, str]]:
    """Samples that cannot be read as given, as ``(location, message)``.

    A local path must name at least one file, and a ROOT file needs a ``preset``; a remote
    Parquet URI must use a scheme pyarrow reads. Remote files are not opened (that needs the
    network and credentials the validating machine may not have).
    """
    from campaign.ingest import PARQUET_URI_SCHEMES
    from searches.readers import PRESETS, is_parquet

    problems = []
    for role in ("background", "observed"):
        config = getattr(spec.data, role)
        for index, sample in enumerate(getattr(config, "files", None) or []):
            where = f"data.{role}.files.{index}"
            files = sample.files()
            scheme = sample.path.split("://")[0] if "://" in sample.path else None
            if not files:
                problems.append(
                    (
                        f"{where}.path",
                        f"{sample.path} matches no file; allowed: an existing file or a glob "
                        f"that matches one (paths may use ${{{DATA_VARIABLE}}} and are relative "
                        "to the campaign file)",
                    )
                )
            elif is_parquet(sample.path) and scheme and scheme not in PARQUET_URI_SCHEMES:
                problems.append(
                    (
                        f"{where}.path",
                        f"{sample.path}: pyarrow reads no {scheme}:// URIs; allowed: a local "
                        f"path or a URI with scheme {', '.join(PARQUET_URI_SCHEMES)}",
                    )
                )
            elif sample.preset is None and not all(map(is_parquet, files)):
                root = next(f for f in files if not is_parquet(f))
                problems.append(
                    (
                        f"{where}.preset",
                        f"{root} is a ROOT file, read through the branch layout a preset "
                        f"names; allowed: {', '.join(PRESETS)} (Parquet files in the event "
                        "schema need no preset)",
                    )
                )
    return problems


def store_problem(uri: str) -> str | None:
    """Why a store location cannot be used, checked before anything is written.

    For local paths the nearest existing ancestor must be a directory in which a directory
    can really be created (permission bits alone say nothing when running as root).
    """
    if "://" in uri and not uri.startswith("file://"):
        return None
    path = Path(uri.removeprefix("file://")).expanduser()
    if path.exists() and not path.is_dir():
        return f"{path} exists and is not a directory"
    ancestor = path
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"{ancestor} is not a directory; allowed: a writable directory or a pyarrow URI"
    try:
        probe = Path(tempfile.mkdtemp(dir=ancestor, prefix=".lamppost-probe-"))
    except OSError as err:
        return (
            f"{ancestor} is not writable ({err.strerror}); "
            "allowed: a writable directory or a pyarrow URI"
        )
    probe.rmdir()
    return None


def _describe(error: dict[str, Any], document: Any = None) -> tuple[str, str]:
    """``(location, message)`` of one pydantic error.

    A validator that checks several fields of its model starts its message with the field
    path below the model (``space.mas: ...``); that path is moved into the location.
    """
    location = ".".join(str(part) for part in error["loc"] if part not in UNION_MEMBERS) or "<root>"
    message = error["msg"].removeprefix("Value error, ")
    located = re.match(r"^([A-Za-z_][\w.]*): (.*)$", message, flags=re.DOTALL)
    if located:
        below, message = located.groups()
        location = below if location == "<root>" else f"{location}.{below}"
    if error["type"] == "extra_forbidden":
        allowed = _allowed_keys(error["loc"][:-1], document)
        message = f"unknown key {error['loc'][-1]!r}"
        if allowed:
            message += f"; allowed: {', '.join(allowed)}"
    elif error["type"] == "literal_error":
        message = f"{message} (got {error.get('input')!r})"
    elif "input" in error and error["type"].endswith("_type"):
        message = f"{message} (got {error['input']!r})"
    return location, message


def _allowed_keys(location: tuple[Any, ...], document: Any = None) -> list[str]:
    """Field names of the model at ``location`` in the campaign, for 'unknown key' errors.

    A union member's tag in the location picks that member; a search's keys are its own and
    those of its method's options (the method read from ``document``).
    """
    model: Any = CampaignSpec
    node = document
    for part in location:
        if part in UNION_MEMBERS:
            model = UNION_MEMBERS[part]
        elif isinstance(part, int):
            node = node[part] if isinstance(node, list) and 0 <= part < len(node) else None
        else:
            field = _fields(model, node).get(part)
            if field is None:
                return []
            model = _model_of(field.annotation)
            node = node.get(part) if isinstance(node, dict) else None
    return sorted(_fields(model, node))


def _fields(model: Any, node: Any) -> dict[str, Any]:
    """The fields of ``model`` (none for a non-model), with a search's method options."""
    fields = dict(getattr(model, "model_fields", {}))
    method = node.get("method") if isinstance(node, dict) else None
    if model is SearchSpec and isinstance(method, str) and method in METHODS:
        fields.update(get_method(method).options_model.model_fields)
    return fields


def _model_of(annotation: Any) -> Any:
    from typing import get_args

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in get_args(annotation):
        found = _model_of(argument)
        if found is not None:
            return found
    return None


def json_schema() -> dict[str, Any]:
    """The campaign file's JSON Schema (for editors and ``lamppost schema``)."""
    schema = CampaignSpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://lamppost.invalid/schemas/campaign-{SPEC_VERSION}.json"
    return schema
