"""Campaign engine: searches per second with 1 vs 2 Ray workers, Ray overhead, demo wall time.

Usage: ``python benchmarks/bench_campaign.py [--events 200000] [--rounds 2000]``

1. Runs the data stages of a campaign once (simulate, classify) into a temporary store.
2. Times the same search tasks (a) in-process, one after another (no Ray), (b) through the
   Ray executor with 1 CPU, (c) with 2 CPUs. Overhead per task = (b − a) / tasks.
3. Times ``lamppost demo`` end to end in a subprocess.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from provenance import code_under_test

from campaign import plan
from campaign.execute import RayExecutor
from campaign.runner import Driver
from campaign.spec import parse_spec
from campaign.status import read_classes
from campaign.tasks import run_task


def campaign(store: Path, *, events: int, rounds: int, cpus: int) -> dict:
    return {
        "name": "bench",
        "seed": 5,
        "data": {"background": {"simulator": "builtin", "events": events}},
        "signatures": {
            "muon": {"pt": 25, "abs_eta": 2.5},
            "electron": {"pt": 25, "abs_eta": 2.47},
            "views": ["exclusive", "jet_inclusive"],
        },
        "observables": ["st", "minv", "met"],
        "class_selection": {"min_expected": 10, "min_mc_events": 300},
        "searches": [
            {"method": "scan", "pseudo_rounds": rounds, "bin_width_sigma": 2, "bin_min_expected": 1}
        ],
        "execution": {"address": "local", "num_cpus": cpus, "min_task_seconds": 0.5},
        "store": str(store),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--skip-demo", action="store_true")
    args = parser.parse_args()
    print(code_under_test(), flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="lamppost-bench-"))
    document = campaign(tmp / "store", events=args.events, rounds=args.rounds, cpus=2)
    spec = parse_spec(document)
    driver = Driver(spec, spec_text=yaml.safe_dump(document))
    background, observed, classify = plan.data_tasks(spec)
    with RayExecutor(spec.execution, store_uri=driver.store.uri) as executor:
        driver._stage(executor, [background], "background")
        driver._stage(executor, [observed], "observed")
        driver._stage(executor, [classify], "classify")
    classes = read_classes(driver.store, driver.finished[classify.key].artifacts["classes"])
    driver._mark_searchable(classes)
    searches = plan.search_tasks(spec, classify, classes)
    work = [(task, {**task.payload, "inputs": driver._inputs(task)}) for task in searches]
    print(f"{len(work)} search tasks ({args.rounds} pseudo-rounds each)")

    start = time.perf_counter()
    for task, payload in work:
        run_task(task.kind, payload, store_uri=driver.store.uri, staging="staging/bench")
    in_process = time.perf_counter() - start

    rows = [("in-process, no Ray", 1, in_process)]
    for cpus in (1, 2):
        execution = spec.execution.model_copy(update={"num_cpus": cpus})
        with RayExecutor(execution, store_uri=driver.store.uri) as executor:
            start = time.perf_counter()
            outcomes = list(executor.run(work, description=f"{cpus} worker(s)"))
            rows.append((f"Ray, {cpus} worker(s)", cpus, time.perf_counter() - start))
            assert all(o.status == "done" for o in outcomes), [o.error for o in outcomes]

    print(f"\n{'mode':<24}{'workers':>8}{'wall [s]':>10}{'searches/s':>12}{'speed-up':>10}")
    for label, cpus, wall in rows:
        print(
            f"{label:<24}{cpus:>8}{wall:>10.2f}{len(work) / wall:>12.2f}{rows[1][2] / wall:>10.2f}"
        )
    overhead = (rows[1][2] - in_process) / len(work)
    print(f"\nRay overhead per search task (1 worker vs in-process): {overhead * 1e3:.1f} ms")
    print(f"overhead fraction: {overhead / (in_process / len(work)):.1%}")

    if not args.skip_demo:
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "campaign.cli", "demo", "--dir", str(tmp / "demo")],
            check=True,
            env={**os.environ, "CI": "1"},
            capture_output=True,
        )
        print(f"\nlamppost demo wall time: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
