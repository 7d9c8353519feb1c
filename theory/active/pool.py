"""Active learning over a finite candidate pool (e.g. the signal points of a published patchset).

Example:
    >>> import numpy as np
    >>> from theory.active import learn_pool
    >>> from theory.toys import ellipse_2d
    >>> toy = ellipse_2d()
    >>> points = toy.space.sample(300, seed=0)
    >>> history = learn_pool(points, lambda idx: toy.cls(points[idx]), budget=25, seed=1)
    >>> history.final.p_excluded.shape
    (300,)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from rich.progress import TextColumn

from searches.progress import progress_bar
from theory.active.engine import Fit, as_values, fit_step, posterior, propose
from theory.active.options import ActiveOptions
from theory.active.stopping import expected_misclassified_fraction

SCHEMA_VERSION = 1


def _frozen(array: np.ndarray | None) -> np.ndarray | None:
    if array is None:
        return None
    array = np.array(array, copy=True)
    array.flags.writeable = False
    return array


@dataclass(frozen=True)
class PoolStep:
    """The state after one batch.

    Attributes:
        step: 0 for the initial design, then 1, 2, ...
        indices: (k,) candidates evaluated in this step.
        values: (k, m) their CLs (m = 2: observed, expected); NaN marks a failed evaluation.
        p_excluded: (n,) P(excluded) of every candidate for the label output.
        p_excluded_other: (n,) the same for the other output when two are modelled, else None.
        expected_misclassified: mean of min(p, 1 - p) over the pool (the stopping statistic).
        surrogate_kernels: kernel of each output of the surrogate fitted after this step
            (``theory.active.surrogate.MATERN``, or ``FALLBACK`` where the Matérn fit failed);
            empty before a surrogate exists.
    """

    step: int
    indices: np.ndarray
    values: np.ndarray
    p_excluded: np.ndarray
    p_excluded_other: np.ndarray | None
    expected_misclassified: float
    surrogate_kernels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("indices", "values", "p_excluded", "p_excluded_other"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))

    @property
    def excluded(self) -> np.ndarray:
        """(n,) bool predicted label: excluded when P(excluded) > 1/2."""
        return self.p_excluded > 0.5


@dataclass(frozen=True)
class PoolHistory:
    """Everything a pool run did, step by step; plain data, JSON round-trippable (all but
    the in-memory ``fit``).

    Attributes:
        candidates: (n, d) the pool.
        log_scale: per-dimension log flags used for normalisation, or None.
        options: the validated settings.
        seed: the run's seed.
        budget: the evaluation budget.
        steps: one :class:`PoolStep` per batch.
        stop_reason: ``"budget"``, ``"tolerance"``, ``"until"`` or ``"pool exhausted"``.
        fit: the surrogate fitted after step ``fitted_steps``, kept in memory only (not in
            :meth:`to_dict`); read it through :meth:`last_fit`.
        fitted_steps: how many steps ``fit`` was fitted after.
    """

    candidates: np.ndarray
    log_scale: tuple[bool, ...] | None
    options: ActiveOptions
    seed: int
    budget: int
    steps: tuple[PoolStep, ...]
    stop_reason: str
    schema_version: int = field(default=SCHEMA_VERSION)
    fit: Fit | None = field(default=None, compare=False, repr=False)
    fitted_steps: int = field(default=0, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "candidates", _frozen(self.candidates))

    def last_fit(self) -> Fit | None:
        """The surrogate fitted after the last step, if this process still holds it.

        Continuing the history (:func:`learn_pool` with ``resume``, once per round in
        :mod:`campaign.loop`) or reading its coverage starts from it instead of fitting the same
        data with the same seed again. A history read back from JSON, or one whose steps were
        cut (``dataclasses.replace``), has none and is refitted.
        """
        return self.fit if self.steps and self.fitted_steps == len(self.steps) else None

    @property
    def final(self) -> PoolStep:
        """The last step."""
        return self.steps[-1]

    @property
    def evaluated_indices(self) -> np.ndarray:
        """(N,) every evaluated candidate, in order."""
        return np.concatenate([s.indices for s in self.steps]) if self.steps else np.empty(0, int)

    @property
    def evaluated_values(self) -> np.ndarray:
        """(N, m) their CLs."""
        return np.concatenate([s.values for s in self.steps]) if self.steps else np.empty((0, 1))

    @property
    def n_evaluated(self) -> np.ndarray:
        """(steps,) cumulative number of evaluations after each step."""
        return np.cumsum([len(s.indices) for s in self.steps])

    def misclassified(self, truth_excluded: np.ndarray) -> np.ndarray:
        """(steps,) true misclassified fraction after each step, given the true labels (n,)."""
        truth = np.asarray(truth_excluded, dtype=bool)
        return np.array([np.mean(s.excluded != truth) for s in self.steps])

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (NaN written as null)."""

        def listify(a: np.ndarray | None) -> Any:
            return None if a is None else [v if np.isfinite(v) else None for v in a.tolist()]

        return {
            "schema_version": self.schema_version,
            "candidates": self.candidates.tolist(),
            "log_scale": None if self.log_scale is None else list(self.log_scale),
            "options": self.options.model_dump(),
            "seed": self.seed,
            "budget": self.budget,
            "stop_reason": self.stop_reason,
            "steps": [
                {
                    "step": s.step,
                    "indices": s.indices.tolist(),
                    "values": [
                        [None if np.isnan(v) else v for v in row] for row in s.values.tolist()
                    ],
                    "p_excluded": listify(s.p_excluded),
                    "p_excluded_other": listify(s.p_excluded_other),
                    "expected_misclassified": s.expected_misclassified,
                    "surrogate_kernels": list(s.surrogate_kernels),
                }
                for s in self.steps
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PoolHistory:
        """Inverse of :meth:`to_dict`."""
        if data.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(
                f"PoolHistory schema_version={data.get('schema_version')!r}; allowed: {SCHEMA_VERSION}"
            )

        def arr(x: Any, dtype: type = float) -> np.ndarray | None:
            return None if x is None else np.array(x, dtype=dtype)

        steps = tuple(
            PoolStep(
                step=s["step"],
                indices=np.array(s["indices"], dtype=int),
                values=np.array(s["values"], dtype=float),
                p_excluded=arr(s["p_excluded"]),
                p_excluded_other=arr(s["p_excluded_other"]),
                expected_misclassified=s["expected_misclassified"],
                surrogate_kernels=tuple(s.get("surrogate_kernels", ())),
            )
            for s in data["steps"]
        )
        return cls(
            candidates=np.array(data["candidates"], dtype=float),
            log_scale=None if data["log_scale"] is None else tuple(data["log_scale"]),
            options=ActiveOptions(**data["options"]),
            seed=data["seed"],
            budget=data["budget"],
            steps=steps,
            stop_reason=data["stop_reason"],
        )


def pool_to_unit(candidates: np.ndarray, log_scale: Sequence[bool] | None = None) -> np.ndarray:
    """Normalise a pool to the unit cube by its own range (log first where flagged).

    Args:
        candidates: (n, d) points; log-flagged columns must be positive.
        log_scale: (d,) flags or None.

    Returns:
        (n, d) points in [0, 1]^d (a constant column maps to 0.5).
    """
    x = np.asarray(candidates, dtype=float)
    if x.ndim != 2 or x.shape[0] < 2 or not np.isfinite(x).all():
        raise ValueError(
            f"candidates must be a finite (n, d) array with n ≥ 2; got shape {x.shape}"
        )
    if log_scale is not None:
        flags = np.asarray(log_scale, dtype=bool)
        if flags.shape != (x.shape[1],):
            raise ValueError(f"log_scale must have {x.shape[1]} flags; got {len(flags)}")
        if (x[:, flags] <= 0).any():
            raise ValueError("log_scale: log-scaled candidate columns must be positive")
        x = x.copy()
        x[:, flags] = np.log(x[:, flags])
    low, high = x.min(axis=0), x.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    return np.where(high > low, (x - low) / span, 0.5)


def _options(**kwargs: Any) -> ActiveOptions:
    return ActiveOptions(**kwargs)


def propose_pool(
    candidates: np.ndarray,
    indices: np.ndarray,
    values: np.ndarray,
    *,
    step: int,
    seed: int,
    budget: int,
    log_scale: Sequence[bool] | None = None,
    **options: Any,
) -> np.ndarray:
    """The proposals of step ``step`` as a pure function of the data so far.

    This is the resume contract: given the evaluated indices and values of steps
    ``0 .. step-1``, it returns exactly what :func:`learn_pool` proposes at ``step``.

    Args:
        candidates: (n, d) pool.
        indices: (N,) evaluated candidates so far.
        values: (N,) or (N, 2) their CLs.
        step: the step about to be proposed (0 = initial design).
        seed: the run's seed.
        budget: the run's budget (the ``lhs`` baseline sizes its design by it).
        log_scale: per-dimension log flags.
        **options: any :class:`~theory.active.options.ActiveOptions` field.

    Returns:
        (q,) candidate indices.
    """
    opts = _options(**options)
    unit = pool_to_unit(candidates, log_scale)
    indices = np.asarray(indices, dtype=int)
    values = as_values(values, len(indices), where="values")
    available = np.ones(unit.shape[0], dtype=bool)
    available[indices] = False
    q = opts.initial_size(unit.shape[1]) if step == 0 else opts.batch_size
    q = min(q, budget - len(indices))
    fit = fit_step(unit[indices], values, opts=opts, seed=seed, step=step)
    return propose(fit, unit, available, q=q, opts=opts, seed=seed, step=step, budget=budget)


def learn_pool(
    candidates: np.ndarray,
    evaluate: Callable[[np.ndarray], np.ndarray],
    *,
    budget: int,
    seed: int,
    batch_size: int = 1,
    threshold: float = 0.05,
    acquisition: str = "straddle",
    initial: int | None = None,
    log_scale: Sequence[bool] | None = None,
    stop_at: float | None = None,
    resume: PoolHistory | None = None,
    until: Callable[[PoolStep], bool] | None = None,
    **options: Any,
) -> PoolHistory:
    """Learn which candidates are excluded (CLs < threshold) with as few evaluations as possible.

    Each step fits a GP to the transformed CLs evaluated so far, records P(excluded) for every
    candidate, and proposes the next batch by the acquisition criterion.

    Args:
        candidates: (n, d) pool of theory points.
        evaluate: oracle, ``evaluate(indices (k,)) -> CLs (k,)`` or ``(k, 2)`` (observed,
            expected). NaN marks a failed evaluation: it is kept in the history, never
            proposed again, and left out of the fit.
        budget: maximum number of evaluations.
        seed: seeds every random choice; same seed and oracle → same history.
        batch_size: points per step after the initial design.
        threshold: CLs exclusion threshold.
        acquisition: ``straddle``, ``misclassification``, ``entropy``, ``information_gain``,
            or a baseline: ``random``, ``grid`` (coarse-to-fine regular grid), ``lhs``
            (Latin hypercube of ``budget`` points snapped to the pool).
        initial: initial design size (default ``max(batch_size, 5 d)``).
        log_scale: (d,) flags of columns normalised in log.
        stop_at: stop when the expected misclassified fraction falls to this value.
        resume: a history of an earlier run with the same settings to continue.
        until: optional caller's stopping rule, called with each new step; True stops the
            run (stop reason ``"until"``), e.g. a benchmark that knows the truth.
        **options: further :class:`~theory.active.options.ActiveOptions` fields
            (``transform``, ``label``, ``backend``, ``trust_evaluated``, ...).

    Returns:
        A frozen :class:`PoolHistory`.
    """
    opts = _options(
        threshold=threshold,
        acquisition=acquisition,
        batch_size=batch_size,
        initial=initial,
        stop_at=stop_at,
        **options,
    )
    if budget < 1:
        raise ValueError(f"budget must be ≥ 1; got {budget}")
    unit = pool_to_unit(candidates, log_scale)
    n = unit.shape[0]
    flags = None if log_scale is None else tuple(bool(f) for f in log_scale)
    steps: list[PoolStep] = []
    if resume is not None:
        same = (
            resume.seed == seed
            and resume.options == opts
            and resume.log_scale == flags
            and np.array_equal(resume.candidates, np.asarray(candidates, dtype=float))
        )
        if not same:
            raise ValueError("resume: the history was made with other candidates, seed or options")
        steps = list(resume.steps)
    indices = np.concatenate([s.indices for s in steps]) if steps else np.empty(0, dtype=int)
    values = np.concatenate([s.values for s in steps]) if steps else None
    fit = resume.last_fit() if resume is not None else None
    if fit is None and steps:
        fit = fit_step(unit[indices], values, opts=opts, seed=seed, step=len(steps))
    reason = "budget"
    status = TextColumn("misclassified≈{task.fields[miss]}")
    with progress_bar(status) as progress:
        task = progress.add_task("pool active learning", total=budget, miss="?")
        progress.update(task, completed=len(indices))
        while True:
            if len(indices) >= budget:
                reason = "budget"
                break
            if len(indices) >= n:
                reason = "pool exhausted"
                break
            if (
                steps
                and opts.stop_at is not None
                and steps[-1].expected_misclassified <= opts.stop_at
                and fit is not None
                and fit.contour_seen
            ):
                reason = "tolerance"
                break
            if steps and until is not None and until(steps[-1]):
                reason = "until"
                break
            step = len(steps)
            available = np.ones(n, dtype=bool)
            available[indices] = False
            q = opts.initial_size(unit.shape[1]) if step == 0 else opts.batch_size
            q = min(q, budget - len(indices))
            if fit is None:
                fit = fit_step(unit[:0], np.empty((0, 1)), opts=opts, seed=seed, step=step)
            new = propose(fit, unit, available, q=q, opts=opts, seed=seed, step=step, budget=budget)
            new_values = as_values(evaluate(new.copy()), len(new))
            if values is not None and new_values.shape[1] != values.shape[1]:
                raise ValueError("evaluate changed its output shape between calls")
            indices = np.concatenate([indices, new])
            values = new_values if values is None else np.concatenate([values, new_values])
            fit = fit_step(unit[indices], values, opts=opts, seed=seed, step=step + 1)
            p, p_other = posterior(fit, unit, opts=opts, measured=(indices, values))
            miss = expected_misclassified_fraction(p)
            steps.append(PoolStep(step, new, new_values, p, p_other, miss, fit.kernels))
            progress.update(task, completed=len(indices), miss=f"{miss:.3f}")
    return PoolHistory(
        candidates=np.asarray(candidates, dtype=float),
        log_scale=flags,
        options=opts,
        seed=seed,
        budget=budget,
        steps=tuple(steps),
        stop_reason=reason,
        fit=fit if steps else None,
        fitted_steps=len(steps),
    )
