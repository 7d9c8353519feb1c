"""The same campaign on the single-node default vs a 3-node local Ray cluster (overhead).

Usage: ``python benchmarks/bench_cluster.py [--events 60000] [--rounds 300]``

The cluster is a head (no CPUs) and two 1-CPU worker nodes, each its own ``ray start``
process tree on this machine (:class:`campaign.testing.LocalCluster`), so both set-ups have
two CPUs for tasks; the difference is the cost of the multi-node machinery.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from provenance import code_under_test

from campaign.testing import LocalCluster, lamppost, small_campaign, write_campaign


def timed_run(file: Path, env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    result = lamppost("run", str(file), env=env)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    print(code_under_test(), flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="lamppost-cluster-bench-"))

    def campaign(name: str, execution: dict) -> Path:
        document = small_campaign(tmp / name)
        document["data"]["background"]["events"] = args.events
        document["searches"][0]["pseudo_rounds"] = args.rounds
        document["execution"] = execution
        return write_campaign(tmp / f"{name}.yaml", document)

    local = timed_run(campaign("local", {"address": "local", "num_cpus": 2}))
    cluster = LocalCluster(tmp)
    try:
        start = time.perf_counter()
        cluster.start(workers=2)
        startup = time.perf_counter() - start
        remote = timed_run(campaign("cluster", {"address": cluster.address}), env=cluster.env)
    finally:
        cluster.stop()
    print(f"{'set-up':<34}{'wall [s]':>10}")
    print(f"{'single node (ray.init, 2 CPUs)':<34}{local:>10.1f}")
    print(f"{'3-node local cluster (2 CPUs)':<34}{remote:>10.1f}")
    print(f"{'cluster start-up (not included)':<34}{startup:>10.1f}")
    print(f"overhead of the cluster: {remote / local - 1:+.0%}")


if __name__ == "__main__":
    main()
