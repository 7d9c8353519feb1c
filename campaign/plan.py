"""From a campaign spec to tasks with content keys.

A campaign runs in stages: make the background and the observed events, classify both into
event classes, run every (class x method) search, then the look-elsewhere correction across all
of them. Each :class:`Task` carries a content key — a hash of the task's inputs (the keys of the
tasks it reads), its configuration and the code version — so a store can tell that a task has
already been done, and a changed option re-runs exactly what depends on it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from campaign import __version__
from campaign.spec import CampaignSpec, SearchSpec
from searches.signatures import EMPTY_CLASS

CODE_VERSION = __version__


@dataclass(frozen=True)
class Task:
    """One unit of campaign work (a pure function of ``payload``).

    Attributes:
        key: content key (hex digest), the task's identity in the ledger.
        kind: which task function runs it (see :mod:`campaign.tasks`).
        name: human-readable label (``search/2mu/scan``; ``search/2mu/bumphunt#1`` when a
            method appears more than once in ``searches``, numbered by its position).
        payload: JSON-serialisable inputs of the task function.
        cpus, gpus: resources the task asks of the executor.
        cost: rough relative cost, used to batch small tasks together.
    """

    key: str
    kind: str
    name: str
    payload: Mapping[str, Any]
    cpus: float = 1.0
    gpus: float = 0.0
    cost: float = 1.0
    depends_on: tuple[str, ...] = field(default_factory=tuple)


def content_key(kind: str, *parts: Any) -> str:
    """Hash of a task kind, its inputs and the code version (first 20 hex digits)."""
    text = json.dumps([kind, CODE_VERSION, *parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def derive_seed(campaign_seed: int, *labels: str) -> int:
    """A per-task seed that depends on the campaign seed and the task's identity only."""
    text = json.dumps([campaign_seed, *labels])
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


def _background_config(spec: CampaignSpec) -> dict[str, Any] | None:
    """The background section as the tasks see it (``None``: no simulated background)."""
    background = spec.data.background
    return None if background is None else background.model_dump(mode="json")


def _file_config(files: Sequence[Task]) -> dict[str, Any]:
    """What a role from files adds to its task: the keys of its inspect and read tasks."""
    return {"files": [task.key for task in files]} if files else {}


def background_task(spec: CampaignSpec, files: Sequence[Task] = ()) -> Task:
    """The simulated background (an empty event set when the campaign has none).

    Args:
        files: for a background from files, its ``inspect`` and ``read`` tasks
            (:func:`campaign.inputs.read_files`); the task then only gathers their index.
    """
    config = {
        "background": _background_config(spec),
        "luminosity_fb": spec.luminosity_fb,
        "seed": derive_seed(spec.seed, "background"),
        **_file_config(files),
    }
    return Task(
        key=content_key("background", config),
        kind="background",
        name="background",
        payload=config,
        cost=(config["background"] or {}).get("events", 1e5) / 1e6,
        depends_on=tuple(task.key for task in files),
    )


def observed_task(spec: CampaignSpec, background: Task, files: Sequence[Task] = ()) -> Task:
    """Observed events: files, or pseudo-data Poisson-drawn from the background model.

    Pseudo-data resamples the very background sample the searches compare to (each simulated
    event enters with a Poisson-distributed integer weight of mean equal to its weight), so
    every bin's count is Poisson with mean equal to the expectation: background-only
    pseudo-campaigns then test the statistics, not the differences between two finite
    simulated samples.
    """
    config = {
        "background_key": background.key,
        "observed": spec.data.observed.model_dump(mode="json"),
        "background": _background_config(spec),
        "luminosity_fb": spec.luminosity_fb,
        "seed": derive_seed(spec.seed, "observed"),
        **_file_config(files),
    }
    return Task(
        key=content_key("observed", config),
        kind="observed",
        name="observed",
        payload=config,
        depends_on=(background.key, *(task.key for task in files)),
    )


def classify_task(spec: CampaignSpec, background: Task, observed: Task) -> Task:
    config = {
        "signatures": spec.signatures.model_dump(mode="json"),
        "background_key": background.key,
        "observed_key": observed.key,
    }
    return Task(
        key=content_key("classify", config),
        kind="classify",
        name="classify",
        payload=config,
        depends_on=(background.key, observed.key),
    )


def data_tasks(spec: CampaignSpec, files: Mapping[str, Sequence[Task]] | None = None) -> list[Task]:
    """The tasks before the searches: background, observed, classification.

    Args:
        files: per role from files, its inspect and read tasks (already finished).
    """
    files = files or {}
    background = background_task(spec, files.get("background", ()))
    observed = observed_task(spec, background, files.get("observed", ()))
    return [background, observed, classify_task(spec, background, observed)]


def search_tasks(
    spec: CampaignSpec,
    classify: Task,
    classes: Mapping[str, Mapping[str, Any]],
) -> list[Task]:
    """One task per (searchable class x method), from the classification's class table.

    Args:
        classes: class name -> ``{"members": [exclusive classes], "expected": float,
            "observed": float, "mc_events": int, "searchable": bool}``; exclusive classes
            also give ``bkg_row_group`` / ``obs_row_group``, where their events are stored in
            the classification's files, or (inputs read from files) ``bkg_parts`` /
            ``obs_parts``, the ``[part, row group]`` pairs of :mod:`campaign.inputs`.
    """
    tasks = []
    repeated = {
        s.method for s in spec.searches if sum(t.method == s.method for t in spec.searches) > 1
    }
    for index, search in enumerate(spec.searches):
        label = f"{search.method}#{index}" if search.method in repeated else search.method
        for name in _classes_for(search, classes):
            info = classes[name]
            config = {
                "classify_key": classify.key,
                "event_class": name,
                "members": list(info["members"]),
                "row_groups": {
                    label: {
                        member: classes[member][f"{label}_row_group"]
                        for member in info["members"]
                        if f"{label}_row_group" in classes[member]
                    }
                    for label in ("bkg", "obs")
                },
                "parts": {
                    label: [
                        part
                        for member in sorted(info["members"])
                        for part in classes[member].get(f"{label}_parts", [])
                    ]
                    for label in ("bkg", "obs")
                },
                "method": search.method,
                "options": search.options,
                "observables": list(spec.observables),
                "signatures": spec.signatures.model_dump(mode="json"),
                "seed": derive_seed(spec.seed, "search", name, search.method, str(index)),
            }
            tasks.append(
                Task(
                    key=content_key("search", config),
                    kind="search",
                    name=f"search/{name}/{label}",
                    payload=config,
                    cpus=search.resources.cpus,
                    gpus=search.resources.gpus,
                    cost=1.0 + info["mc_events"] / 1e5,
                    depends_on=(classify.key,),
                )
            )
    return tasks


def is_searchable(spec: CampaignSpec, name: str, info: Mapping[str, Any]) -> bool:
    """Whether a class is searched: never the empty class; enough events describe it.

    With a simulated background, its weighted yield and raw event count must reach
    ``class_selection``'s thresholds; without one (``data.background: null``) the observed
    events of the class, the only description of it, must.
    """
    if name.startswith(EMPTY_CLASS):
        return False
    policy = spec.class_selection
    if spec.data.background is None:
        count = info["observed"]
        return count >= policy.min_expected and count >= policy.min_mc_events
    return info["expected"] >= policy.min_expected and info["mc_events"] >= policy.min_mc_events


def _classes_for(search: SearchSpec, classes: Mapping[str, Mapping[str, Any]]) -> Iterable[str]:
    searchable = sorted(name for name, info in classes.items() if info["searchable"])
    if search.classes is None:
        return searchable
    return [name for name in search.classes if name in classes and classes[name]["searchable"]]


def landscape_task(spec: CampaignSpec, background: Task, observed: Task) -> Task:
    """The two-body resonance landscape (:mod:`searches.landscape`) over the whole sample.

    It reads the background and observed events directly (not the classified row groups):
    its cells cut across event classes (the inclusive cell of a pair holds every class).

    Raises:
        ValueError: the spec has no ``landscape`` section.
    """
    if spec.landscape is None:
        raise ValueError("landscape_task: the campaign has no 'landscape' section")
    options = spec.landscape.model_dump(mode="json", exclude={"seed", "cpus"})
    seed = spec.landscape.seed
    config = {
        "background_key": background.key,
        "observed_key": observed.key,
        "options": options,
        "signatures": spec.signatures.model_dump(mode="json"),
        "luminosity_fb": spec.luminosity_fb,
        "seed": derive_seed(spec.seed, "landscape") if seed is None else seed,
    }
    return Task(
        key=content_key("landscape", config),
        kind="landscape",
        name="landscape",
        payload=config,
        cpus=spec.landscape.cpus,
        cost=1.0 + spec.landscape.pseudo_experiments / 100,
        depends_on=(background.key, observed.key),
    )


def lee_task(spec: CampaignSpec, searches: list[Task]) -> Task:
    config = {
        "searches": sorted(task.key for task in searches),
        "seed": derive_seed(spec.seed, "look-elsewhere"),
    }
    return Task(
        key=content_key("lee", config),
        kind="lee",
        name="look-elsewhere",
        payload=config,
        depends_on=tuple(config["searches"]),
    )
