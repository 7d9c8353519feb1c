"""The report's content as data: everything the HTML, PDF and JSON summary show.

One function, :func:`build_summary`, reads a campaign store (spec, ledger, search results,
reinterpretations, coverage) and returns a JSON-ready dictionary that follows
``campaign/schemas/report.schema.json``. The renderers only format it; no number in a report is
computed anywhere else, so the JSON summary and the page a reviewer reads cannot disagree.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from campaign.coverage import ModelCoverage, NextSearch, load_coverages, load_next_searches
from campaign.status import read_status
from campaign.store import Store
from campaign.tasks import finished_results
from searches.landscape import Landscape, LandscapeCell
from searches.result import SearchResult
from searches.signatures import EMPTY_CLASS, parse_class_name
from searches.stats import counting

REPORT_SCHEMA_VERSION = "1"
OBJECTS: tuple[tuple[str, str], ...] = (
    ("e", "electron"),
    ("mu", "muon"),
    ("tau", "tau"),
    ("gamma", "photon"),
    ("j", "jet"),
    ("b", "b-jet"),
    ("MET", "MET"),
)
"""Rows and columns of the signature grid: class-name token and the label a reviewer reads."""
LIMIT_MU_MAX = 100.0
"""Upper bound of the signal strength in the free fit of the grid's counting limits."""
PACKAGES = (
    "lamppost",
    "numpy",
    "scipy",
    "pyhf",
    "awkward",
    "uproot",
    "pyarrow",
    "ray",
    "torch",
    "botorch",
    "gpytorch",
    "matplotlib",
    "mplhep",
)


def _finite(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _code_version() -> dict[str, Any]:
    """Package version and, where the install records one, the git commit it was built from."""
    version = _version("lamppost")
    commit = None
    try:
        direct = metadata.distribution("lamppost").read_text("direct_url.json")
        commit = json.loads(direct or "{}").get("vcs_info", {}).get("commit_id")
    except metadata.PackageNotFoundError:
        pass
    if commit is None:
        source = Path(__file__).resolve().parents[2]
        try:
            run = subprocess.run(
                ["git", "-C", str(source), "rev-parse", "HEAD"],
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
            )
            commit = run.stdout.strip() or None if run.returncode == 0 else None
        except (OSError, subprocess.SubprocessError):
            commit = None
    return {"version": version, "commit": commit}


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def provenance(store: Store) -> dict[str, Any]:
    """What reproduces the campaign: spec hash, seed, code and package versions."""
    spec = store.read_json("spec.json")
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return {
        "name": spec["name"],
        "title": (spec.get("report") or {}).get("title") or spec["name"],
        "store": store.uri,
        "seed": spec.get("seed"),
        "luminosity_fb": spec.get("luminosity_fb"),
        "spec_sha256": hashlib.sha256(canonical.encode()).hexdigest(),
        "code": _code_version(),
        "packages": {name: _version(name) for name in PACKAGES},
        "methods": sorted({s["method"] for s in spec.get("searches", [])}),
        "observables": list(spec.get("observables", [])),
    }


def expected_limits_fb(results: Sequence[SearchResult], luminosity_fb: float) -> np.ndarray:
    """(n_results,) best expected 95 % CL limit on a visible cross section, in fb.

    For every bin with a background the median expected CLs upper limit on signal events
    (one-bin counting, background uncertainty as the search's, :mod:`searches.stats.counting`,
    which agrees with pyhf; the signal is scaled to ``1 + sqrt(b + sigma^2)`` events so the
    limit on its strength is of order one, well inside the fit bound) is divided by the
    luminosity; a search's sensitivity is its best
    bin. NaN for a search with no usable bin. It says how small a signal each search could
    exclude if all of it landed in one bin — a model-independent yardstick for the grid.
    """
    owners, b, sigma = [], [], []
    for k, result in enumerate(results):
        expected = np.asarray(result.expected, dtype=float)
        error = np.asarray(result.uncertainty, dtype=float)
        usable = (expected > 0) & (error > 0) & np.isfinite(expected) & np.isfinite(error)
        owners.extend([k] * int(usable.sum()))
        b.extend(expected[usable])
        sigma.extend(error[usable])
    best = np.full(len(results), np.nan)
    if not owners:
        return best
    b_arr, sigma_arr = np.asarray(b), np.asarray(sigma)
    scale = 1.0 + np.sqrt(b_arr + sigma_arr**2)
    limits = counting.upper_limit(b_arr, b_arr, sigma_arr, scale, mu_max=LIMIT_MU_MAX)
    events = limits.expected[2] * scale
    for owner, value in zip(owners, events, strict=True):
        if not value >= best[owner]:
            best[owner] = value
    return best / luminosity_fb


def _objects_of(event_class: str) -> dict[str, int]:
    counts, _ = parse_class_name(event_class)
    found = {token: int(counts.get(token, 0)) for token, _ in OBJECTS if token != "MET"}
    found["MET"] = int(counts.get("MET", 0))
    return found


def signature_grid(results: Sequence[SearchResult], limits_fb: np.ndarray) -> dict[str, Any]:
    """Object × object grid: which searched classes hold both objects, and how sensitively.

    A cell (a, b) with a ≠ b collects the searches of classes with at least one a and one b;
    a diagonal cell (a, a) those with at least two a (for MET, any class with MET). The cell's
    sensitivity is the best (smallest) expected visible-cross-section limit among them; a cell
    with no searched class is a gap (``null``) — signature space nobody looked at.
    """
    tokens = [token for token, _ in OBJECTS]
    cells: list[list[dict[str, Any] | None]] = [[None] * len(tokens) for _ in tokens]
    for result, limit in zip(results, limits_fb, strict=True):
        counts = _objects_of(result.event_class)
        for i, a in enumerate(tokens):
            for j, b in enumerate(tokens):
                if j < i:
                    continue
                if a == b:
                    inside = counts[a] >= (1 if a == "MET" else 2)
                else:
                    inside = counts[a] >= 1 and counts[b] >= 1
                if not inside:
                    continue
                cell = cells[i][j] or {"classes": [], "n_searches": 0, "best_limit_fb": None}
                cell["n_searches"] += 1
                if result.event_class not in cell["classes"]:
                    cell["classes"].append(result.event_class)
                if math.isfinite(limit) and (
                    cell["best_limit_fb"] is None or limit < cell["best_limit_fb"]
                ):
                    cell["best_limit_fb"] = float(limit)
                    cell["best_search"] = _search_name(result)
                cells[i][j] = cells[j][i] = cell
    for row in cells:
        for cell in row:
            if cell is not None:
                cell["classes"].sort()
    return {"objects": [label for _, label in OBJECTS], "tokens": tokens, "cells": cells}


def _search_name(result: SearchResult) -> str:
    return f"{result.event_class}/{result.method}/{result.observable}"


def p_tilde_distribution(p_tildes: Sequence[float], *, n_rounds: int) -> dict[str, Any]:
    """Histogram of −log10 p̃ with its expectation if every search were background-only.

    Under the background-only hypothesis p̃ is uniform, so a bin [x0, x1) of −log10 p̃ expects
    ``N (10^−x0 − 10^−x1)`` searches; the last bin holds everything beyond. p̃ cannot go below
    ``1/(R + 1)`` with R pseudo-rounds, which sets the last edge.
    """
    values = -np.log10(np.clip(np.asarray(p_tildes, dtype=float), 1e-300, 1.0))
    top = max(2.0, math.ceil(2 * math.log10(max(n_rounds, 1) + 1)) / 2)
    edges = np.arange(0.0, top + 0.25, 0.5)
    counts = np.histogram(np.minimum(values, edges[-1] - 1e-9), bins=edges)[0]
    upper = 10.0 ** -edges[:-1]
    lower = np.append(10.0 ** -edges[1:-1], 0.0)
    expected = len(values) * (upper - lower)
    return {
        "edges": edges.tolist(),
        "observed": counts.astype(int).tolist(),
        "expected": expected.tolist(),
        "n_searches": len(values),
        "n_rounds": int(n_rounds),
    }


def _deviation(result: SearchResult, limit_fb: float) -> dict[str, Any]:
    region = result.region
    return {
        "search": _search_name(result),
        "event_class": result.event_class,
        "method": result.method,
        "observable": result.observable,
        "edges": list(result.edges),
        "observed": list(result.observed),
        "expected": list(result.expected),
        "uncertainty": list(result.uncertainty),
        "region": None
        if region is None
        else {
            "low": region.low,
            "high": region.high,
            "observed": region.observed,
            "expected": region.expected,
            "uncertainty": region.uncertainty,
        },
        "p_local": _finite(result.p_local),
        "z_local": _finite(result.z_local),
        "p_tilde": _finite(result.p_tilde),
        "expected_limit_fb": _finite(limit_fb),
    }


def _class_rows(
    classes: dict[str, dict[str, Any]], results: Sequence[SearchResult]
) -> list[dict[str, Any]]:
    best: dict[str, SearchResult] = {}
    for result in results:
        current = best.get(result.event_class)
        if current is None or _rank(result) < _rank(current):
            best[result.event_class] = result
    rows = []
    for name, info in classes.items():
        top = best.get(name)
        region = None if top is None else top.region
        rows.append(
            {
                "name": name,
                "mc_events": int(info.get("mc_events", 0)),
                "expected": float(info.get("expected", 0.0)),
                "observed": float(info.get("observed", 0.0)),
                "searched": top is not None,
                "best_search": None if top is None else _search_name(top),
                "region": None if region is None else [region.low, region.high],
                "p_local": None if top is None else _finite(top.p_local),
                "p_tilde": None if top is None else _finite(top.p_tilde),
            }
        )
    rows.sort(key=lambda r: (r["p_tilde"] if r["p_tilde"] is not None else 2.0, -r["observed"]))
    return rows


def _rank(result: SearchResult) -> tuple[float, float]:
    return (result.p_tilde if result.p_tilde is not None else 1.0, result.p_local)


def _brief_verdict(verdict: dict[str, Any] | None) -> dict[str, Any] | None:
    if verdict is None:
        return None
    expected = verdict.get("cls_expected")
    return {
        "search": f"{verdict['event_class']}/{verdict['method']}/{verdict['observable']}",
        "status": verdict["status"],
        "cls_observed": _finite(verdict.get("cls_observed")),
        "cls_expected": None if expected is None else _finite(expected[2]),
        "mu_limit_observed": _finite(verdict.get("mu_limit_observed")),
        "calculator": verdict.get("calculator", "asymptotics"),
        "limit_calculator": verdict.get("limit_calculator"),
        "reason": verdict.get("reason", ""),
    }


def _reinterpretations(store: Store) -> list[dict[str, Any]]:
    if not store.exists("reinterpretations"):
        return []
    out = []
    for path in sorted(store.local_path("reinterpretations").glob("*/result.json")):
        data = json.loads(path.read_text())
        searches = [_brief_verdict(v) for v in data["searches"]]
        out.append(
            {
                "benchmark": data["benchmark"],
                "label": benchmark_label(data["benchmark"])
                + (f" (toys: {data['toys']['ntoys']})" if data.get("toys") else ""),
                "status": data["status"],
                "best_expected": _brief_verdict(data.get("best_expected")),
                "combined": _brief_verdict(data.get("combined")),
                "combined_classes": data.get("combined_classes", []),
                "searches": searches,
            }
        )
    return out


def benchmark_label(benchmark: dict[str, Any]) -> str:
    model = benchmark.get("model") or benchmark.get("events") or "benchmark"
    point = benchmark.get("point") or {}
    return f"{model} " + ", ".join(f"{k}={v}" for k, v in sorted(point.items()))


def impact_entries(
    reinterpretations: Sequence[dict[str, Any]], theory_points: Sequence[dict[str, Any]]
) -> list[tuple[str, set[str], set[str]]]:
    """(label, searches tested, searches excluding it) per benchmark and per theory-loop point."""
    entries = []
    for item in reinterpretations:
        tested = {v["search"] for v in item["searches"] if v["status"] in ("excluded", "allowed")}
        excluded = {v["search"] for v in item["searches"] if v["status"] == "excluded"}
        entries.append((item["label"], tested, excluded))
    for point in theory_points:
        excluded = set(point["excluded_by"])
        entries.append((point["label"], set(point["tested"]) | excluded, excluded))
    return entries


def search_impact(entries: Sequence[tuple[str, set[str], set[str]]]) -> list[dict[str, Any]]:
    """Per search: benchmarks (and theory points) it excludes, and those only it excludes.

    "Only here" is the search's improvement among the searches fitted at each point (its
    ``max_fits`` most sensitive by expected sensitivity): without it, none of those would
    exclude the point. A search not fitted there might, so the count is an upper bound on
    what the campaign would lose without this search.
    """
    searches = sorted({s for _, tested, excluded in entries for s in tested | excluded})
    rows = []
    for search in searches:
        tested = sum(1 for _, t, e in entries if search in t or search in e)
        mine = [e for _, _, e in entries if search in e]
        if not mine:
            continue
        rows.append(
            {
                "search": search,
                "benchmarks_tested": tested,
                "benchmarks_excluded": len(mine),
                "excluded_only_here": sum(1 for e in mine if len(e) == 1),
            }
        )
    return sorted(rows, key=lambda r: (-r["excluded_only_here"], -r["benchmarks_excluded"]))


def theory_points(store: Store) -> list[dict[str, Any]]:
    """The theory loop's evaluated points (from the ledger), with what excluded each."""
    points = []
    for record in store.records():
        if record.kind != "evaluate" or record.status != "done":
            continue
        verdict = store.read_json(record.artifacts["verdict"])
        points.append(
            {
                "label": record.name.removeprefix("evaluate/"),
                "status": verdict["status"],
                "best_search": verdict.get("best_search"),
                "tested": verdict.get("tested", []),
                "excluded_by": verdict.get("excluded_by", []),
                "reason": verdict.get("reason", ""),
            }
        )
    return sorted(points, key=lambda p: p["label"])


def _coverage_row(coverage: ModelCoverage) -> dict[str, Any]:
    def volume(output: str) -> dict[str, Any] | None:
        v = coverage.excluded_volume(output)  # type: ignore[arg-type]
        if v is None:
            return None
        post = v.posterior
        return {
            "fraction": v.fraction,
            "low": v.low,
            "high": v.high,
            "posterior": None
            if post is None
            else {"mean": post.mean, "low": post.low, "high": post.high, "draws": post.draws},
        }

    finite = np.isfinite(coverage.cls_observed)
    return {
        "model": coverage.model,
        "parameters": list(coverage.parameters),
        "n_evaluated": len(coverage.points),
        "n_failed": int((~finite).sum()),
        "n_excluded_points": int((coverage.cls_observed[finite] < coverage.threshold).sum()),
        "threshold": coverage.threshold,
        "stop_reason": coverage.stop_reason,
        "excluded_observed": volume("observed"),
        "excluded_expected": volume("expected"),
    }


def next_searches(
    class_rows: Sequence[dict[str, Any]],
    grid: dict[str, Any],
    *,
    theory: Sequence[NextSearch] = (),
    limit: int = 15,
) -> list[dict[str, Any]]:
    """What to search next: where still-allowed theory points put signal no search sees
    (:func:`campaign.coverage.rank_next_searches`), populated classes nobody searched, then
    empty grid cells.

    Classes with observed events but no search were dropped by the campaign's class selection
    (too little expected background or too few simulated events): the data exist, the
    background model does not — more simulation opens them. Empty cells of the grid are object
    combinations no searched class contains at all.
    """
    items: list[dict[str, Any]] = [
        {
            "what": item.event_class,
            "kind": "allowed theory signal",
            "observed": None,
            "expected": None,
            "why": f"{item.signal_events:.3g} signal events on average from the still-allowed "
            f"points of {', '.join(item.models)} ({100 * item.share:.0f} % of their untested "
            "signal)",
        }
        for item in theory
    ]
    for row in sorted(class_rows, key=lambda r: -r["observed"]):
        unsearched = not row["searched"] and not row["name"].startswith(EMPTY_CLASS)
        if unsearched and row["observed"] > 0:
            items.append(
                {
                    "what": row["name"],
                    "kind": "unsearched class",
                    "observed": row["observed"],
                    "expected": row["expected"],
                    "why": f"{row['observed']:.0f} events observed, only {row['mc_events']} "
                    "simulated events: needs more background simulation",
                }
            )
    labels = grid["objects"]
    for i, row_cells in enumerate(grid["cells"]):
        for j in range(i, len(row_cells)):
            if row_cells[j] is None:
                pair = f"{labels[i]} + {labels[j]}" if i != j else f"2 × {labels[i]}"
                items.append(
                    {
                        "what": pair,
                        "kind": "empty cell",
                        "observed": None,
                        "expected": None,
                        "why": "no searched event class contains this object combination",
                    }
                )
    return items[:limit]


def _look_elsewhere(stored: dict[str, Any]) -> dict[str, Any] | None:
    if not stored:
        return None
    return {
        "n_searches": int(stored["n_searches"]),
        "n_rounds": int(stored.get("n_rounds", 0)),
        "p_tilde_min": float(stored["p_tilde_min"]),
        "p_global": float(stored["p_global"]),
        "p_sidak": _finite(stored.get("p_sidak")),
        "z_global": float(stored["z_global"]),
        "resolution_limited": bool(stored.get("resolution_limited", False)),
        "search": f"{stored['event_class']}/{stored['method']}/{stored['observable']}",
    }


LANDSCAPE_CURVE_POINTS = 24
"""Masses per cell in the report's limit curves (the stored landscape keeps every window)."""


def _curve(cell: LandscapeCell) -> dict[str, list[float]]:
    """The cell's limit curve thinned to at most :data:`LANDSCAPE_CURVE_POINTS` masses."""
    count = len(cell.masses)
    keep = np.unique(np.linspace(0, count - 1, min(count, LANDSCAPE_CURVE_POINTS)).astype(int))
    return {
        "mass": [cell.masses[i] for i in keep],
        "expected_fb": [cell.limit_expected_fb[i] for i in keep],
        "observed_fb": [cell.limit_observed_fb[i] for i in keep],
    }


def landscape_section(store: Store) -> dict[str, Any] | None:
    """The two-body landscape of the campaign (latest finished task), or None without one.

    The table's ``shade`` (0–1, 1 = best) is the log-scaled expected limit at the reference
    mass among the table's cells, so the page colours cells without computing anything.
    """
    records = [r for r in store.records() if r.kind == "landscape" and r.status == "done"]
    if not records:
        return None
    latest = max(records, key=lambda r: r.finished_at)
    landscape = Landscape.from_json(store.read_text(latest.artifacts["landscape"]))
    table = landscape.table()
    limits = [
        entry["best_reference_limit_fb"]
        for row in table["cells"]
        for entry in row
        if entry is not None and entry["best_reference_limit_fb"] is not None
    ]
    low, high = (np.log10(min(limits)), np.log10(max(limits))) if limits else (0.0, 0.0)
    span = high - low if high > low else 1.0
    for row in table["cells"]:
        for entry in row:
            if entry is not None and "shade" not in entry:
                limit = entry["best_reference_limit_fb"]
                shade = None if limit is None else 1.0 - (np.log10(limit) - low) / span
                entry["shade"] = None if shade is None else float(shade)
    best = landscape.best
    cells = sorted(landscape.cells, key=lambda c: (min(c.best_p_local, c.fit_best_p_local), c.name))
    searches = {
        kind: None
        if summary is None
        else {
            "cell": None if summary.best_cell is None else landscape.cells[summary.best_cell].name,
            "mass": None
            if summary.best_cell is None
            else landscape.cells[summary.best_cell].best_of(kind)[1],
            "p_local_min": summary.p_local_min,
            "p_global": _finite(summary.p_global),
            "z_global": _finite(summary.z_global),
        }
        for kind, summary in (("scan", landscape.scan), ("fit", landscape.fit))
    }
    return {
        "objects": list(landscape.objects),
        "n_pairs": len(landscape.pairs),
        "n_cells": landscape.n_cells,
        "n_sensitive": landscape.n_sensitive,
        "reference_mass": float(landscape.options.get("reference_mass", 0.0)),
        "width": float(landscape.options.get("width", 0.0)),
        "luminosity_fb": landscape.luminosity_fb,
        "n_pseudo": landscape.n_pseudo,
        "p_local_min": landscape.p_local_min,
        "z_local": _finite(landscape.z_local),
        "p_global": _finite(landscape.p_global),
        "z_global": _finite(landscape.z_global),
        "fit_function": landscape.options.get("fit_function"),
        "n_fitted": sum(cell.fitted for cell in landscape.cells),
        "searches": searches,
        "best": None
        if best is None
        else {
            "cell": best.name,
            "pair": best.pair,
            "event_class": best.event_class,
            "search": landscape.best_search,
            "mass": best.best_of(landscape.best_search or "scan")[1],
        },
        "table": table,
        "cells": [
            {
                "cell": cell.name,
                "pair": cell.pair,
                "event_class": cell.event_class,
                "mc_events": cell.mc_events,
                "expected": cell.expected,
                "observed": cell.observed,
                "mass_range": [cell.low[0], cell.high[-1]] if cell.masses else None,
                "best_mass": cell.best_mass,
                "p_local": cell.best_p_local,
                "z_local": _finite(cell.z_local),
                "p_tilde": _finite(cell.p_tilde),
                "reference_limit_fb": _finite(cell.reference_limit_fb),
                "fit_status": cell.fit_status,
                "fit_best_mass": cell.fit_best_mass,
                "fit_p_local": cell.fit_best_p_local,
                "fit_z_local": _finite(cell.fit_z_local),
                "fit_p_tilde": _finite(cell.fit_p_tilde),
                "fit_chi2_ndf": None if not cell.fit_ndf else _finite(cell.fit_chi2 / cell.fit_ndf),
                "curve": _curve(cell),
            }
            for cell in cells
        ],
    }


def build_summary(
    store: Store, *, top: int | None = None, coverages: Sequence[ModelCoverage] | None = None
) -> dict[str, Any]:
    """The whole report as data (see the module docstring and the JSON Schema).

    ``coverages`` are the store's model coverages when the caller already read them.
    """
    status = read_status(store)
    spec = store.read_json("spec.json")
    top = top or int((spec.get("report") or {}).get("top", 10))
    results = finished_results(store)
    results.sort(key=lambda r: (*_rank(r), _search_name(r)))
    luminosity = float(spec.get("luminosity_fb") or 1.0)
    limits = expected_limits_fb(results, luminosity)
    grid = signature_grid(results, limits)
    class_rows = _class_rows(status.classes, results)
    reinterpretations = _reinterpretations(store)
    coverages = load_coverages(store) if coverages is None else coverages
    p_tildes = [r.p_tilde for r in results if r.p_tilde is not None]
    rounds = max((r.n_pseudo for r in results), default=0)
    points = theory_points(store)
    failed_fits = [
        {
            "benchmark": benchmark_label(item["benchmark"]),
            "search": verdict["search"],
            "reason": verdict["reason"],
        }
        for item in reinterpretations
        for verdict in item["searches"]
        if verdict["status"] == "failed"
    ] + [
        {"benchmark": p["label"], "search": "theory loop", "reason": p["reason"]}
        for p in points
        if p["status"] == "failed"
    ]
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "campaign": provenance(store),
        "tasks": status.tasks,
        "look_elsewhere": _look_elsewhere(status.global_result),
        "signature_grid": grid,
        "classes": class_rows,
        "p_tilde_distribution": p_tilde_distribution(p_tildes, n_rounds=rounds)
        if p_tildes
        else None,
        "deviations": [_deviation(r, lim) for r, lim in zip(results, limits, strict=True)][:top],
        "reinterpretations": reinterpretations,
        "search_impact": search_impact(impact_entries(reinterpretations, points)),
        "coverage": [_coverage_row(c) for c in coverages],
        "next_searches": next_searches(class_rows, grid, theory=load_next_searches(store)),
        "failed_tasks": [{"task": f["task"], "error": f["error"]} for f in status.failures],
        "failed_fits": failed_fits,
        "landscape": landscape_section(store),
    }
