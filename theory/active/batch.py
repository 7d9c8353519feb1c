"""Greedy batch selection with kriging-believer fantasies.

A kriging believer pretends each chosen point returned the posterior mean. For a GP that leaves
the mean untouched and shrinks the covariance by a rank-one update, so the whole batch is picked
by downdating one dense covariance matrix over (candidates ∪ reference set) — no refits, and
the same code serves exact and sparse surrogates. The shrunken variances push later picks away
from earlier ones, which is what keeps a batch of 10 nearly as efficient as 10 sequential steps.
Misclassification and entropy, which a kriging believer cannot move on the contour itself, are
in addition damped by the posterior correlation with earlier picks (:func:`correlation_damping`).
"""

from __future__ import annotations

import numpy as np

from theory.active.acquisition import POINTWISE, information_gain, pointwise_score
from theory.active.surrogate import Surrogate

_TINY = 1e-12


def correlation_damping(cov: np.ndarray, pick: int) -> np.ndarray:
    """Factor ``1 - ρ²`` by which a pick damps every point's label-uncertainty score.

    Misclassification probability and label entropy depend on the variance only through
    ``|mean - t| / sd``: a kriging believer leaves a point whose mean sits on the threshold at
    p = 1/2 however close it is to earlier picks, so an undamped batch piles up along the
    contour. Multiplying the pre-batch score by ``1 - ρ²`` for each pick, with ρ the posterior
    correlation between the point and the pick, is a local penalisation on the GP's own
    length scales: 1 for an independent point, 0 for the pick itself. For the first pick it
    does not depend on the fitted observation noise (later picks see a covariance already
    downdated with it). The first pick of a batch is therefore the sequential choice.

    Args:
        cov: (n, n) current joint posterior covariance.
        pick: index of the point just picked.

    Returns:
        (n,) factors in [0, 1].
    """
    column = cov[:, pick]
    scale = np.maximum(np.diag(cov), _TINY) * max(float(cov[pick, pick]), _TINY)
    return np.clip(1.0 - column**2 / scale, 0.0, 1.0)


def select_batch(
    surrogate: Surrogate,
    candidates: np.ndarray,
    *,
    q: int,
    acquisition: str,
    threshold: float,
    available: np.ndarray,
    reference: np.ndarray | None = None,
    beta: float = 1.96,
    max_joint: int = 1000,
    output: int = 0,
) -> np.ndarray:
    """Choose ``q`` candidates greedily, updating the posterior covariance after each pick.

    Args:
        surrogate: fitted surrogate.
        candidates: (n, d) unit-cube candidates.
        q: batch size.
        acquisition: one of :data:`~theory.active.acquisition.POINTWISE` or
            ``"information_gain"``.
        threshold: latent threshold.
        available: (n,) bool, candidates that may be chosen.
        reference: (r, d) unit-cube reference set of the integrated criterion (required for
            ``information_gain``).
        beta: straddle width.
        max_joint: keep only this many best candidates (by pointwise score, at least ``q``)
            for the dense joint covariance, which bounds memory at ``(max_joint + r)²`` floats.
        output: surrogate output that defines the label.

    Returns:
        (min(q, available.sum()),) chosen candidate indices, in pick order.
    """
    free = np.flatnonzero(available)
    q = min(q, free.size)
    if q == 0:
        return np.empty(0, dtype=int)
    mean, var = surrogate.predict(candidates[free])
    mean, var = mean[:, output], var[:, output]
    screen = "misclassification" if acquisition not in POINTWISE else acquisition
    score = pointwise_score(screen, mean, var, threshold, beta=beta)
    keep = np.sort(np.argsort(-score, kind="stable")[: max(max_joint, q)])
    pool = free[keep]
    n_pool = pool.size
    if acquisition in POINTWISE:
        joint_points = candidates[pool]
    elif acquisition == "information_gain":
        if reference is None:
            raise ValueError("acquisition='information_gain' needs a reference set")
        joint_points = np.concatenate([candidates[pool], reference])
    else:
        raise ValueError(f"acquisition={acquisition!r} cannot be used for batch selection")
    joint_mean, cov = surrogate.joint(joint_points, output=output)
    noise = surrogate.noise(output)
    var0 = np.diag(cov).copy()
    free_mask = np.ones(n_pool, dtype=bool)
    damping = np.ones(n_pool)
    picks: list[int] = []
    for _ in range(q):
        diag = np.maximum(np.diag(cov), 0.0)
        if acquisition == "straddle":
            value = pointwise_score(acquisition, joint_mean, diag, threshold, beta=beta)
        elif acquisition in POINTWISE:
            value = damping * pointwise_score(acquisition, joint_mean, var0, threshold)
        else:
            value = information_gain(
                joint_mean[n_pool:],
                var0[n_pool:],
                diag[n_pool:],
                cov[n_pool:, :n_pool],
                diag[:n_pool],
                noise,
                threshold,
            )
        value = np.where(free_mask, value, -np.inf)
        pick = int(np.argmax(value))
        picks.append(pick)
        free_mask[pick] = False
        damping *= correlation_damping(cov[:n_pool, :n_pool], pick)
        column = cov[:, pick].copy()
        cov -= np.outer(column, column) / max(column[pick] + noise, _TINY)
    return pool[np.asarray(picks, dtype=int)]
