"""Active learning over a continuous parameter box with constraints.

Each step draws a fresh scrambled-Sobol' cloud of allowed candidates and picks the batch from
it with the same machinery as the pool learner, so proposals can land anywhere in the box while
the step stays a pure function of (data, seed, step). The posterior and the stopping statistic
are tracked on a fixed reference set (a Sobol' sample of the allowed space, or the caller's own
points, e.g. a dense reference scan), which makes the misclassified fraction a Monte Carlo
estimate of the misclassified *volume* fraction.

The space is a :class:`theory.space.ParameterSpace` (anything with ``dim``, ``to_unit``,
``from_unit`` and ``contains``) or a plain ``(d, 2)`` bounds array with optional
``constraint`` callable and ``log_scale`` flags.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from rich.progress import TextColumn
from scipy.stats import qmc

from searches.progress import progress_bar
from theory.active.engine import Fit, as_values, fit_step, posterior, propose, stream
from theory.active.options import ActiveOptions
from theory.active.pool import _frozen
from theory.active.stopping import expected_misclassified_fraction

_CLOUD, _REFERENCE_SET, _FIXED_CLOUD = 10, 11, 12


class Space(Protocol):
    """What the box learner needs of a parameter space."""

    @property
    def dim(self) -> int: ...

    def to_unit(self, points: np.ndarray) -> np.ndarray: ...

    def from_unit(self, unit: np.ndarray) -> np.ndarray: ...

    def contains(self, points: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class BoundsSpace:
    """A box given by bounds, optional log flags and an optional constraint callable.

    Attributes:
        bounds: (d, 2) lower and upper bounds.
        log_scale: (d,) flags; log-scaled dimensions are mapped to the unit cube in log.
        constraint: ``f(points (n, d)) -> bool (n,)``, True where allowed.
    """

    bounds: np.ndarray
    log_scale: tuple[bool, ...]
    constraint: Callable[[np.ndarray], np.ndarray] | None = None

    def __post_init__(self) -> None:
        b = np.asarray(self.bounds, dtype=float)
        if b.ndim != 2 or b.shape[1] != 2 or not np.isfinite(b).all() or (b[:, 0] >= b[:, 1]).any():
            raise ValueError(
                f"bounds must be a finite (d, 2) array with low < high; got {b.tolist()}"
            )
        if len(self.log_scale) != b.shape[0]:
            raise ValueError(f"log_scale must have {b.shape[0]} flags; got {len(self.log_scale)}")
        if (b[np.asarray(self.log_scale, dtype=bool), 0] <= 0).any():
            raise ValueError("log_scale: log-scaled bounds must be positive")
        object.__setattr__(self, "bounds", _frozen(b))

    @property
    def dim(self) -> int:
        return self.bounds.shape[0]

    def _edges(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        flags = np.asarray(self.log_scale, dtype=bool)
        low = np.where(flags, np.log(np.where(flags, self.bounds[:, 0], 1.0)), self.bounds[:, 0])
        high = np.where(flags, np.log(np.where(flags, self.bounds[:, 1], 1.0)), self.bounds[:, 1])
        return flags, low, high

    def to_unit(self, points: np.ndarray) -> np.ndarray:
        x = np.atleast_2d(np.asarray(points, dtype=float))
        flags, low, high = self._edges()
        x = np.where(flags, np.log(np.where(flags, np.maximum(x, 1e-300), 1.0)), x)
        return (x - low) / (high - low)

    def from_unit(self, unit: np.ndarray) -> np.ndarray:
        u = np.atleast_2d(np.asarray(unit, dtype=float))
        flags, low, high = self._edges()
        x = low + u * (high - low)
        return np.where(flags, np.exp(x), x)

    def contains(self, points: np.ndarray) -> np.ndarray:
        x = np.atleast_2d(np.asarray(points, dtype=float))
        inside = np.all((x >= self.bounds[:, 0]) & (x <= self.bounds[:, 1]), axis=1)
        if self.constraint is not None:
            inside &= np.asarray(self.constraint(x), dtype=bool)
        return inside


def as_space(
    space_or_bounds: Space | np.ndarray,
    *,
    constraint: Callable[[np.ndarray], np.ndarray] | None = None,
    log_scale: Sequence[bool] | None = None,
) -> Space:
    """A :class:`Space` from a parameter space or a bounds array."""
    if all(hasattr(space_or_bounds, a) for a in ("dim", "to_unit", "from_unit", "contains")):
        if constraint is not None or log_scale is not None:
            raise ValueError(
                "constraint/log_scale are only for plain bounds; put them in the space"
            )
        return space_or_bounds  # type: ignore[return-value]
    bounds = np.asarray(space_or_bounds, dtype=float)
    flags = tuple(bool(f) for f in log_scale) if log_scale is not None else (False,) * len(bounds)
    return BoundsSpace(bounds=bounds, log_scale=flags, constraint=constraint)


def allowed_sobol(space: Space, n: int, *, seed: int) -> np.ndarray:
    """``n`` scrambled-Sobol' points of the unit cube whose images satisfy the space, (n, d).

    Raises:
        ValueError: when the constraints allow (almost) nothing of the box.
    """
    sampler = qmc.Sobol(d=space.dim, scramble=True, seed=np.random.default_rng(seed))
    kept: list[np.ndarray] = []
    have = drawn = 0
    while have < n:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*balance properties of Sobol.*")
            draw = sampler.random(max(256, 2 * (n - have)))
        drawn += len(draw)
        ok = space.contains(space.from_unit(draw))
        kept.append(draw[ok])
        have += int(ok.sum())
        if drawn >= 50 * n + 10_000 and have < n:
            raise ValueError(f"the space's constraints allow only {have} of {drawn} Sobol' points")
    return np.concatenate(kept)[:n]


@dataclass(frozen=True)
class BoxStep:
    """The state after one batch.

    Attributes:
        step: 0 for the initial design, then 1, 2, ...
        points: (k, d) points evaluated in this step (physical units).
        values: (k, m) their CLs; NaN marks a failed evaluation.
        p_excluded: (r,) P(excluded) on the reference set for the label output.
        p_excluded_other: (r,) the other output's, or None.
        expected_misclassified: mean of min(p, 1 - p) over the reference set.
        surrogate_kernels: kernel of each output of the surrogate fitted after this step
            (``theory.active.surrogate.MATERN``, or ``FALLBACK`` where the Matérn fit failed);
            empty before a surrogate exists.
    """

    step: int
    points: np.ndarray
    values: np.ndarray
    p_excluded: np.ndarray
    p_excluded_other: np.ndarray | None
    expected_misclassified: float
    surrogate_kernels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("points", "values", "p_excluded", "p_excluded_other"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))

    @property
    def excluded(self) -> np.ndarray:
        """(r,) bool predicted label on the reference set."""
        return self.p_excluded > 0.5


@dataclass(frozen=True)
class BoxHistory:
    """Everything a box run did.

    Attributes:
        reference: (r, d) reference points (physical units) the posterior is reported on.
        options: validated settings.
        seed, budget: as given.
        steps: one :class:`BoxStep` per batch.
        stop_reason: ``"budget"``, ``"tolerance"`` or ``"until"``.
    """

    reference: np.ndarray
    options: ActiveOptions
    seed: int
    budget: int
    steps: tuple[BoxStep, ...]
    stop_reason: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "reference", _frozen(self.reference))

    @property
    def final(self) -> BoxStep:
        return self.steps[-1]

    @property
    def evaluated_points(self) -> np.ndarray:
        """(N, d) every evaluated point, in order."""
        return np.concatenate([s.points for s in self.steps])

    @property
    def evaluated_values(self) -> np.ndarray:
        """(N, m) their CLs."""
        return np.concatenate([s.values for s in self.steps])

    @property
    def n_evaluated(self) -> np.ndarray:
        """(steps,) cumulative evaluations after each step."""
        return np.cumsum([len(s.points) for s in self.steps])

    def misclassified(self, truth_excluded: np.ndarray) -> np.ndarray:
        """(steps,) true misclassified fraction on the reference set after each step."""
        truth = np.asarray(truth_excluded, dtype=bool)
        return np.array([np.mean(s.excluded != truth) for s in self.steps])


@dataclass(frozen=True)
class _Setup:
    space: Space
    opts: ActiveOptions
    reference_unit: np.ndarray
    n_candidates: int


def _setup(
    space_or_bounds: Space | np.ndarray,
    *,
    seed: int,
    constraint: Callable[[np.ndarray], np.ndarray] | None,
    log_scale: Sequence[bool] | None,
    reference: np.ndarray | None,
    reference_size: int,
    n_candidates: int,
    options: dict[str, Any],
) -> _Setup:
    space = as_space(space_or_bounds, constraint=constraint, log_scale=log_scale)
    opts = ActiveOptions(**options)
    if n_candidates < 1 or reference_size < 1:
        raise ValueError("n_candidates and reference_size must be ≥ 1")
    if reference is None:
        reference_unit = allowed_sobol(space, reference_size, seed=stream(seed, 0, _REFERENCE_SET))
    else:
        ref = np.atleast_2d(np.asarray(reference, dtype=float))
        if ref.shape[1] != space.dim or not space.contains(ref).all():
            raise ValueError(f"reference must be (r, {space.dim}) points inside the space")
        reference_unit = space.to_unit(ref)
    return _Setup(space, opts, reference_unit, n_candidates)


def _propose(
    setup: _Setup,
    points: np.ndarray,
    values: np.ndarray,
    *,
    seed: int,
    step: int,
    budget: int,
    fit: Fit | None = None,
) -> np.ndarray:
    opts, space = setup.opts, setup.space
    q = opts.initial_size(space.dim) if step == 0 else opts.batch_size
    q = min(q, budget - len(points))
    unit_done = space.to_unit(points) if len(points) else np.empty((0, space.dim))
    if fit is None:
        fit = fit_step(unit_done, values, opts=opts, seed=seed, step=step)
    if opts.acquisition in ("random", "grid", "lhs"):
        cloud = allowed_sobol(
            space, max(setup.n_candidates, budget), seed=stream(seed, 0, _FIXED_CLOUD)
        )
        available = np.ones(len(cloud), dtype=bool)
        if len(points):
            done = {tuple(row) for row in np.round(unit_done, 12)}
            available = np.array([tuple(row) not in done for row in np.round(cloud, 12)])
    else:
        cloud = allowed_sobol(space, setup.n_candidates, seed=stream(seed, step, _CLOUD))
        available = np.ones(len(cloud), dtype=bool)
    chosen = propose(
        fit,
        cloud,
        available,
        q=q,
        opts=opts,
        seed=seed,
        step=step,
        budget=budget,
        reference=setup.reference_unit,
    )
    return space.from_unit(cloud[chosen])


def propose_box(
    space_or_bounds: Space | np.ndarray,
    points: np.ndarray,
    values: np.ndarray,
    *,
    step: int,
    seed: int,
    budget: int,
    constraint: Callable[[np.ndarray], np.ndarray] | None = None,
    log_scale: Sequence[bool] | None = None,
    reference: np.ndarray | None = None,
    reference_size: int = 2000,
    n_candidates: int = 2000,
    **options: Any,
) -> np.ndarray:
    """The points :func:`learn_box` proposes at ``step``, from the data of earlier steps.

    Args:
        space_or_bounds: the space (see module docstring).
        points: (N, d) evaluated points so far; values: (N,) or (N, 2) their CLs.
        step, seed, budget: as in the run being resumed.
        Remaining arguments: as in :func:`learn_box`.

    Returns:
        (q, d) points in physical units.
    """
    setup = _setup(
        space_or_bounds,
        seed=seed,
        constraint=constraint,
        log_scale=log_scale,
        reference=reference,
        reference_size=reference_size,
        n_candidates=n_candidates,
        options=options,
    )
    points = np.asarray(points, dtype=float).reshape(-1, setup.space.dim)
    values = as_values(values, len(points), where="values")
    return _propose(setup, points, values, seed=seed, step=step, budget=budget)


def learn_box(
    space_or_bounds: Space | np.ndarray,
    evaluate_points: Callable[[np.ndarray], np.ndarray],
    *,
    budget: int,
    seed: int,
    batch_size: int = 1,
    threshold: float = 0.05,
    acquisition: str = "straddle",
    initial: int | None = None,
    constraint: Callable[[np.ndarray], np.ndarray] | None = None,
    log_scale: Sequence[bool] | None = None,
    stop_at: float | None = None,
    reference: np.ndarray | None = None,
    reference_size: int = 2000,
    n_candidates: int = 2000,
    resume: BoxHistory | None = None,
    until: Callable[[BoxStep], bool] | None = None,
    **options: Any,
) -> BoxHistory:
    """Learn the excluded region of a continuous parameter space.

    Args:
        space_or_bounds: a ``ParameterSpace`` or a ``(d, 2)`` bounds array.
        evaluate_points: oracle ``(k, d) physical points -> CLs (k,) or (k, 2)``; NaN marks a
            failed evaluation (kept, not fitted).
        budget: maximum number of evaluations.
        seed: seeds every random choice.
        batch_size, threshold, acquisition, initial, stop_at: as in
            :func:`~theory.active.pool.learn_pool`.
        constraint: with plain bounds, ``f(points (n, d)) -> bool (n,)`` of allowed points.
        log_scale: with plain bounds, (d,) log flags.
        reference: (r, d) points to report P(excluded) on (default: ``reference_size``
            Sobol' points of the allowed space).
        reference_size: size of the default reference set.
        n_candidates: allowed candidates drawn per step to choose the batch from.
        resume: an earlier history with the same settings to continue.
        until: optional caller's stopping rule, called with each new step; True stops the
            run (stop reason ``"until"``), e.g. a benchmark that knows the truth.
        **options: further :class:`~theory.active.options.ActiveOptions` fields.

    Returns:
        A frozen :class:`BoxHistory`.
    """
    if budget < 1:
        raise ValueError(f"budget must be ≥ 1; got {budget}")
    setup = _setup(
        space_or_bounds,
        seed=seed,
        constraint=constraint,
        log_scale=log_scale,
        reference=reference,
        reference_size=reference_size,
        n_candidates=n_candidates,
        options=dict(
            threshold=threshold,
            acquisition=acquisition,
            batch_size=batch_size,
            initial=initial,
            stop_at=stop_at,
            **options,
        ),
    )
    space, opts = setup.space, setup.opts
    reference_points = space.from_unit(setup.reference_unit)
    steps: list[BoxStep] = []
    if resume is not None:
        if (
            resume.seed != seed
            or resume.options != opts
            or not np.allclose(resume.reference, reference_points)
        ):
            raise ValueError("resume: the history was made with another space, seed or options")
        steps = list(resume.steps)
    points = np.concatenate([s.points for s in steps]) if steps else np.empty((0, space.dim))
    values = np.concatenate([s.values for s in steps]) if steps else np.empty((0, 1))
    fit = None
    if steps:
        fit = fit_step(space.to_unit(points), values, opts=opts, seed=seed, step=len(steps))
    reason = "budget"
    with progress_bar(TextColumn("misclassified≈{task.fields[miss]}")) as progress:
        task = progress.add_task("box active learning", total=budget, miss="?")
        progress.update(task, completed=len(points))
        while True:
            if len(points) >= budget:
                reason = "budget"
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
            new = _propose(setup, points, values, seed=seed, step=step, budget=budget, fit=fit)
            new_values = as_values(evaluate_points(new.copy()), len(new), where="evaluate_points")
            if len(points) and new_values.shape[1] != values.shape[1]:
                raise ValueError("evaluate_points changed its output shape between calls")
            points = np.concatenate([points, new])
            values = new_values if step == 0 else np.concatenate([values, new_values])
            fit = fit_step(space.to_unit(points), values, opts=opts, seed=seed, step=step + 1)
            p, p_other = posterior(fit, setup.reference_unit, opts=opts)
            miss = expected_misclassified_fraction(p)
            steps.append(BoxStep(step, new, new_values, p, p_other, miss, fit.kernels))
            progress.update(task, completed=len(points), miss=f"{miss:.3f}")
    return BoxHistory(
        reference=reference_points,
        options=opts,
        seed=seed,
        budget=budget,
        steps=tuple(steps),
        stop_reason=reason,
    )
