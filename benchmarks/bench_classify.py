"""Classification rate: exclusive event classes per second, one process.

Builds synthetic events straight from numpy (Poisson multiplicities, falling pT spectra,
uniform η/φ, 20 % b-tags) so that the measurement is of :mod:`searches.signatures` alone, then
times ``exclusive_class_names`` (the full path: cuts, jet cap, key packing, names per event),
also on a shuffled slice of the events (an indexed layout, the general flattening path),
with ΔR overlap removal, ``classify`` (codes only) and ``populated_classes`` (all three
views). Best of ``--repeat``, wall-clock and CPU time.

Usage: ``python benchmarks/bench_classify.py [--events 2000000] [--repeat 3] [--seed 1]``
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import numpy as np
from provenance import code_under_test

from searches.events import make_collection, make_events
from searches.signatures import (
    SignatureConfig,
    classify,
    exclusive_class_names,
    populated_classes,
)

MEAN_OBJECTS = {"electron": 0.4, "muon": 0.4, "tau": 0.15, "photon": 0.2, "jet": 3.5}


def synthetic_events(n_events: int, *, seed: int):
    """Events with realistic-looking multiplicities and kinematics, shape ``(n_events,)``."""
    rng = np.random.default_rng(seed)
    collections = {}
    for name, mean in MEAN_OBJECTS.items():
        counts = rng.poisson(mean, n_events)
        n = int(counts.sum())
        pt = (20.0 + rng.exponential(40.0, n)).astype(np.float32)
        event_of = np.repeat(np.arange(n_events), counts)
        pt = pt[np.lexsort((-pt, event_of))]
        columns = {
            "pt": pt,
            "eta": rng.uniform(-3.0, 3.0, n).astype(np.float32),
            "phi": rng.uniform(-np.pi, np.pi, n).astype(np.float32),
            "mass": np.zeros(n, dtype=np.float32),
        }
        if name == "jet":
            columns["btag"] = rng.random(n) < 0.2
        elif name != "photon":
            columns["charge"] = rng.choice(np.array([-1, 1], dtype=np.int8), n)
        collections[name] = make_collection(counts, **columns)
    met = rng.exponential(60.0, n_events)
    return make_events(
        collections,
        met=met,
        met_phi=rng.uniform(-np.pi, np.pi, n_events),
        weight=np.ones(n_events),
    )


def best_time(function: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Best wall-clock and best CPU time (this process) of ``repeat`` calls, seconds.

    CPU time is what one core spends; on a machine shared with other jobs it is the fairer
    measure of events/s/core, wall time the one a user waits for.
    """
    walls, cpus = [], []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        function()
        cpus.append(time.process_time() - cpu)
        walls.append(time.perf_counter() - wall)
    return min(walls), min(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(code_under_test(), flush=True)

    events = synthetic_events(args.events, seed=args.seed)
    default = SignatureConfig()
    cleaned = SignatureConfig(overlap_dr=0.4)
    shuffled = events[np.random.default_rng(args.seed).permutation(args.events)]
    cases = [
        ("exclusive_class_names", lambda: exclusive_class_names(events, default)),
        ("exclusive_class_names, shuffled slice", lambda: exclusive_class_names(shuffled, default)),
        ("classify (codes only)", lambda: classify(events, default)),
        ("exclusive_class_names, ΔR<0.4 cleaning", lambda: exclusive_class_names(events, cleaned)),
        ("populated_classes (3 views)", lambda: populated_classes(events, default)),
    ]
    n_classes = len(classify(events, default).names)
    print(
        f"{args.events:,} events, {n_classes} exclusive classes, best of {args.repeat}, "
        f"pid {os.getpid()}, 1 process"
    )
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    header = f"{'operation':42s} {'wall / s':>9s} {'cpu / s':>8s} {'events/s (wall)':>16s}"
    print(f"{header} {'events/s/core (cpu)':>20s}")
    for label, function in cases:
        wall, cpu = best_time(function, args.repeat)
        print(
            f"{label:42s} {wall:9.3f} {cpu:8.3f} {args.events / wall:16.3e} "
            f"{args.events / cpu:20.3e}"
        )


if __name__ == "__main__":
    main()
