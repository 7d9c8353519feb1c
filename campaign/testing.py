"""Test doubles for campaigns, shipped with the package (as BoTorch ships test functions).

Small campaign files that run in seconds, a CLI runner that starts ``lamppost`` as a real
subprocess (outside the source tree, so the installed package is what runs), and a
multi-node Ray cluster on one machine built from separate ``ray start`` process trees.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import yaml

from campaign.store import Store

LAMPPOST = [sys.executable, "-c", "from campaign.cli import main; main()"]
RAY = [sys.executable, "-c", "import sys; from ray.scripts.scripts import main; sys.exit(main())"]
BuildOnce = Callable[[str, Callable[[Path], None]], Path]
"""The test fixture ``built_once(name, build)``: a private copy of a directory built once per run."""


REGEN_GOLDEN = os.environ.get("LAMPPOST_REGEN_GOLDEN") == "1"
"""Tests with golden files rewrite them instead of comparing (``LAMPPOST_REGEN_GOLDEN=1``)."""

BAD_SUBMIT_VALUES: dict[str, Any] = {
    "image": "lamppost latest",
    "namespace": "Physics",
    "env_secret": "Bad_Name",
    "time_limit": "one day",
    "partition": "gpu queue",
    "account": "hep group",
    "setup": 5,
}
"""A value outside the allowed ones for each option of ``campaign.submit.FLAGS`` (``setup``
takes any text, so only a non-text value is bad, which the command line cannot give)."""


def small_campaign(store: Path, **overrides: Any) -> dict[str, Any]:
    """A campaign of a few dozen searches on the built-in simulator (tens of seconds)."""
    document: dict[str, Any] = {
        "name": "small",
        "seed": 11,
        "luminosity_fb": 140,
        "data": {
            "background": {"simulator": "builtin", "events": 60000},
            "observed": {
                "pseudo": True,
                "inject": {"model": "zprime", "point": {"mass": 1000, "g": 0.3}, "events": 5000},
            },
        },
        "signatures": {
            "muon": {"pt": 25, "abs_eta": 2.5},
            "electron": {"pt": 25, "abs_eta": 2.47},
            "views": ["exclusive", "jet_inclusive"],
        },
        "observables": ["st", "minv"],
        "class_selection": {"min_expected": 1.0, "min_mc_events": 50},
        "searches": [
            {"method": "scan", "pseudo_rounds": 300, "bin_width_sigma": 2, "bin_min_expected": 1}
        ],
        "execution": {"address": "local", "num_cpus": 2, "min_task_seconds": 0},
        "store": str(store),
    }
    document.update(overrides)
    return document


def write_campaign(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(document))
    return path


def lamppost(
    *args: str, env: dict[str, str] | None = None, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    """Run the ``lamppost`` CLI in a subprocess (from a neutral working directory)."""
    return subprocess.run(
        [*LAMPPOST, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "CI": "1", **(env or {})},
        cwd=tempfile.gettempdir(),
        check=False,
    )


def start_lamppost(
    *args: str, env: dict[str, str] | None = None, stderr: int | IO[Any] | None = None
) -> subprocess.Popen[bytes]:
    """Start the CLI in its own process group (so a test can SIGKILL the whole tree)."""
    return subprocess.Popen(
        [*LAMPPOST, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL if stderr is None else stderr,
        env={**os.environ, "CI": "1", **(env or {})},
        cwd=tempfile.gettempdir(),
        start_new_session=True,
    )


def kill_tree(process: subprocess.Popen[Any]) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def search_results(store: Path) -> dict[str, list[dict[str, Any]]]:
    """The stored search results of a campaign, by task name."""
    results = {}
    for record in Store(store).records():
        if record.kind == "search" and record.status == "done":
            results[record.name] = json.loads((store / record.artifacts["results"]).read_text())
    return results


def wait_for_tasks(
    store: Path, *, kind: str, count: int, process: subprocess.Popen[Any], timeout: float = 600
) -> None:
    """Block until ``count`` tasks of ``kind`` are in the ledger (while ``process`` runs)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (store / "ledger").exists():
            done = [r for r in Store(store).records() if r.kind == kind]
            if len(done) >= count:
                return
        if process.poll() is not None:
            raise RuntimeError("the campaign ended before the interruption")
        time.sleep(0.05)
    raise TimeoutError(f"fewer than {count} {kind} tasks finished within {timeout} s")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalCluster:
    """A Ray head (no CPUs, so work lands on workers) and worker nodes on 127.0.0.1.

    Every node is its own ``ray start --block`` process group, so killing one is a node
    loss. Token authentication is on, with a fresh token shared by nodes and drivers through
    :attr:`env`.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(16),
            "RAY_USAGE_STATS_ENABLED": "0",
            "CI": "1",
        }
        self.nodes: dict[str, subprocess.Popen[bytes]] = {}

    def _start(self, name: str, arguments: list[str]) -> None:
        with open(self.directory / f"{name}.log", "wb") as log:
            self.nodes[name] = subprocess.Popen(
                [*RAY, "start", "--block", "--node-ip-address=127.0.0.1", *arguments],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=tempfile.gettempdir(),
                start_new_session=True,
            )

    def start(self, *, workers: int) -> None:
        self._start(
            "head",
            [
                "--head",
                f"--port={self.port}",
                "--num-cpus=0",
                "--include-dashboard=false",
                "--object-store-memory=200000000",
            ],
        )
        self.wait(cpus=0)
        for index in range(workers):
            ports = [_free_port() for _ in range(5)]
            self._start(
                f"worker{index}",
                [
                    f"--address={self.address}",
                    "--num-cpus=1",
                    "--object-store-memory=200000000",
                    f"--node-manager-port={ports[0]}",
                    f"--object-manager-port={ports[1]}",
                    f"--dashboard-agent-listen-port={ports[2]}",
                    f"--metrics-export-port={ports[3]}",
                    f"--runtime-env-agent-port={ports[4]}",
                    f"--min-worker-port={20000 + 1000 * index}",
                    f"--max-worker-port={20999 + 1000 * index}",
                ],
            )
            self.wait(cpus=index + 1)

    def wait(self, *, cpus: int, timeout: float = 180) -> None:
        probe = (
            f"import ray; ray.init(address={self.address!r}, logging_level='error');"
            "print('lamppost-cpus', int(ray.cluster_resources().get('CPU', 0)))"
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = subprocess.run(
                [sys.executable, "-c", probe],
                capture_output=True,
                text=True,
                env=self.env,
                cwd=tempfile.gettempdir(),
                timeout=120,
                check=False,
            )
            counts = [
                int(line.split()[1])
                for line in result.stdout.splitlines()
                if line.startswith("lamppost-cpus ")
            ]
            if result.returncode == 0 and counts and counts[-1] >= cpus:
                return
            time.sleep(1)
        raise TimeoutError(f"Ray cluster at {self.address} did not reach {cpus} CPUs")

    def kill(self, name: str) -> None:
        """SIGKILL a node's whole process tree (raylet, object store, workers)."""
        kill_tree(self.nodes[name])

    def stop(self) -> None:
        for process in self.nodes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.nodes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                kill_tree(process)
