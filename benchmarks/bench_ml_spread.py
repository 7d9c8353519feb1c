"""How a campaign of >= 50 event classes x the four ML methods spreads over Ray workers.

Usage: ``python benchmarks/bench_ml_spread.py [--small] [--events 40000]
[--min-mc-events 300] [--methods autoencoder,cwola,cathode,supervised] [--workers 1,2]``

1. Runs the data stages of one built-in-simulation campaign once (background, pseudo-data
   with an injected Z', classification into exclusive, inclusive and jet-inclusive classes)
   into a temporary store, and prints how many classes are searchable.
2. Plans one search task per (searchable class x method), with small, fast settings (few
   epochs, small networks and trees, two folds). ``supervised`` needs a signal benchmark: a
   cocktail of six models (Z', W', q*, leptoquark, dark-matter mediator, X -> YZ), searched
   in the classes where it leaves at least ``SUPERVISED_MIN_SIGNAL`` simulated events.
3. Runs the same tasks (same inputs, no ledger, so every task runs each time) through the
   real :class:`~campaign.execute.RayExecutor` with ``num_cpus`` = each of ``--workers``,
   and prints per method: tasks, failures, median / max task wall; per run: wall, sum of task
   walls, speed-up and parallel efficiency against the first run, wall per class, and how the
   tasks spread over Ray worker processes (the ``host:pid`` each outcome records) and in
   time (time-averaged number of running tasks, from the tasks' own start and end times).

Search tasks ask for one CPU each (the campaign default), every network and flow trains with
one torch thread and every boosted fit with one OpenMP thread, so ``num_cpus`` tasks run at
once without oversubscribing the cores.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import yaml
from provenance import code_under_test

from campaign import plan
from campaign.execute import Outcome, RayExecutor
from campaign.runner import Driver
from campaign.spec import CampaignSpec, parse_spec
from campaign.status import read_classes
from searches import events as event_model
from searches import signatures
from theory.models import get_model
from theory.simulate import FastSimulator

METHODS = ("autoencoder", "cwola", "cathode", "supervised")
SIGNATURES = {"muon": {"pt": 25, "abs_eta": 2.5}, "electron": {"pt": 25, "abs_eta": 2.47}}
COCKTAIL = (
    ("zprime", {"mass": 1000.0, "g": 0.3}),
    ("wprime", {"mass": 2000.0}),
    ("qstar", {"mass": 2500.0}),
    ("leptoquark", {"mass": 1000.0, "beta": 0.5}),
    ("dm_mediator", {"m_med": 1000.0, "m_chi": 100.0}),
    ("x_yz", {"m_X": 2500.0, "m_Y": 400.0}),
)
SUPERVISED_MIN_SIGNAL = 50
"""Signal events a class needs for a supervised search (the method refuses fewer than 20)."""
LUMINOSITY_FB = 140.0
OBSERVABLE = "st"
"""Scanned by every method: defined in every class (the invariant mass of a one-object class
is that object's mass)."""
TRAINING = {"device": "cpu", "n_threads": 1, "batch_size": 256}
WEAKLY = {
    "observable": OBSERVABLE,
    "features": "objects",
    "complete_only": False,
    "n_folds": 2,
    "max_iter": 10,
    "efficiencies": [0.1],
    "width_in_sigma": 4.0,
    "window_bins": 1,
    "sideband_bins": 2,
    "min_window_events": 10,
    "min_selected": 5,
    "training": {**TRAINING, "hidden": [16], "epochs": 2},
}


def signal_cocktail(path: Path, *, events_per_model: int) -> Path:
    """Signal events of six benchmark models in one Parquet file (the supervised benchmark)."""
    simulator = FastSimulator()
    parts = [
        simulator.signal(
            get_model(name),
            point,
            n_events=events_per_model,
            luminosity_fb=LUMINOSITY_FB,
            seed=index + 1,
        )
        for index, (name, point) in enumerate(COCKTAIL)
    ]
    return event_model.write_parquet(event_model.concatenate(parts), path)


def class_counts(events: ak.Array, config: signatures.SignatureConfig) -> dict[str, int]:
    """Events per class of every view (exclusive classes and the views' unions)."""
    classified = signatures.classify(events, config)
    counts = {
        name: int(np.count_nonzero(classified.codes == index))
        for index, name in enumerate(classified.names)
    }
    for view, members in signatures.view_members(sorted(counts), config=config).items():
        counts[view] = sum(counts[m] for m in members)
    return counts


def method_options(method: str, signal_path: Path) -> dict[str, Any]:
    if method == "autoencoder":
        return {
            "observable": OBSERVABLE,
            "features": "objects",
            "n_folds": 2,
            "efficiencies": [0.1, 0.01],
            "width_in_sigma": 4.0,
            "min_selected": 20,
            "training": {**TRAINING, "hidden": [16], "latent": 2, "epochs": 2},
        }
    if method == "cwola":
        return dict(WEAKLY)
    if method == "cathode":
        flow = {"epochs": 2, "transforms": 1, "hidden": [16], "oversampling": 1}
        return {**WEAKLY, "flow": {**flow, "device": "cpu", "n_threads": 1}}
    return {
        "benchmark": "cocktail of " + ", ".join(name for name, _ in COCKTAIL),
        "signal_path": str(signal_path),
        "observable": OBSERVABLE,
        "n_trials": 2,
        "n_folds": 2,
        "training": {**TRAINING, "epochs": 3},
    }


def campaign(
    store: Path,
    *,
    events: int,
    min_mc_events: int,
    methods: Sequence[str],
    signal_path: Path,
    supervised_classes: list[str],
) -> dict[str, Any]:
    searches = []
    for method in methods:
        search: dict[str, Any] = {"method": method, **method_options(method, signal_path)}
        if method == "supervised":
            search["classes"] = supervised_classes
        searches.append(search)
    return {
        "name": "bench-ml-spread",
        "seed": 5,
        "luminosity_fb": LUMINOSITY_FB,
        "data": {
            "background": {"simulator": "builtin", "events": events},
            "observed": {
                "pseudo": True,
                "inject": {"model": "zprime", "point": dict(COCKTAIL[0][1]), "events": 3000},
            },
        },
        "signatures": {**SIGNATURES, "views": ["exclusive", "inclusive", "jet_inclusive"]},
        "observables": [OBSERVABLE],
        "class_selection": {"min_expected": 1.0, "min_mc_events": min_mc_events},
        "searches": searches,
        "execution": {"address": "local", "num_cpus": 2, "min_task_seconds": 0.5},
        "store": str(store),
    }


def prepare(args: argparse.Namespace, tmp: Path) -> tuple[Driver, list, int]:
    """Data stages once; the search tasks with their inputs; the number of searchable classes."""
    signal_path = signal_cocktail(tmp / "cocktail.parquet", events_per_model=args.signal_events)
    config = signatures.SignatureConfig.model_validate(
        {**SIGNATURES, "views": ["exclusive", "inclusive", "jet_inclusive"]}
    )
    signal_counts = class_counts(event_model.read_parquet(signal_path), config)
    supervised_classes = sorted(
        name for name, n in signal_counts.items() if n >= SUPERVISED_MIN_SIGNAL
    )
    document = campaign(
        tmp / "store",
        events=args.events,
        min_mc_events=args.min_mc_events,
        methods=args.methods,
        signal_path=signal_path,
        supervised_classes=supervised_classes,
    )
    spec: CampaignSpec = parse_spec(document)
    driver = Driver(spec, spec_text=yaml.safe_dump(document))
    background, observed, classify = plan.data_tasks(spec)
    start = time.perf_counter()
    with RayExecutor(spec.execution, store_uri=driver.store.uri) as executor:
        for task, label in ((background, "background"), (observed, "observed")):
            driver._stage(executor, [task], label)
        driver._stage(executor, [classify], "classify")
    if classify.key not in driver.finished:
        raise SystemExit(f"data stages failed: {driver.failures}")
    classes = read_classes(driver.store, driver.finished[classify.key].artifacts["classes"])
    driver._mark_searchable(classes)
    searchable = sorted(name for name, info in classes.items() if info["searchable"])
    if args.max_classes:
        keep = set(searchable[: args.max_classes])
        for name, info in classes.items():
            info["searchable"] = info["searchable"] and name in keep
        searchable = sorted(keep)
    print(
        f"data stages: {time.perf_counter() - start:.1f} s; {len(classes)} classes, "
        f"{len(searchable)} searchable (>= {args.min_mc_events} simulated events); supervised "
        f"benchmark reaches {len(set(supervised_classes) & set(searchable))} of them "
        f"(>= {SUPERVISED_MIN_SIGNAL} signal events)"
    )
    events = [classes[name]["mc_events"] for name in searchable]
    print(
        f"simulated events per searchable class: median {statistics.median(events):.0f}, "
        f"max {max(events)}, total {sum(events)}"
    )
    searches = plan.search_tasks(spec, classify, classes)
    work = [(task, {**task.payload, "inputs": driver._inputs(task)}) for task in searches]
    return driver, work, len(searchable)


def run_once(driver: Driver, work: list, cpus: int) -> tuple[float, list[Outcome]]:
    execution = driver.spec.execution.model_copy(update={"num_cpus": cpus})
    with RayExecutor(execution, store_uri=driver.store.uri) as executor:
        start = time.perf_counter()
        outcomes = list(executor.run(work, description=f"{cpus} worker(s)"))
        wall = time.perf_counter() - start
    driver.store.clear_staging()
    return wall, outcomes


def busy_average(outcomes: Sequence[Outcome]) -> float:
    """Time-averaged number of running tasks between the first start and the last end."""
    span = max(o.finished_at for o in outcomes) - min(o.started_at for o in outcomes)
    return sum(o.finished_at - o.started_at for o in outcomes) / span if span > 0 else 0.0


def report(runs: dict[int, tuple[float, list[Outcome]]], n_classes: int) -> None:
    first = min(runs)
    print("\nper method (task wall, s)")
    print(
        f"{'workers':>8} {'method':<12}{'tasks':>6}{'failed':>7}{'median':>8}{'max':>8}{'sum':>9}"
    )
    for cpus, (_, outcomes) in runs.items():
        by_method: dict[str, list[Outcome]] = defaultdict(list)
        for outcome in outcomes:
            by_method[outcome.task.payload["method"]].append(outcome)
        for method in METHODS:
            if method not in by_method:
                continue
            seconds = [o.finished_at - o.started_at for o in by_method[method]]
            failed = sum(o.status != "done" for o in by_method[method])
            print(
                f"{cpus:>8} {method:<12}{len(seconds):>6}{failed:>7}"
                f"{statistics.median(seconds):>8.2f}{max(seconds):>8.2f}{sum(seconds):>9.1f}"
            )

    print("\nper run")
    print(
        f"{'workers':>8}{'tasks':>7}{'wall [s]':>10}{'sum task [s]':>14}{'speed-up':>10}"
        f"{'efficiency':>12}{'wall/class [s]':>16}{'running (avg)':>15}"
    )
    for cpus, (wall, outcomes) in runs.items():
        total = sum(o.finished_at - o.started_at for o in outcomes)
        speedup = runs[first][0] / wall
        print(
            f"{cpus:>8}{len(outcomes):>7}{wall:>10.1f}{total:>14.1f}{speedup:>10.2f}"
            f"{speedup / (cpus / first):>12.0%}{wall / n_classes:>16.2f}"
            f"{busy_average(outcomes):>15.2f}"
        )

    print("\nper class, all methods (sum of its task walls, s)")
    for cpus, (_, outcomes) in runs.items():
        per_class: dict[str, float] = defaultdict(float)
        for outcome in outcomes:
            per_class[outcome.task.payload["event_class"]] += (
                outcome.finished_at - outcome.started_at
            )
        slowest = max(per_class, key=per_class.__getitem__)
        print(
            f"{cpus} worker(s): median {statistics.median(per_class.values()):.2f}, "
            f"mean {statistics.mean(per_class.values()):.2f}, "
            f"max {per_class[slowest]:.2f} ({slowest})"
        )

    print("\nspread over Ray worker processes")
    print(f"{'workers':>8} {'worker':<28}{'tasks':>6}{'busy [s]':>10}{'first task [s]':>16}")
    for cpus, (wall, outcomes) in runs.items():
        by_worker: dict[str, list[Outcome]] = defaultdict(list)
        for outcome in outcomes:
            by_worker[outcome.worker].append(outcome)
        for worker, done in sorted(by_worker.items()):
            busy = sum(o.finished_at - o.started_at for o in done)
            opening = min(done, key=lambda o: o.started_at)
            print(
                f"{cpus:>8} {worker:<28}{len(done):>6}{busy:>10.1f}"
                f"{opening.finished_at - opening.started_at:>16.2f}"
            )
        idle = cpus * wall - sum(o.finished_at - o.started_at for o in outcomes)
        print(f"{cpus:>8} {'idle CPU-seconds':<28}{'':>6}{idle:>10.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--min-mc-events", type=int, default=300)
    parser.add_argument("--signal-events", type=int, default=4000, help="per cocktail model")
    parser.add_argument("--max-classes", type=int, default=0, help="0: every searchable class")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--workers", default="1,2", help="num_cpus of each run")
    parser.add_argument(
        "--small", action="store_true", help="a quick check: 12 classes of 10,000 events"
    )
    args = parser.parse_args()
    print(code_under_test(), flush=True)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(args.methods) - set(METHODS))
    if unknown:
        parser.error(f"--methods: {', '.join(unknown)} not allowed; allowed: {', '.join(METHODS)}")
    if args.small:
        args.events, args.min_mc_events, args.max_classes = 10_000, 100, 12
        args.signal_events = 1000
    workers = [int(w) for w in args.workers.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="lamppost-bench-ml-"))
    driver, work, n_classes = prepare(args, tmp)
    counts = defaultdict(int)
    for task, _ in work:
        counts[task.payload["method"]] += 1
    print(f"{len(work)} search tasks: " + ", ".join(f"{m} {n}" for m, n in counts.items()))
    runs = {cpus: run_once(driver, work, cpus) for cpus in workers}
    report(runs, n_classes)
    failures = {
        f"{o.task.name}: {o.error}" for _, outcomes in runs.values() for o in outcomes if o.error
    }
    if failures:
        print(f"\n{len(failures)} failed task(s), e.g.:")
        for line in sorted(failures)[:8]:
            print(f"  {line[:160]}")


if __name__ == "__main__":
    main()
