"""Is the excluded-fraction interval of a coverage honest? Frequentist check over seeds.

A coverage quotes, for each model, the excluded fraction of its reference set three ways: the
plug-in share of P(excluded) > ½, the band (shares with P > 0.84 and P > 0.16) and the
posterior mean with a central 68 % interval from joint draws of the surrogate
(``theory.active.volume``). On problems whose truth is known this script runs the learners
over many seeds, reads those numbers after 15, 30 and 60 evaluations (3-D: 20, 45, 90), and
counts how often each interval holds the true excluded fraction of the same reference set. A
calibrated 68 % interval holds it in about 68 % of runs; the band, the fully-correlated limit,
should hold it more often and be wider.

Problems: the continuous toys of ``theory.toys`` (exact contours; ``learn_box`` with the
campaign's 1,000-point Sobol' reference set) and the three sbottom pools of
``bench_active.py`` (the oracle table's observed CLs; ``learn_pool``). The acquisition is the
library's default (straddle) with batch 1.

Usage:
    nice -n 10 python benchmarks/bench_active_volume.py [--sbottom-cls auto|PATH|none]
        [--seeds 20] [--processes 2] [--json OUT]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_active import initial_size, run_in_workers, sbottom_oracle, sbottom_pools
from provenance import code_under_test

BOX_TOYS = {
    "ellipse_2d": (15, 30, 60),
    "sbottom_like_2d": (15, 30, 60),
    "mediator_3d": (20, 45, 90),
}
POOL_CHECKPOINTS = (15, 30, 60)
REFERENCE_SIZE = 1000
"""As the campaign loop's reference set (``campaign.loop.REFERENCE_SIZE``)."""


def _read(
    history: Any,
    truth: np.ndarray,
    checkpoints: tuple[int, ...],
    names: tuple[str, ...],
    **kw: Any,
) -> list[dict]:
    """The three estimates after each checkpoint, read from the history cut there exactly as
    the campaign writes them (``ModelCoverage.from_history(...).excluded_volume()``)."""
    from campaign.coverage import ModelCoverage

    rows = []
    counts = list(history.n_evaluated)
    for n in checkpoints:
        if n not in counts:
            continue
        cut = dataclasses.replace(history, steps=history.steps[: counts.index(n) + 1])
        volume = ModelCoverage.from_history("benchmark", names, cut, **kw).excluded_volume()
        rows.append(
            {
                "n": n,
                "truth": float(np.mean(truth)),
                "plug_in": volume.fraction,
                "band": [volume.low, volume.high],
                "posterior": None
                if volume.posterior is None
                else dataclasses.asdict(volume.posterior),
            }
        )
    return rows


def job(spec: dict[str, Any]) -> dict[str, Any]:
    """One (problem, seed) run in a worker process."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    from theory import toys
    from theory.active import learn_box, learn_pool

    torch.set_num_threads(1)
    t0 = time.process_time()
    checkpoints = tuple(spec["checkpoints"])
    if spec["kind"] == "box":
        toy = getattr(toys, spec["toy"])()
        history = learn_box(
            toy.space,
            toy.cls,
            budget=max(checkpoints),
            seed=spec["seed"],
            initial=initial_size(1, toy.space.dim),
            reference_size=REFERENCE_SIZE,
            n_candidates=REFERENCE_SIZE,
        )
        truth = toy.excluded(history.reference)
        rows = _read(history, truth, checkpoints, toy.space.names, to_unit=toy.space.to_unit)
    else:
        points, cls = np.asarray(spec["points"]), np.asarray(spec["cls"])
        history = learn_pool(
            points,
            lambda i: cls[i],
            budget=max(checkpoints),
            seed=spec["seed"],
            initial=initial_size(1, points.shape[1]),
        )
        names = tuple(f"x{k}" for k in range(points.shape[1]))
        rows = _read(history, cls < 0.05, checkpoints, names)
    return {
        "problem": spec["problem"],
        "seed": spec["seed"],
        "rows": rows,
        "cpu_s": time.process_time() - t0,
    }


def table(problem: str, runs: list[dict[str, Any]]) -> str:
    """Per checkpoint: how often each interval holds the truth, widths and errors."""
    lines = [
        f"#### {problem} ({len(runs)} seeds, {sum(r['cpu_s'] for r in runs):.0f} CPU-s)",
        "",
        "| evaluations | truth | posterior 68 % holds truth | band holds truth | "
        "median width posterior / band | median abs. error: posterior mean / plug-in |",
        "|---|---|---|---|---|---|",
    ]
    checkpoints = sorted({row["n"] for run in runs for row in run["rows"]})
    for n in checkpoints:
        rows = [row for run in runs for row in run["rows"] if row["n"] == n]
        with_post = [r for r in rows if r["posterior"] is not None]
        held = [r["posterior"]["low"] <= r["truth"] <= r["posterior"]["high"] for r in with_post]
        band = [r["band"][0] <= r["truth"] <= r["band"][1] for r in rows]
        width_post = np.median([r["posterior"]["high"] - r["posterior"]["low"] for r in with_post])
        width_band = np.median([r["band"][1] - r["band"][0] for r in rows])
        err_post = np.median([abs(r["posterior"]["mean"] - r["truth"]) for r in with_post])
        err_plug = np.median([abs(r["plug_in"] - r["truth"]) for r in rows])
        lines.append(
            f"| {n} | {rows[0]['truth']:.3f} | {sum(held)}/{len(with_post)} "
            f"({np.mean(held):.0%}) | {sum(band)}/{len(rows)} ({np.mean(band):.0%}) | "
            f"{width_post:.3f} / {width_band:.3f} | {err_post:.3f} / {err_plug:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sbottom-cls", default=os.environ.get("LAMPPOST_SBOTTOM_CLS", "auto"))
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write every run's result here")
    args = parser.parse_args()
    print(code_under_test(), flush=True)
    start = time.perf_counter()
    jobs: list[dict[str, Any]] = []
    for toy, checkpoints in BOX_TOYS.items():
        for seed in range(args.seeds):
            jobs.append(
                {
                    "kind": "box",
                    "problem": f"box {toy}",
                    "toy": toy,
                    "checkpoints": checkpoints,
                    "seed": seed,
                }
            )
    if args.sbottom_cls != "none":
        for pool in sbottom_pools(sbottom_oracle(args.sbottom_cls), coordinates="splitting"):
            for seed in range(args.seeds):
                jobs.append(
                    {
                        "kind": "pool",
                        "problem": f"pool {pool.name}",
                        "points": pool.points,
                        "cls": pool.cls,
                        "checkpoints": POOL_CHECKPOINTS,
                        "seed": seed,
                    }
                )
    done = run_in_workers(job, jobs, processes=args.processes, start=start)
    print()
    for problem in dict.fromkeys(j["problem"] for j in jobs):
        runs = sorted((d for d in done if d["problem"] == problem), key=lambda d: d["seed"])
        print(table(problem, runs) + "\n")
    if args.json:
        args.json.write_text(json.dumps({"schema_version": 1, "runs": done}, indent=1))


if __name__ == "__main__":
    main()
