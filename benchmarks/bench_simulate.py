"""Simulation rate of the built-in fast simulator: background events per second on one core.

Run: ``nice -n 10 python benchmarks/bench_simulate.py [--events 1000000] [--repeat 3]``.
Prints, per SM process and for the full cocktail, wall-clock and CPU (process) time and the
rates, each the best of ``--repeat`` runs (on a machine shared with other jobs the best run is
the one least disturbed; the CPU rate is the meaningful one there). Threads of numpy's BLAS
are irrelevant here (no linear algebra), so the numbers are single-core.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

from provenance import code_under_test

from theory.background import PROCESSES
from theory.simulate import FastSimulator


def measure(label: str, run: object, n: int, repeat: int) -> tuple[str, int, float, float]:
    """Best wall-clock and best CPU time of ``repeat`` runs."""
    best_wall = best_cpu = float("inf")
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        events = run()  # type: ignore[operator]
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        assert len(events) == n
        del events
        best_wall, best_cpu = min(best_wall, wall), min(best_cpu, cpu)
    return label, n, best_wall, best_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--luminosity", type=float, default=140.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(code_under_test(), flush=True)
    n, lumi = args.events, args.luminosity
    sim = FastSimulator()
    sim.background(n_events=10_000, luminosity_fb=lumi, seed=0)

    rows = []
    for name in PROCESSES:
        rows.append(
            measure(
                name,
                lambda name=name: sim.process(name, n_events=n, luminosity_fb=lumi, seed=1),
                n,
                args.repeat,
            )
        )
    rows.append(
        measure(
            "cocktail (background)",
            lambda: sim.background(n_events=n, luminosity_fb=lumi, seed=1),
            n,
            args.repeat,
        )
    )

    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores visible, "
        f"load average {os.getloadavg()[0]:.1f}; best of {args.repeat} runs per row"
    )
    print(
        f"| {'process':24s} | {'events':>9s} | {'wall s':>7s} | {'CPU s':>7s} | "
        f"{'events/s (wall)':>15s} | {'events/s (CPU)':>14s} |"
    )
    print(f"|{'-' * 26}|{'-' * 11}|{'-' * 9}|{'-' * 9}|{'-' * 17}|{'-' * 16}|")
    for label, count, wall, cpu in rows:
        print(
            f"| {label:24s} | {count:9d} | {wall:7.2f} | {cpu:7.2f} | "
            f"{count / wall:15,.0f} | {count / cpu:14,.0f} |"
        )


if __name__ == "__main__":
    main()
