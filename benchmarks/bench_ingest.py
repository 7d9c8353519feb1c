"""Ingest rate (ROOT → classified Parquet, events/s) and peak memory versus the number of files.

Replicates the real CMS dimuon skim ``cms-opendata/zmumu_skim.root`` (83,343 events, 3.7 MB)
into a temporary directory ``--copies`` times and ingests growing subsets of the copies with
:func:`campaign.ingest.ingest` (default signature configuration, default chunk size). Each
configuration runs in a fresh Python process, so its peak resident memory is its own: ``ru_maxrss``
of the driver, and the sampled (every 50 ms, from /proc) total of the driver plus its worker
processes for the ``processes`` scheduler. For contrast,
the "load all" rows read the same files into memory at once with ``read_root`` and keep them,
which is what chunked ingest avoids: its peak memory should stay flat as files are added.

The "campaign" rows read the same files the way ``lamppost run`` does (:mod:`campaign.inputs`):
a campaign with the copies as observed files runs its ``inspect`` and ``read`` tasks (one chunk
per file), the gather and the classification on a private local Ray with ``num_cpus`` = workers;
"seconds" counts from Ray being up (worker start-up and imports included) to the classification
being recorded, and the memory columns include Ray's own processes.

Usage: ``python benchmarks/bench_ingest.py [--copies 30] [--steps 5 15 30]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from fresh_process import peak_rss_mb, run_fresh
from provenance import code_under_test

SOURCE = "cms-opendata/zmumu_skim.root"


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _descendants(pid: int) -> list[int]:
    found = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(c) for c in children.read_text().split()]
        except OSError:
            continue
    return found + [d for c in found for d in _descendants(c)]


class TreeSampler:
    """Samples the resident memory of this process and its descendants (Linux /proc)."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        me = os.getpid()
        while not self._stop.is_set():
            total = _rss_kb(me) + sum(_rss_kb(p) for p in _descendants(me))
            self.peak_kb = max(self.peak_kb, total)
            self._stop.wait(self.interval)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _campaign_read(files: list[str], workers: int, out_dir: str) -> tuple[int, float]:
    """Read ``files`` as a campaign's observed data; returns (events, seconds after Ray start)."""
    from campaign import plan
    from campaign.execute import RayExecutor
    from campaign.runner import Driver
    from campaign.spec import parse_spec
    from campaign.status import read_classes
    from searches.signatures import SignatureConfig

    document = {
        "name": "bench-ingest",
        "luminosity_fb": 11.6,
        "data": {
            "background": None,
            "observed": {
                "files": [{"path": f, "preset": "dimuon", "label": "zmumu"} for f in files]
            },
        },
        "signatures": SignatureConfig().model_dump(mode="json"),
        "observables": ["m_mu_mu"],
        "searches": [{"method": "bumphunt", "classes": ["2mu"]}],
        "execution": {"address": "local", "num_cpus": workers, "min_task_seconds": 0},
        "store": str(Path(out_dir) / "store"),
    }
    spec = parse_spec(document)
    driver = Driver(spec, spec_text=json.dumps(document))
    with RayExecutor(spec.execution, store_uri=driver.store.uri) as executor:
        start = time.perf_counter()
        files_read = driver._read_files(executor)
        if files_read is None:
            raise RuntimeError(f"reading failed: {driver.failures}")
        background, observed, classify = plan.data_tasks(spec, files_read)
        for task in (background, observed, classify):
            driver._stage(executor, [task], task.name)
        seconds = time.perf_counter() - start
    classes = read_classes(driver.store, driver.finished[classify.key].artifacts["classes"])
    events = sum(int(c["observed"]) for name, c in classes.items() if c["members"] == [name])
    return events, seconds


def _run_one(mode: str, files: list[str], workers: int, out_dir: str) -> dict:
    """One measurement in this (fresh) process."""
    from campaign.ingest import ingest
    from searches.readers import Sample, read_root
    from searches.signatures import SignatureConfig

    baseline = peak_rss_mb()
    sampler = TreeSampler().__enter__()
    start = time.perf_counter()
    if mode == "campaign":
        events, seconds = _campaign_read(files, workers, out_dir)
    elif mode == "load-all":
        kept = [read_root(f, preset="dimuon") for f in files]
        events = sum(len(k) for k in kept)
    else:
        sample = Sample(name="zmumu", paths=files, preset="dimuon", kind="data")
        report = ingest(
            [sample],
            out_dir=out_dir,
            signatures=SignatureConfig(),
            luminosity_fb=11.6,
            scheduler=mode,
            num_workers=workers,
        )
        events = report.total_events
    if mode != "campaign":
        seconds = time.perf_counter() - start
    sampler.__exit__()
    return {
        "mode": mode,
        "workers": workers,
        "files": len(files),
        "events": events,
        "seconds": seconds,
        "events_per_s": events / seconds,
        "import_rss_mb": baseline,
        "peak_rss_mb": peak_rss_mb(),
        "peak_tree_mb": sampler.peak_kb / 1024.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=30)
    parser.add_argument("--steps", type=int, nargs="+", default=[5, 15, 30])
    parser.add_argument("--worker-files", type=int, default=None, help="files for 1 vs 2 workers")
    parser.add_argument("--only", nargs="+", help="run only these modes (e.g. campaign)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.one:
        spec = json.loads(args.one)
        print(json.dumps(_run_one(spec["mode"], spec["files"], spec["workers"], spec["out"])))
        return
    print(code_under_test(), flush=True)

    from searches.datapath import missing_reason, shared_data_dir
    from searches.progress import track

    data = shared_data_dir()
    if data is None:
        sys.exit(f"shared data not available: {missing_reason()}")
    with tempfile.TemporaryDirectory(prefix="lamppost-bench-ingest-") as tmp:
        copies = []
        for i in track(range(args.copies), description="replicating input"):
            target = Path(tmp) / f"zmumu_{i:03d}.root"
            shutil.copyfile(data / SOURCE, target)
            copies.append(str(target))
        worker_files = args.worker_files or max(args.steps)
        plan = [("threads", 1, n) for n in args.steps]
        plan += [("threads", 2, worker_files), ("processes", 1, worker_files)]
        plan += [("processes", 2, worker_files)]
        plan += [("campaign", 1, worker_files), ("campaign", 2, worker_files)]
        plan += [("load-all", 1, n) for n in args.steps]
        if args.only:
            plan = [step for step in plan if step[0] in args.only]
        rows = []
        for mode, workers, n in track(plan, description="ingest configurations"):
            out = Path(tmp) / f"out-{mode}-{workers}-{n}"
            spec = {"mode": mode, "workers": workers, "files": copies[:n], "out": str(out)}
            rows.append(run_fresh(__file__, spec))
            shutil.rmtree(out, ignore_errors=True)

    source_mb = (data / SOURCE).stat().st_size / 1e6
    print(f"input: {SOURCE} ({source_mb:.1f} MB, 83,343 events) replicated {args.copies}x")
    header = f"{'mode':<10} {'workers':>7} {'files':>5} {'events':>10} {'seconds':>8} "
    header += f"{'events/s':>10} {'peak RSS MB':>12} {'with workers':>12}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['mode']:<10} {r['workers']:>7} {r['files']:>5} {r['events']:>10,} "
            f"{r['seconds']:>8.1f} {r['events_per_s']:>10,.0f} {r['peak_rss_mb']:>12.0f} "
            f"{r['peak_tree_mb']:>12.0f}"
        )


if __name__ == "__main__":
    main()
