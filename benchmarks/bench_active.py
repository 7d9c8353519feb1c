"""Benchmark of theory.active: evaluations needed to learn an exclusion contour.

Pool benchmark (issue 5): the candidates are the signal points of the three regions of the ATLAS
SUSY-2018-31 sbottom likelihood (``likelihoods/atlas-susy-2018-31-sbottom`` in the shared data);
the oracle is the observed CLs of every patch from Lamppost's batched reinterpretation engine
(:func:`searches.stats.batched.evaluate_patches`), computed once per benchmark run and then
looked up. For each region: the number of oracle evaluations until ≤ 5 % and ≤ 2 % of the pool
is misclassified, for random sampling, a coarse-to-fine regular grid, Latin hypercubes and every
acquisition (sequential and batch 10); medians and [min, max] over seeds.

Continuous benchmark: learn_box on the 2-D and 3-D toys of :mod:`theory.toys` against a dense
reference scan.

Usage:
    nice -n 10 python benchmarks/bench_active.py [--sbottom-cls auto|PATH|none] [--seeds 5]
        [--processes 2] [--no-box] [--toys] [--json OUT]

``--sbottom-cls auto`` (the default) runs the batched engine on the shared tarball; a PATH reads
a table written by ``benchmarks/bench_likelihoods.py --oracle`` instead (same engine, cached);
``none`` skips the sbottom pools. Hypotheses the engine reports as ``failed`` (or with a
non-finite observed CLs) are dropped from the pool and counted in the table title.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from provenance import code_under_test

from searches.progress import track

ACQUISITIONS = ("straddle", "misclassification", "entropy", "information_gain")
TOLERANCES = (0.05, 0.02)
TARBALL = "likelihoods/atlas-susy-2018-31-sbottom/pyhf-ins1748602-probability-models.tar.gz"
MASSES = ("m_sbottom", "m_chi2", "m_chi1")
BASELINE_STEP = 5
"""Random and grid baselines record their error every this many evaluations."""


@dataclass(frozen=True)
class Pool:
    """One pool problem.

    Attributes:
        name: table title.
        points: (n, d) candidates in the coordinates the learner sees.
        cls: (n,) observed CLs (finite).
        dropped: hypotheses left out because their CLs failed.
        note: how the points were made.
    """

    name: str
    points: np.ndarray
    cls: np.ndarray
    dropped: int = 0
    note: str = ""


def splitting_coordinates(masses: np.ndarray) -> np.ndarray:
    """(m_sbottom, m_chi2, m_chi1) → (m_sbottom, √Δm, m_chi1) with Δm = m_sbottom − m_chi2.

    The published grid lies on two planes (m_chi1 = 60 GeV, and m_chi2 = m_chi1 + 130 GeV) and
    runs along the compressed diagonal m_chi2 = m_sbottom − 5 GeV, where the exclusion changes
    sharply between Δm = 5 and 50 GeV. In raw masses that diagonal is a thin oblique band a
    stationary GP cannot resolve; in the splitting it becomes an axis, and the square root
    stretches the compressed end without crushing the rest as log Δm does. Exploratory runs on
    region A (median evaluations to ≤ 2 %): misclassification ×1, 5 seeds: 58 in linear Δm,
    61 in log Δm, 46 in √Δm; straddle ×1, 3 seeds: 146 on (m_sbottom, m_chi2) alone (m_chi1
    dropped), 65 in raw masses, 62 in linear Δm.
    """
    masses = np.asarray(masses, dtype=float)
    return np.column_stack([masses[:, 0], np.sqrt(masses[:, 0] - masses[:, 1]), masses[:, 2]])


def sbottom_oracle(source: str) -> list[dict[str, Any]]:
    """Per-patch rows ``{region, name, parameters, cls_obs, status}``.

    ``source == "auto"`` evaluates every patch of the shared tarball with the batched engine
    (one call per region); otherwise ``source`` is a JSON table written by
    ``bench_likelihoods.py --oracle``.
    """
    if source != "auto":
        data = json.loads(Path(source).read_text())
        if "results" not in data:
            raise SystemExit(f"{source}: no 'results' list (write it with bench_likelihoods.py)")
        return data["results"]
    import torch

    from searches.datapath import missing_reason, shared_data_dir
    from searches.likelihoods import load_likelihoods
    from searches.stats.batched import evaluate_patches

    base = shared_data_dir()
    if base is None:
        raise SystemExit(f"shared data not available: {missing_reason()}")
    torch.set_num_threads(1)
    rows = []
    for region in load_likelihoods(base / TARBALL):
        for result in evaluate_patches(region.background, region.patches, region=region.name):
            rows.append(result.to_dict())
    return rows


def sbottom_pools(rows: list[dict[str, Any]], *, coordinates: str) -> list[Pool]:
    """One pool per region; failed or non-finite hypotheses are dropped and counted."""
    by_region: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_region.setdefault(str(row["region"]), []).append(row)
    pools = []
    for region, members in sorted(by_region.items()):
        members = sorted(members, key=lambda r: r["name"])
        ok = [
            r
            for r in members
            if r.get("status") != "failed"
            and r.get("cls_obs") is not None
            and np.isfinite(r["cls_obs"])
        ]
        masses = np.array([[r["parameters"][k] for k in MASSES] for r in ok], dtype=float)
        points = splitting_coordinates(masses) if coordinates == "splitting" else masses
        cls = np.array([r["cls_obs"] for r in ok], dtype=float)
        pools.append(
            Pool(
                name=f"sbottom {region}",
                points=points,
                cls=cls,
                dropped=len(members) - len(ok),
                note=coordinates,
            )
        )
    return pools


def sbottom_regions(source: str, regions: str) -> dict[str, Pool]:
    """The sbottom pools named in ``regions`` (comma-separated, e.g. ``RegionA,RegionC``).

    The diagnostics' ``--regions`` option; an unknown name exits with the allowed ones.
    """
    pools = {
        p.name.split()[-1]: p
        for p in sbottom_pools(sbottom_oracle(source), coordinates="splitting")
    }
    names = regions.split(",")
    missing = sorted(set(names) - set(pools))
    if missing:
        raise SystemExit(f"--regions: unknown {missing}; allowed: {', '.join(sorted(pools))}")
    return {name: pools[name] for name in names}


def toy_pools(n: int) -> list[Pool]:
    from theory.toys import ellipse_2d, sbottom_like_2d

    pools = []
    for toy in (ellipse_2d(), sbottom_like_2d()):
        points = toy.space.sample(n, seed=123)
        pools.append(Pool(f"toy {toy.name} (pool {n})", points, toy.cls(points)))
    return pools


def needed(n_evaluated: np.ndarray, errors: np.ndarray) -> list[float]:
    """Evaluations at which the error first falls to each tolerance (inf: never)."""
    out = []
    for tol in TOLERANCES:
        hit = np.flatnonzero(errors <= tol)
        out.append(float(n_evaluated[hit[0]]) if hit.size else np.inf)
    return out


def initial_size(batch: int, dim: int) -> int:
    """Initial Latin-hypercube design: 2 d + 2 points, or one batch if that is larger."""
    return max(batch, 2 * dim + 2)


def pool_job(job: dict[str, Any]) -> dict[str, Any]:
    """One (pool, method, seed) run in a worker process."""
    import torch

    from theory.active import learn_pool

    torch.set_num_threads(1)
    points, cls = np.asarray(job["points"]), np.asarray(job["cls"])
    truth = cls < 0.05
    budget, acq, batch, seed = job["budget"], job["acquisition"], job["batch"], job["seed"]
    t0 = time.process_time()

    def evaluate(i: np.ndarray) -> np.ndarray:
        return cls[i]

    if acq == "lhs":
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
    else:
        history = learn_pool(
            points,
            evaluate,
            budget=budget,
            batch_size=batch,
            initial=None if acq in ("random", "grid") else initial_size(batch, points.shape[1]),
            seed=seed,
            acquisition=acq,
            until=lambda step: np.mean(step.excluded != truth) <= min(TOLERANCES),
        )
        reached = needed(history.n_evaluated, history.misclassified(truth))
    return {**job["key"], "reached": reached, "cpu_s": time.process_time() - t0}


def box_job(job: dict[str, Any]) -> dict[str, Any]:
    """One (toy, method, seed) run of learn_box in a worker process."""
    import torch

    from theory import toys

    torch.set_num_threads(1)
    toy = getattr(toys, job["toy"])()
    reference = toy.reference_scan(job["n_per_dim"])
    t0 = time.process_time()
    reached = box_reached(toy.space, toy.cls, reference, toy.excluded(reference), job)
    return {**job["key"], "reached": reached, "cpu_s": time.process_time() - t0}


def box_reached(
    space: Any,
    evaluate: Callable[[np.ndarray], np.ndarray],
    reference: np.ndarray,
    truth: np.ndarray,
    job: dict[str, Any],
) -> list[float]:
    """Evaluations until each tolerance of misclassified ``reference`` points, for one
    ``learn_box`` run (``job``: budget, acquisition, batch, seed, optional label); stops at the
    smallest."""
    from theory.active import learn_box

    batch = job["batch"]
    history = learn_box(
        space,
        evaluate,
        budget=job["budget"],
        batch_size=batch,
        initial=None if job["acquisition"] == "random" else initial_size(batch, space.dim),
        seed=job["seed"],
        acquisition=job["acquisition"],
        reference=reference,
        n_candidates=1000,
        until=lambda step: np.mean(step.excluded != truth) <= min(TOLERANCES),
        label=job.get("label", "observed"),
    )
    return needed(history.n_evaluated, history.misclassified(truth))


def run(job: dict[str, Any]) -> dict[str, Any]:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    return box_job(job) if job["kind"] == "box" else pool_job(job)


def pool_methods() -> list[tuple[str, str, int]]:
    methods = [("random", "random", BASELINE_STEP), ("grid", "grid", BASELINE_STEP)]
    for acquisition in ACQUISITIONS:
        methods += [(f"{acquisition} ×1", acquisition, 1), (f"{acquisition} ×10", acquisition, 10)]
    return [*methods, ("lhs (one-shot, step 10)", "lhs", 10)]


BOX_METHODS = [("random", "random", BASELINE_STEP)] + [
    (f"{acquisition} ×{batch}", acquisition, batch)
    for acquisition in ("straddle", "misclassification", "information_gain")
    for batch in (1, 10)
]


def by_method(runs: list[dict[str, Any]], labels: list[str]) -> dict[str, list[list[float]]]:
    """Each method's ``reached`` rows, methods in ``labels`` order and seeds ascending."""
    order = {label: i for i, label in enumerate(dict.fromkeys(labels))}
    results: dict[str, list[list[float]]] = {}
    for run in sorted(runs, key=lambda d: (order[d["method"]], d["seed"])):
        results.setdefault(run["method"], []).append(run["reached"])
    return results


def run_in_workers(
    job: Callable[[dict[str, Any]], dict[str, Any]],
    jobs: list[dict[str, Any]],
    *,
    processes: int,
    start: float,
) -> list[dict[str, Any]]:
    """Every job on ``processes`` spawned workers (results in completion order), then the
    machine line the tables in RESULTS.md quote (wall time counted from ``start``)."""
    done: list[dict[str, Any]] = []
    with mp.get_context("spawn").Pool(processes) as workers:
        for out in track(workers.imap_unordered(job, jobs), total=len(jobs), description="runs"):
            done.append(out)
    print(
        f"\nmachine: {platform.platform()}, {os.cpu_count()} cores, {processes} workers; "
        f"{len(jobs)} runs, total {time.perf_counter() - start:.0f} s wall"
    )
    return done


def write_runs(path: Path, runs: list[dict[str, Any]]) -> None:
    """Every run as JSON (schema 1); ``inf`` (tolerance never reached) becomes null."""
    finite = [{**d, "reached": [v if np.isfinite(v) else None for v in d["reached"]]} for d in runs]
    path.write_text(json.dumps({"schema_version": 1, "runs": finite}, indent=1))


def summarise(title: str, results: dict[str, list[list[float]]], budget: int) -> str:
    lines = [
        f"\n#### {title}",
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


def ratio_interval(
    numerator: list[float], denominator: list[float], *, seed: int = 0, rounds: int = 10_000
) -> tuple[float, float, float]:
    """Ratio of medians with a 68 % bootstrap interval (seeds resampled within each method).

    A target such as "3× fewer evaluations than random" compares two medians over ten-odd
    seeds whose spreads are tens of evaluations; the interval says whether a ratio of 2.7 or
    3.1 is a difference between methods or between seed draws. Runs that never reached the
    tolerance enter as infinity, so a resample in which they make up half the runs has an
    infinite median and counts at the corresponding end.
    """
    a, b = np.asarray(numerator, dtype=float), np.asarray(denominator, dtype=float)
    rng = np.random.default_rng(seed)
    ra = np.median(rng.choice(a, size=(rounds, a.size)), axis=1)
    rb = np.median(rng.choice(b, size=(rounds, b.size)), axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratios = ra / rb
        ratios = np.where(np.isnan(ratios), np.inf, ratios)
        # Between two infinite order statistics the interpolation is inf − inf; the quantile
        # there is infinite.
        low, high = np.nan_to_num(np.quantile(ratios, [0.16, 0.84]), nan=np.inf, posinf=np.inf)
        ratio = np.median(a) / np.median(b)
    return float(ratio), float(low), float(high)


def targets(results: dict[str, list[list[float]]]) -> str:
    """The two issue-5 targets at ≤ 2 %: random / acquisition and batch 10 / sequential, each
    a ratio of medians with its 68 % bootstrap interval over seeds."""
    at = {label: [row[1] for row in rows] for label, rows in results.items()}
    cells = []

    def cell(name: str, top: list[float], bottom: list[float]) -> str:
        ratio, low, high = ratio_interval(top, bottom)
        if np.isnan(ratio):
            return f"{name}: neither median reaches ≤ 2 %"
        return f"{name} = {ratio:.2f} [{low:.2f}, {high:.2f}]"

    for acquisition in ACQUISITIONS:
        seq, batch = at.get(f"{acquisition} ×1"), at.get(f"{acquisition} ×10")
        if seq is None or batch is None:
            continue
        parts = []
        if "random" in at:
            parts += [cell("random/×1", at["random"], seq), cell("random/×10", at["random"], batch)]
        parts.append(cell("×10/×1", batch, seq))
        cells.append(f"{acquisition}: " + ", ".join(parts))
    return "\nTargets at ≤ 2 % (ratios of medians, 68 % bootstrap interval): " + "; ".join(cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sbottom-cls", default=os.environ.get("LAMPPOST_SBOTTOM_CLS", "auto"))
    parser.add_argument("--coordinates", choices=("splitting", "masses"), default="splitting")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--budget", type=int, default=200, help="per-run evaluation cap")
    parser.add_argument("--toys", action="store_true", help="also run the toy pools")
    parser.add_argument("--pool", type=int, default=500, help="toy pool size")
    parser.add_argument("--no-box", action="store_true", help="skip the continuous benchmark")
    parser.add_argument("--box-budget", type=int, default=150)
    parser.add_argument("--json", type=Path, help="write every run's result here")
    args = parser.parse_args()
    print(code_under_test(), flush=True)

    start = time.perf_counter()
    pools: list[Pool] = toy_pools(args.pool) if args.toys else []
    if args.sbottom_cls != "none":
        t0, c0 = time.perf_counter(), time.process_time()
        rows = sbottom_oracle(args.sbottom_cls)
        pools += sbottom_pools(rows, coordinates=args.coordinates)
        source = "batched engine, this run" if args.sbottom_cls == "auto" else args.sbottom_cls
        print(
            f"oracle: {len(rows)} patches ({source}) in {time.perf_counter() - t0:.0f} s wall, "
            f"{time.process_time() - c0:.0f} CPU-s",
            flush=True,
        )
    jobs = []
    for pool in pools:
        budget = min(args.budget, len(pool.points))
        for label, acq, batch in pool_methods():
            for seed in range(1 if acq == "grid" else args.seeds):
                key = {"problem": pool.name, "method": label, "seed": seed, "budget": budget}
                jobs.append(
                    {
                        "kind": "pool",
                        "key": key,
                        "points": pool.points,
                        "cls": pool.cls,
                        "budget": budget,
                        "acquisition": acq,
                        "batch": batch,
                        "seed": seed,
                    }
                )
    box_problems = [] if args.no_box else [("ellipse_2d", 60), ("mediator_3d", 16)]
    for toy, n_per_dim in box_problems:
        title = f"box {toy} vs dense scan ({n_per_dim} per axis)"
        for label, acq, batch in BOX_METHODS:
            for seed in range(args.seeds):
                key = {"problem": title, "method": label, "seed": seed, "budget": args.box_budget}
                jobs.append(
                    {
                        "kind": "box",
                        "key": key,
                        "toy": toy,
                        "n_per_dim": n_per_dim,
                        "budget": args.box_budget,
                        "acquisition": acq,
                        "batch": batch,
                        "seed": seed,
                    }
                )
    # Slow (sequential GP) jobs first so the two workers finish together.
    jobs.sort(key=lambda j: (j["batch"] != 1, j["acquisition"] == "lhs"))
    done: list[dict[str, Any]] = []
    with mp.get_context("spawn").Pool(args.processes) as workers:
        for out in track(
            workers.imap_unordered(run, jobs), total=len(jobs), description="active runs"
        ):
            done.append(out)
    labels = [label for label, _, _ in pool_methods() + BOX_METHODS]
    titles = [p.name for p in pools] + [
        f"box {toy} vs dense scan ({n} per axis)" for toy, n in box_problems
    ]
    print(
        f"\nmachine: {platform.platform()}, {os.cpu_count()} cores, {args.processes} workers; "
        f"{len(jobs)} runs, total {time.perf_counter() - start:.0f} s wall"
    )
    for title in titles:
        mine = [d for d in done if d["problem"] == title]
        results = by_method(mine, labels)
        pool = next((p for p in pools if p.name == title), None)
        budget = mine[0]["budget"]
        cpu = sum(d["cpu_s"] for d in mine)
        if pool is not None:
            header = (
                f"Pool: {title}, {len(pool.points)} points ({pool.dropped} failed dropped), "
                f"{np.mean(pool.cls < 0.05):.0%} excluded, coordinates {pool.note or 'native'}, "
                f"cap {budget} ({cpu:.0f} CPU-s)"
            )
        else:
            header = f"{title[0].upper()}{title[1:]}, cap {budget} ({cpu:.0f} CPU-s)"
        print(summarise(header, results, budget))
        print(targets(results), flush=True)
    if args.json:
        write_runs(args.json, done)


if __name__ == "__main__":
    main()
