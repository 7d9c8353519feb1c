"""Continuous active-learning benchmark on the campaign's own searches (issue 5).

The oracle is what the theory loop of :mod:`campaign.loop` learns: at a parameter point,
simulate the model's signal with the built-in simulator, weight it to the campaign's
luminosity and reinterpret it against every search of a real (small) campaign — the observed
and expected CLs of the best-expected search (:func:`campaign.loop.point_verdict`, batched CLs
engine, pyhf fallback capped as in the loop). Two built-in models:

* ``zprime`` (mass, g), 2-D;
* ``resonance`` X → e μ (mass, g, width), 3-D.

For each model a dense regular reference scan of the same oracle gives the truth (observed
CLs < 0.05, or expected CLs with ``--label expected``, which also labels the learners' GP by
expected CLs); :func:`theory.active.learn_box` then runs with random points (same GP labels) and
each acquisition, sequential and batch 10, several seeds, beside two model-free designs labelled
by the same GP (a regular grid, one-shot Latin hypercubes), and the table counts evaluations
until ≤ 5 % and ≤ 2 % of the reference scan is misclassified. The signal seed of a point is
derived from the point, so the learners and the reference scan see the same CLs at the same
point. A second reference scan with another seed family measures how many reference labels the
signal Monte Carlo alone flips: a learner that evaluates points off the reference grid cannot be
expected to beat that fraction.

The campaign is the test suite's small one (:func:`campaign.testing.small_campaign`: built-in
simulation, 60k background events at 140 fb⁻¹, electrons and muons, ``st`` and ``minv``), with
background-only pseudo-data (no injected signal, so the contour is the campaign's expected
reach up to the data's fluctuations); it is run once with ``lamppost run`` into ``--workdir`` and
reused, and so is the reference scan.

Usage:
    nice -n 10 python benchmarks/bench_active_campaign.py [--seeds 5] [--processes 2]
        [--workdir DIR] [--json OUT] [--models zprime resonance]
        [--signal-events 32000] [--background-events 60000] [--label observed]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from bench_active import TOLERANCES, box_reached, by_method, summarise, targets, write_runs
from provenance import code_under_test

from searches.progress import track
from theory.space import Parameter, ParameterSpace

SIGNAL_EVENTS = 32_000
"""Signal events per point. Near the contour the observed CLs is steep in the signal yield of
the one or two bins that decide it (on the Z′ plane at 839 GeV, g = 0.038, expected CLs of the
same search ranges 0.0009–0.077 for four seeds even at 32,000 events, for a bin yield of 62–79),
so signal Monte Carlo statistics set the labels' noise: a second seed family flips 4 of the 144
Z′ reference labels with 2,000 events (2.8 %, above the 2 % target), 1 with 5,000 (the loop's
default ``theory.events``) and none with 32,000. The fits dominate the cost: 1.9 CPU-s per point
with 2,000 or 5,000 events, 2.4–2.6 with 32,000."""
BACKGROUND_EVENTS = 60_000
"""Built-in background events of the campaign. Ten times more (600,000) gives 466 searches
instead of 188 and a different tail (the bin deciding the Z′ point above expects 367 ± 84
background events instead of 50 ± 50). With 2,000 signal events 7 of its 144 Z′ labels flip
between seed families; with 32,000, 1 observed and no expected label flips, and its expected
Z′ contour has no isolated label (:func:`isolated_labels`) while the 60k campaign's has 4: with
``--label expected`` it is the setting in which ≤ 2 % on the Z′ plane can be measured."""
LABELS = ("observed", "expected")
"""Which CLs defines the truth and the learners' labels (``ActiveOptions.label``). Expected
CLs has no pseudo-data fluctuations: on the 600k-background campaign its Z′ contour has no
label that differs from both neighbours along the mass axis, while the observed one has 3.
Also the column order of the reference scans' ``cls`` rows."""
MAX_FITS = 3
PYHF_ATTEMPTS = 0
"""The loop's default (``theory.pyhf_attempts: 0``): a point whose fits the batched engine
cannot check is recorded failed and skipped by the learner. With one attempt, the learners'
proposals near the contour kept landing in the fallback, and the first run of this benchmark
had not finished after an hour."""
POINT_SEED = 20_261_123
REPLICA_SEED = 20_261_124
"""Signal seed family of a second reference scan: the fraction of reference labels that flip
between the two is the oracle's own label noise (signal Monte Carlo statistics), which a learner
labelling the reference grid from other points cannot be expected to beat."""


@dataclass(frozen=True)
class Problem:
    """A built-in model over a box, with its reference grid (points per axis)."""

    model: str
    space: ParameterSpace
    grid: tuple[int, ...]
    options: dict[str, Any] = field(default_factory=dict)
    budget: int = 100

    @property
    def title(self) -> str:
        options = ",".join(f"{k}={v}" for k, v in self.options.items())
        label = f"{self.model}[{options}]" if options else self.model
        return (
            f"{label} ({', '.join(self.space.names)}) vs dense scan {'×'.join(map(str, self.grid))}"
        )

    def reference(self) -> np.ndarray:
        return self.space.from_unit(_regular_grid([(np.arange(n) + 0.5) / n for n in self.grid]))


def _regular_grid(axes: list[np.ndarray]) -> np.ndarray:
    """(∏ len(axis), d) points: every combination of the axes' values."""
    return np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(axes))


def _mass(low: float, high: float) -> Parameter:
    return Parameter(name="mass", low=low, high=high, log=True, unit="GeV")


PROBLEMS = (
    Problem(
        model="zprime",
        space=ParameterSpace(
            parameters=(_mass(500.0, 6000.0), Parameter(name="g", low=0.01, high=1.0, log=True))
        ),
        grid=(12, 12),
        budget=60,
    ),
    Problem(
        model="resonance",
        options={"a": "e", "b": "mu"},
        space=ParameterSpace(
            parameters=(
                _mass(500.0, 6000.0),
                Parameter(name="g", low=0.01, high=1.0, log=True),
                Parameter(name="width", low=0.0, high=0.15),
            )
        ),
        grid=(7, 7, 5),
        budget=90,
    ),
)

METHODS = [
    ("random", "random", 5),
    ("straddle ×1", "straddle", 1),
    ("straddle ×10", "straddle", 10),
    ("misclassification ×1", "misclassification", 1),
    ("misclassification ×10", "misclassification", 10),
    ("entropy ×10", "entropy", 10),
    ("information_gain ×1", "information_gain", 1),
    ("information_gain ×10", "information_gain", 10),
]
"""Entropy ×1 is left out: the binary entropy is a monotone function of the misclassification
probability, so one-at-a-time it proposes exactly the points misclassification does (the pool
tables show identical rows); in a batch the two can differ."""
DESIGNS = [("grid", "grid"), ("lhs (one-shot)", "lhs")]
"""Model-free designs labelled by the same GP: a regular grid with k points per axis (edges
included; k = 3, 4, … up to the cap; one deterministic run), and a fresh Latin hypercube of a
quarter, a half and all of the cap per seed."""
RUNS = [*METHODS, *((label, kind, 0) for label, kind in DESIGNS)]
"""(table label, acquisition or design, batch) of every row."""


def fixed_designs(problem: Problem, kind: str, seed: int) -> list[np.ndarray]:
    """The unit-cube designs of one fixed-design baseline, smallest first, up to the cap."""
    from theory.active.design import latin_hypercube

    d, cap = problem.space.dim, problem.budget
    if kind == "grid":
        return [_regular_grid([np.linspace(0.0, 1.0, k)] * d) for k in range(3, 20) if k**d <= cap]
    return [latin_hypercube(size, d, seed=seed) for size in (cap // 4, cap // 2, cap)]


def design_reached(
    problem: Problem,
    evaluate: Callable[[np.ndarray], np.ndarray],
    reference: np.ndarray,
    truth: np.ndarray,
    *,
    kind: str,
    seed: int,
    label: str = "observed",
) -> list[float]:
    """Evaluations until each tolerance for a fixed-design baseline: the smallest design
    whose GP labels (fitted as the learners' are) misclassify at most that fraction."""
    from theory.active import ActiveOptions
    from theory.active.engine import fit_step, posterior

    opts = ActiveOptions(label=label)
    reference_unit = problem.space.to_unit(reference)
    reached = [np.inf] * len(TOLERANCES)
    for unit in fixed_designs(problem, kind, seed):
        values = evaluate(problem.space.from_unit(unit))
        fit = fit_step(unit, values, opts=opts, seed=seed, step=1)
        p_excluded, _ = posterior(fit, reference_unit, opts=opts)
        error = float(np.mean((p_excluded > 0.5) != truth))
        for j, tolerance in enumerate(TOLERANCES):
            if error <= tolerance and not np.isfinite(reached[j]):
                reached[j] = float(len(unit))
        if np.isfinite(reached[-1]):
            break
    return reached


_STATE: dict[str, Any] = {}


def _init_worker(store: str, signal_events: int) -> None:
    import torch

    from campaign.reinterpret import campaign_results
    from campaign.store import Store

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    _STATE["store"] = Store(store)
    _STATE["signal_events"] = signal_events
    _STATE["results"] = campaign_results(_STATE["store"])


def oracle(problem: Problem, points: np.ndarray, *, family: int = POINT_SEED) -> np.ndarray:
    """(k, d) points → (k, 2) observed and expected CLs (NaN where every fit failed)."""
    from campaign.loop import point_verdict

    out = []
    for row in np.atleast_2d(points):
        point = {name: float(f"{v:.10g}") for name, v in zip(problem.space.names, row, strict=True)}
        verdict = point_verdict(
            _STATE["store"],
            _STATE["results"],
            model=problem.model,
            options=problem.options,
            point=point,
            events=_STATE["signal_events"],
            seed=_point_seed(problem, point, family),
            max_fits=MAX_FITS,
            pyhf_attempts=PYHF_ATTEMPTS,
        )
        out.append(
            [
                np.nan if verdict[f"cls_{label}"] is None else float(verdict[f"cls_{label}"])
                for label in LABELS
            ]
        )
    return np.asarray(out, dtype=np.float64).reshape(-1, len(LABELS))


def _point_seed(problem: Problem, point: dict[str, float], family: int) -> int:
    text = json.dumps([family, problem.model, problem.options, point], sort_keys=True)
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


def _reference_chunk(job: tuple[int, np.ndarray, int]) -> tuple[int, np.ndarray, float]:
    index, points, family = job
    cpu = time.process_time()
    values = oracle(PROBLEMS[index], points, family=family)
    return index, values, time.process_time() - cpu


def _learn(job: dict[str, Any]) -> dict[str, Any]:
    problem = PROBLEMS[job["problem"]]
    reference = np.asarray(job["reference"])
    truth = np.asarray(job["truth"])
    calls = {"points": 0, "failed": 0}

    def evaluate(points: np.ndarray) -> np.ndarray:
        values = oracle(problem, points)
        calls["points"] += len(values)
        calls["failed"] += int(np.count_nonzero(np.isnan(values[:, 0])))
        return values

    cpu = time.process_time()
    if job["acquisition"] in ("grid", "lhs"):
        reached = design_reached(
            problem,
            evaluate,
            reference,
            truth,
            kind=job["acquisition"],
            seed=job["seed"],
            label=job["label"],
        )
    else:
        reached = box_reached(
            problem.space, evaluate, reference, truth, {**job, "budget": problem.budget}
        )
    return {
        **job["key"],
        "reached": reached,
        "cpu_s": time.process_time() - cpu,
        **calls,
    }


def _cls(scan: dict[str, Any], label: str) -> np.ndarray:
    column = LABELS.index(label)
    return np.array(
        [np.nan if row[column] is None else row[column] for row in scan["cls"]], dtype=float
    )


def isolated_labels(problem: Problem, cls: np.ndarray) -> int:
    """Reference points whose label differs from both neighbours along the mass axis (the
    first): a smooth surrogate labels such a point like its neighbours unless an evaluation
    lands next to it, so with more of them than a tolerance allows, reaching that tolerance is
    a matter of luck (observed Z′ labels of the 600k campaign: 3 isolated, 2 allowed, 3 of 15
    sequential runs reach ≤ 2 % within 60)."""
    grid = cls.reshape(problem.grid)
    label, finite = grid < 0.05, np.isfinite(grid)
    inner = label[1:-1]
    checked = finite[1:-1] & finite[:-2] & finite[2:]
    return int(np.count_nonzero(checked & (inner != label[:-2]) & (inner != label[2:])))


def campaign_store(workdir: Path, *, background_events: int = BACKGROUND_EVENTS) -> Path:
    """Run the benchmark campaign once (``lamppost run``); reuse it while its file is unchanged."""
    from campaign.testing import small_campaign, write_campaign

    document = small_campaign(
        Path("store"),
        data={
            "background": {"simulator": "builtin", "events": background_events},
            "observed": {"pseudo": True},
        },
    )
    digest = hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:12]
    base = workdir / f"campaign-{digest}"
    store = base / "store"
    if (base / "done").is_file():
        return store
    base.mkdir(parents=True, exist_ok=True)
    path = write_campaign(base / "campaign.yaml", {**document, "store": str(store)})
    t0 = time.perf_counter()
    subprocess.run(
        ["lamppost", "run", str(path)],
        check=True,
        env={**os.environ, "CI": "true"},
        stdout=subprocess.DEVNULL,
    )
    (base / "done").write_text(f"{time.perf_counter() - t0:.0f} s\n")
    return store


def reference_scans(
    store: Path,
    processes: int,
    *,
    models: Sequence[str],
    family: int = POINT_SEED,
    signal_events: int = SIGNAL_EVENTS,
) -> dict[str, dict[str, Any]]:
    """Observed and expected CLs on the reference grid of each named model (cached per
    campaign, model, signal statistics and seed family)."""
    caches = {
        model: store.parent
        / f"reference-{model}-{signal_events}-{MAX_FITS}-{PYHF_ATTEMPTS}-{family}.json"
        for model in models
    }
    scans = {m: json.loads(c.read_text()) for m, c in caches.items() if c.is_file()}
    missing = set(models) - set(scans)
    todo = [i for i, problem in enumerate(PROBLEMS) if problem.model in missing]
    grids = {index: PROBLEMS[index].reference() for index in todo}
    jobs = [
        (index, chunk, family)
        for index, points in grids.items()
        for chunk in np.array_split(points, max(1, len(points) // 4))
    ]
    values: dict[int, list[np.ndarray]] = {index: [] for index in todo}
    cpu = dict.fromkeys(todo, 0.0)
    if jobs:
        with mp.get_context("spawn").Pool(
            processes, _init_worker, (str(store), signal_events)
        ) as pool:
            for index, chunk_values, seconds in track(
                pool.imap(_reference_chunk, jobs),
                total=len(jobs),
                description=f"reference {family}",
            ):
                values[index].append(chunk_values)
                cpu[index] += seconds
    for index in todo:
        model = PROBLEMS[index].model
        scans[model] = {
            "points": grids[index].tolist(),
            "cls": [
                [None if np.isnan(v) else float(v) for v in row]
                for row in np.concatenate(values[index])
            ],
            "cpu_s": cpu[index],
        }
        caches[model].write_text(json.dumps(scans[model], allow_nan=False))
    return scans


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seeds",
        type=int,
        default=5,
        help="learner seeds; 0 stops after the reference scans and their label noise",
    )
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument(
        "--workdir", type=Path, default=Path.home() / ".cache" / "lamppost-bench" / "active"
    )
    parser.add_argument("--json", type=Path, help="write every run's result here")
    parser.add_argument(
        "--background-events",
        type=int,
        default=BACKGROUND_EVENTS,
        help="built-in background events of the benchmark campaign",
    )
    parser.add_argument(
        "--signal-events", type=int, default=SIGNAL_EVENTS, help="signal events per point"
    )
    parser.add_argument(
        "--label",
        choices=LABELS,
        default="observed",
        help="CLs that defines the truth and the learners' labels",
    )
    parser.add_argument(
        "--models",
        nargs="+",
        choices=[problem.model for problem in PROBLEMS],
        default=[problem.model for problem in PROBLEMS],
    )
    args = parser.parse_args()
    print(code_under_test(), flush=True)

    start = time.perf_counter()
    store = campaign_store(args.workdir, background_events=args.background_events)
    print(f"campaign: {store} ({(store.parent / 'done').read_text().strip()} to run)", flush=True)
    scans, replicas = (
        reference_scans(
            store,
            args.processes,
            models=args.models,
            family=family,
            signal_events=args.signal_events,
        )
        for family in (POINT_SEED, REPLICA_SEED)
    )
    jobs = []
    for index, problem in enumerate(PROBLEMS):
        if problem.model not in args.models:
            continue
        scan, replica = scans[problem.model], replicas[problem.model]
        cls = _cls(scan, args.label)
        keep = np.isfinite(cls)
        reference, truth = np.asarray(scan["points"])[keep], cls[keep] < 0.05
        again = _cls(replica, args.label)
        both = keep & np.isfinite(again)
        flips = np.count_nonzero((cls[both] < 0.05) != (again[both] < 0.05))
        print(
            f"{problem.title}, {args.label} CLs: {keep.sum()} reference points "
            f"({(~keep).sum()} failed dropped), "
            f"{truth.mean():.0%} excluded, {scan['cpu_s']:.0f} CPU-s "
            f"({scan['cpu_s'] / len(keep):.2f} s per point); with a second signal seed "
            f"{flips} of {both.sum()} labels flip ({flips / max(both.sum(), 1):.1%}); "
            f"isolated along mass {isolated_labels(problem, cls)} "
            f"(second family {isolated_labels(problem, again)})",
            flush=True,
        )
        for label, acquisition, batch in RUNS:
            for seed in range(min(1, args.seeds) if acquisition == "grid" else args.seeds):
                jobs.append(
                    {
                        "key": {"problem": problem.title, "method": label, "seed": seed},
                        "problem": index,
                        "reference": reference.tolist(),
                        "truth": truth.tolist(),
                        "acquisition": acquisition,
                        "batch": batch,
                        "seed": seed,
                        "label": args.label,
                    }
                )
    if not jobs:
        return
    jobs.sort(key=lambda j: j["seed"])  # complete seeds first: a cut-short run still compares
    done: list[dict[str, Any]] = []
    with mp.get_context("spawn").Pool(
        args.processes, _init_worker, (str(store), args.signal_events)
    ) as pool:
        for out in track(pool.imap_unordered(_learn, jobs), total=len(jobs), description="runs"):
            done.append(out)
            if args.json:
                write_runs(args.json, done)
    print(
        f"\nmachine: {platform.platform()}, {os.cpu_count()} cores, {args.processes} workers; "
        f"{len(jobs)} runs, total {time.perf_counter() - start:.0f} s wall"
    )
    for problem in (p for p in PROBLEMS if p.model in args.models):
        mine = [d for d in done if d["problem"] == problem.title]
        results = by_method(mine, [label for label, _, _ in RUNS])
        cpu = sum(d["cpu_s"] for d in mine)
        failed = sum(d["failed"] for d in mine)
        evaluated = sum(d["points"] for d in mine)
        header = (
            f"{problem.title}, {args.label} CLs, cap {problem.budget} ({cpu:.0f} CPU-s; "
            f"{failed} of {evaluated} learner evaluations failed)"
        )
        print(summarise(header, results, problem.budget))
        print(targets(results), flush=True)


if __name__ == "__main__":
    sys.exit(main())
