"""Benchmark of searches.landscape: wall time of the full two-body landscape.

Built-in simulated background (all processes, tail_boost 3) and Poisson pseudo-data at
``--luminosity`` (default 140 fb⁻¹); every pair of the first ``k`` object types of ``e, mu, j, b, gamma, tau, V, H, top,
Zll`` in the inclusive and every exclusive class (cells with ≥ 100 simulated events), with
``R`` background-only pseudo-experiments of the whole landscape for the look-elsewhere
correction. Columns: preparation (pair masses, classes, bins and windows of the background),
the scan of one observed dataset (pair masses of the data, local p-values and upper limits
of every window, and the R pseudo-experiments), and the pseudo-experiments alone — each with
the smooth-function bump hunt of every cell (``fit_function: dijet``, every pseudo-experiment
refitted) and without it (``fit_function: null``, the simulated-background scan only).

Only cells whose simulated spectrum the fit function describes at the data's precision are
fitted (:mod:`searches.landscape_fit`): with 100k simulated events at 140 fb⁻¹ each stands for
~80,000 data events and almost no cell is; at ``--luminosity 0.001`` (~0.6 each) most are, which
is the setting that measures the bump hunt's cost.

Usage:
    nice -n 10 python benchmarks/bench_landscape.py [--events 100000] [--rounds 200]
        [--types 3 4 6 8 10] [--luminosity 140]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

from provenance import code_under_test

from searches.composites import pair_names
from searches.landscape import LandscapeOptions, prepare
from searches.progress import track
from searches.signatures import SignatureConfig
from theory.simulate import FastSimulator, pseudo_data

ORDER = ("e", "mu", "j", "b", "gamma", "tau", "V", "H", "top", "Zll")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--types", type=int, nargs="+", default=[3, 4, 6, 8, 10])
    parser.add_argument("--luminosity", type=float, default=140.0, help="fb⁻¹")
    args = parser.parse_args()
    print(code_under_test(), flush=True)

    start = time.perf_counter()
    background = FastSimulator(tail_boost=3.0).background(
        n_events=args.events, luminosity_fb=args.luminosity, seed=1
    )
    observed = pseudo_data(background, seed=2)
    simulated = time.perf_counter() - start
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"{args.events:,} background events at {args.luminosity:g} fb⁻¹ (simulated in "
        f"{simulated:.1f} s), "
        f"{len(observed):,} observed, R = {args.rounds}"
    )
    print(
        "| types | objects | pairs | cells | fitted | windows scan + fit | bump hunt | "
        "prepare s | scan s | pseudo-experiments s | total s |"
    )
    print("|---:|---|---:|---:|---:|---:|---|---:|---:|---:|---:|")
    for k in track(args.types, description="landscapes"):
        objects = ORDER[:k]
        for function in ("dijet", None):
            options = LandscapeOptions(
                objects=objects, pseudo_experiments=args.rounds, fit_function=function
            )
            t0 = time.perf_counter()
            model = prepare(
                background, config=SignatureConfig(), options=options, luminosity_fb=args.luminosity
            )
            t1 = time.perf_counter()
            landscape = model.scan(observed, seed=3)
            t2 = time.perf_counter()
            model.pseudo_minima(rounds=args.rounds, seed=3)
            t3 = time.perf_counter()
            windows = sum(len(cell.masses) for cell in landscape.cells)
            fit_windows = sum(len(cell.fit_p_local) for cell in landscape.cells)
            fitted = sum(cell.fitted for cell in landscape.cells)
            print(
                f"| {k} | {' '.join(objects)} | {len(pair_names(objects))} | "
                f"{landscape.n_cells} | {fitted} | {windows:,} + {fit_windows:,} | "
                f"{'on' if function else 'off'} | {t1 - t0:.1f} | {t2 - t1:.1f} | "
                f"{t3 - t2:.1f} | {t2 - t0:.1f} |"
            )


if __name__ == "__main__":
    main()
