"""Where a campaign stands, read from its store alone (no Ray, no recomputation)."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from campaign.store import Store, StoreError, TaskRecord
from searches.result import SearchResult

STATUS_SCHEMA_VERSION = "1"
CLASSES_SCHEMA_VERSION = "1"
"""Layout of a classify task's ``classes.json``: ``{"schema_version", "classes": {name: row}}``."""
GLOBAL_SCHEMA_VERSION = "1"
"""Layout of a look-elsewhere task's ``lee.json``: the global significance's fields."""


def _versioned(store: Store, path: str, allowed: str) -> dict[str, Any]:
    """The JSON object at ``path``; files written before versioning (no ``schema_version``)
    are read as version ``allowed``, any other version is refused naming the file."""
    data = store.read_json(path)
    version = data.get("schema_version", allowed) if isinstance(data, dict) else None
    if version != allowed:
        raise StoreError(
            f"{store.path(path)}: schema_version={version!r} is not readable by this version of "
            f"Lamppost; allowed: {allowed!r}"
        )
    return data


def read_classes(store: Store, path: str) -> dict[str, dict[str, Any]]:
    """Populated event classes (exclusive and views) with their counts, from ``classes.json``."""
    data = _versioned(store, path, CLASSES_SCHEMA_VERSION)
    return data["classes"] if "schema_version" in data else data


def read_global(store: Store, path: str) -> dict[str, Any]:
    """The campaign's global (look-elsewhere-corrected) significance, from ``lee.json``."""
    data = _versioned(store, path, GLOBAL_SCHEMA_VERSION)
    return {key: value for key, value in data.items() if key != "schema_version"}


@dataclass(frozen=True)
class SearchRow:
    """One line of the class table: a search's region of interest and significances."""

    event_class: str
    method: str
    observable: str
    observed: float
    expected: float
    region: str
    p_local: float
    z_local: float
    p_tilde: float | None

    @classmethod
    def from_result(cls, result: SearchResult) -> SearchRow:
        region = result.region
        return cls(
            event_class=result.event_class,
            method=result.method,
            observable=result.observable,
            observed=region.observed if region else float(sum(result.observed)),
            expected=region.expected if region else float(sum(result.expected)),
            region="" if region is None else f"[{region.low:.0f}, {region.high:.0f}] GeV",
            p_local=result.p_local,
            z_local=result.z_local,
            p_tilde=result.p_tilde,
        )


@dataclass(frozen=True)
class CampaignStatus:
    name: str
    store: str
    tasks: dict[str, dict[str, int]]
    classes: dict[str, dict[str, Any]]
    searches: list[SearchRow]
    failures: list[dict[str, str]]
    global_result: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["schema_version"] = STATUS_SCHEMA_VERSION
        return data


def read_status(store: Store) -> CampaignStatus:
    """Summarise the ledger of ``store``: tasks per kind, classes, search table, failures."""
    store.require_campaign()
    spec = store.read_json("spec.json")
    records = list(store.records())
    counts: dict[str, Counter[str]] = {}
    for record in records:
        counts.setdefault(record.kind, Counter())[record.status] += 1
    classes: dict[str, dict[str, Any]] = {}
    rows: list[SearchRow] = []
    global_result: dict[str, Any] = {}
    for record in _done(records, "classify"):
        classes = read_classes(store, record.artifacts["classes"])
    for record in _done(records, "search"):
        for item in store.read_json(record.artifacts["results"]):
            rows.append(SearchRow.from_result(SearchResult.from_dict(item)))
    lee_records = _done(records, "lee")
    if lee_records:
        latest = max(lee_records, key=lambda r: r.finished_at)
        global_result = read_global(store, latest.artifacts["lee"])
    rows.sort(key=lambda row: (row.p_tilde if row.p_tilde is not None else 1.0, row.p_local))
    return CampaignStatus(
        name=spec["name"],
        store=store.uri,
        tasks={kind: dict(counter) for kind, counter in sorted(counts.items())},
        classes=classes,
        searches=rows,
        failures=[
            {"task": r.name, "error": r.error or "", "traceback": r.traceback or ""}
            for r in records
            if r.status == "failed"
        ],
        global_result=global_result,
    )


def _done(records: list[TaskRecord], kind: str) -> list[TaskRecord]:
    return [r for r in records if r.kind == kind and r.status == "done"]
