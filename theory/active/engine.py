"""The step shared by the pool and box learners: data in, surrogate and proposals out.

Every random choice is drawn from a stream keyed by ``(seed, step, purpose)``, so a proposal
is a pure function of (evaluated data, seed, step). That is what makes a stopped campaign
resume with exactly the proposals an uninterrupted run would have made.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from theory.active.acquisition import BASELINES, p_excluded
from theory.active.batch import select_batch
from theory.active.design import grid_order, latin_hypercube, nearest_unique
from theory.active.options import ActiveOptions
from theory.active.surrogate import Surrogate, fit_surrogate
from theory.active.transforms import cls_to_latent, latent_threshold

_FIT, _INITIAL, _ORDER, _REFERENCE, _CANDIDATES = range(5)


def stream(seed: int, step: int, purpose: int) -> int:
    """A 32-bit seed derived from ``(seed, step, purpose)``."""
    return int(np.random.SeedSequence([seed, step, purpose]).generate_state(1)[0])


def as_values(values: object, k: int, *, where: str = "evaluate") -> np.ndarray:
    """Oracle output to a float array (k, m) with m = 1 (observed) or 2 (observed, expected)."""
    array = np.asarray(values, dtype=float)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2 or array.shape[0] != k or array.shape[1] not in (1, 2):
        raise ValueError(
            f"{where} must return CLs of shape ({k},) or ({k}, 2) (observed, expected); "
            f"got {np.shape(values)}"
        )
    return array


@dataclass(frozen=True)
class Fit:
    """A surrogate with the bookkeeping needed to read labels off it."""

    surrogate: Surrogate | None
    output_order: tuple[int, ...]
    latent_threshold: float
    evaluated: np.ndarray | None = None
    two_sided: bool = False

    @property
    def kernels(self) -> tuple[str, ...]:
        """The surrogate's kernel per output (see :attr:`Surrogate.kernels`); empty without one."""
        return () if self.surrogate is None else self.surrogate.kernels

    @property
    def contour_seen(self) -> bool:
        """Whether the data hold both an excluded and an allowed point.

        Before that, the GP has seen one flat side of a saturated CLs and is confidently wrong
        (its variance collapses), so proposals fill space instead and the stopping rule waits.
        """
        return self.surrogate is not None and self.two_sided


def fit_step(
    unit: np.ndarray, values: np.ndarray, *, opts: ActiveOptions, seed: int, step: int
) -> Fit:
    """Fit the surrogate to the known entries of ``values`` (NaN: a failed evaluation).

    Each output is fitted where it is known, so an evaluation that gave the observed CLs but
    not the expected one still teaches the observed output.

    Args:
        unit: (k, d) unit-cube inputs of the evaluated points.
        values: (k, m) CLs.
        opts: options.
        seed, step: the random stream.

    Returns:
        A :class:`Fit`; its surrogate is None while an output has fewer than two known values.
    """
    t_latent = latent_threshold(opts.threshold, kind=opts.transform)
    if values.shape[0] == 0:
        return Fit(None, (0,), t_latent)
    m = values.shape[1]
    if opts.label == "expected" and m < 2:
        raise ValueError("label='expected' needs evaluate to return (observed, expected) pairs")
    order = (1, 0) if opts.label == "expected" else tuple(range(m))
    known = np.isfinite(values[:, list(order)])
    ok = known.any(axis=1)
    if (known.sum(axis=0) < 2).any():
        return Fit(None, order, t_latent, unit[ok])
    latent = cls_to_latent(values[ok][:, list(order)], kind=opts.transform, eps=opts.eps)
    surrogate = fit_surrogate(
        unit[ok],
        latent,
        seed=stream(seed, step, _FIT),
        backend=opts.backend,
        exact_max=opts.exact_max,
        threads=opts.torch_threads,
    )
    label = values[:, order[0]]
    labels = label[np.isfinite(label)] < opts.threshold
    return Fit(surrogate, order, t_latent, unit[ok], bool(labels.any() and not labels.all()))


def measured_labels(
    values: np.ndarray, column: int, *, opts: ActiveOptions
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``values`` whose ``column`` is known, and their measured label (CLs below the
    threshold); none when the learner does not trust measured labels (``trust_evaluated``)."""
    known = np.isfinite(values[:, column]) & opts.trust_evaluated
    return known, values[known, column] < opts.threshold


def posterior(
    fit: Fit,
    unit: np.ndarray,
    *,
    opts: ActiveOptions,
    measured: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """P(excluded) for the label output and, when modelled, the other output.

    Args:
        fit: the fitted step.
        unit: (n, d) points.
        opts: options.
        measured: optional ``(rows, values)``: rows of ``unit`` that were evaluated and their
            (len(rows), m) CLs; with ``trust_evaluated`` their label is the measured one.

    Returns:
        ``(p_label, p_other)`` of shape (n,); ``p_other`` is None with one output. Without a
        surrogate every probability is 0.5.
    """
    n = unit.shape[0]
    m = len(fit.output_order)
    if fit.surrogate is None:
        probs = np.full((n, m), 0.5)
    else:
        mean, var = fit.surrogate.predict(unit)
        probs = p_excluded(mean, var, fit.latent_threshold)
    if measured is not None:
        rows, values = measured
        for j, column in enumerate(fit.output_order):
            known, labels = measured_labels(values, column, opts=opts)
            probs[rows[known], j] = labels
    return probs[:, 0], (probs[:, 1] if m > 1 else None)


def initial_design(
    unit: np.ndarray,
    *,
    size: int,
    seed: int,
    step: int = 0,
    available: np.ndarray | None = None,
) -> np.ndarray:
    """A ``size``-point seeded Latin hypercube snapped to distinct ``available`` points of
    ``unit``, in design order: a run's initial design (step 0, nothing evaluated), or the
    space-filling batch of a later step that has no surrogate yet."""
    design = latin_hypercube(size, unit.shape[1], seed=stream(seed, step, _INITIAL))
    free = np.ones(unit.shape[0], dtype=bool) if available is None else available
    return nearest_unique(design, unit, free)


def maximin(
    unit: np.ndarray, available: np.ndarray, evaluated: np.ndarray | None, q: int
) -> np.ndarray:
    """Greedily pick ``q`` available points, each farthest from the evaluated and picked ones."""
    free = np.flatnonzero(available)
    if evaluated is None or len(evaluated) == 0:
        distance = np.full(free.size, np.inf)
    else:
        distance = np.min(
            np.linalg.norm(unit[free][:, None, :] - evaluated[None, :, :], axis=-1), axis=1
        )
    picks: list[int] = []
    for _ in range(min(q, free.size)):
        j = int(np.argmax(distance))
        picks.append(int(free[j]))
        distance = np.minimum(distance, np.linalg.norm(unit[free] - unit[free[j]], axis=1))
        distance[j] = -np.inf
    return np.asarray(picks, dtype=int)


def propose(
    fit: Fit,
    unit: np.ndarray,
    available: np.ndarray,
    *,
    q: int,
    opts: ActiveOptions,
    seed: int,
    step: int,
    budget: int,
    reference: np.ndarray | None = None,
) -> np.ndarray:
    """Indices of the next ``q`` points among ``unit[available]``.

    Baselines ignore the surrogate: ``random`` follows one seeded permutation, ``grid`` the
    coarse-to-fine grid order, ``lhs`` a Latin hypercube of ``budget`` points snapped to the
    pool. Model-based criteria start from a Latin-hypercube design at step 0 and fill space
    (greedy maximin) until the data hold both labels.
    """
    q = min(q, int(available.sum()))
    if q <= 0:
        return np.empty(0, dtype=int)
    if opts.acquisition in BASELINES:
        if opts.acquisition == "random":
            order = np.random.default_rng(stream(seed, 0, _ORDER)).permutation(unit.shape[0])
        elif opts.acquisition == "grid":
            order = grid_order(unit)
        else:
            snapped = initial_design(unit, size=budget, seed=seed)
            rest = np.random.default_rng(stream(seed, 0, _ORDER)).permutation(unit.shape[0])
            order = np.concatenate([snapped, rest])
        free = order[available[order]]
        _, first = np.unique(free, return_index=True)
        return free[np.sort(first)][:q]
    if step == 0 or fit.surrogate is None:
        return initial_design(unit, size=q, seed=seed, step=step, available=available)
    if not fit.contour_seen:
        return maximin(unit, available, fit.evaluated, q)
    if opts.acquisition == "information_gain":
        base = unit if reference is None else reference
        if base.shape[0] > opts.n_reference:
            rng = np.random.default_rng(stream(seed, step, _REFERENCE))
            base = base[np.sort(rng.choice(base.shape[0], size=opts.n_reference, replace=False))]
        reference = base
    return select_batch(
        fit.surrogate,
        unit,
        q=q,
        acquisition=opts.acquisition,
        threshold=fit.latent_threshold,
        available=available,
        reference=reference,
        beta=opts.beta,
        max_joint=opts.max_joint,
    )
