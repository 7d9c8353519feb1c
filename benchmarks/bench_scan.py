"""Benchmark: the region-of-interest scan with p̃ over many classes and observables.

Each search is one synthetic falling distribution (10–40 bins, 10–1e5 background events,
MC weights 0.01–1, 10 % systematic) with observed pseudo-data, scanned exactly as
:func:`searches.methods.scan.scan_result` does in a campaign (local p-values of every region,
``pseudo_rounds`` background-only pseudo-experiments, p̃, pyhf workspace). Searches run in a
process pool of ``--workers`` (the campaign runs them as parallel tasks the same way).

    python benchmarks/bench_scan.py                       # the issue's configuration + scaling
    python benchmarks/bench_scan.py --classes 10 --rounds 1000 --no-scaling
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from provenance import code_under_test
from rich.console import Console
from rich.table import Table

from searches.methods.scan import ScanOptions, scan_result
from searches.progress import progress_bar


def make_search(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    bins = int(rng.integers(10, 41))
    total = 10 ** rng.uniform(1.0, 5.0)
    shape = np.exp(-np.linspace(0.0, rng.uniform(3.0, 10.0), bins))
    expected = total * shape / shape.sum()
    sumw2 = expected * 10 ** rng.uniform(-2.0, 0.0)
    observed = rng.poisson(expected).astype(float)
    edges = np.linspace(100.0, 100.0 + 50.0 * bins, bins + 1)
    return {"expected": expected, "sumw2": sumw2, "observed": observed, "edges": edges}


def run_search(args: tuple[int, int, str]) -> float:
    """CPU seconds of one search in this worker (robust to other jobs on the machine)."""
    seed, rounds, backend = args
    search = make_search(seed)
    start = time.process_time()
    scan_result(
        event_class=f"class{seed // 3}",
        signature_config={},
        observable=("st", "minv", "met")[seed % 3],
        options=ScanOptions(pseudo_rounds=rounds, systematic=0.1, backend=backend),
        seed=seed,
        **search,
    )
    return time.process_time() - start


def campaign(classes: int, rounds: int, workers: int, backend: str) -> tuple[float, float]:
    """Wall time and summed per-search CPU time of ``classes × 3`` searches."""
    tasks = [(seed, rounds, backend) for seed in range(3 * classes)]
    start = time.perf_counter()
    with progress_bar() as progress:
        task = progress.add_task(f"{classes} classes × 3, {rounds} rounds", total=len(tasks))
        with ProcessPoolExecutor(max_workers=workers) as pool:
            times = []
            for elapsed in pool.map(run_search, tasks, chunksize=4):
                times.append(elapsed)
                progress.advance(task)
    return time.perf_counter() - start, float(np.sum(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--backend", choices=("numpy", "torch"), default="numpy")
    parser.add_argument("--no-scaling", action="store_true")
    args = parser.parse_args()
    print(code_under_test(), flush=True)
    configurations = [(args.classes, args.rounds)]
    if not args.no_scaling:
        configurations += [(10, args.rounds), (30, args.rounds), (args.classes, 1000)]
    table = Table(
        title=f"scan with p̃ — {args.workers} workers, backend {args.backend}, "
        f"{platform.machine()}, {os.cpu_count()} visible cores"
    )
    for column in ("classes", "searches", "rounds", "wall s", "CPU s", "CPU ms / search"):
        table.add_column(column, justify="right")
    for classes, rounds in configurations:
        wall, cpu = campaign(classes, rounds, args.workers, args.backend)
        table.add_row(
            str(classes),
            str(3 * classes),
            str(rounds),
            f"{wall:.1f}",
            f"{cpu:.1f}",
            f"{1000 * cpu / (3 * classes):.0f}",
        )
    Console().print(table)
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
