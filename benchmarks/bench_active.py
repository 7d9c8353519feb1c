"""Benchmark of theory.active: evaluations needed to learn an exclusion contour.

Pool benchmark: for each problem (toys; the ATLAS SUSY-2018-31 sbottom regions when a file of
per-patch CLs is given), the number of oracle evaluations until ≤ 5 % and ≤ 2 % of the pool is
misclassified, for random sampling, a coarse-to-fine regular grid, Latin hypercubes and every
acquisition (sequential and batch 10); medians and [min, max] over seeds.

Continuous benchmark: learn_box on the 2-D and 3-D toys against a dense reference scan.

Usage:
    nice -n 10 python benchmarks/bench_active.py [--sbottom-cls PATH] [--seeds 5] [--quick]

``--sbottom-cls`` (or ``$LAMPPOST_SBOTTOM_CLS``) names a JSON file of per-patch CLs; patch
names ``sbottom_<m_sbottom>_<m_chi2>_<m_chi1>`` (or mass fields) give the points and the two
varying masses are used. Without it only the toys run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from searches.progress import track
from theory.active import learn_box, learn_pool
from theory.toys import ellipse_2d, mediator_3d, sbottom_like_2d

ACQUISITIONS = ("straddle", "misclassification", "entropy", "information_gain")
TOLERANCES = (0.05, 0.02)
_PATCH = re.compile(r"sbottom_(\d+)_(\d+)_(\d+)")
_CLS_KEYS = ("cls_obs", "CLs_obs", "cls", "CLs", "observed", "obs")


def _records(node, region=None):
    """Yield (region, masses (3,), cls) from a loosely structured JSON tree."""
    if isinstance(node, dict):
        cls_key = next((k for k in _CLS_KEYS if isinstance(node.get(k), int | float)), None)
        if cls_key is not None:
            name = str(node.get("patch", node.get("name", "")))
            match = _PATCH.search(name)
            if match:
                masses = [float(g) for g in match.groups()]
            else:
                masses = [node.get(k) for k in ("m_sbottom", "m_chi2", "m_chi1")]
            if all(isinstance(m, int | float) for m in masses):
                yield node.get("region", region), np.array(masses, float), float(node[cls_key])
            return
        for key, value in node.items():
            match = _PATCH.search(str(key))
            if match and isinstance(value, int | float):
                yield region, np.array([float(g) for g in match.groups()]), float(value)
            elif match and isinstance(value, dict):
                yield from _records(
                    {**value, "patch": key, "region": value.get("region", region)}, region
                )
            else:
                yield from _records(
                    value, key if region is None or "region" in str(key).lower() else region
                )
    elif isinstance(node, list):
        for item in node:
            yield from _records(item, region)


def sbottom_problems(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per region: (points (n, 2) of the two varying masses, observed CLs (n,))."""
    data = json.loads(path.read_text())
    grouped: dict[str, list] = {}
    for region, masses, cls in _records(data):
        grouped.setdefault(str(region), []).append((masses, cls))
    problems = {}
    for region, rows in sorted(grouped.items()):
        masses = np.array([m for m, _ in rows])
        cls = np.array([c for _, c in rows])
        varying = np.flatnonzero(np.ptp(masses, axis=0) > 0)[:2]
        problems[f"sbottom {region}"] = (masses[:, varying], cls)
    if not problems:
        raise ValueError(f"{path}: found no per-patch CLs records")
    return problems


def toy_problems(n: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    problems = {}
    for toy in (ellipse_2d(), sbottom_like_2d()):
        points = toy.space.sample(n, seed=123)
        problems[f"toy {toy.name} (pool {n})"] = (points, toy.cls(points))
    return problems


def needed(n_evaluated: np.ndarray, errors: np.ndarray) -> list[float]:
    out = []
    for tol in TOLERANCES:
        hit = np.flatnonzero(errors <= tol)
        out.append(float(n_evaluated[hit[0]]) if hit.size else np.inf)
    return out


def pool_runs(points, cls, *, seeds: int, budget: int) -> dict[str, list[list[float]]]:
    truth = cls < 0.05
    evaluate = lambda i: cls[i]  # noqa: E731

    def until(step) -> bool:
        return np.mean(step.excluded != truth) <= min(TOLERANCES)

    methods: list[tuple[str, str, int]] = [("random", "random", 5), ("grid", "grid", 5)]
    for acquisition in ACQUISITIONS:
        methods += [(f"{acquisition} ×1", acquisition, 1), (f"{acquisition} ×10", acquisition, 10)]
    results: dict[str, list[list[float]]] = {}
    jobs = [(label, acq, batch, seed) for label, acq, batch in methods for seed in range(seeds)]
    for label, acq, batch, seed in track(jobs, description="pool runs"):
        if acq == "grid" and seed > 0:
            continue
        history = learn_pool(
            points,
            evaluate,
            budget=budget,
            batch_size=batch,
            seed=seed,
            acquisition=acq,
            until=until,
        )
        results.setdefault(label, []).append(
            needed(history.n_evaluated, history.misclassified(truth))
        )
    for seed in range(seeds):
        reached = [np.inf, np.inf]
        for n in range(10, budget + 1, 10):
            history = learn_pool(
                points, evaluate, budget=n, batch_size=n, initial=n, seed=seed, acquisition="lhs"
            )
            error = np.mean(history.final.excluded != truth)
            for j, tol in enumerate(TOLERANCES):
                if error <= tol and reached[j] == np.inf:
                    reached[j] = float(n)
            if error <= min(TOLERANCES):
                break
        results.setdefault("lhs (one-shot, step 10)", []).append(reached)
    return results


def box_runs(toy, *, seeds: int, budget: int, n_per_dim: int) -> dict[str, list[list[float]]]:
    reference = toy.reference_scan(n_per_dim)
    truth = toy.excluded(reference)

    def until(step) -> bool:
        return np.mean(step.excluded != truth) <= min(TOLERANCES)

    methods = [
        ("random", "random", 5),
        ("straddle ×1", "straddle", 1),
        ("straddle ×10", "straddle", 10),
        ("information_gain ×1", "information_gain", 1),
        ("information_gain ×10", "information_gain", 10),
    ]
    results: dict[str, list[list[float]]] = {}
    jobs = [(label, acq, batch, seed) for label, acq, batch in methods for seed in range(seeds)]
    for label, acq, batch, seed in track(jobs, description=f"box runs {toy.name}"):
        history = learn_box(
            toy.space,
            toy.cls,
            budget=budget,
            batch_size=batch,
            seed=seed,
            acquisition=acq,
            reference=reference,
            n_candidates=1000,
            until=until,
        )
        results.setdefault(label, []).append(
            needed(history.n_evaluated, history.misclassified(truth))
        )
    return results


def summarise(title: str, results: dict[str, list[list[float]]], budget: int) -> str:
    lines = [
        f"\n### {title}",
        "",
        "| method | seeds | evals to ≤5 % median [min, max] | evals to ≤2 % median [min, max] |",
        "|---|---|---|---|",
    ]
    fmt: Callable[[float], str] = lambda v: f">{budget}" if not np.isfinite(v) else f"{v:.0f}"  # noqa: E731
    for label, rows in results.items():
        arr = np.array(rows)
        cells = [
            f"{fmt(np.median(arr[:, j]))} [{fmt(arr[:, j].min())}, {fmt(arr[:, j].max())}]"
            for j in range(2)
        ]
        lines.append(f"| {label} | {len(rows)} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sbottom-cls", default=os.environ.get("LAMPPOST_SBOTTOM_CLS"))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--pool", type=int, default=500, help="toy pool size")
    parser.add_argument("--budget", type=int, default=150)
    parser.add_argument("--quick", action="store_true", help="skip the continuous benchmark")
    args = parser.parse_args()

    start = time.perf_counter()
    problems = toy_problems(args.pool)
    if args.sbottom_cls:
        problems.update(sbottom_problems(Path(args.sbottom_cls)))
    out = []
    for name, (points, cls) in problems.items():
        budget = min(args.budget, len(points))
        t0 = time.perf_counter()
        results = pool_runs(points, cls, seeds=args.seeds, budget=budget)
        title = f"Pool: {name}, {len(points)} points, {np.mean(cls < 0.05):.0%} excluded ({time.perf_counter() - t0:.0f} s)"
        out.append(summarise(title, results, budget))
        print(out[-1], flush=True)
    if not args.quick:
        for toy, n_per_dim in ((ellipse_2d(), 60), (mediator_3d(), 16)):
            t0 = time.perf_counter()
            results = box_runs(toy, seeds=args.seeds, budget=args.budget, n_per_dim=n_per_dim)
            title = f"Box: {toy.name} vs dense scan ({n_per_dim}^{toy.space.dim} grid) ({time.perf_counter() - t0:.0f} s)"
            out.append(summarise(title, results, args.budget))
            print(out[-1], flush=True)
    print(f"\ntotal {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
