"""Surrogate scaling for issue 5: cost and peak memory of the GP against evaluated points.

The issue asks the active learner's surrogate to handle at least 5,000 evaluated points within
24 GB. :func:`theory.active.surrogate.fit_surrogate` fits an exact GP up to ``exact_max``
(1,000) points and a stochastic variational GP with 256 learned inducing points above; this
script measures both back ends side by side where the exact one is affordable, and the sparse
one well past 5,000 points:

* fit time (CPU and wall, one torch thread, as the learner fits) and the time to predict
  10,000 candidates (a continuous learner's step scores 1,000–10,000);
* peak resident memory of the whole process (``ru_maxrss``), each configuration in a fresh
  subprocess so that no peak carries over, beside an import-only process as the floor;
* misclassified fraction of 5,000 fresh points (label: posterior mean below the probit of
  CLs = 0.05) on a toy with an exact contour (:func:`theory.toys.sbottom_like_2d`, or the 3-D
  :func:`theory.toys.mediator_3d`), with both outputs (observed and expected CLs, noisy as
  from a finite simulation) fitted as the learner does.

Usage:
    python benchmarks/bench_active_scaling.py [--sizes 500,1000,...] [--exact-max 2000]
        [--toy sbottom_like_2d|mediator_3d] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Any

import numpy as np
from fresh_process import peak_rss_mb, run_fresh
from provenance import code_under_test

SIZES = (500, 1000, 2000, 5000, 20000, 100000)
PREDICT = 10_000
HELD_OUT = 5_000
NOISE = 0.2
"""Gaussian noise on the toy's log signal (:meth:`theory.toys.ToyTheory.cls_pair`), as from a
simulation with a finite number of events; the truth is the noiseless contour."""


def measure(*, toy_name: str, backend: str, n: int, seed: int) -> dict[str, Any]:
    """One configuration, in this process: fit, predict, score, peak memory."""
    import torch

    from theory import toys
    from theory.active.surrogate import fit_surrogate
    from theory.active.transforms import cls_to_latent, latent_threshold

    torch.set_num_threads(1)
    row: dict[str, Any] = {"toy": toy_name, "backend": backend, "n": n}
    if backend == "import":
        row["peak_mb"] = peak_rss_mb()
        return row
    toy = getattr(toys, toy_name)()
    points = toy.space.sample(n + HELD_OUT, seed=seed)
    unit = toy.space.to_unit(points)
    latent = cls_to_latent(toy.cls_pair(points, noise=NOISE, seed=seed))
    cpu, wall = time.process_time(), time.perf_counter()
    surrogate = fit_surrogate(unit[:n], latent[:n], seed=seed, backend=backend)
    row["fit_cpu_s"] = time.process_time() - cpu
    row["fit_wall_s"] = time.perf_counter() - wall
    candidates = toy.space.to_unit(toy.space.sample(PREDICT, seed=seed + 1))
    wall = time.perf_counter()
    surrogate.predict(candidates)
    row["predict_s"] = time.perf_counter() - wall
    mean, _ = surrogate.predict(unit[n:])
    excluded = mean[:, 0] < latent_threshold(0.05)
    row["misclassified"] = float(np.mean(excluded != toy.excluded(points[n:])))
    row["peak_mb"] = peak_rss_mb()
    return row


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| back end | evaluated points | fit CPU s | fit wall s | predict 10k s "
        "| peak memory MB | misclassified (5k fresh) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["backend"] == "import":
            lines.append(f"| imports only | — | — | — | — | {r['peak_mb']:.0f} | — |")
            continue
        lines.append(
            f"| {r['backend']} | {r['n']:,} | {r['fit_cpu_s']:.1f} | {r['fit_wall_s']:.1f} "
            f"| {r['predict_s']:.2f} | {r['peak_mb']:.0f} | {r['misclassified']:.2%} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--exact-max", type=int, default=2000, help="largest exact fit to time")
    parser.add_argument(
        "--toy", default="sbottom_like_2d", choices=["sbottom_like_2d", "mediator_3d"]
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(**json.loads(args.one))))
        return
    print(code_under_test(), flush=True)

    from searches.progress import track

    sizes = [int(s) for s in args.sizes.split(",")]
    configs = [("import", 0)] + [
        (backend, n)
        for n in sizes
        for backend in ("exact", "sparse")
        if backend == "sparse" or n <= args.exact_max
    ]
    start = time.perf_counter()
    rows = [
        run_fresh(
            __file__,
            {"toy_name": args.toy, "backend": backend, "n": n, "seed": args.seed},
            env={"OMP_NUM_THREADS": "1"},
        )
        for backend, n in track(configs, total=len(configs), description="configurations")
    ]
    print(
        f"machine: {platform.platform()}, {os.cpu_count()} cores, one torch thread; "
        f"toy {args.toy}, seed {args.seed}; {time.perf_counter() - start:.0f} s wall"
    )
    print(table(rows))


if __name__ == "__main__":
    sys.exit(main())
