"""The campaign store: a ledger of tasks and their artifacts behind one filesystem URI.

Layout (relative to the store root)::

    campaign.yaml            the campaign file as given
    spec.json                the validated spec, normalised
    store.json               which results version computed the store's numbers
    ledger/<key>.json        one record per finished or failed task (the ledger)
    artifacts/<kind>/...     task outputs (Parquet, JSON)
    staging/<execution>/...  outputs of running tasks, moved into artifacts/ on success

The driver is the single writer of ``ledger/``. Every write goes to a temporary name and is
then moved into place, so a killed campaign never leaves a half-written record: a task whose
record exists is finished and is never run again.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow.fs as pafs

LEDGER_SCHEMA_VERSION = "1"
RESULTS_VERSION = 2
"""Version of the numbers tasks write; raise it with every change that alters them.

A finished task is never run again, so resuming a store made by code that computed different
numbers would mix old and new results in one table; such a store is refused instead. The small
test campaign's search and look-elsewhere numbers are pinned under this version
(``tests/campaign/golden/small_campaign_results.json``): a test fails when they change while it
stays the same.

1. Stores without ``store.json`` (before 2026-12-07).
2. 2026-12-07: p-value quadrature on the integrand's peak, look-elsewhere ties, truncated-normal
   pseudo-data, shared background systematic in combinations, inference fits on MINUIT,
   MC-statistics floor in search workspaces.
"""
Status = Literal["done", "failed"]


@dataclass(frozen=True)
class TaskRecord:
    """What the ledger keeps of one task execution."""

    key: str
    kind: str
    name: str
    status: Status
    execution_id: str
    started_at: float
    finished_at: float
    artifacts: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    traceback: str | None = None
    worker: str | None = None
    schema_version: str = LEDGER_SCHEMA_VERSION

    @property
    def seconds(self) -> float:
        return self.finished_at - self.started_at


def _without_location(spec_json: dict[str, Any]) -> dict[str, Any]:
    """A spec without its ``store`` entry: a store moved elsewhere is the same campaign."""
    return {key: value for key, value in spec_json.items() if key != "store"}


class StoreError(RuntimeError):
    """The store cannot be used (wrong campaign, unreadable ledger, unwritable location)."""


class Store:
    """A campaign store at a local path or any URI that ``pyarrow.fs`` understands."""

    def __init__(self, uri: str | os.PathLike[str]) -> None:
        uri = str(uri)
        if "://" in uri:
            try:
                self.fs, self.root = pafs.FileSystem.from_uri(uri)
            except (ValueError, OSError) as problem:
                raise StoreError(
                    f"{uri}: not a store location pyarrow can open ({problem}); allowed: a "
                    "local folder, file:///absolute/path, or a URI of a pyarrow filesystem "
                    "(s3://, gs://, hdfs://)"
                ) from None
        else:
            self.fs, self.root = pafs.LocalFileSystem(), str(Path(uri).expanduser().absolute())
        self.uri = uri

    def path(self, relative: str) -> str:
        return f"{self.root}/{relative}"

    def local_path(self, relative: str) -> Path:
        """A local filesystem path, for readers that need one (local stores only)."""
        if not isinstance(self.fs, pafs.LocalFileSystem):
            raise StoreError(f"{self.uri}: not a local store; cannot give a local path")
        return Path(self.path(relative))

    def exists(self, relative: str = "") -> bool:
        info = self.fs.get_file_info(self.path(relative) if relative else self.root)
        return info.type != pafs.FileType.NotFound

    def initialise(self, *, spec_text: str, spec_json: dict[str, Any]) -> None:
        """Create the store for a campaign, or check that an existing one is the same campaign."""
        if self.exists("spec.json"):
            stored = json.loads(self.read_text("spec.json"))
            if _without_location(stored) != _without_location(spec_json):
                raise StoreError(
                    f"{self.uri}: holds another campaign (its spec.json differs); "
                    "use a new store, or `lamppost resume` with the stored campaign"
                )
            version = self.results_version()
            if version != RESULTS_VERSION:
                raise StoreError(
                    f"{self.uri}: its results were computed by another Lamppost (results "
                    f"version {version}; this one computes version {RESULTS_VERSION}, see "
                    "campaign.store.RESULTS_VERSION), and continuing it would mix old and new "
                    "numbers; run the campaign into a new store (`store:`), or read this one "
                    "as it is with `lamppost status` and `lamppost report`"
                )
            return
        self.fs.create_dir(self.path("ledger"), recursive=True)
        self.fs.create_dir(self.path("artifacts"), recursive=True)
        self.write_json("store.json", {"results_version": RESULTS_VERSION})
        self.write_text("campaign.yaml", spec_text)
        self.write_json("spec.json", spec_json)

    def results_version(self) -> int:
        """The :data:`RESULTS_VERSION` that computed this store (1 for stores before it)."""
        if not self.exists("store.json"):
            return 1
        try:
            return int(self.read_json("store.json")["results_version"])
        except (KeyError, TypeError, ValueError) as problem:
            raise StoreError(
                f"{self.path('store.json')}: no readable results_version ({problem!r}); "
                'allowed: {"results_version": <integer>}'
            ) from None

    def require_campaign(self) -> None:
        """Refuse (:class:`StoreError`) a store that holds no campaign (no ``spec.json``)."""
        try:
            found = self.exists("spec.json")
        except OSError as problem:
            raise StoreError(f"{self.uri}: {problem}") from None
        if not found:
            raise StoreError(f"{self.uri}: not a campaign store (no spec.json)")

    def write_bytes(self, relative: str, data: bytes) -> None:
        """Write atomically: a temporary sibling, then a move."""
        target = self.path(relative)
        parent = target.rsplit("/", 1)[0]
        self.fs.create_dir(parent, recursive=True)
        temporary = f"{parent}/.{uuid.uuid4().hex}.tmp"
        with self.fs.open_output_stream(temporary) as stream:
            stream.write(data)
        self.fs.move(temporary, target)

    def write_text(self, relative: str, text: str) -> None:
        self.write_bytes(relative, text.encode())

    def write_json(self, relative: str, data: Any) -> None:
        self.write_text(relative, json.dumps(data, sort_keys=True, indent=1, allow_nan=False))

    def read_bytes(self, relative: str) -> bytes:
        with self.fs.open_input_stream(self.path(relative)) as stream:
            return stream.read()

    def read_text(self, relative: str) -> str:
        return self.read_bytes(relative).decode()

    def read_json(self, relative: str) -> Any:
        return json.loads(self.read_text(relative))

    def staging(self, execution_id: str) -> str:
        return f"staging/{execution_id}"

    def commit_artifacts(self, staged: dict[str, str], *, kind: str, key: str) -> dict[str, str]:
        """Move a task's staged outputs to ``artifacts/<kind>/<key>/`` (driver only)."""
        committed = {}
        for name, relative in staged.items():
            target = f"artifacts/{kind}/{key}/{Path(relative).name}"
            self.fs.create_dir(self.path(f"artifacts/{kind}/{key}"), recursive=True)
            if self.exists(target):
                self.fs.delete_file(self.path(target))
            self.fs.move(self.path(relative), self.path(target))
            committed[name] = target
        return committed

    def record(self, record: TaskRecord) -> None:
        """Write a ledger record; a finished task's record is never overwritten."""
        relative = f"ledger/{record.key}.json"
        if self.exists(relative):
            previous = self.read_record(record.key)
            if previous.status == "done":
                raise StoreError(f"{self.uri}: task {record.key} is already finished")
        self.write_json(relative, asdict(record))

    def read_record(self, key: str) -> TaskRecord:
        data = self.read_json(f"ledger/{key}.json")
        return TaskRecord(**data)

    def records(self) -> Iterator[TaskRecord]:
        selector = pafs.FileSelector(self.path("ledger"), allow_not_found=True)
        for info in sorted(self.fs.get_file_info(selector), key=lambda i: i.path):
            if info.path.endswith(".json") and not info.base_name.startswith("."):
                key = info.base_name.removesuffix(".json")
                yield self.read_record(key)

    def finished(self) -> dict[str, TaskRecord]:
        return {r.key: r for r in self.records() if r.status == "done"}

    def clear_staging(self) -> None:
        """Remove what killed tasks left in staging (nothing there is referenced)."""
        if self.exists("staging"):
            self.fs.delete_dir(self.path("staging"))
