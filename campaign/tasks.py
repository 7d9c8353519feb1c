"""The task functions a campaign is made of; each is a pure function of its payload.

Every function takes the task's payload (plus ``inputs``: the artifacts of the tasks it
depends on), reads what it needs from the store, writes its outputs under the staging prefix
it is given and returns ``{"artifacts": {name: path}, "summary": {...}}``. The driver moves the
staged outputs into place and records the task in the ledger, so a task never writes the ledger
itself and can run on any worker that sees the store.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import tempfile
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from campaign.inputs import gather, inspect_task, read_index, read_parts, read_task
from campaign.status import CLASSES_SCHEMA_VERSION, GLOBAL_SCHEMA_VERSION
from campaign.store import Store
from searches import events as ev
from searches import signatures
from searches.methods.base import ClassSlice, MethodOptions, SearchMethod
from searches.methods.registry import get_method
from searches.result import SearchResult
from searches.stats import lee
from theory.models import get_model
from theory.simulate import FastSimulator, pseudo_data

TaskOutput = dict[str, Any]
FAULT_INJECTION_VARIABLE = "LAMPPOST_FAIL_SEARCH"


def run_task(kind: str, payload: Mapping[str, Any], *, store_uri: str, staging: str) -> TaskOutput:
    """Run the task function for ``kind`` (the entry point of every executor)."""
    return TASKS[kind](payload, Store(store_uri), staging)


def _write_events(store: Store, relative: str, events: ak.Array) -> str:
    """Write validated events (an empty set is allowed: a campaign without background)."""
    if len(events):
        ev.validate_events(events, source=relative)
    buffer = io.BytesIO()
    pq.write_table(ev.to_table(events), buffer, compression="zstd")
    store.write_bytes(relative, buffer.getvalue())
    return relative


def _read_events(store: Store, relative: str) -> ak.Array:
    table = pq.read_table(io.BytesIO(store.read_bytes(relative)))
    if table.num_rows == 0:
        return ev.empty_events()
    return ev.validate_events(ak.from_arrow(table), source=store.path(relative))


def role_events(store: Store, artifacts: Mapping[str, str]) -> ak.Array:
    """All events of the background or observed task: its event file, or (read from files)
    every part its index names, in reading order (one worker then holds the whole sample)."""
    if "index" in artifacts:
        return read_index(store, artifacts["index"])
    return _read_events(store, artifacts["events"])


def make_background(payload: Mapping[str, Any], store: Store, staging: str) -> TaskOutput:
    """The simulated background: built-in simulator, files, or none (``background: null``).

    With no background the artifact is an empty event set, so the later stages keep one
    shape and every class slice carries an empty ``background``. Files were read and
    classified by chunk tasks already; this task only indexes them (:func:`gather`).
    """
    config = payload["background"]
    if config is not None and config.get("files"):
        return gather(payload, store, staging)
    if config is None:
        events = ev.empty_events()
    else:
        events = FastSimulator(tail_boost=float(config["tail_boost"])).background(
            n_events=int(config["events"]),
            luminosity_fb=float(payload["luminosity_fb"]),
            seed=int(payload["seed"]),
        )
    path = _write_events(store, f"{staging}/background.parquet", events)
    return {
        "artifacts": {"events": path},
        "summary": {
            "events": len(events),
            "expected": float(ak.sum(events["weight"])) if len(events) else 0.0,
        },
    }


def make_observed(payload: Mapping[str, Any], store: Store, staging: str) -> TaskOutput:
    """Observed events: pseudo-data drawn from the background, or files (indexed by chunks)."""
    config = payload["observed"]
    if not config.get("pseudo"):
        return gather(payload, store, staging)
    seed = int(payload["seed"])
    summary: dict[str, Any] = {}
    source = role_events(store, payload["inputs"]["background"])
    injection = config.get("inject")
    if injection:
        model = get_model(injection["model"])
        signal = FastSimulator().signal(
            model,
            injection["point"],
            n_events=int(injection["events"]),
            luminosity_fb=float(payload["luminosity_fb"]),
            seed=seed + 2,
        )
        signal = ak.with_field(signal, signal["weight"] * float(injection["scale"]), "weight")
        summary["injected_expected"] = float(ak.sum(signal["weight"]))
        source = ev.concatenate([source, signal])
    events = pseudo_data(source, seed=seed)
    path = _write_events(store, f"{staging}/observed.parquet", events)
    summary["events"] = len(events)
    return {"artifacts": {"events": path}, "summary": summary}


def classify(payload: Mapping[str, Any], store: Store, staging: str) -> TaskOutput:
    """Split background and observed events into exclusive classes; describe every view.

    Each sample is written as one Parquet file with one row group per exclusive class, so a
    search reads exactly the row groups of its class (or of the members of a view). Samples
    read from files are classified already, chunk by chunk: their classes come from the index
    of their parts (:mod:`campaign.inputs`), and no event is read here.
    """
    config = signatures.SignatureConfig.model_validate(payload["signatures"])
    given = payload["inputs"]
    artifacts: dict[str, str] = {}
    table: dict[str, dict[str, Any]] = {}
    for label, role in (("bkg", "background"), ("obs", "observed")):
        if "index" in given[role]:
            _index_classes(store.read_json(given[role]["index"]), label, table)
            continue
        events = _read_events(store, given[role]["events"])
        classification = signatures.classify(events, config)
        order = np.argsort(classification.codes, kind="stable")
        bounds = np.searchsorted(
            classification.codes[order], np.arange(len(classification.names) + 1)
        )
        weights = ak.to_numpy(events["weight"])
        for index, name in enumerate(classification.names):
            rows = order[bounds[index] : bounds[index + 1]]
            entry = table.setdefault(
                name,
                {"members": [name], "expected": 0.0, "observed": 0.0, "mc_events": 0},
            )
            entry["expected" if label == "bkg" else "observed"] = float(weights[rows].sum())
            if label == "bkg":
                entry["mc_events"] = len(rows)
            entry[f"{label}_row_group"] = index
        artifacts[label] = _write_row_groups(
            store, f"{staging}/{label}.parquet", events[order], bounds
        )
    exclusive = sorted(table)
    for view, members in signatures.view_members(exclusive, config=config).items():
        table[view] = {
            "members": members,
            **{
                key: sum(table[m][key] for m in members)
                for key in ("expected", "observed", "mc_events")
            },
        }
    store.write_json(
        f"{staging}/classes.json", {"schema_version": CLASSES_SCHEMA_VERSION, "classes": table}
    )
    artifacts["classes"] = f"{staging}/classes.json"
    return {
        "artifacts": artifacts,
        "summary": {"exclusive_classes": len(exclusive), "classes": len(table)},
    }


def _index_classes(index: Mapping[str, Any], label: str, table: dict[str, dict[str, Any]]) -> None:
    """Class entries of a sample read from files: yields from its index, events in its parts."""
    for name, info in index["classes"].items():
        entry = table.setdefault(
            name, {"members": [name], "expected": 0.0, "observed": 0.0, "mc_events": 0}
        )
        entry["expected" if label == "bkg" else "observed"] = float(info["weight"])
        if label == "bkg":
            entry["mc_events"] = int(info["events"])
        entry[f"{label}_parts"] = info["parts"]


def _write_row_groups(store: Store, relative: str, events: ak.Array, bounds: np.ndarray) -> str:
    """One Parquet file of ``events`` with row group ``i`` = rows ``bounds[i]:bounds[i+1]``."""
    table = ev.to_table(events)
    buffer = io.BytesIO()
    with pq.ParquetWriter(buffer, table.schema, compression="zstd") as writer:
        for start, stop in itertools.pairwise(bounds):
            writer.write_table(table.slice(start, stop - start), row_group_size=stop - start)
    store.write_bytes(relative, buffer.getvalue())
    return relative


def _read_row_groups(store: Store, relative: str, row_groups: list[int]) -> ak.Array:
    """The events of some row groups of a classified sample (validated when written)."""
    if not row_groups:
        return ev.empty_events()
    with store.fs.open_input_file(store.path(relative)) as handle:
        table = pq.ParquetFile(handle).read_row_groups(sorted(row_groups))
    return ak.from_arrow(table)


def run_search(payload: Mapping[str, Any], store: Store, staging: str) -> TaskOutput:
    """Run one method on one class; raise on failure (the executor records it)."""
    event_class = payload["event_class"]
    method = get_method(payload["method"])
    fault = os.environ.get(FAULT_INJECTION_VARIABLE)
    if fault and fault == f"{event_class}:{payload['method']}":
        raise RuntimeError(f"fault injected by ${FAULT_INJECTION_VARIABLE} for {fault}")
    classified = payload["inputs"]["classify"]
    parts = payload.get("parts", {})
    data = {
        label: read_parts(store, parts[label])
        if parts.get(label)
        else _read_row_groups(
            store, classified.get(label, ""), list(payload["row_groups"][label].values())
        )
        for label in ("bkg", "obs")
    }
    data_slice = ClassSlice(
        event_class=event_class,
        signatures=dict(payload["signatures"]),
        observed=data["obs"],
        background=data["bkg"],
        observables=tuple(payload["observables"]),
    )
    options = method.options_model.model_validate(payload["options"])
    results, models = _run_storing_models(
        method, data_slice, options, seed=int(payload["seed"]), store=store, staging=staging
    )
    path = f"{staging}/results.json"
    store.write_text(path, "[" + ",".join(r.to_json() for r in results) + "]")
    best = min(results, key=lambda r: r.p_local, default=None)
    return {
        "artifacts": {"results": path, **models},
        "summary": {
            "results": len(results),
            "p_local": None if best is None else best.p_local,
            "p_tilde": None if best is None else best.p_tilde,
        },
    }


def _run_storing_models(
    method: SearchMethod,
    data: ClassSlice,
    options: MethodOptions,
    *,
    seed: int,
    store: Store,
    staging: str,
) -> tuple[list[SearchResult], dict[str, str]]:
    """Run a method; the trained selections it exports are kept in the store with its results.

    A method with an ``artifacts_dir`` option that the campaign file leaves unset saves its
    models into a scratch folder on the worker. Each model file is then staged next to
    ``results.json`` (the driver commits both into one artifact folder) and its
    :class:`~searches.result.ModelCut` records the bare file name, which :func:`load_results`
    resolves wherever the store is later read from: another working directory, another
    machine, or a copied or moved store. An ``artifacts_dir`` set in the campaign file is kept
    as given (``null``: not exported); such models live outside the store.

    Returns:
        The results, and the staged model files as artifacts (``model:<file name>``).
    """
    if (
        "artifacts_dir" not in type(options).model_fields
        or "artifacts_dir" in options.model_fields_set
    ):
        return method.run(data, options=options, seed=seed), {}
    with tempfile.TemporaryDirectory(prefix="lamppost-models-") as scratch:
        options = options.model_copy(update={"artifacts_dir": scratch})
        results = method.run(data, options=options, seed=seed)
        artifacts: dict[str, str] = {}
        stored = []
        for result in results:
            model = result.selection.model
            if model is None or Path(model.weights).parent != Path(scratch):
                stored.append(result)
                continue
            name = Path(model.weights).name
            if f"model:{name}" not in artifacts:
                artifacts[f"model:{name}"] = f"{staging}/{name}"
                store.write_bytes(f"{staging}/{name}", Path(model.weights).read_bytes())
            selection = replace(result.selection, model=replace(model, weights=name))
            stored.append(replace(result, selection=selection))
    return stored, artifacts


def load_results(store: Store, relative: str) -> list[SearchResult]:
    """The results a search task stored, their model selections loadable from here.

    A model file the campaign stored (:func:`_run_storing_models`) is named relative to the
    folder of ``relative``; it becomes the file's path in a local store, or a local copy of
    it from a remote one. Other model paths (``artifacts_dir`` set by the user) are kept.
    The method of a result with a model is imported, which registers its model scorer, so
    ``result.selection.histogram`` works on the results as they come back.
    """
    folder = relative.rsplit("/", 1)[0]
    results = []
    for item in store.read_json(relative):
        result = SearchResult.from_dict(item)
        model = result.selection.model
        if model is not None:
            get_method(result.method)
        if model is not None and not Path(model.weights).is_absolute():
            stored = f"{folder}/{model.weights}"
            if store.exists(stored):
                weights = str(_local_file(store, stored))
                selection = replace(result.selection, model=replace(model, weights=weights))
                result = replace(result, selection=selection)
        results.append(result)
    return results


def _local_file(store: Store, relative: str) -> Path:
    """A local path of a store file: the file itself, or a cached copy from a remote store.

    Artifact paths hold content-keyed task outputs that never change, so a copy cached under
    the file's remote path stays valid.
    """
    if isinstance(store.fs, pafs.LocalFileSystem):
        return store.local_path(relative)
    digest = hashlib.sha256(store.path(relative).encode()).hexdigest()[:20]
    target = Path(tempfile.gettempdir()) / "lamppost-models" / digest / Path(relative).name
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{uuid.uuid4().hex}.tmp")
        temporary.write_bytes(store.read_bytes(relative))
        os.replace(temporary, target)
    return target


def finished_results(store: Store) -> list[SearchResult]:
    """Every result of the campaign's finished search tasks (ledger order)."""
    return [
        result
        for record in store.records()
        if record.kind == "search" and record.status == "done"
        for result in load_results(store, record.artifacts["results"])
    ]


def look_elsewhere(payload: Mapping[str, Any], store: Store, staging: str) -> TaskOutput:
    """Global significance across every search of the campaign."""
    results = [
        result
        for artifacts in payload["inputs"]["searches"]
        for result in load_results(store, artifacts["results"])
    ]
    outcome = lee.global_significance(results, seed=int(payload["seed"]))
    best = results[outcome.search]
    summary = {
        **asdict(outcome),
        "event_class": best.event_class,
        "method": best.method,
        "observable": best.observable,
    }
    path = f"{staging}/lee.json"
    store.write_json(path, {"schema_version": GLOBAL_SCHEMA_VERSION, **summary})
    return {"artifacts": {"lee": path}, "summary": summary}


def run_landscape(payload: Mapping[str, Any], store: Store, staging: str) -> TaskOutput:
    """The two-body resonance landscape (:func:`searches.landscape.scan_landscape`)."""
    from searches.landscape import LandscapeOptions, scan_landscape

    inputs = payload["inputs"]
    landscape = scan_landscape(
        role_events(store, inputs["background"]),
        role_events(store, inputs["observed"]),
        config=signatures.SignatureConfig.model_validate(payload["signatures"]),
        options=LandscapeOptions.model_validate(payload["options"]),
        luminosity_fb=float(payload["luminosity_fb"]),
        seed=int(payload["seed"]),
    )
    path = f"{staging}/landscape.json"
    store.write_text(path, landscape.to_json())
    best = landscape.best
    return {
        "artifacts": {"landscape": path},
        "summary": {
            "cells": landscape.n_cells,
            "sensitive": landscape.n_sensitive,
            "p_local_min": landscape.p_local_min,
            "p_global": landscape.p_global,
            "best": None if best is None else best.name,
        },
    }


def evaluate_theory_point(payload: Mapping[str, Any], store: Store, staging: str) -> TaskOutput:
    """One point of the theory loop (:func:`campaign.loop.evaluate_point`)."""
    from campaign.loop import evaluate_point

    return evaluate_point(payload, store, staging)


def deposit_theory_signal(payload: Mapping[str, Any], store: Store, staging: str) -> TaskOutput:
    """Where still-allowed theory points put their signal (:func:`campaign.loop.deposit_signal`)."""
    from campaign.loop import deposit_signal

    return deposit_signal(payload, store, staging)


def evaluate_published_patches(
    payload: Mapping[str, Any], store: Store, staging: str
) -> TaskOutput:
    """One chunk of a published likelihood's patches (:func:`campaign.published.evaluate_chunk`)."""
    from campaign.published import evaluate_chunk

    return evaluate_chunk(payload, store, staging)


def evaluate_published_limits(payload: Mapping[str, Any], store: Store, staging: str) -> TaskOutput:
    """Upper limits on μ for one chunk of published patches (:mod:`campaign.published`)."""
    from campaign.published import evaluate_limits_chunk

    return evaluate_limits_chunk(payload, store, staging)


TASKS: dict[str, Callable[[Mapping[str, Any], Store, str], TaskOutput]] = {
    "background": make_background,
    "observed": make_observed,
    "classify": classify,
    "inspect": inspect_task,
    "read": read_task,
    "search": run_search,
    "lee": look_elsewhere,
    "landscape": run_landscape,
    "evaluate": evaluate_theory_point,
    "deposit": deposit_theory_signal,
    "patches": evaluate_published_patches,
    "patch_limits": evaluate_published_limits,
}
