"""The campaign file: one YAML document that says what to search, how and where.

The models here are the single source of truth for what a campaign file may contain;
``lamppost schema`` exports them as JSON Schema for editors, and :func:`load_spec` turns every
problem into a :class:`SpecError` that lists each location with the allowed values.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from searches.methods.registry import METHODS, get_method
from searches.observables import OBSERVABLES
from searches.signatures import SignatureConfig
from theory.models import MODELS

SPEC_VERSION = "1"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BuiltinBackground(_Strict):
    """Background from the built-in fast simulator (the embedded default)."""

    simulator: Literal["builtin"] = "builtin"
    events: Annotated[int, Field(gt=0, le=50_000_000)] = 500_000
    tail_boost: Annotated[float, Field(ge=1, le=10)] = 3.0


class SampleFile(_Strict):
    """One simulated or recorded sample on disk (ROOT or Parquet)."""

    path: str
    preset: str | None = None
    xsec_pb: Annotated[float, Field(gt=0)] | None = None
    sum_of_weights: Annotated[float, Field(gt=0)] | None = None
    label: str | None = None


class FileBackground(_Strict):
    files: Annotated[list[SampleFile], Field(min_length=1)]
    on_bad_file: Literal["fail", "skip"] = "fail"


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


class PseudoObserved(_Strict):
    """Pseudo-data drawn from an independent background sample, with an optional signal."""

    pseudo: Literal[True] = True
    inject: Injection | None = None


class FileObserved(_Strict):
    files: Annotated[list[SampleFile], Field(min_length=1)]
    on_bad_file: Literal["fail", "skip"] = "fail"


class DataSpec(_Strict):
    background: BuiltinBackground | FileBackground = BuiltinBackground()
    observed: PseudoObserved | FileObserved = PseudoObserved()


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


class ModelSpace(_Strict):
    """A theory model to learn over: parameter ranges ``[low, high]`` or ``[low, high, log]``."""

    name: str
    space: dict[str, list[float | str]]
    cost: Annotated[float, Field(gt=0)] = 1.0

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


class ClassSelection(_Strict):
    """Which populated event classes are searched (the rest are listed as untested)."""

    min_expected: Annotated[float, Field(ge=0)] = 0.1
    min_mc_events: Annotated[int, Field(ge=1)] = 10


class TheorySpec(_Strict):
    models: list[ModelSpace] = []
    budget: Annotated[int, Field(ge=0)] = 0
    batch: Annotated[int, Field(ge=1)] = 10
    threshold: Annotated[float, Field(gt=0, lt=1)] = 0.05


class ExecutionSpec(_Strict):
    """Where tasks run: ``local`` starts a Ray instance with these caps; else a Ray address."""

    address: str = "local"
    num_cpus: Annotated[int, Field(ge=1)] | None = None
    num_gpus: Annotated[float, Field(ge=0)] = 0
    retries: Annotated[int, Field(ge=0, le=10)] = 2
    min_task_seconds: Annotated[float, Field(ge=0)] = 0.5


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
    return parse_spec(document, source=source, check_store=check_store)


def parse_spec(document: Any, *, source: str = "<spec>", check_store: bool = True) -> CampaignSpec:
    """Validate an already-parsed campaign document."""
    if not isinstance(document, dict):
        raise SpecError(source, [("<root>", "must be a mapping of campaign keys")])
    try:
        spec = CampaignSpec.model_validate(document)
    except ValidationError as err:
        raise SpecError(source, [_describe(error) for error in err.errors()]) from None
    if check_store:
        problem = store_problem(spec.store)
        if problem:
            raise SpecError(source, [("store", problem)])
    return spec


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


def _describe(error: dict[str, Any]) -> tuple[str, str]:
    location = ".".join(str(part) for part in error["loc"]) or "<root>"
    message = error["msg"].removeprefix("Value error, ")
    located = re.match(r"^([A-Za-z_][\w.]*): (.*)$", message, flags=re.DOTALL)
    if location == "<root>" and located:
        location, message = located.groups()
    if error["type"] == "extra_forbidden":
        allowed = _allowed_keys(error["loc"][:-1])
        message = f"unknown key {error['loc'][-1]!r}"
        if allowed:
            message += f"; allowed: {', '.join(allowed)}"
    elif error["type"] == "literal_error":
        message = f"{message} (got {error.get('input')!r})"
    elif "input" in error and error["type"].endswith("_type"):
        message = f"{message} (got {error['input']!r})"
    return location, message


def _allowed_keys(location: tuple[Any, ...]) -> list[str]:
    """Field names of the model at ``location`` in the campaign, for 'unknown key' errors."""
    model: Any = CampaignSpec
    for part in location:
        if isinstance(part, int) or model is None:
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = _model_of(field.annotation)
    return sorted(getattr(model, "model_fields", {}))


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
