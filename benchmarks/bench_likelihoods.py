"""Published likelihoods: Lamppost's batched CLs engine vs plain pyhf on all 650 sbottom patches.

Plain pyhf (numpy backend, scipy optimizer, one patch at a time, ``hypotest`` with the expected
set) runs in a pool of ``--processes`` workers; Lamppost runs ``evaluate_patches`` per region in
the same number of processes. Throughput is compared in CPU seconds (process time summed over
workers, so jobs of other users on a shared machine do not inflate either side) and in wall time.

The plain baseline costs ~1,250 CPU seconds; its per-patch results and timings are cached as
JSON (``$LAMPPOST_CACHE`` or ``/tmp/lamppost-cache``) and reused by later runs unless
``--fresh-baseline`` is given. The per-patch Lamppost CLs table is written to ``--oracle``.

Usage:
    nice -n 10 python benchmarks/bench_likelihoods.py [--fresh-baseline] [--processes 2]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import multiprocessing as mp
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyhf
from provenance import code_under_test

from searches.datapath import missing_reason, shared_data_dir
from searches.likelihoods import PublishedLikelihood, load_likelihoods
from searches.progress import progress_bar
from searches.stats.robust import CLS_LEVEL, FitSettings, build_model, pyhf_cls
from searches.testing import lamppost_best_fits, reference_cls

TARBALL = "likelihoods/atlas-susy-2018-31-sbottom/pyhf-ins1748602-probability-models.tar.gz"
README_EXCLUDED = {"RegionA": (137, 217), "RegionB": (25, 218), "RegionC": (49, 215)}
CACHE_VERSION = 1

_REGIONS: dict[str, PublishedLikelihood] = {}


def _tarball() -> Path:
    base = shared_data_dir()
    if base is None:
        raise SystemExit(f"shared data not available: {missing_reason()}")
    return base / TARBALL


def _init_worker(path: str) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _REGIONS.update({r.name: r for r in load_likelihoods(path)})


TIGHT = FitSettings(optimizer="scipy", tolerance=1e-10)
"""Plain pyhf with the scipy optimizer converged tightly: the reference for disputed patches."""


def _plain_one(task: tuple[str, str], settings: FitSettings | None = None) -> dict[str, Any]:
    region, name = task
    likelihood = _REGIONS[region]
    patch = likelihood.patch(name)
    cpu, wall = time.process_time(), time.perf_counter()
    try:
        if settings is None:
            cls_obs, cls_exp, mu_hat = pyhf_cls(likelihood.workspace(patch))
        else:
            cls_obs, cls_exp, mu_hat = pyhf_cls(likelihood.workspace(patch), settings=settings)
        error = ""
    except Exception as exc:  # the baseline records what pyhf does, errors included
        cls_obs, cls_exp, mu_hat, error = math.nan, (math.nan,) * 5, math.nan, repr(exc)
    return {
        "region": region,
        "name": name,
        "parameters": dict(patch.parameters),
        "cls_obs": cls_obs if math.isfinite(cls_obs) else None,
        "cls_exp": [v if math.isfinite(v) else None for v in cls_exp],
        "mu_hat": mu_hat if math.isfinite(mu_hat) else None,
        "finite": bool(math.isfinite(cls_obs) and all(math.isfinite(v) for v in cls_exp)),
        "error": error,
        "cpu_s": time.process_time() - cpu,
        "wall_s": time.perf_counter() - wall,
    }


def cache_path() -> Path:
    base = Path(os.environ.get("LAMPPOST_CACHE", "/tmp/lamppost-cache"))
    base.mkdir(parents=True, exist_ok=True)
    return base / f"sbottom_plain_pyhf{pyhf.__version__}_v{CACHE_VERSION}.json"


def run_plain(path: Path, regions: tuple[PublishedLikelihood, ...], processes: int) -> dict:
    """Plain pyhf on every patch, ``processes`` workers, largest region first for balance."""
    order = {"RegionC": 0, "RegionA": 1, "RegionB": 2}
    tasks = [
        (r.name, p.name)
        for r in sorted(regions, key=lambda r: order.get(r.name, 3))
        for p in r.patches
    ]
    rows = []
    wall = time.perf_counter()
    with (
        mp.get_context("spawn").Pool(processes, _init_worker, (str(path),)) as pool,
        progress_bar() as progress,
    ):
        bar = progress.add_task("plain pyhf", total=len(tasks))
        for row in pool.imap_unordered(_plain_one, tasks, chunksize=1):
            rows.append(row)
            progress.advance(bar)
    wall = time.perf_counter() - wall
    return {
        "cache_version": CACHE_VERSION,
        "pyhf": pyhf.__version__,
        "processes": processes,
        "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "wall_s": wall,
        "cpu_s": float(sum(r["cpu_s"] for r in rows)),
        "rows": sorted(rows, key=lambda r: (r["region"], r["name"])),
    }


def _plain_tight(task: tuple[str, str]) -> dict[str, Any]:
    return _plain_one(task, TIGHT)


def _reference_one(task: tuple[str, str], with_lamppost: bool = False) -> dict[str, Any]:
    region, name = task
    likelihood = _REGIONS[region]
    patch = likelihood.patch(name)
    cpu = time.process_time()
    spec = likelihood.workspace(patch)
    model, data = build_model(spec)
    try:
        extra = lamppost_best_fits(spec, name, model) if with_lamppost else ()
        row = reference_cls(model, data, extra_starts=extra)
        row["error"] = ""
    except Exception as exc:  # recorded, like the baseline
        row = {"cls_obs": None, "cls_exp": [None] * 5, "error": repr(exc)}
    finite = row["cls_obs"] is not None and all(
        v is not None and math.isfinite(v) for v in [row["cls_obs"], *row["cls_exp"]]
    )
    return {
        "region": region,
        "name": name,
        "finite": finite,
        "cpu_s": time.process_time() - cpu,
        **row,
    }


def _cached_rows(
    cache: Path,
    tasks: list[tuple[str, str]],
    worker: Callable[[tuple[str, str]], dict[str, Any]],
    *,
    label: str,
    header: dict[str, Any],
    path: Path,
    processes: int,
) -> dict:
    """``worker`` on the ``tasks`` not yet in ``cache`` (a pool of ``processes``), the cache
    extended with them; every row by ``(region, name)``."""
    done = json.loads(cache.read_text()) if cache.is_file() else {"rows": []}
    have = {(r["region"], r["name"]) for r in done["rows"]}
    todo = [task for task in tasks if task not in have]
    rows = list(done["rows"])
    if todo:
        with (
            mp.get_context("spawn").Pool(processes, _init_worker, (str(path),)) as pool,
            progress_bar() as progress,
        ):
            bar = progress.add_task(label, total=len(todo))
            for row in pool.imap_unordered(worker, todo, chunksize=1):
                rows.append(row)
                progress.advance(bar)
        cache.write_text(json.dumps({**header, "rows": rows}))
    return {(r["region"], r["name"]): r for r in rows}


def run_tight(path: Path, disputed: list[tuple[str, str]], processes: int) -> dict:
    """Tightly converged plain pyhf on the patches where Lamppost and plain pyhf differ."""
    cache = cache_path().with_name(f"sbottom_tight_pyhf{pyhf.__version__}_v{CACHE_VERSION}.json")
    return _cached_rows(
        cache,
        disputed,
        _plain_tight,
        label="tight pyhf",
        header={"settings": TIGHT.label},
        path=path,
        processes=processes,
    )


def _reference_with_lamppost(task: tuple[str, str]) -> dict[str, Any]:
    return _reference_one(task, with_lamppost=True)


def run_reference(path: Path, disputed: list[tuple[str, str]], processes: int) -> dict:
    """:func:`reference_cls` on the disputed patches, Lamppost's best fits as extra starts.

    Cached per version of the batched engine (the extra starts depend on it).
    """
    import hashlib

    from searches.stats import batched

    engine = hashlib.sha256(Path(batched.__file__).read_bytes()).hexdigest()[:12]
    cache = cache_path().with_name(f"sbottom_reference_pyhf{pyhf.__version__}_{engine}.json")
    return _cached_rows(
        cache,
        disputed,
        _reference_with_lamppost,
        label="pyhf reference",
        header={"engine": engine},
        path=path,
        processes=processes,
    )


def _max_rel(ours: dict, reference: dict) -> float:
    return max(
        [_rel(ours["cls_obs"], reference["cls_obs"])]
        + [_rel(a, b) for a, b in zip(ours["cls_exp"], reference["cls_exp"], strict=True)]
    )


def load_or_run_plain(path: Path, regions, processes: int, fresh: bool) -> tuple[dict, bool]:
    cache = cache_path()
    if cache.is_file() and not fresh:
        return json.loads(cache.read_text()), True
    result = run_plain(path, regions, processes)
    cache.write_text(json.dumps(result))
    return result, False


def _lamppost_chunk(task: tuple[str, int, int]) -> dict[str, Any]:
    import torch

    from searches.stats.batched import evaluate_patches

    torch.set_num_threads(1)
    region, lo, hi = task
    likelihood = _REGIONS[region]
    cpu, wall = time.process_time(), time.perf_counter()
    results = evaluate_patches(likelihood.background, likelihood.patches[lo:hi], region=region)
    return {
        "results": [r.to_dict() for r in results],
        "cpu_s": time.process_time() - cpu,
        "wall_s": time.perf_counter() - wall,
    }


def run_lamppost(path: Path, regions, processes: int) -> dict:
    """``evaluate_patches`` on each region split into ``processes`` chunks, largest first."""
    tasks = []
    for region in sorted(regions, key=lambda r: {"RegionA": 0, "RegionC": 1}.get(r.name, 2)):
        edges = np.linspace(0, len(region.patches), processes + 1).astype(int)
        tasks += [(region.name, int(a), int(b)) for a, b in itertools.pairwise(edges) if b > a]
    wall = time.perf_counter()
    rows, cpu = [], 0.0
    with (
        mp.get_context("spawn").Pool(processes, _init_worker, (str(path),)) as pool,
        progress_bar() as progress,
    ):
        bar = progress.add_task("lamppost", total=len(tasks))
        for out in pool.imap_unordered(_lamppost_chunk, tasks):
            rows += out["results"]
            cpu += out["cpu_s"]
            progress.advance(bar)
    return {"wall_s": time.perf_counter() - wall, "cpu_s": cpu, "rows": rows}


def _rel(a: float | None, b: float | None) -> float:
    if a is None or b is None:
        return math.nan
    return abs(a - b) / max(abs(b), 1e-300)


def compare(plain: dict, lamppost: dict) -> tuple[list[dict], dict]:
    """Per-region table and the per-point disagreements."""
    ours = {(r["region"], r["name"]): r for r in lamppost["rows"]}
    table, notes = [], {"failed": [], "recovered": [], "disagree": [], "plain_nonfinite": []}
    for region in sorted({r["region"] for r in plain["rows"]}):
        prow = [r for r in plain["rows"] if r["region"] == region]
        diffs, agree, compared = [], 0, 0
        for p in prow:
            o = ours[(region, p["name"])]
            if not p["finite"]:
                notes["plain_nonfinite"].append(
                    f"{region}/{p['name']}: plain {p['cls_obs']}, {p['error'][:80]}"
                )
            if o["status"] == "failed":
                notes["failed"].append(f"{region}/{p['name']}: {o['reason'][:160]}")
                continue
            if o["status"] == "recovered":
                notes["recovered"].append(
                    f"{region}/{p['name']}: CLs {o['cls_obs']:.6f} ({o['reason'][:90]}…)"
                )
            if not p["finite"]:
                continue
            compared += 1
            d = max(
                [_rel(o["cls_obs"], p["cls_obs"])]
                + [_rel(a, b) for a, b in zip(o["cls_exp"], p["cls_exp"], strict=True)]
            )
            diffs.append(d)
            same = (o["cls_obs"] < CLS_LEVEL) == (p["cls_obs"] < CLS_LEVEL)
            agree += same
            if not same or d > 1e-3:
                notes["disagree"].append(
                    f"{region}/{p['name']}: plain {p['cls_obs']:.6g} vs {o['cls_obs']:.6g} (rel {d:.2g})"
                )
        n_ex_plain = sum(1 for p in prow if p["finite"] and p["cls_obs"] < CLS_LEVEL)
        n_ex_ours = sum(
            1
            for o in lamppost["rows"]
            if o["region"] == region and o["status"] != "failed" and o["cls_obs"] < CLS_LEVEL
        )
        status = [o["status"] for o in lamppost["rows"] if o["region"] == region]
        table.append(
            {
                "region": region,
                "patches": len(prow),
                "plain_cpu_s": sum(p["cpu_s"] for p in prow),
                "max_rel_diff": max(diffs) if diffs else math.nan,
                "agree": f"{agree}/{compared}",
                "excluded": f"{n_ex_plain} / {n_ex_ours} / {README_EXCLUDED.get(region, ('?', '?'))[0]}",
                "ok/recovered/failed": "/".join(
                    str(status.count(k)) for k in ("ok", "recovered", "failed")
                ),
            }
        )
    return table, notes


def write_oracle(lamppost: dict, target: Path) -> None:
    payload = {
        "schema_version": 1,
        "source": TARBALL,
        "analysis": "ATLAS SUSY-2018-31 sbottom (INSPIRE 1748602)",
        "settings": {
            "mu": 1.0,
            "test_stat": "qtilde",
            "calculator": "asymptotics",
            "normsys": "code4",
            "histosys": "code4p",
            "cls_exp_order": "-2sigma,-1sigma,median,+1sigma,+2sigma",
        },
        "parameters": ["m_sbottom", "m_chi2", "m_chi1"],
        "results": sorted(lamppost["rows"], key=lambda r: (r["region"], r["name"])),
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(payload, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--fresh-baseline", action="store_true")
    parser.add_argument("--baseline-only", action="store_true")
    parser.add_argument(
        "--tight-disputed",
        action="store_true",
        help="rerun plain pyhf (tolerance 1e-10) and the converged pyhf reference on every patch "
        "that differs from default plain pyhf by > 1e-3",
    )
    parser.add_argument("--oracle", type=Path, default=Path("/work/notes/sbottom_cls.json"))
    args = parser.parse_args()
    print(code_under_test(), flush=True)
    path = _tarball()
    regions = load_likelihoods(path)
    if not args.baseline_only:
        lamppost = run_lamppost(path, regions, args.processes)
        write_oracle(lamppost, args.oracle)
        print(
            f"lamppost: {len(lamppost['rows'])} patches, {lamppost['cpu_s']:.1f} CPU s, "
            f"{lamppost['wall_s']:.1f} s wall; oracle → {args.oracle}"
        )
    plain, cached = load_or_run_plain(path, regions, args.processes, args.fresh_baseline)
    print(
        f"plain pyhf: {len(plain['rows'])} patches, {plain['cpu_s']:.0f} CPU s, "
        f"{plain['wall_s']:.0f} s wall ({'cached, measured ' + plain['measured_at'] if cached else 'measured now'})"
    )
    if args.baseline_only:
        return
    table, notes = compare(plain, lamppost)
    print()
    header = "| region | patches | plain CPU s | max rel. CLs diff | same decision | excluded plain / Lamppost / README | ok/recovered/failed |"
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for t in table:
        print(
            f"| {t['region']} | {t['patches']} | {t['plain_cpu_s']:.0f} | {t['max_rel_diff']:.2e} | "
            f"{t['agree']} | {t['excluded']} | {t['ok/recovered/failed']} |"
        )
    ratio_cpu = plain["cpu_s"] / lamppost["cpu_s"]
    ratio_wall = plain["wall_s"] / lamppost["wall_s"]
    print(
        f"\nthroughput ratio (CPU seconds, all 650): {ratio_cpu:.1f}x; wall: {ratio_wall:.1f}x "
        f"({args.processes} processes each)"
    )
    for key, items in notes.items():
        print(f"\n{key} ({len(items)}):")
        for item in items:
            print("  " + item)
    if args.tight_disputed:
        report_tight(path, plain, lamppost, args.processes)


def report_tight(path: Path, plain: dict, lamppost: dict, processes: int) -> None:
    """Where Lamppost and default plain pyhf differ by > 1e-3: which side is imprecise.

    Every disputed patch is rerun with plain pyhf at tolerance 1e-10 and with
    :func:`reference_cls` (pyhf pushed to convergence: tight, two starts, exact Asimov minimum).
    """
    ours = {(r["region"], r["name"]): r for r in lamppost["rows"]}
    by_key = {(r["region"], r["name"]): r for r in plain["rows"]}
    disputed = [
        key
        for key, p in by_key.items()
        if p["finite"] and ours[key]["status"] != "failed" and _max_rel(ours[key], p) > 1e-3
    ]
    tight = run_tight(path, disputed, processes)
    reference = run_reference(path, disputed, processes)
    kinds: dict[str, list[str]] = {
        "Lamppost within 1e-3 of the converged pyhf reference": [],
        "all differing values < 1e-8 (excluded either way)": [],
        "still differs": [],
    }
    for key in disputed:
        o, p, t, r = ours[key], by_key[key], tight[key], reference[key]
        if not r["finite"]:
            kinds["still differs"].append(f"{key[0]}/{key[1]}: reference failed: {r['error']}")
            continue
        line = (
            f"{key[0]}/{key[1]}: CLs plain {p['cls_obs']:.6g}, tight {t['cls_obs']}, "
            f"reference {r['cls_obs']:.6g}, Lamppost {o['cls_obs']:.6g}; max rel. vs plain "
            f"{_max_rel(o, p):.2g}, vs reference {_max_rel(o, r):.2g}"
        )
        pairs = zip([o["cls_obs"], *o["cls_exp"]], [r["cls_obs"], *r["cls_exp"]], strict=True)
        apart = [(a, b) for a, b in pairs if not _rel(a, b) <= 1e-3]
        if r["finite"] and not apart:
            kinds["Lamppost within 1e-3 of the converged pyhf reference"].append(line)
        elif r["finite"] and all(max(a, b) < 1e-8 for a, b in apart):
            kinds["all differing values < 1e-8 (excluded either way)"].append(line)
        else:
            kinds["still differs"].append(line)
    print(f"\npatches differing from default plain pyhf by > 1e-3: {len(disputed)}")
    for kind, lines in kinds.items():
        print(f"\n{kind} ({len(lines)}):")
        for line in lines:
            print("  " + line)


if __name__ == "__main__":
    main()
