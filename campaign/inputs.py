"""Campaign inputs from files, read as many small tasks on the campaign's executor.

A ``files`` section (``data.background`` or ``data.observed``) runs as two stages of tasks,
each content-keyed in the ledger like every other task, so they spread over the Ray cluster and
a resumed campaign reads nothing it has already read:

1. ``inspect``: one task per file opens it, checks the tree and every mapped branch and counts
   its entries (and Σ of the raw weights where ``xsec_pb`` needs it); no events are read;
2. ``read``: one task per ``chunk_size`` entries reads, validates, normalises and classifies its
   events (:func:`campaign.ingest.read_chunk`, :func:`campaign.ingest.sort_by_class`) and
   writes one Parquet file with one row group per exclusive class.

The role's own task (``background`` / ``observed``) then only gathers the chunks' class tables
into an index: per exclusive class, the ``(part, row group)`` pairs that hold its events. The
class selection takes its counts from the index and every search reads just its class's row
groups, so no worker ever holds a whole sample. Task keys include each local file's size and
modification time: a rewritten file is read again.

With ``on_bad_file: fail`` a bad file fails its task (the error names file and branch) and the
campaign stops before the next stage; with ``skip`` the task records the error instead, and the
gather leaves out every chunk of a file any chunk of which failed, so a class never holds half a
file.
"""

from __future__ import annotations

import io
import itertools
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import awkward as ak
import pyarrow.parquet as pq

from campaign.ingest import ClassifiedChunk, inspect_file, read_chunk, sort_by_class
from campaign.plan import Task, content_key
from campaign.spec import CampaignSpec, SampleFile
from campaign.store import Store, TaskRecord
from searches import events as ev
from searches.readers import BranchMap, get_preset
from searches.signatures import SignatureConfig

ROLES = ("background", "observed")
_PB_TO_FB = 1000.0

TaskOutput = dict[str, Any]
RunTasks = Callable[[Sequence[Task], str], Mapping[str, TaskRecord]]
Part = tuple[str, int]
"""Where some events of one class lie: a part's store path and its row group."""


def file_roles(spec: CampaignSpec) -> list[str]:
    """The data roles that come from files."""
    return [role for role in ROLES if getattr(getattr(spec.data, role), "files", None)]


def read_files(
    spec: CampaignSpec, store: Store, run_tasks: RunTasks
) -> dict[str, list[Task]] | None:
    """Open and read every file of the campaign as ``inspect`` and ``read`` tasks.

    Args:
        run_tasks: runs tasks in the campaign's ledger (finished ones are skipped) and returns
            the finished records by key (:meth:`campaign.runner.Driver.run_tasks`).

    Returns:
        Per role from files, its inspect and read tasks (what its gather task depends on);
        ``None`` when one of them failed (the campaign stops; the ledger names the file).
    """
    stages: dict[str, list[Task]] = {}
    for role in file_roles(spec):
        opened = inspect_tasks(spec, role)
        finished = run_tasks(opened, f"{role}: open files")
        if any(task.key not in finished for task in opened):
            return None
        infos = [store.read_json(finished[task.key].artifacts["file"]) for task in opened]
        chunks = read_tasks(spec, role, opened, infos)
        finished = run_tasks(chunks, f"{role}: read")
        if any(task.key not in finished for task in chunks):
            return None
        stages[role] = [*opened, *chunks]
    return stages


def _identity(path: str) -> dict[str, int] | None:
    """Size and modification time of a local file (``None`` when absent or remote)."""
    if "://" in path:
        return None
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _label(sample: SampleFile) -> str:
    return sample.label or sample.path


def inspect_tasks(spec: CampaignSpec, role: str) -> list[Task]:
    """One ``inspect`` task per file of a role's samples (a glob matching nothing: its pattern,
    which the task then reports as absent)."""
    section = getattr(spec.data, role)
    tasks = []
    for index, sample in enumerate(section.files):
        for number, path in enumerate(sample.files() or [sample.path]):
            config = {
                "role": role,
                "sample": index,
                "label": _label(sample),
                "file_index": number,
                "path": path,
                "identity": _identity(path),
                "preset": sample.preset,
                "measure_weights": sample.xsec_pb is not None and sample.sum_of_weights is None,
                "on_bad_file": section.on_bad_file,
            }
            tasks.append(
                Task(
                    key=content_key("inspect", config),
                    kind="inspect",
                    name=f"inspect/{role}/{sample.label or f'files.{index}'}/{Path(path).name}",
                    payload=config,
                    cost=0.02,
                )
            )
    return tasks


def _scales(
    spec: CampaignSpec, role: str, opened: Sequence[Task], infos: Sequence[Mapping[str, Any]]
) -> dict[int, float | None]:
    """Per sample, the factor that brings raw weights to events at the campaign luminosity.

    ``w σ L / Σw`` with Σw given or measured over the sample's readable files; with
    ``weights_luminosity_fb`` the weights are rescaled to the campaign's luminosity. ``None``
    when the measured Σw is 0 (the read tasks then refuse the sample).
    """
    section = getattr(spec.data, role)
    scales: dict[int, float | None] = {}
    for index, sample in enumerate(section.files):
        if sample.xsec_pb is not None:
            total = sample.sum_of_weights
            if total is None:
                total = sum(
                    info["sum_of_weights"]
                    for task, info in zip(opened, infos, strict=True)
                    if task.payload["sample"] == index and "error" not in info
                )
            scales[index] = (
                sample.xsec_pb * _PB_TO_FB * spec.luminosity_fb / float(total) if total else None
            )
        elif sample.weights_luminosity_fb is not None:
            scales[index] = spec.luminosity_fb / sample.weights_luminosity_fb
        else:
            scales[index] = 1.0
    return scales


def read_tasks(
    spec: CampaignSpec, role: str, opened: Sequence[Task], infos: Sequence[Mapping[str, Any]]
) -> list[Task]:
    """One ``read`` task per ``chunk_size`` entries of every file that opened well."""
    section = getattr(spec.data, role)
    scales = _scales(spec, role, opened, infos)
    signatures = spec.signatures.model_dump(mode="json")
    tasks = []
    for task, info in zip(opened, infos, strict=True):
        if "error" in info:
            continue
        source = task.payload
        for chunk, start in enumerate(range(0, info["entries"], section.chunk_size)):
            stop = min(start + section.chunk_size, info["entries"])
            config = {
                "inspect_key": task.key,
                **{k: source[k] for k in ("role", "sample", "label", "file_index", "path")},
                "preset": source["preset"],
                "chunk": chunk,
                "start": start,
                "stop": stop,
                "scale": scales[source["sample"]],
                "signatures": signatures,
                "on_bad_file": section.on_bad_file,
            }
            tasks.append(
                Task(
                    key=content_key("read", config),
                    kind="read",
                    name=f"read/{task.name.removeprefix('inspect/')}:{chunk}",
                    payload=config,
                    cost=(stop - start) / 2e5,
                    depends_on=(task.key,),
                )
            )
    return tasks


def _branch_map(preset: str | None) -> BranchMap | None:
    return None if preset is None else get_preset(preset)


def inspect_task(payload: Mapping[str, Any], store: Store, staging: str) -> TaskOutput:
    """Task ``inspect``: entries (and Σw) of one file; a bad file fails unless ``skip``."""
    info: dict[str, Any] = {"path": payload["path"]}
    try:
        entries, total = inspect_file(
            payload["path"],
            branch_map=_branch_map(payload["preset"]),
            measure_weights=bool(payload["measure_weights"]),
        )
        info.update(entries=entries, sum_of_weights=total)
    except ev.EventValidationError as err:
        if payload["on_bad_file"] != "skip":
            raise
        info["error"] = str(err)
    path = f"{staging}/file.json"
    store.write_json(path, info)
    return {"artifacts": {"file": path}, "summary": info}


def read_task(payload: Mapping[str, Any], store: Store, staging: str) -> TaskOutput:
    """Task ``read``: one chunk read, normalised, classified and written by class."""
    info: dict[str, Any] = {
        key: payload[key] for key in ("path", "sample", "label", "file_index", "chunk")
    }
    artifacts = {"chunk": f"{staging}/chunk.json"}
    try:
        events = read_chunk(
            payload["path"],
            branch_map=_branch_map(payload["preset"]),
            start=int(payload["start"]),
            stop=int(payload["stop"]),
        )
    except ev.EventValidationError as err:
        if payload["on_bad_file"] != "skip":
            raise
        info["error"] = str(err)
    else:
        if payload["scale"] is None:
            raise ev.EventValidationError(
                payload["path"],
                "weight",
                "the sample's Σ of raw weights is 0, so xsec_pb cannot normalise it; "
                "allowed: give sum_of_weights",
            )
        scale = float(payload["scale"])
        if scale != 1.0:
            events = ak.with_field(events, events["weight"] * scale, "weight")
        chunk = sort_by_class(events, SignatureConfig.model_validate(payload["signatures"]))
        artifacts["part"] = _write_classes(store, f"{staging}/part.parquet", chunk)
        info["events"] = len(events)
        info["classes"] = {
            name: {"row_group": index, "events": int(count), "weight": float(weight)}
            for index, (name, count, weight) in enumerate(
                zip(chunk.names, chunk.counts, chunk.weights, strict=True)
            )
        }
    store.write_json(artifacts["chunk"], info)
    return {"artifacts": artifacts, "summary": {"events": info.get("events", 0)}}


def _write_classes(store: Store, relative: str, chunk: ClassifiedChunk) -> str:
    """One Parquet file with row group ``i`` = the events of class ``chunk.names[i]``."""
    buffer = io.BytesIO()
    with pq.ParquetWriter(buffer, chunk.table.schema, compression="zstd") as writer:
        for start, stop in itertools.pairwise(chunk.bounds.tolist()):
            writer.write_table(chunk.table.slice(start, stop - start), row_group_size=stop - start)
    store.write_bytes(relative, buffer.getvalue())
    return relative


def gather(payload: Mapping[str, Any], store: Store, staging: str) -> TaskOutput:
    """The role's task for files: index the chunks' classes (no events are read).

    Writes ``index.json``: ``classes`` (exclusive class -> ``events``, ``weight`` and
    ``parts``, the ``[part, row group]`` pairs in reading order), ``parts`` (every part in
    reading order), per-sample ``samples`` (files, events, weighted yield) and ``skipped``.

    Raises:
        EventValidationError: every file was bad (and skipped).
    """
    inputs = payload["inputs"]
    skipped = []
    for artifacts in inputs.get("inspect", []):
        info = store.read_json(artifacts["file"])
        if "error" in info:
            skipped.append({"path": info["path"], "error": info["error"]})
    chunks = [(a, store.read_json(a["chunk"])) for a in inputs.get("read", [])]
    bad: dict[tuple[int, int], dict[str, str]] = {}
    for _, info in chunks:
        if "error" in info:
            bad.setdefault(
                (info["sample"], info["file_index"]), {"path": info["path"], "error": info["error"]}
            )
    skipped += list(bad.values())
    classes: dict[str, dict[str, Any]] = {}
    samples: dict[str, dict[str, Any]] = {}
    parts = []
    for artifacts, info in chunks:
        if (info["sample"], info["file_index"]) in bad:
            continue
        parts.append(artifacts["part"])
        sample = samples.setdefault(info["label"], {"files": [], "events": 0, "weighted": 0.0})
        if info["path"] not in sample["files"]:
            sample["files"].append(info["path"])
        sample["events"] += info["events"]
        for name, entry in info["classes"].items():
            target = classes.setdefault(name, {"events": 0, "weight": 0.0, "parts": []})
            target["events"] += entry["events"]
            target["weight"] += entry["weight"]
            target["parts"].append([artifacts["part"], entry["row_group"]])
            sample["weighted"] += entry["weight"]
    if not parts:
        raise ev.EventValidationError(
            "; ".join(s["path"] for s in skipped) or "<files>",
            "<files>",
            "no file could be read (every one was skipped as bad)",
        )
    index = {
        "classes": dict(sorted(classes.items())),
        "parts": parts,
        "samples": {k: {**v, "files": len(v["files"])} for k, v in samples.items()},
        "skipped": skipped,
        "events": sum(c["events"] for c in classes.values()),
        "weighted": sum(c["weight"] for c in classes.values()),
    }
    path = f"{staging}/index.json"
    store.write_json(path, index)
    summary = {key: index[key] for key in ("events", "weighted", "samples", "skipped")}
    return {"artifacts": {"index": path}, "summary": summary}


def read_parts(store: Store, parts: Sequence[Sequence[Any]]) -> ak.Array:
    """The events in ``(part, row group)`` pairs, in the order given (validated when written).

    Row groups of one part that follow each other are read in one call.
    """
    arrays = []
    for relative, group in itertools.groupby(parts, key=lambda part: part[0]):
        with store.fs.open_input_file(store.path(relative)) as handle:
            table = pq.ParquetFile(handle).read_row_groups([int(g) for _, g in group])
        arrays.append(ak.from_arrow(table))
    return ev.concatenate(arrays)


def read_index(store: Store, relative: str) -> ak.Array:
    """Every event of a gathered role, part after part in reading order."""
    index = store.read_json(relative)
    arrays = []
    for part in index["parts"]:
        with store.fs.open_input_file(store.path(part)) as handle:
            arrays.append(ak.from_arrow(pq.read_table(handle)))
    return ev.concatenate(arrays)
