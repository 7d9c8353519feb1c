"""Drive a campaign through its stages, recording every task in the store.

The runner is the driver: it plans, hands tasks to the executor, and is the single writer of
the ledger. Finished tasks (by content key) are skipped, so running the same campaign file
again, or ``lamppost resume`` after a crash, continues exactly where the ledger stops.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from campaign import plan
from campaign.execute import Outcome, RayExecutor
from campaign.spec import CampaignSpec
from campaign.status import read_classes, read_global
from campaign.store import Store, TaskRecord


@dataclass(frozen=True)
class CampaignSummary:
    """How a run ended: tasks done, failed and skipped (already finished before)."""

    store: str
    done: int
    failed: int
    skipped: int
    failures: tuple[str, ...] = ()
    global_result: dict[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return 0 if self.failed == 0 else 1


class Driver:
    """Runs one campaign against one store."""

    def __init__(self, spec: CampaignSpec, *, spec_text: str) -> None:
        self.spec = spec
        self.store = Store(spec.store)
        self.store.initialise(spec_text=spec_text, spec_json=spec.model_dump(mode="json"))
        self.finished = self.store.finished()
        self.done = 0
        self.skipped = 0
        self.failures: list[str] = []

    def run(self) -> CampaignSummary:
        self.store.clear_staging()
        try:
            return self._run()
        finally:
            self.store.clear_staging()

    def run_tasks(self, tasks: Sequence[plan.Task], label: str) -> dict[str, TaskRecord]:
        """Run tasks outside the campaign's plan (e.g. published likelihoods) in its ledger.

        The same executor, retries and ledger as the campaign's own tasks: finished tasks are
        not run again. Returns the finished records by task key.
        """
        self.store.clear_staging()
        try:
            with RayExecutor(self.spec.execution, store_uri=self.store.uri) as executor:
                self._stage(executor, tasks, label)
        finally:
            self.store.clear_staging()
        return self.finished

    def _run(self) -> CampaignSummary:
        with RayExecutor(self.spec.execution, store_uri=self.store.uri) as executor:
            files = self._read_files(executor)
            if files is None:
                return self._summary()
            background, observed, classify = plan.data_tasks(self.spec, files)
            self._stage(executor, [background], "background")
            if not self._have(background):
                return self._summary()
            self._stage(executor, [observed], "observed")
            if not self._have(observed):
                return self._summary()
            self._stage(executor, [classify], "classify")
            if self.spec.landscape is not None:
                landscape = plan.landscape_task(self.spec, background, observed)
                self._stage(executor, [landscape], "landscape")
            if not self._have(classify):
                return self._summary()
            classes = read_classes(self.store, self.finished[classify.key].artifacts["classes"])
            self._mark_searchable(classes)
            searches = plan.search_tasks(self.spec, classify, classes)
            self._stage(executor, searches, "search")
            succeeded = [task for task in searches if task.key in self.finished]
            if succeeded:
                lee = plan.lee_task(self.spec, succeeded)
                self._stage(executor, [lee], "look-elsewhere")
                if self.spec.theory.models and self.spec.theory.budget and self._have(lee):
                    self._theory_loop(executor, lee)
        return self._summary()

    def _read_files(self, executor: RayExecutor) -> dict[str, list[plan.Task]] | None:
        """Open and read input files as chunk tasks (:mod:`campaign.inputs`); None: one failed."""
        from campaign.inputs import read_files

        def run_tasks(tasks: Sequence[plan.Task], label: str) -> dict[str, TaskRecord]:
            self._stage(executor, tasks, label)
            return self.finished

        return read_files(self.spec, self.store, run_tasks)

    def _theory_loop(self, executor: RayExecutor, searches: plan.Task) -> None:
        """Learn each model's exclusion over its parameters (:mod:`campaign.loop`)."""
        from campaign.loop import learn_models

        def run_tasks(tasks: Sequence[plan.Task], label: str) -> dict[str, TaskRecord]:
            self._stage(executor, tasks, label)
            return self.finished

        learn_models(self.spec, self.store, searches, run_tasks)

    def _mark_searchable(self, classes: dict[str, dict[str, Any]]) -> None:
        """Search classes with enough events (see :func:`campaign.plan.is_searchable`)."""
        for name, info in classes.items():
            info["searchable"] = plan.is_searchable(self.spec, name, info)

    def _have(self, *tasks: plan.Task) -> bool:
        return all(task.key in self.finished for task in tasks)

    def _stage(self, executor: RayExecutor, tasks: Sequence[plan.Task], label: str) -> None:
        todo = []
        for task in tasks:
            if task.key in self.finished:
                self.skipped += 1
                continue
            todo.append((task, {**task.payload, "inputs": self._inputs(task)}))
        for _ in executor.run(todo, description=label, on_outcome=self._record):
            pass

    def _inputs(self, task: plan.Task) -> dict[str, Any]:
        """Artifacts of the tasks this one depends on, by their kind."""
        inputs: dict[str, Any] = {}
        for key in task.depends_on:
            record = self.finished[key]
            if task.kind == "lee":
                inputs.setdefault("searches", []).append(record.artifacts)
            elif record.kind in ("inspect", "read"):
                inputs.setdefault(record.kind, []).append(record.artifacts)
            else:
                inputs[record.kind] = record.artifacts
        return inputs

    def _record(self, outcome: Outcome) -> None:
        task = outcome.task
        artifacts: dict[str, str] = {}
        if outcome.status == "done" and outcome.output is not None:
            artifacts = self.store.commit_artifacts(
                outcome.output["artifacts"], kind=task.kind, key=task.key
            )
        record = TaskRecord(
            key=task.key,
            kind=task.kind,
            name=task.name,
            status="done" if outcome.status == "done" else "failed",
            execution_id=outcome.execution_id,
            started_at=outcome.started_at,
            finished_at=outcome.finished_at,
            artifacts=artifacts,
            error=outcome.error,
            traceback=outcome.traceback,
            worker=outcome.worker,
        )
        self.store.record(record)
        if record.status == "done":
            self.finished[task.key] = record
            self.done += 1
        else:
            self.failures.append(f"{task.name}: {outcome.error}")

    def _summary(self) -> CampaignSummary:
        lee_records = [r for r in self.finished.values() if r.kind == "lee"]
        global_result = {}
        if lee_records:
            latest = max(lee_records, key=lambda r: r.finished_at)
            global_result = read_global(self.store, latest.artifacts["lee"])
        return CampaignSummary(
            store=self.store.uri,
            done=self.done,
            failed=len(self.failures),
            skipped=self.skipped,
            failures=tuple(self.failures),
            global_result=global_result,
        )


def run_campaign(spec: CampaignSpec, *, spec_text: str) -> CampaignSummary:
    """Run (or continue) a campaign; finished tasks in its store are not run again."""
    return Driver(spec, spec_text=spec_text).run()
