"""The only module that talks to Ray.

Tasks become Ray remote calls with their CPU/GPU requests. Small tasks are batched so that
Ray's per-task overhead stays a small fraction of the work; Ray retries tasks whose worker
died; an exception inside a task is caught on the worker and comes back as that task's
failure (with its traceback) so the campaign goes on; Ctrl-C cancels whatever is in flight.
By default a local Ray instance is started with the campaign's resource caps; any Ray address
(a cluster head, ``ray://``) can be given instead.
"""

from __future__ import annotations

import os
import socket
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import ray
from rich.progress import TextColumn

from campaign.plan import Task
from campaign.spec import ExecutionSpec
from campaign.tasks import run_task
from searches.progress import progress_bar


@dataclass(frozen=True)
class Outcome:
    """What came back from one task execution."""

    task: Task
    status: str
    execution_id: str
    started_at: float
    finished_at: float
    worker: str
    output: dict[str, Any] | None = None
    error: str | None = None
    traceback: str | None = None


def _execute_batch(
    batch: Sequence[tuple[Task, dict[str, Any]]], store_uri: str
) -> list[dict[str, Any]]:
    """Run tasks one after another on a worker, catching each task's own exceptions."""
    outcomes = []
    worker = f"{socket.gethostname()}:{os.getpid()}"
    for task, payload in batch:
        execution_id = uuid.uuid4().hex
        started = time.time()
        try:
            output = run_task(
                task.kind, payload, store_uri=store_uri, staging=f"staging/{execution_id}"
            )
            outcomes.append({"status": "done", "output": output, "error": None, "traceback": None})
        except Exception as err:
            outcomes.append(
                {
                    "status": "failed",
                    "output": None,
                    "error": f"{type(err).__name__}: {err}",
                    "traceback": traceback.format_exc(),
                }
            )
        outcomes[-1].update(
            execution_id=execution_id, started_at=started, finished_at=time.time(), worker=worker
        )
    return outcomes


_remote_batch = ray.remote(_execute_batch)


def init_ray(execution: ExecutionSpec) -> bool:
    """Connect to (or start) Ray; returns True when this call started it.

    ``address: local`` starts a private Ray with the campaign's caps, unless ``RAY_ADDRESS``
    is set: Ray Jobs (KubeRay) and the Slurm launcher set it for the driver, and the campaign
    must then join that cluster rather than start its own.
    """
    if ray.is_initialized():
        return False
    common = {"log_to_driver": False, "configure_logging": True, "logging_level": "warning"}
    if execution.address == "local" and os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], **common)
    elif execution.address == "local":
        ray.init(
            address="local",
            num_cpus=execution.num_cpus,
            num_gpus=execution.num_gpus,
            include_dashboard=False,
            **common,
        )
    else:
        ray.init(address=execution.address, **common)
    return True


def shutdown_ray() -> None:
    ray.shutdown()


def cluster_resources() -> dict[str, float]:
    return dict(ray.cluster_resources())


class RayExecutor:
    """Runs tasks on Ray and yields their outcomes as they finish.

    Args:
        execution: the campaign's execution settings (address, caps, retries, batching).
        store_uri: where tasks read inputs and stage outputs.
    """

    def __init__(self, execution: ExecutionSpec, *, store_uri: str) -> None:
        self.execution = execution
        self.store_uri = store_uri
        self._started = False

    def __enter__(self) -> RayExecutor:
        self._started = init_ray(self.execution)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._started:
            shutdown_ray()

    def batches(
        self, tasks: Sequence[tuple[Task, dict[str, Any]]]
    ) -> list[list[tuple[Task, dict[str, Any]]]]:
        """Group tasks with equal resource requests into batches of at least the target cost.

        A task's ``cost`` is in units of about a second of work; tasks are batched until a
        batch reaches ``execution.min_task_seconds``, but never so coarsely that there are
        fewer batches than CPUs to keep busy.
        """
        target = self.execution.min_task_seconds
        workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        groups: dict[tuple[float, float], list[tuple[Task, dict[str, Any]]]] = {}
        for item in tasks:
            groups.setdefault((item[0].cpus, item[0].gpus), []).append(item)
        batches = []
        for items in groups.values():
            total = sum(task.cost for task, _ in items)
            limit = max(target, min(total / workers, 4 * target)) if target > 0 else 0
            current: list[tuple[Task, dict[str, Any]]] = []
            cost = 0.0
            for item in sorted(items, key=lambda x: -x[0].cost):
                current.append(item)
                cost += item[0].cost
                if cost >= limit:
                    batches.append(current)
                    current, cost = [], 0.0
            if current:
                batches.append(current)
        return batches

    def run(
        self,
        tasks: Sequence[tuple[Task, dict[str, Any]]],
        *,
        description: str,
        on_outcome: Callable[[Outcome], None] | None = None,
    ) -> Iterator[Outcome]:
        """Submit every task (batched) and yield outcomes as batches finish.

        ``on_outcome`` runs on the driver for each outcome before it is yielded; it is where
        the store records the task (the driver is the single writer).
        """
        if not tasks:
            return
        pending = {}
        for batch in self.batches(tasks):
            task = batch[0][0]
            ref = _remote_batch.options(
                num_cpus=task.cpus,
                num_gpus=task.gpus,
                max_retries=self.execution.retries,
                retry_exceptions=False,
            ).remote(batch, self.store_uri)
            pending[ref] = batch
        failures = 0
        with progress_bar(TextColumn("failed: {task.fields[failures]}")) as progress:
            bar = progress.add_task(description, total=len(tasks), failures=0)
            try:
                while pending:
                    ready, _ = ray.wait(list(pending), num_returns=1)
                    for ref in ready:
                        batch = pending.pop(ref)
                        for outcome in self._collect(ref, batch):
                            failures += outcome.status != "done"
                            if on_outcome is not None:
                                on_outcome(outcome)
                            progress.update(bar, advance=1, failures=failures)
                            yield outcome
            except BaseException:
                for ref in pending:
                    ray.cancel(ref, force=True)
                raise

    def _collect(
        self, ref: ray.ObjectRef, batch: list[tuple[Task, dict[str, Any]]]
    ) -> list[Outcome]:
        try:
            raw = ray.get(ref)
        except ray.exceptions.RayError as err:
            now = time.time()
            return [
                Outcome(
                    task=task,
                    status="failed",
                    execution_id=uuid.uuid4().hex,
                    started_at=now,
                    finished_at=now,
                    worker="?",
                    error=f"{type(err).__name__}: worker lost after retries",
                    traceback=str(err),
                )
                for task, _ in batch
            ]
        return [Outcome(task=task, **result) for (task, _), result in zip(batch, raw, strict=True)]
