"""The theory loop: learn which parameter points of each model the campaign excludes.

:func:`theory.active.learn_box` proposes batches of points where the excluded/allowed boundary
is least certain; each point becomes an ``evaluate`` task (simulate the model's signal at that
point, weighted to the campaign's luminosity, and reinterpret it against every search of the
campaign — pyhf CLs of the most sensitive ones), run in parallel by the campaign's executor and
recorded in the ledger like any other task. The learner's proposals are a pure function of the
data so far and the seed, so a resumed campaign proposes the same points, finds them finished in
the ledger and goes on where it stopped. The posterior is saved as the model's coverage
(:mod:`campaign.coverage`), which the report draws.

The value learned is the CLs of the search with the best *expected* sensitivity (chosen
without looking at data, like any analysis choosing its signal region), observed and expected
together. A point no search receives signal from has CLs = 1: it is not excluded, and the report
counts it as allowed by a campaign that could not see it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from campaign import plan
from campaign.coverage import ModelCoverage, save_coverage
from campaign.spec import CampaignSpec, ModelSpace
from campaign.store import Store, TaskRecord
from theory.active import learn_box
from theory.models import get_model
from theory.space import Parameter, ParameterSpace

RunTasks = Callable[[Sequence[plan.Task], str], Mapping[str, TaskRecord]]
"""Runs tasks on the executor and returns the ledger's finished records by task key."""


def model_label(model: ModelSpace) -> str:
    """``zprime`` or, with constructor options, ``zprime[channels=mumu]``."""
    if not model.options:
        return model.name
    options = ",".join(
        f"{k}={'+'.join(map(str, v)) if isinstance(v, list | tuple) else v}"
        for k, v in sorted(model.options.items())
    )
    return f"{model.name}[{options}]"


def campaign_space(model: ModelSpace) -> ParameterSpace:
    """The model's parameter space narrowed to the campaign's ranges (and scale flags).

    Raises:
        ValueError: naming the model, the unknown parameter and the model's parameters.
    """
    own = get_model(model.name, **model.options).space
    unknown = sorted(set(model.space) - set(own.names))
    if unknown:
        raise ValueError(
            f"theory.models[{model.name}].space: unknown parameters {unknown}; "
            f"allowed: {', '.join(own.names)}"
        )
    parameters = []
    for parameter in own.parameters:
        bounds = model.space.get(parameter.name)
        if bounds is None:
            parameters.append(parameter)
            continue
        low, high = (float(b) for b in bounds if not isinstance(b, str))
        flags = [b for b in bounds if isinstance(b, str)]
        log = flags[0] == "log" if flags else parameter.log
        parameters.append(
            Parameter(name=parameter.name, low=low, high=high, log=log, unit=parameter.unit)
        )
    return ParameterSpace(parameters=tuple(parameters), constraints=own.constraints)


def evaluation_task(
    spec: CampaignSpec, model: ModelSpace, point: Mapping[str, float], searches: plan.Task
) -> plan.Task:
    """One point of one model against the campaign's searches (those behind ``searches``)."""
    rounded = {name: float(f"{value:.10g}") for name, value in point.items()}
    label = model_label(model)
    config = {
        "model": model.name,
        "options": model.options,
        "point": rounded,
        "events": spec.theory.events,
        "max_fits": spec.theory.max_fits,
        "threshold": spec.theory.threshold,
        "searches": searches.key,
        "seed": plan.derive_seed(spec.seed, "theory", label, json.dumps(rounded, sort_keys=True)),
    }
    return plan.Task(
        key=plan.content_key("evaluate", config),
        kind="evaluate",
        name=f"evaluate/{label}/" + ",".join(f"{k}={v:.4g}" for k, v in rounded.items()),
        payload=config,
        cost=2.0 + spec.theory.max_fits,
        depends_on=(searches.key,),
    )


def evaluate_point(payload: Mapping[str, Any], store: Store, staging: str) -> dict[str, Any]:
    """Task function: simulate the point's signal and reinterpret it against the campaign."""
    from campaign.benchmark import signal_events
    from campaign.reinterpret import campaign_results, reinterpret

    signal, benchmark = signal_events(
        store,
        model=payload["model"],
        point=dict(payload["point"]),
        options=payload["options"],
        n_events=int(payload["events"]),
        seed=int(payload["seed"]),
    )
    outcome = reinterpret(
        campaign_results(store), signal, benchmark=benchmark, max_fits=payload["max_fits"]
    )
    best = outcome.best_expected
    failures = "; ".join(
        f"{v.search}: {v.reason}" for v in outcome.searches if v.status == "failed"
    )
    if best is not None and best.cls_observed is not None and best.cls_expected is not None:
        observed, expected, reason = best.cls_observed, best.cls_expected[2], failures
    elif failures:
        observed, expected, reason = math.nan, math.nan, failures
    else:
        observed = expected = 1.0
        reason = "no search receives signal"
    verdict = {
        "point": payload["point"],
        "status": outcome.status,
        "cls_observed": None if math.isnan(observed) else observed,
        "cls_expected": None if math.isnan(expected) else expected,
        "best_search": None if best is None else best.search,
        "excluded_by": sorted(v.search for v in outcome.searches if v.status == "excluded"),
        "tested": sorted(v.search for v in outcome.searches if v.status in ("excluded", "allowed")),
        "reason": reason,
    }
    relative = f"{staging}/verdict.json"
    store.write_text(relative, json.dumps(verdict, sort_keys=True))
    return {"artifacts": {"verdict": relative}}


def _values(store: Store, finished: Mapping[str, TaskRecord], task: plan.Task) -> list[float]:
    record = finished.get(task.key)
    if record is None:
        return [math.nan, math.nan]
    verdict = store.read_json(record.artifacts["verdict"])
    return [
        math.nan if verdict[key] is None else float(verdict[key])
        for key in ("cls_observed", "cls_expected")
    ]


def _evaluator(
    spec: CampaignSpec,
    store: Store,
    model: ModelSpace,
    space: ParameterSpace,
    searches: plan.Task,
    run_tasks: RunTasks,
) -> Callable[[np.ndarray], np.ndarray]:
    """The learner's oracle: (k, d) points → (k, 2) observed and expected CLs via the ledger."""

    def evaluate(points: np.ndarray) -> np.ndarray:
        tasks = [
            evaluation_task(spec, model, dict(zip(space.names, row, strict=True)), searches)
            for row in np.atleast_2d(points)
        ]
        finished = run_tasks(tasks, f"theory {model_label(model)}")
        return np.array([_values(store, finished, task) for task in tasks])

    return evaluate


def learn_models(
    spec: CampaignSpec, store: Store, searches: plan.Task, run_tasks: RunTasks
) -> list[ModelCoverage]:
    """Run the loop for every model of ``spec.theory`` and save each model's coverage.

    Failed evaluations enter the learner as NaN (recorded, never re-proposed, not fitted).
    """
    theory = spec.theory
    coverages = []
    for model in theory.models:
        space = campaign_space(model)
        label = model_label(model)
        evaluate = _evaluator(spec, store, model, space, searches, run_tasks)
        history = learn_box(
            space,
            evaluate,
            budget=theory.budget,
            seed=plan.derive_seed(spec.seed, "theory-loop", label),
            batch_size=theory.batch,
            threshold=theory.threshold,
            acquisition=theory.acquisition,
            stop_at=theory.stop_at,
            reference_size=1000,
            n_candidates=1000,
        )
        coverage = ModelCoverage.from_history(label, space.names, history)
        save_coverage(store, coverage)
        coverages.append(coverage)
    return coverages
