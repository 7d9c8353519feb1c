"""The theory loop: learn which parameter points of each model the campaign excludes.

:func:`theory.active.learn_box` proposes batches of points where the excluded/allowed boundary
is least certain; each point becomes an ``evaluate`` task (simulate the model's signal at that
point, weighted to the campaign's luminosity, and reinterpret it against every search of the
campaign — pyhf CLs of the most sensitive ones), run in parallel by the campaign's executor and
recorded in the ledger like any other task. The learner's proposals are a pure function of the
data so far and the seed, so a resumed campaign proposes the same points, finds them finished in
the ledger and goes on where it stopped. A failed evaluation is not finished, so a resumed
campaign retries it: if it fails again the learner sees the same data and the same proposals
follow; if it now succeeds the learner has more data than the interrupted run had, and its
proposals from that step on differ (evaluations of the earlier path stay in the ledger and are
simply not used). The posterior is saved as the model's coverage (:mod:`campaign.coverage`),
which the report draws.

With several models the campaign spends one shared budget: each round
:func:`theory.active.choose_model` gives the next batch to the model whose best batch is
expected to remove the most misclassified volume per unit simulation cost (``cost`` per model
in the campaign file), and that model's pool learner over a fixed, seeded set of candidate
points in its box proposes the batch. One model alone runs the continuous box learner.

The value learned is the CLs of the search with the best *expected* sensitivity (chosen
without looking at data, like any analysis choosing its signal region), observed and expected
together; the multi-channel combination of ``lamppost reinterpret`` is not fitted per point (its
many-parameter pyhf fits cost minutes per point). A point no search receives signal from has CLs = 1: it is not excluded, and the report
counts it as allowed by a campaign that could not see it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from campaign import plan
from campaign.coverage import (
    ModelCoverage,
    rank_next_searches,
    save_coverage,
    save_next_searches,
)
from campaign.spec import CampaignSpec, ModelSpace, campaign_space
from campaign.store import Store, TaskRecord
from searches.result import SearchResult
from searches.signatures import SignatureConfig
from theory.active import ActiveOptions, ModelArm, PoolHistory, choose_model, learn_box, learn_pool
from theory.space import ParameterSpace

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
        "pyhf_attempts": spec.theory.pyhf_attempts,
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
    from campaign.reinterpret import campaign_results

    verdict = point_verdict(
        store,
        campaign_results(store),
        model=payload["model"],
        options=payload["options"],
        point=dict(payload["point"]),
        events=int(payload["events"]),
        seed=int(payload["seed"]),
        max_fits=int(payload["max_fits"]),
        pyhf_attempts=payload.get("pyhf_attempts"),
    )
    relative = f"{staging}/verdict.json"
    store.write_text(relative, json.dumps(verdict, sort_keys=True))
    return {"artifacts": {"verdict": relative}}


def point_verdict(
    store: Store,
    results: Sequence[SearchResult],
    *,
    model: str,
    options: Mapping[str, Any],
    point: Mapping[str, float],
    events: int,
    seed: int,
    max_fits: int,
    pyhf_attempts: int | None = None,
) -> dict[str, Any]:
    """What the loop learns at one point: CLs (observed, expected median) of the search with
    the best expected sensitivity among the ``max_fits`` most sensitive, with which searches
    exclude it. CLs is None where every fitted search failed, 1 where no search sees the
    signal. Pure in ``seed``: the same point and seed give the same numbers."""
    from campaign.benchmark import signal_events
    from campaign.reinterpret import reinterpret

    signal, benchmark = signal_events(
        store, model=model, point=dict(point), options=options, n_events=events, seed=seed
    )
    outcome = reinterpret(
        results,
        signal,
        benchmark=benchmark,
        max_fits=max_fits,
        max_combined=1,
        pyhf_attempts=pyhf_attempts,
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
    return {
        "point": dict(point),
        "status": outcome.status,
        "cls_observed": None if math.isnan(observed) else observed,
        "cls_expected": None if math.isnan(expected) else expected,
        "best_search": None if best is None else best.search,
        "excluded_by": sorted(v.search for v in outcome.searches if v.status == "excluded"),
        "tested": sorted(v.search for v in outcome.searches if v.status in ("excluded", "allowed")),
        "reason": reason,
    }


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


REFERENCE_SIZE = 1000
"""Reference (and, with several models, candidate) points per model."""


def learn_models(
    spec: CampaignSpec, store: Store, searches: plan.Task, run_tasks: RunTasks
) -> list[ModelCoverage]:
    """Run the loop for the models of ``spec.theory`` and save each model's coverage.

    Failed evaluations enter the learner as NaN (recorded, never re-proposed, not fitted).
    """
    models = spec.theory.models
    if len(models) == 1:
        coverages = [_learn_one(spec, store, models[0], searches, run_tasks)]
    else:
        coverages = _learn_several(spec, store, searches, run_tasks)
    for coverage in coverages:
        save_coverage(store, coverage)
    _next_searches(spec, store, coverages, searches, run_tasks)
    return coverages


def _learn_one(
    spec: CampaignSpec, store: Store, model: ModelSpace, searches: plan.Task, run_tasks: RunTasks
) -> ModelCoverage:
    theory = spec.theory
    space = campaign_space(model)
    label = model_label(model)
    evaluate = _evaluator(spec, store, model, space, searches, run_tasks)
    history = learn_box(
        space,
        evaluate,
        budget=theory.budget,
        seed=plan.derive_seed(spec.seed, "theory-loop", label),
        batch_size=theory.batch,
        initial=theory.initial,
        threshold=theory.threshold,
        acquisition=theory.acquisition,
        stop_at=theory.stop_at,
        reference_size=REFERENCE_SIZE,
        n_candidates=REFERENCE_SIZE,
    )
    return ModelCoverage.from_history(label, space.names, history, to_unit=space.to_unit)


def _learn_several(
    spec: CampaignSpec, store: Store, searches: plan.Task, run_tasks: RunTasks
) -> list[ModelCoverage]:
    """One shared budget (in cost units) allotted round by round with :func:`choose_model`.

    Every choice is a pure function of the evaluated data and the seeds, so a resumed campaign
    makes the same choices and finds their evaluations in the ledger.
    """
    theory = spec.theory
    spaces = [campaign_space(model) for model in theory.models]
    labels = [model_label(model) for model in theory.models]
    seeds = [plan.derive_seed(spec.seed, "theory-loop", label) for label in labels]
    pools = [
        space.sample(REFERENCE_SIZE, seed=plan.derive_seed(seed, "candidates"))
        for space, seed in zip(spaces, seeds, strict=True)
    ]
    flags = [tuple(p.log for p in space.parameters) for space in spaces]
    oracles = [
        _pool_oracle(_evaluator(spec, store, model, space, searches, run_tasks), pool)
        for model, space, pool in zip(theory.models, spaces, pools, strict=True)
    ]
    histories: list[PoolHistory | None] = [None] * len(spaces)
    finished = [False] * len(spaces)
    spent, step = 0.0, 0
    while not all(finished):
        arms, active = [], []
        for k, history in enumerate(histories):
            if finished[k]:
                continue
            indices, values = _evaluated(history)
            arms.append(
                ModelArm(
                    name=labels[k],
                    candidates=pools[k],
                    indices=indices,
                    values=values,
                    cost=theory.models[k].cost,
                    log_scale=flags[k],
                )
            )
            active.append(k)
        choice = choose_model(
            arms,
            batch_size=theory.batch,
            seed=plan.derive_seed(spec.seed, "theory-choice"),
            step=step,
            threshold=theory.threshold,
            initial=theory.initial,
        )
        k = active[choice.arm]
        done = len(arms[choice.arm].indices)
        q = (
            theory.batch
            if done
            else ActiveOptions(batch_size=theory.batch, initial=theory.initial).initial_size(
                spaces[k].dim
            )
        )
        cost = theory.models[k].cost
        affordable = int((theory.budget - spent) // cost)
        if affordable < 1:
            finished[k] = True
            continue
        history = learn_pool(
            pools[k],
            oracles[k],
            budget=done + min(q, affordable),
            seed=seeds[k],
            batch_size=theory.batch,
            initial=theory.initial,
            threshold=theory.threshold,
            acquisition=theory.acquisition,
            log_scale=flags[k],
            stop_at=theory.stop_at,
            resume=histories[k],
        )
        evaluated = len(history.evaluated_indices)
        histories[k] = history
        spent += (evaluated - done) * cost
        finished[k] = (
            evaluated == done
            or evaluated >= len(pools[k])
            or history.stop_reason in ("tolerance", "pool exhausted")
        )
        step += 1
    return [
        ModelCoverage.from_history(label, space.names, history)
        for label, space, history in zip(labels, spaces, histories, strict=True)
        if history is not None
    ]


def _evaluated(history: PoolHistory | None) -> tuple[np.ndarray, np.ndarray]:
    if history is None or not history.steps:
        return np.empty(0, dtype=int), np.empty((0, 2))
    return (
        np.concatenate([s.indices for s in history.steps]),
        np.concatenate([s.values for s in history.steps]),
    )


def _pool_oracle(
    evaluate: Callable[[np.ndarray], np.ndarray], pool: np.ndarray
) -> Callable[[np.ndarray], np.ndarray]:
    return lambda indices: evaluate(pool[np.asarray(indices, dtype=int)])


DEPOSIT_POINTS = 12
"""Still-allowed points per model whose signal is simulated to find where it lands."""


def deposit_task(
    spec: CampaignSpec, model: ModelSpace, coverage: ModelCoverage, searches: plan.Task
) -> plan.Task | None:
    """Simulate a seeded sample of the model's still-allowed reference points (None if none)."""
    allowed = coverage.reference[coverage.p_excluded_observed < 0.5]
    if not len(allowed):
        return None
    label = model_label(model)
    rng = np.random.default_rng(plan.derive_seed(spec.seed, "deposits", label))
    rows = np.sort(rng.choice(len(allowed), size=min(DEPOSIT_POINTS, len(allowed)), replace=False))
    points = [
        {name: float(f"{value:.10g}") for name, value in zip(coverage.parameters, row, strict=True)}
        for row in allowed[rows]
    ]
    config = {
        "model": model.name,
        "options": model.options,
        "points": points,
        "events": spec.theory.events,
        "searches": searches.key,
        "seed": plan.derive_seed(spec.seed, "deposits", label),
    }
    return plan.Task(
        key=plan.content_key("deposit", config),
        kind="deposit",
        name=f"deposit/{label}",
        payload=config,
        cost=1.0,
        depends_on=(searches.key,),
    )


def deposit_signal(payload: Mapping[str, Any], store: Store, staging: str) -> dict[str, Any]:
    """Task function: expected signal events per exclusive class at each point."""
    from campaign.benchmark import signal_events
    from searches.signatures import SignatureConfig, classify

    config = SignatureConfig.model_validate(store.read_json("spec.json")["signatures"])
    points = list(payload["points"])
    deposits: dict[str, list[float]] = {}
    for k, point in enumerate(points):
        signal, _ = signal_events(
            store,
            model=payload["model"],
            point=dict(point),
            options=payload["options"],
            n_events=int(payload["events"]),
            seed=int(payload["seed"]) + k,
        )
        classes = classify(signal, config)
        sums = np.bincount(
            classes.codes, weights=np.asarray(signal["weight"]), minlength=len(classes.names)
        )
        for name, total in zip(classes.names, sums, strict=True):
            deposits.setdefault(name, [0.0] * len(points))[k] = float(total)
    relative = f"{staging}/deposits.json"
    store.write_text(relative, json.dumps({"points": points, "deposits": deposits}))
    return {"artifacts": {"deposits": relative}}


def tested_classes(names: Sequence[str], searched: set[str], config: SignatureConfig) -> set[str]:
    """The exclusive classes among ``names`` that some searched (exclusive or view) class holds."""
    from searches.signatures import VIEW_SUFFIX, view_members

    suffixes = [suffix for suffix in VIEW_SUFFIX.values() if suffix]
    parents = {
        name[: -len(suffix)] for name in searched for suffix in suffixes if name.endswith(suffix)
    }
    universe = sorted(set(names) | parents)
    views = view_members(universe, config=config)
    held = {name for name in names if name in searched}
    for view, members in views.items():
        if view in searched:
            held |= set(members) & set(names)
    return held


def _next_searches(
    spec: CampaignSpec,
    store: Store,
    coverages: Sequence[ModelCoverage],
    searches: plan.Task,
    run_tasks: RunTasks,
) -> None:
    """Rank untested classes by the signal the still-allowed theory volume puts there."""
    from campaign.tasks import finished_results
    from searches.signatures import EMPTY_CLASS

    by_label = {model_label(model): model for model in spec.theory.models}
    tasks = {
        coverage.model: task
        for coverage in coverages
        if (task := deposit_task(spec, by_label[coverage.model], coverage, searches)) is not None
    }
    finished = run_tasks(list(tasks.values()), "where allowed signal lands")
    deposits = {
        label: store.read_json(finished[task.key].artifacts["deposits"])
        for label, task in tasks.items()
        if task.key in finished
    }
    names = sorted({name for d in deposits.values() for name in d["deposits"]} - {EMPTY_CLASS})
    searched = {result.event_class for result in finished_results(store)}
    tested = tested_classes(names, searched, spec.signatures) | {EMPTY_CLASS}
    ranked = rank_next_searches({label: d["deposits"] for label, d in deposits.items()}, tested)
    save_next_searches(
        store, ranked, points={label: len(d["points"]) for label, d in deposits.items()}
    )
