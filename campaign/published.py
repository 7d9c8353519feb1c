"""Published experiment likelihoods as searches of a campaign.

A HEPData-style pyhf likelihood (a tarball, a folder of ``BkgOnly.json`` with a patchset or
per-point patch files) is read with its digests checked (:mod:`searches.likelihoods`); its
signal patches are cut into chunks, each a ``patches`` task that the campaign's executor runs
in parallel (Ray) through the batched CLs engine with fit checks
(:func:`searches.stats.batched.evaluate_patches`: batched torch fits, plain pyhf where a
structure cannot be stacked, retries, FAILED rather than a silent CLs = 1). Asked for, upper
limits on μ come from ``patch_limits`` tasks of their own
(:func:`searches.stats.limits.patch_upper_limits`), so a CLs table already in the ledger is not
recomputed. The tasks live in the campaign's ledger, so an interrupted evaluation resumes. The
answer is one table per likelihood, keyed by region and the patches' model parameters, saved as
JSON and Parquet in the store.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from campaign import plan
from campaign.store import Store, TaskRecord
from searches.likelihoods import PublishedLikelihood, load_likelihoods

SCHEMA_VERSION = "2"
"""2: every row carries its upper limits on μ (``None`` where not asked for or not found)."""
CHUNK = 40
"""Patches per task: large enough for the batched engine to pay off, small enough to spread."""
LIMIT_CHUNK = 10
"""Patches per limit task."""
SECONDS_PER_PATCH = {"patches": 0.1, "patch_limits": 3.2}
"""Task cost per patch for the executor's batching: seconds on one core for the SUSY-2018-31
sbottom likelihoods (benchmarks/RESULTS.md, "Limits on every published patch")."""
LIMIT_LEVEL = 0.05
"""CLs level of the limits: 95 % CL."""


@dataclass(frozen=True)
class PublishedResults:
    """CLs (and, when asked for, upper limits on μ) of every evaluated patch of one published
    likelihood."""

    source: str
    label: str
    rows: tuple[Mapping[str, Any], ...]
    missing: tuple[str, ...] = ()
    """Patches whose CLs task failed (``region/patch``): no row, see the ledger for the error."""
    missing_limits: tuple[str, ...] = ()
    """Patches whose limit task failed (``region/patch``): their rows have no limits."""

    def excluded(self, region: str) -> int:
        return sum(
            1
            for r in self.rows
            if r["region"] == region and r["status"] != "failed" and r["cls_obs"] < 0.05
        )

    def regions(self) -> list[str]:
        return sorted({r["region"] for r in self.rows})


def likelihood_label(likelihoods: Sequence[PublishedLikelihood], select: Sequence[str] = ()) -> str:
    """Content label of an evaluation: background digests, patch names and the selection."""
    text = json.dumps(
        [
            [[item.name, item.digest, [p.name for p in item.patches]] for item in likelihoods],
            sorted(select),
        ]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def patch_tasks(
    source: Path,
    likelihoods: Sequence[PublishedLikelihood],
    *,
    select: Sequence[str] = (),
    chunk: int = CHUNK,
    limits: bool = False,
    limit_chunk: int = LIMIT_CHUNK,
) -> list[plan.Task]:
    """Tasks evaluating the patches (all, or those named in ``select``) in chunks: CLs, and
    with ``limits`` upper limits on μ as well.

    Raises:
        KeyError: a selected patch that no region has, listing some that exist.
    """
    wanted = set(select)
    known = {p.name for item in likelihoods for p in item.patches}
    missing = sorted(wanted - known)
    if missing:
        some = ", ".join(sorted(known)[:5])
        raise KeyError(f"{source}: no patch named {missing}; have e.g. {some}")
    kinds = [("patches", chunk, {})]
    if limits:
        kinds.append(("patch_limits", limit_chunk, {"level": LIMIT_LEVEL}))
    tasks = []
    for item in likelihoods:
        names = [p.name for p in item.patches if not wanted or p.name in wanted]
        for kind, size, options in kinds:
            for start in range(0, len(names), size):
                part = names[start : start + size]
                config = {
                    "source": str(source.resolve()),
                    "region": item.name,
                    "digest": item.digest,
                    "patches": part,
                    **options,
                }
                tasks.append(
                    plan.Task(
                        key=plan.content_key(kind, config),
                        kind=kind,
                        name=f"{kind}/{item.name or 'workspace'}/{start // size}",
                        payload=config,
                        cost=len(part) * SECONDS_PER_PATCH[kind],
                    )
                )
    return tasks


def _region(payload: Mapping[str, Any]) -> PublishedLikelihood:
    """The task's region, its digest re-checked against the one it was planned with."""
    regions = {item.name: item for item in load_likelihoods(payload["source"])}
    item = regions[payload["region"]]
    if item.digest != payload["digest"]:
        raise ValueError(
            f"{payload['source']}: region {payload['region']!r} changed since the tasks were "
            f"planned (digest {item.digest}, expected {payload['digest']})"
        )
    return item


def evaluate_chunk(payload: Mapping[str, Any], store: Store, staging: str) -> dict[str, Any]:
    """Task function: CLs of one chunk of patches of one region (digest re-checked)."""
    from searches.stats.batched import evaluate_patches

    item = _region(payload)
    patches = [item.patch(name) for name in payload["patches"]]
    results = evaluate_patches(item.background, patches, region=item.name)
    relative = f"{staging}/cls.json"
    store.write_text(relative, json.dumps([r.to_dict() for r in results], sort_keys=True))
    return {"artifacts": {"cls": relative}}


def evaluate_limits_chunk(payload: Mapping[str, Any], store: Store, staging: str) -> dict[str, Any]:
    """Task function: upper limits on μ for one chunk of patches of one region."""
    from searches.stats.limits import patch_upper_limits

    item = _region(payload)
    patches = [item.patch(name) for name in payload["patches"]]
    results = patch_upper_limits(item.background, patches, level=payload["level"], region=item.name)
    relative = f"{staging}/limits.json"
    store.write_text(relative, json.dumps([r.to_dict() for r in results], sort_keys=True))
    return {"artifacts": {"limits": relative}}


def collect(
    source: Path,
    likelihoods: Sequence[PublishedLikelihood],
    tasks: Sequence[plan.Task],
    finished: Mapping[str, TaskRecord],
    store: Store,
    *,
    select: Sequence[str] = (),
) -> PublishedResults:
    """The per-patch table from the finished tasks.

    Patches whose CLs task failed have no row (``missing``); those whose limit task failed
    keep their row, without limits (``missing_limits``).
    """
    parameters = {(i.name, p.name): dict(p.parameters) for i in likelihoods for p in i.patches}
    limits: dict[tuple[str, str], Mapping[str, Any]] = {}
    rows = []
    missing: dict[str, list[str]] = {"patches": [], "patch_limits": []}
    for task in tasks:
        record = finished.get(task.key)
        if record is None:
            region = task.payload["region"]
            missing[task.kind] += [f"{region}/{name}" for name in task.payload["patches"]]
            continue
        if task.kind == "patch_limits":
            for limit in store.read_json(record.artifacts["limits"]):
                limits[(limit["region"], limit["name"])] = limit
            continue
        for result in store.read_json(record.artifacts["cls"]):
            rows.append(
                {
                    "region": result["region"],
                    "patch": result["name"],
                    "parameters": parameters[(result["region"], result["name"])],
                    "cls_obs": result.get("cls_obs"),
                    "cls_exp": result.get("cls_exp"),
                    "status": result["status"],
                    "reason": result.get("reason", ""),
                    "backend": result.get("backend", ""),
                }
            )
    for row in rows:
        limit = limits.get((row["region"], row["patch"]), {})
        row["mu_limit_obs"] = limit.get("observed")
        row["mu_limit_exp"] = limit.get("expected")
        row["limit_reason"] = limit.get("reason", "")
    rows.sort(key=lambda r: (r["region"], r["patch"]))
    return PublishedResults(
        source=str(source),
        label=likelihood_label(likelihoods, select),
        rows=tuple(rows),
        missing=tuple(missing["patches"]),
        missing_limits=tuple(missing["patch_limits"]),
    )


def _table_schema(parameters: Sequence[str]) -> pa.Schema:
    """Column types fixed, so a column that happens to be all empty is still float or text."""
    text, number = pa.string(), pa.float64()
    return pa.schema(
        [("region", text), ("patch", text)]
        + [(name, number) for name in parameters]
        + [
            ("cls_obs", number),
            ("cls_exp_median", number),
            ("status", text),
            ("reason", text),
            ("mu_limit_obs", number),
            ("mu_limit_exp_median", number),
            ("limit_reason", text),
        ]
    )


def save(store: Store, results: PublishedResults) -> str:
    """``published/<label>/results.json`` and ``results.parquet`` (one row per patch)."""
    folder = f"published/{results.label}"
    document = {
        "schema_version": SCHEMA_VERSION,
        "source": results.source,
        "rows": list(results.rows),
    }
    store.write_text(f"{folder}/results.json", json.dumps(document, sort_keys=True))
    names = sorted({k for r in results.rows for k in r["parameters"]})
    table = pa.Table.from_pylist(
        [
            {
                "region": r["region"],
                "patch": r["patch"],
                **{name: r["parameters"].get(name) for name in names},
                "cls_obs": r["cls_obs"],
                "cls_exp_median": None if r["cls_exp"] is None else r["cls_exp"][2],
                "status": r["status"],
                "reason": r["reason"],
                "mu_limit_obs": r["mu_limit_obs"],
                "mu_limit_exp_median": None if r["mu_limit_exp"] is None else r["mu_limit_exp"][2],
                "limit_reason": r["limit_reason"],
            }
            for r in results.rows
        ],
        schema=_table_schema(names),
    ).replace_schema_metadata({"lamppost.published.schema_version": SCHEMA_VERSION})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    store.write_bytes(f"{folder}/results.parquet", buffer.getvalue())
    return folder


def evaluate_published(
    source: Path,
    *,
    run_tasks: Callable[[Sequence[plan.Task], str], Mapping[str, TaskRecord]],
    store: Store,
    select: Sequence[str] = (),
    chunk: int = CHUNK,
    limits: bool = False,
) -> tuple[PublishedResults, str]:
    """Import ``source``, evaluate its patches (with ``limits``, their upper limits on μ too)
    through ``run_tasks`` and save the table."""
    likelihoods = load_likelihoods(source)
    tasks = patch_tasks(source, likelihoods, select=select, chunk=chunk, limits=limits)
    finished = run_tasks(tasks, "published likelihood")
    results = collect(source, likelihoods, tasks, finished, store, select=select)
    return results, save(store, results)
