"""Which model to simulate next: the largest expected gain in known volume per unit cost.

With several theory models in one campaign, each has its own surrogate and candidates. For
each model the best batch is chosen by the integrated criterion, and its expected reduction of
the misclassified volume fraction (exact for a GP, through
:func:`~theory.active.acquisition.expected_misclassification`) is divided by the batch's
simulation cost. The choice names the model with the highest ratio and that batch: a caller
may simulate the batch, or, as :mod:`campaign.loop` does, take only the model and let that
model's own learner propose the batch with the campaign's acquisition.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from theory.active.acquisition import expected_misclassification, misclassification
from theory.active.engine import (
    Fit,
    as_values,
    fit_step,
    initial_design,
    measured_labels,
    propose,
    stream,
)
from theory.active.options import ActiveOptions
from theory.active.pool import _frozen, pool_to_unit
from theory.active.surrogate import Surrogate

_ARM = 30


@dataclass(frozen=True)
class ModelArm:
    """One theory model's state.

    Attributes:
        name: model name.
        candidates: (n, d) candidate points of this model.
        indices: (N,) candidates evaluated so far.
        values: (N,) or (N, 2) their CLs.
        cost: simulation cost of one evaluation (any unit shared by all arms).
        log_scale: (d,) log flags for normalisation, or None.
        weight: weight of this model's volume (default 1: each model's space counts equally).
    """

    name: str
    candidates: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    cost: float
    log_scale: tuple[bool, ...] | None = None
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not self.cost > 0 or not self.weight > 0:
            raise ValueError(f"model {self.name!r}: cost and weight must be > 0")
        object.__setattr__(self, "candidates", _frozen(np.asarray(self.candidates, dtype=float)))
        object.__setattr__(self, "indices", _frozen(np.asarray(self.indices, dtype=int)))
        values = as_values(self.values, len(self.indices), where=f"model {self.name!r} values")
        object.__setattr__(self, "values", _frozen(values))


@dataclass(frozen=True)
class ModelChoice:
    """The decision.

    Attributes:
        arm: index of the chosen model.
        name: its name.
        indices: (q,) candidates of that model to evaluate next.
        expected_reduction: (arms,) expected drop of each model's weighted misclassified
            fraction from its best batch (``inf`` for a model still in its initial design).
        gain_per_cost: (arms,) ``expected_reduction / (cost × batch size)``.
    """

    arm: int
    name: str
    indices: np.ndarray
    expected_reduction: np.ndarray
    gain_per_cost: np.ndarray


def batch_reduction(
    surrogate: Surrogate,
    batch: np.ndarray,
    reference: np.ndarray,
    threshold: float,
    *,
    measured_p: np.ndarray | None = None,
) -> float:
    """Expected reduction of the mean misclassification probability over ``reference`` from
    evaluating ``batch`` (both unit-cube arrays, (q, d) and (r, d)), on the latent scale.

    ``measured_p`` (r,) gives reference points whose label is already known (0 or 1; NaN
    otherwise); they contribute nothing.
    """
    q = batch.shape[0]
    mean, cov = surrogate.joint(np.concatenate([batch, reference]))
    noise = surrogate.noise()
    k = cov[:q, :q] + noise * np.eye(q)
    cross = cov[q:, :q]
    var = np.maximum(np.diag(cov)[q:], 1e-12)
    shrink = np.sum(cross * np.linalg.solve(k, cross.T).T, axis=1)
    post_var = np.clip(var - shrink, 0.0, var)
    before = misclassification(mean[q:], var, threshold)
    after = expected_misclassification(mean[q:], var, post_var, threshold)
    gain = before - after
    if measured_p is not None:
        gain = np.where(np.isnan(measured_p), gain, 0.0)
    return float(np.mean(gain))


def known_labels(arm: ModelArm, fit: Fit, opts: ActiveOptions) -> np.ndarray:
    """(n,) measured label (1 excluded, 0 allowed) of each candidate whose label is known,
    NaN elsewhere: only successful evaluations are known, and only when the learner trusts
    measured labels (``trust_evaluated``)."""
    labels = np.full(arm.candidates.shape[0], np.nan)
    known, measured = measured_labels(arm.values, fit.output_order[0], opts=opts)
    labels[arm.indices[known]] = measured
    return labels


def _initial_batch(
    unit: np.ndarray, available: np.ndarray, *, size: int, q: int, seed: int
) -> np.ndarray:
    """The next ``q`` points of the model's initial design not yet evaluated, so that a
    model's design is one Latin hypercube however many rounds it is served in. The design is
    never used up here: it has ``min(size, n)`` distinct points, and an arm with fewer than
    ``size`` evaluations and a free candidate has not evaluated all of them."""
    design = initial_design(unit, size=size, seed=seed)
    return design[available[design]][:q]


def choose_model(
    arms: Sequence[ModelArm],
    *,
    batch_size: int,
    seed: int,
    step: int,
    threshold: float = 0.05,
    initial: int | None = None,
    **options: Any,
) -> ModelChoice:
    """Pick the model and batch with the largest expected misclassified-volume reduction per cost.

    Models that have not finished their initial design come first (cheapest first): without a
    surrogate there is no expected reduction to compare. A model whose candidates are all
    evaluated is never chosen.

    Args:
        arms: the models.
        batch_size: points to propose.
        seed, step: random stream (the choice is a pure function of the arms, seed and step).
        threshold: CLs exclusion threshold.
        initial: initial design size per model (default ``max(batch_size, 5 d)``).
        **options: further :class:`~theory.active.options.ActiveOptions` fields.

    Returns:
        A :class:`ModelChoice`.

    Raises:
        ValueError: without models, or when every model's candidates are evaluated.
    """
    if not arms:
        raise ValueError("choose_model needs at least one model")
    opts = ActiveOptions(
        threshold=threshold,
        batch_size=batch_size,
        initial=initial,
        acquisition="information_gain",
        **options,
    )
    reductions = np.zeros(len(arms))
    exhausted = np.zeros(len(arms), dtype=bool)
    batches: list[np.ndarray] = []
    for a, arm in enumerate(arms):
        unit = pool_to_unit(arm.candidates, arm.log_scale)
        arm_seed = stream(seed, a, _ARM)
        available = np.ones(unit.shape[0], dtype=bool)
        available[arm.indices] = False
        q = min(batch_size, int(available.sum()))
        size = opts.initial_size(unit.shape[1])
        if q == 0:
            exhausted[a] = True
            batches.append(np.empty(0, dtype=int))
            continue
        if len(arm.indices) < size:
            batches.append(_initial_batch(unit, available, size=size, q=q, seed=arm_seed))
            reductions[a] = np.inf
            continue
        fit = fit_step(unit[arm.indices], arm.values, opts=opts, seed=arm_seed, step=step)
        batch = propose(fit, unit, available, q=q, opts=opts, seed=arm_seed, step=step, budget=q)
        batches.append(batch)
        if fit.surrogate is None or batch.size == 0:
            continue
        rng = np.random.default_rng(stream(arm_seed, step, _ARM))
        rows = np.sort(
            rng.choice(unit.shape[0], size=min(unit.shape[0], opts.n_reference), replace=False)
        )
        reductions[a] = arm.weight * batch_reduction(
            fit.surrogate,
            unit[batch],
            unit[rows],
            fit.latent_threshold,
            measured_p=known_labels(arm, fit, opts)[rows],
        )
    if exhausted.all():
        raise ValueError("choose_model: every model's candidates are already evaluated")
    costs = np.array([arm.cost * max(len(b), 1) for arm, b in zip(arms, batches, strict=True)])
    per_cost = np.where(exhausted, -np.inf, reductions / costs)
    cold = np.isinf(reductions)
    if cold.any():
        order = np.lexsort((np.arange(len(arms)), [arm.cost for arm in arms], ~cold))
        best = int(order[0])
    else:
        best = int(np.argmax(per_cost))
    return ModelChoice(
        arm=best,
        name=arms[best].name,
        indices=_frozen(batches[best]),
        expected_reduction=_frozen(reductions),
        gain_per_cost=_frozen(per_cost),
    )
