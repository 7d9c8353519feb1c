"""Benchmarks of the ML searches: LHCO R&D SIC (idealized + supervised), training throughput.

Usage: ``python benchmarks/bench_ml.py [lhco|throughput|all] [--seeds N] [--repeats R]
[--min-samples-leaf L] [--supervised-seeds N]``.
Prints tables; numbers go to the "Machine-learning searches" section of RESULTS.md.

Max SIC is printed with the default cut (at least 25 test-background events above the
threshold: 20 % relative uncertainty on the background efficiency, the literature's
convention) and, for comparison with earlier records, with at least 50.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from provenance import code_under_test

from searches.lhco import (
    BoostingOptions,
    idealized_detector,
    load_rd_slice,
    sic_curve,
    supervised_reference,
)
from searches.ml.device import select_device
from searches.ml.training import TrainingOptions, train_autoencoder, train_classifier

FPRS = (2e-4, 5e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)


def lhco(seeds: int, repeats: int, min_samples_leaf: int, supervised_seeds: int) -> None:
    rd = load_rd_slice()
    options = BoostingOptions(n_repeats=repeats, min_samples_leaf=min_samples_leaf)
    print(f"options: {options.model_dump()}")
    for name, run, n in (
        ("idealized", idealized_detector, seeds),
        ("supervised", supervised_reference, supervised_seeds),
    ):
        sics, sics50 = [], []
        for seed in range(n):
            result = run(rd, seed=seed, options=options)
            tpr, fpr = result.curve.at_max()
            sics.append(result.curve.max_sic)
            sics50.append(
                sic_curve(result.signal_scores, result.background_scores, min_background=50).max_sic
            )
            curve = " / ".join(f"{s:.1f}" for _, _, s in result.curve.sampled(FPRS))
            print(
                f"| {name} {seed} | {sics[-1]:.2f} | {tpr:.3f} | {fpr:.1e} | {sics50[-1]:.2f} "
                f"| {curve} | {result.seconds:.0f} s |",
                flush=True,
            )
        for label, values in (("min 25", sics), ("min 50", sics50)):
            print(
                f"{name}: mean max SIC ({label}) {np.mean(values):.2f} ± "
                f"{np.std(values, ddof=1) / np.sqrt(len(values)) if len(values) > 1 else 0:.2f} "
                f"over {n} seeds"
            )


def throughput() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50_000, 20)).astype(np.float32)
    y = (rng.random(50_000) < 0.5).astype(np.float64)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print("| device | network | events/s (training) |")
    print("|---|---|---|")
    for device in devices:
        options = TrainingOptions(epochs=3, batch_size=512, device=device)  # type: ignore[arg-type]
        _, log = train_classifier(x, y, options=options, seed=0)
        print(
            f"| {device} ({select_device(device)}) | classifier 64-64 | {log.events_per_second:,.0f} |"
        )
        _, log = train_autoencoder(x, options=options.model_copy(update={"hidden": (32,)}), seed=0)
        print(f"| {device} | autoencoder 32-3 | {log.events_per_second:,.0f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["lhco", "throughput", "all"], default="all", nargs="?")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--min-samples-leaf", type=int, default=1000)
    parser.add_argument("--supervised-seeds", type=int, default=1)
    args = parser.parse_args()
    print(code_under_test(), flush=True)
    torch.set_num_threads(2)
    started = time.perf_counter()
    if args.what in ("throughput", "all"):
        throughput()
    if args.what in ("lhco", "all"):
        lhco(args.seeds, args.repeats, args.min_samples_leaf, args.supervised_seeds)
    print(f"total wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
