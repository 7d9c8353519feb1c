"""Ingest many files into class-partitioned Parquet through a Dask graph.

Reading thousands of ROOT files is embarrassingly parallel but must not hold all events at
once, so the graph has two stages of small tasks that return only bookkeeping:

1. one task per file opens it, checks the tree and every mapped branch, and counts entries (and
   Σ of raw weights where a sample's normalisation needs it);
2. one task per chunk of ``chunk_size`` entries reads, validates, normalises, classifies with
   :mod:`searches.signatures` and writes one Parquet part per event class present:
   ``out_dir/event_class=<name>/part-<sample>-<file>-<chunk>.parquet`` (schema version and
   sample name in the file metadata).

Peak memory is one chunk per worker whatever the number of files. The graph runs on Dask's local
schedulers (``"threads"`` by default, ``"processes"``, ``"synchronous"``) or on any Dask
scheduler callable the caller passes (e.g. Ray's ``ray.util.dask.ray_dask_get``; this module
never imports Ray). Tasks are computed in waves so the progress bar advances whatever the
scheduler. This graph is for ingesting a dataset on its own; a campaign (``lamppost run``)
runs the same stages through :func:`inspect_file`, :func:`read_chunk` and
:func:`sort_by_class` as tasks of its own executor and ledger (:mod:`campaign.inputs`).

With ``on_bad_file="skip"`` a file that fails (corrupt, truncated, mis-mapped) is recorded in the
:class:`IngestReport` and its parts already written are removed, so a class never holds half a
file.
"""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import awkward as ak
import dask
import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from searches.events import (
    SCHEMA_METADATA_KEY,
    SCHEMA_VERSION,
    EventValidationError,
    concatenate,
    require_fields,
    to_table,
    validate_events,
)
from searches.progress import progress_bar
from searches.readers import (
    DEFAULT_STEP_SIZE,
    BranchMap,
    BranchMapError,
    InputFileError,
    Sample,
    inspect_root,
    is_parquet,
    read_root,
    sum_of_weights,
)
from searches.signatures import SignatureConfig, classify

PARTITION_KEY = "event_class"
SAMPLE_METADATA_KEY = b"lamppost.ingest.sample"
MANIFEST = "ingest.json"
MANIFEST_VERSION = "1"
LOCAL_SCHEDULERS = ("threads", "processes", "synchronous")
PARQUET_URI_SCHEMES = ("file", "s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")
"""URI schemes of Parquet inputs: those ``pyarrow.fs.FileSystem.from_uri`` opens."""

Scheduler = str | Callable[..., Any] | None


class IngestError(EventValidationError):
    """Ingest cannot start or finish: names the file or directory and what is allowed."""


@dataclass(frozen=True)
class SampleSummary:
    """What was read of one sample.

    Attributes:
        name: the sample name.
        kind: ``"data"`` or ``"mc"``.
        files_read: files read completely.
        events_read: events written (all classes).
        sum_of_weights: Σ of raw weights used for normalisation (``None`` when not needed).
        scale: factor applied to raw weights (events at the campaign luminosity per raw weight).
        weighted_events: Σ of final weights written.
    """

    name: str
    kind: str
    files_read: int
    events_read: int
    sum_of_weights: float | None
    scale: float
    weighted_events: float


@dataclass(frozen=True)
class SkippedFile:
    """A file left out with ``on_bad_file="skip"``, and why."""

    sample: str
    path: str
    error: str


@dataclass(frozen=True)
class IngestReport:
    """The outcome of :func:`ingest`.

    Attributes:
        out_dir: the dataset root (``out_dir/event_class=<name>/part-*.parquet``).
        luminosity_fb: the luminosity weights are normalised to.
        samples: one summary per sample, in input order.
        skipped: files left out (empty unless ``on_bad_file="skip"``).
        class_counts: exclusive class -> events written, sorted by name.
        class_weights: exclusive class -> Σ of weights written.
    """

    out_dir: Path
    luminosity_fb: float
    samples: tuple[SampleSummary, ...]
    skipped: tuple[SkippedFile, ...]
    class_counts: dict[str, int] = field(default_factory=dict)
    class_weights: dict[str, float] = field(default_factory=dict)

    @property
    def events_read(self) -> dict[str, int]:
        """Sample name -> events written."""
        return {s.name: s.events_read for s in self.samples}

    @property
    def total_events(self) -> int:
        """Events written over all samples."""
        return sum(s.events_read for s in self.samples)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what ``ingest.json`` holds)."""
        return {
            "version": MANIFEST_VERSION,
            "out_dir": str(self.out_dir),
            "luminosity_fb": self.luminosity_fb,
            "samples": [asdict(s) for s in self.samples],
            "skipped": [asdict(s) for s in self.skipped],
            "class_counts": dict(self.class_counts),
            "class_weights": dict(self.class_weights),
        }


@dataclass(frozen=True)
class _FileTask:
    sample: str
    file_index: int
    path: str
    branch_map: BranchMap | None
    measure_weights: bool


@dataclass(frozen=True)
class _ChunkTask:
    sample: str
    file_index: int
    chunk_index: int
    path: str
    branch_map: BranchMap | None
    start: int
    stop: int
    scale: float
    out_dir: str
    signatures: SignatureConfig


_ERRORS: dict[str, type[EventValidationError]] = {
    cls.__name__: cls for cls in (EventValidationError, InputFileError, BranchMapError)
}


def _failure(err: EventValidationError) -> dict[str, Any]:
    kind = type(err).__name__ if type(err).__name__ in _ERRORS else "EventValidationError"
    return {"error": str(err), "error_fields": (kind, err.source, err.field, err.problem)}


def _parquet_file(path: str) -> pq.ParquetFile:
    """A Parquet file from a local path or a URI pyarrow reads (:data:`PARQUET_URI_SCHEMES`).

    Raises:
        EventValidationError: the file is absent, cannot be reached or is not Parquet.
    """
    try:
        if "://" in path:
            filesystem, inner = pafs.FileSystem.from_uri(path)
        else:
            filesystem, inner = pafs.LocalFileSystem(), str(Path(path).absolute())
        kind = filesystem.get_file_info(inner).type
    except Exception as err:
        raise EventValidationError(
            path,
            "<file>",
            f"cannot be reached ({err}); allowed: a local path or a URI with scheme "
            f"{', '.join(PARQUET_URI_SCHEMES)}",
        ) from err
    if kind != pafs.FileType.File:
        raise EventValidationError(path, "<file>", "does not exist or is not a file")
    try:
        return pq.ParquetFile(inner, filesystem=filesystem)
    except Exception as err:
        raise EventValidationError(path, "<file>", f"not a readable Parquet file ({err})") from err


def _check_columns(path: str, parquet: pq.ParquetFile) -> None:
    """Every top-level column of the event schema, checked from the footer alone.

    A missing column would otherwise surface as pyarrow's dump of the whole schema (an
    ``ArrowInvalid``, which ``on_bad_file: skip`` cannot skip) or only when chunks are read.
    """
    require_fields(set(parquet.schema_arrow.names), source=path)


def inspect_file(
    path: str, *, branch_map: BranchMap | None, measure_weights: bool
) -> tuple[int, float | None]:
    """Open one file, check its tree and every mapped branch, count its entries.

    Cheap (no event data is read unless ``measure_weights``), so a campaign can plan its
    chunks from it before any worker reads events.

    Returns:
        ``(entries, sum_of_weights)``; Σ of the raw weights only with ``measure_weights``.

    Raises:
        EventValidationError: absent, unreadable, mis-mapped or empty file (names file and field).
    """
    if is_parquet(path):
        with _parquet_file(path) as parquet:
            _check_columns(path, parquet)
            entries = int(parquet.metadata.num_rows)
            total = None
            if measure_weights:
                try:
                    weights = parquet.read(columns=["weight"]).column("weight")
                except Exception as err:
                    raise EventValidationError(path, "weight", f"cannot be read ({err})") from err
                total = float(np.sum(weights.to_numpy()))
    else:
        _, entries = inspect_root(path, branch_map=branch_map)
        total = sum_of_weights(path, branch_map=branch_map) if measure_weights else None
    if entries == 0:
        raise EventValidationError(path, "<entries>", "contains no events (empty input)")
    return entries, total


def _inspect(task: _FileTask) -> dict[str, Any]:
    """Stage 1: :func:`inspect_file` as bookkeeping (errors returned, not raised)."""
    try:
        entries, total = inspect_file(
            task.path, branch_map=task.branch_map, measure_weights=task.measure_weights
        )
    except EventValidationError as err:
        return _failure(err)
    return {"entries": entries, "sum_of_weights": total}


def _read_parquet_range(path: str, start: int, stop: int) -> ak.Array:
    """Rows ``start..stop`` of a schema Parquet file, reading only the row groups they touch."""
    source = f"{path} (entries {start}..{stop})"
    with _parquet_file(path) as parquet:
        version = (parquet.schema_arrow.metadata or {}).get(SCHEMA_METADATA_KEY)
        if version is not None and version.decode() != SCHEMA_VERSION:
            raise EventValidationError(
                path,
                "<schema_version>",
                f"version {version.decode()} not supported; allowed: {SCHEMA_VERSION}",
            )
        sizes = [parquet.metadata.row_group(i).num_rows for i in range(parquet.num_row_groups)]
        firsts = np.concatenate([[0], np.cumsum(sizes)])
        groups = [i for i in range(len(sizes)) if firsts[i] < stop and firsts[i + 1] > start]
        table = parquet.read_row_groups(groups)
    offset = int(firsts[groups[0]]) if groups else 0
    table = table.slice(start - offset, stop - start)
    return validate_events(ak.from_arrow(table), source=source)


def read_chunk(path: str, *, branch_map: BranchMap | None, start: int, stop: int) -> ak.Array:
    """Entries ``start..stop`` of one ROOT (through ``branch_map``) or schema Parquet file.

    Raises:
        EventValidationError: the range cannot be read (names file, entries and branch).
    """
    if is_parquet(path):
        return _read_parquet_range(path, start, stop)
    return read_root(
        path, branch_map=branch_map, entry_start=start, entry_stop=stop, step_size=stop - start
    )


@dataclass(frozen=True)
class ClassifiedChunk:
    """A chunk's events as one Arrow table sorted by exclusive class (stable within a class).

    Attributes:
        table: the events, rows of class ``names[i]`` at ``bounds[i]:bounds[i + 1]``.
        names: classes present, sorted, shape ``(n_classes,)``.
        counts: events per class, shape ``(n_classes,)``.
        weights: Σ of weights per class, shape ``(n_classes,)``.
    """

    table: pa.Table
    names: tuple[str, ...]
    counts: np.ndarray
    weights: np.ndarray

    @property
    def bounds(self) -> np.ndarray:
        """Row offsets of the classes in ``table``, shape ``(n_classes + 1,)``."""
        return np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)


def sort_by_class(events: ak.Array, signatures: SignatureConfig) -> ClassifiedChunk:
    """Classify events and sort them by class, converting to Arrow once.

    The stable sort keeps every class's events in input order, so the parts of one class
    concatenated in chunk order are the class's events in reading order.
    """
    classes = classify(events, signatures)
    weights = ak.to_numpy(events["weight"]).astype(np.float64)
    counts = np.bincount(classes.codes, minlength=len(classes.names))
    sums = np.bincount(classes.codes, weights=weights, minlength=len(classes.names))
    order = np.argsort(classes.codes, kind="stable")
    return ClassifiedChunk(to_table(events).take(pa.array(order)), classes.names, counts, sums)


def part_name(sample: str, file_index: int, chunk_index: int) -> str:
    """File name of one Parquet part."""
    return f"part-{sample}-{file_index:05d}-{chunk_index:05d}.parquet"


def _write_part(table: pa.Table, path: Path, sample: str) -> None:
    """Write one class part atomically (rows of an already validated chunk)."""
    metadata = {**(table.schema.metadata or {}), SAMPLE_METADATA_KEY: sample.encode()}
    table = table.replace_schema_metadata(metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _process(task: _ChunkTask) -> dict[str, Any]:
    """Stage 2: read, validate, normalise, classify and write one chunk; return bookkeeping.

    The chunk is converted to Arrow once and sorted by class, so each class part is a zero-copy
    slice of one table.
    """
    try:
        events = read_chunk(task.path, branch_map=task.branch_map, start=task.start, stop=task.stop)
    except EventValidationError as err:
        return _failure(err)
    if task.scale != 1.0:
        events = ak.with_field(events, events["weight"] * task.scale, "weight")
    chunk = sort_by_class(events, task.signatures)
    bounds = chunk.bounds
    name = part_name(task.sample, task.file_index, task.chunk_index)
    for code, class_name in enumerate(chunk.names):
        part = chunk.table.slice(int(bounds[code]), int(chunk.counts[code]))
        _write_part(part, Path(task.out_dir) / f"{PARTITION_KEY}={class_name}" / name, task.sample)
    return {
        "events": len(events),
        "class_counts": dict(zip(chunk.names, chunk.counts.tolist(), strict=True)),
        "class_weights": dict(zip(chunk.names, chunk.weights.tolist(), strict=True)),
    }


def _compute(
    tasks: Sequence[Any],
    function: Callable[[Any], dict[str, Any]],
    *,
    scheduler: Scheduler,
    num_workers: int | None,
    description: str,
    wave: int,
    pool: Executor | None = None,
) -> list[dict[str, Any]]:
    """Run ``function`` over ``tasks`` as Dask delayed calls, in waves, with a progress bar.

    ``pool`` keeps one process pool across waves and stages (Dask would start one per call).
    """
    options: dict[str, Any] = {}
    if num_workers is not None:
        options["num_workers"] = num_workers
    if pool is not None:
        options["pool"] = pool
    if scheduler is None:
        scheduler = "threads"
    delayed = dask.delayed(function, pure=False)
    results: list[dict[str, Any]] = []
    with progress_bar() as progress:
        bar = progress.add_task(description, total=len(tasks))
        for begin in range(0, len(tasks), wave):
            batch = [delayed(t) for t in tasks[begin : begin + wave]]
            done = dask.compute(*batch, scheduler=scheduler, **options)
            results.extend(done)
            progress.advance(bar, len(batch))
    return results


def _prepare_out_dir(out_dir: Path, *, overwrite: bool) -> None:
    existing = sorted(out_dir.glob(f"{PARTITION_KEY}=*")) if out_dir.is_dir() else []
    if existing and not overwrite:
        raise IngestError(
            str(out_dir),
            "out_dir",
            f"already holds {len(existing)} event-class partitions; pass overwrite=True to "
            "replace them or choose an empty directory",
        )
    for path in existing:
        shutil.rmtree(path)
    (out_dir / MANIFEST).unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)


def _raise(result: dict[str, Any]) -> None:
    kind, source, field_name, problem = result["error_fields"]
    raise _ERRORS[kind](source, field_name, problem)


def _remove_parts(out_dir: Path, sample: str, file_index: int) -> None:
    for path in out_dir.glob(f"{PARTITION_KEY}=*/part-{sample}-{file_index:05d}-*.parquet"):
        path.unlink()
    for directory in out_dir.glob(f"{PARTITION_KEY}=*"):
        if directory.is_dir() and not any(directory.iterdir()):
            directory.rmdir()


def ingest(
    samples: Iterable[Sample],
    *,
    out_dir: str | os.PathLike[str],
    signatures: SignatureConfig,
    luminosity_fb: float,
    on_bad_file: Literal["fail", "skip"] = "fail",
    scheduler: Scheduler = None,
    num_workers: int | None = None,
    chunk_size: int = DEFAULT_STEP_SIZE,
    overwrite: bool = False,
    wave: int | None = None,
) -> IngestReport:
    """Read every file of every sample, classify, and write class-partitioned Parquet.

    Args:
        samples: the samples (names unique); MC is normalised to ``luminosity_fb``.
        out_dir: dataset root; must not hold partitions already unless ``overwrite``.
        signatures: the event-class definition (:class:`searches.signatures.SignatureConfig`).
        luminosity_fb: integrated luminosity in fb⁻¹ for the MC weights.
        on_bad_file: ``"fail"`` raises the first file error; ``"skip"`` records it and goes on.
        scheduler: ``"threads"`` (default), ``"processes"``, ``"synchronous"`` or a Dask
            scheduler callable such as ``ray.util.dask.ray_dask_get``.
        num_workers: workers of a local scheduler (Dask's default when ``None``).
        chunk_size: entries per task; bounds memory per worker (~1 kB per event in flight).
        overwrite: replace existing partitions in ``out_dir``.
        wave: tasks per Dask compute call (progress granularity); default 8 per worker, >= 32.

    Returns:
        An :class:`IngestReport`; also written to ``out_dir/ingest.json``.

    Raises:
        EventValidationError: (with ``on_bad_file="fail"``) the first bad file, naming file and
            branch; :class:`IngestError` for bad arguments.
    """
    samples = list(samples)
    if on_bad_file not in ("fail", "skip"):
        raise IngestError("<ingest>", "on_bad_file", f"'{on_bad_file}'; allowed: fail, skip")
    if chunk_size < 1:
        raise IngestError("<ingest>", "chunk_size", f"{chunk_size}; allowed: a positive integer")
    if not luminosity_fb > 0 or not math.isfinite(luminosity_fb):
        raise IngestError("<ingest>", "luminosity_fb", f"{luminosity_fb}; allowed: > 0")
    names = [s.name for s in samples]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if not samples or duplicates:
        raise IngestError(
            "<ingest>",
            "samples",
            f"need at least one sample with unique names; repeated: "
            f"{', '.join(duplicates) or 'none'}",
        )
    if not (scheduler is None or callable(scheduler) or scheduler in LOCAL_SCHEDULERS):
        raise IngestError(
            "<ingest>",
            "scheduler",
            f"unknown scheduler '{scheduler}'; allowed: {', '.join(LOCAL_SCHEDULERS)} or a "
            "Dask scheduler callable (e.g. ray.util.dask.ray_dask_get)",
        )
    out = Path(out_dir)
    _prepare_out_dir(out, overwrite=overwrite)
    wave = wave or max(32, 8 * (num_workers or os.cpu_count() or 1))
    with contextlib.ExitStack() as stack:
        pool = None
        if scheduler == "processes":
            pool = stack.enter_context(
                ProcessPoolExecutor(
                    max_workers=num_workers or os.cpu_count() or 1,
                    mp_context=multiprocessing.get_context("spawn"),
                )
            )
        run = {"scheduler": scheduler, "num_workers": num_workers, "wave": wave, "pool": pool}
        return _ingest(samples, out, signatures, luminosity_fb, on_bad_file, chunk_size, run)


def _ingest(
    samples: list[Sample],
    out: Path,
    signatures: SignatureConfig,
    luminosity_fb: float,
    on_bad_file: str,
    chunk_size: int,
    run: dict[str, Any],
) -> IngestReport:

    file_tasks = [
        _FileTask(s.name, i, path, s.resolved_branch_map(), s.needs_sum_of_weights())
        for s in samples
        for i, path in enumerate(s.files())
    ]
    inspected = _compute(file_tasks, _inspect, description="ingest: open files", **run)
    bad: dict[tuple[str, int], str] = {}
    for task, result in zip(file_tasks, inspected, strict=True):
        if "error" in result:
            if on_bad_file == "fail":
                _raise(result)
            bad[(task.sample, task.file_index)] = result["error"]

    scales: dict[str, float] = {}
    measured: dict[str, float | None] = {}
    for sample in samples:
        good = [
            r
            for t, r in zip(file_tasks, inspected, strict=True)
            if t.sample == sample.name and (t.sample, t.file_index) not in bad
        ]
        total = sum(r["sum_of_weights"] for r in good) if sample.needs_sum_of_weights() else None
        measured[sample.name] = total
        if sample.needs_sum_of_weights() and not good:
            scales[sample.name] = 0.0
            continue
        scales[sample.name] = sample.scale(
            luminosity_fb=luminosity_fb, measured_sum_of_weights=total
        )

    chunk_tasks = [
        _ChunkTask(
            t.sample, t.file_index, c, t.path, t.branch_map, begin,
            min(begin + chunk_size, r["entries"]), scales[t.sample], str(out), signatures,
        )
        for t, r in zip(file_tasks, inspected, strict=True)
        if (t.sample, t.file_index) not in bad
        for c, begin in enumerate(range(0, r["entries"], chunk_size))
    ]  # fmt: skip
    processed = _compute(chunk_tasks, _process, description="ingest: classify", **run)

    for task, result in zip(chunk_tasks, processed, strict=True):
        if "error" in result:
            if on_bad_file == "fail":
                _raise(result)
            bad.setdefault((task.sample, task.file_index), result["error"])
    for sample, file_index in bad:
        _remove_parts(out, sample, file_index)

    report = _report(
        out, luminosity_fb, samples, file_tasks, chunk_tasks, processed, bad, scales, measured
    )
    (out / MANIFEST).write_text(json.dumps(report.to_dict(), indent=1))
    return report


def _sum_of_weights(sample: Sample, measured: float | None) -> float | None:
    if measured is not None:
        return measured
    if sample.sum_of_weights is not None:
        return sample.sum_of_weights
    return None if sample.n_generated is None else float(sample.n_generated)


def _report(
    out: Path,
    luminosity_fb: float,
    samples: list[Sample],
    file_tasks: list[_FileTask],
    chunk_tasks: list[_ChunkTask],
    processed: list[dict[str, Any]],
    bad: dict[tuple[str, int], str],
    scales: dict[str, float],
    measured: dict[str, float | None],
) -> IngestReport:
    counts: dict[str, int] = {}
    weights: dict[str, float] = {}
    per_sample = {s.name: [0, 0.0] for s in samples}
    for task, result in zip(chunk_tasks, processed, strict=True):
        if (task.sample, task.file_index) in bad:
            continue
        per_sample[task.sample][0] += result["events"]
        for name, n in result["class_counts"].items():
            counts[name] = counts.get(name, 0) + n
            weights[name] = weights.get(name, 0.0) + result["class_weights"][name]
            per_sample[task.sample][1] += result["class_weights"][name]
    files_read = {s.name: 0 for s in samples}
    for task in file_tasks:
        if (task.sample, task.file_index) not in bad:
            files_read[task.sample] += 1
    paths = {(t.sample, t.file_index): t.path for t in file_tasks}
    return IngestReport(
        out_dir=out,
        luminosity_fb=luminosity_fb,
        samples=tuple(
            SampleSummary(
                name=s.name,
                kind=s.kind,
                files_read=files_read[s.name],
                events_read=int(per_sample[s.name][0]),
                sum_of_weights=_sum_of_weights(s, measured[s.name]),
                scale=scales[s.name],
                weighted_events=float(per_sample[s.name][1]),
            )
            for s in samples
        ),
        skipped=tuple(SkippedFile(s, paths[(s, i)], e) for (s, i), e in sorted(bad.items())),
        class_counts=dict(sorted(counts.items())),
        class_weights={k: weights[k] for k in sorted(weights)},
    )


# --------------------------------------------------------------------------------------------
# Reading the dataset back
# --------------------------------------------------------------------------------------------


def list_classes(out_dir: str | os.PathLike[str]) -> dict[str, int]:
    """Event classes in a dataset and their event counts (from Parquet footers, no data read)."""
    out = Path(out_dir)
    result: dict[str, int] = {}
    for directory in sorted(out.glob(f"{PARTITION_KEY}=*")):
        name = directory.name.split("=", 1)[1]
        files = sorted(str(p) for p in directory.glob("*.parquet"))
        if files:
            dataset = pads.dataset(files, format="parquet")
            result[name] = sum(f.metadata.num_rows for f in dataset.get_fragments())
    return result


def read_class(
    out_dir: str | os.PathLike[str], name: str, *, samples: Sequence[str] | None = None
) -> ak.Array:
    """All events of one exclusive class (optionally only some samples), validated.

    Raises:
        IngestError: the class is not in the dataset (lists those that are) or a part has an
            unsupported schema version.
    """
    out = Path(out_dir)
    directory = out / f"{PARTITION_KEY}={name}"
    files = sorted(str(p) for p in directory.glob("*.parquet")) if directory.is_dir() else []
    if not files:
        present = list(list_classes(out)) if out.is_dir() else []
        raise IngestError(
            str(out),
            PARTITION_KEY,
            f"no class '{name}'; present: {', '.join(present) or 'none (empty or missing dataset)'}",
        )
    dataset = pads.dataset(files, format="parquet")
    wanted = None if samples is None else {s.encode() for s in samples}
    arrays = []
    for fragment in dataset.get_fragments():
        metadata = fragment.physical_schema.metadata or {}
        version = metadata.get(SCHEMA_METADATA_KEY)
        if version is not None and version.decode() != SCHEMA_VERSION:
            raise IngestError(
                fragment.path,
                "<schema_version>",
                f"version {version.decode()} not supported; allowed: {SCHEMA_VERSION}",
            )
        if wanted is not None and metadata.get(SAMPLE_METADATA_KEY) not in wanted:
            continue
        arrays.append(ak.from_arrow(fragment.to_table()))
    if not arrays:
        raise IngestError(
            str(directory), "samples", f"class '{name}' has no events from {list(samples or [])}"
        )
    events = arrays[0] if len(arrays) == 1 else concatenate(arrays)
    return validate_events(events, source=str(directory))
