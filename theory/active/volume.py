"""Posterior of the excluded fraction of a model's space, from joint draws of the surrogate.

A learner reports P(excluded) at every reference point. Three numbers follow from it, and a
review should see which one it is reading:

* the plug-in fraction, the share of points with P(excluded) > ½ — the volume of the map;
* the posterior mean of the excluded fraction F, which by linearity is the mean of
  P(excluded) and needs no sampling;
* the spread of F, which depends on how the labels' errors are correlated: the points near one
  stretch of contour are wrong together, so it needs the joint posterior, not the marginals.

This module draws the latent function jointly at the reference points, counts the excluded
share of each draw and quotes its median and central 68 % interval. For orientation: if every
point's error were perfectly correlated (one latent shift), the 16 % and 84 % quantiles of F
would be exactly the shares with P(excluded) > 0.84 and > 0.16, the band that
:meth:`campaign.coverage.ModelCoverage.excluded_volume` quotes; independent errors give the
Poisson-binomial spread √(Σ p(1 − p)) / r instead. The surrogate's correlations put the actual
spread in between, and the tests check both limits.

The interval is the surrogate's uncertainty about where the contour runs, given the evaluated
points; it is a statement about the learning, not a second confidence level on top of CLs. It
inherits the surrogate's overconfidence on few points: hyperparameters fitted to a few dozen
points or fewer make the GP too sure (RESULTS.md, "Surrogate-fit variants"), and over 20 seeds
on six problems with known truth the 68 % interval held the true fraction in only 25–55 % of
runs after 15–20 evaluations, 60–100 % after 30–45 (``benchmarks/bench_active_volume.py``). Drawing the
hyperparameters from their posterior as well raised the early figure only to 35–75 %, with a
fit eight times as slow (1.2 s against 0.15 s on 40 points of sbottom region A), so the library
keeps the fitted ones and says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from theory.active.box import BoxHistory
from theory.active.engine import fit_step, measured_labels, posterior, stream
from theory.active.pool import PoolHistory, pool_to_unit

_DRAWS_STREAM = 13
_CHUNK = 250
QUANTILES = (0.16, 0.5, 0.84)
"""Lower end, median and upper end of the quoted interval (central 68 %)."""


@dataclass(frozen=True)
class FractionPosterior:
    """Posterior of the excluded fraction of a reference set.

    Attributes:
        mean: posterior mean, the mean of P(excluded) over the reference points.
        median, low, high: median and central 68 % interval of the fraction over joint draws.
        draws: number of joint draws behind the quantiles.
    """

    mean: float
    median: float
    low: float
    high: float
    draws: int


def fraction_draws(
    mean: np.ndarray,
    cov: np.ndarray,
    *,
    threshold: float,
    draws: int,
    seed: int,
    fixed: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Excluded fraction of each joint draw ``f ~ N(mean, cov)``: the share of ``f < threshold``.

    Args:
        mean: (r,) latent posterior mean.
        cov: (r, r) its covariance.
        threshold: latent threshold (excluded below it).
        draws: number of draws.
        seed: seeds the draws.
        fixed: optional ``(rows, excluded)``: points whose label is known (evaluated points
            labelled by their measured CLs) and is the same in every draw.

    Returns:
        (draws,) fractions in [0, 1].
    """
    mean = np.asarray(mean, dtype=float)
    cov = np.asarray(cov, dtype=float)
    r = mean.shape[0]
    if mean.ndim != 1 or cov.shape != (r, r) or r == 0:
        raise ValueError(
            f"mean must be (r,) and cov (r, r) with r ≥ 1; got {mean.shape}, {cov.shape}"
        )
    if draws < 1:
        raise ValueError(f"draws must be ≥ 1; got {draws}")
    root = _square_root(cov)
    rng = np.random.default_rng(seed)
    out = np.empty(draws)
    for start in range(0, draws, _CHUNK):
        k = min(_CHUNK, draws - start)
        excluded = (mean[:, None] + root @ rng.standard_normal((r, k))) < threshold
        if fixed is not None:
            rows, labels = fixed
            excluded[np.asarray(rows, dtype=int)] = np.asarray(labels, dtype=bool)[:, None]
        out[start : start + k] = excluded.mean(axis=0)
    return out


def _square_root(cov: np.ndarray) -> np.ndarray:
    """A matrix ``L`` with ``L Lᵀ ≈ cov``: Cholesky with growing jitter, else clipped eigh.

    Posterior covariances at points next to evaluated ones are singular to rounding; jitter of
    up to 1e-6 of the largest variance changes no label that matters.
    """
    cov = 0.5 * (cov + cov.T)
    scale = max(float(np.max(np.diag(cov))), 1e-300)
    for jitter in (0.0, 1e-12, 1e-10, 1e-8, 1e-6):
        try:
            return np.linalg.cholesky(cov + jitter * scale * np.eye(cov.shape[0]))
        except np.linalg.LinAlgError:
            continue
    values, vectors = np.linalg.eigh(cov)
    return vectors * np.sqrt(np.clip(values, 0.0, None))


def summarise(fractions: np.ndarray, p_excluded: np.ndarray) -> FractionPosterior:
    """The posterior mean (closed form, from ``p_excluded``) and the draws' quantiles."""
    low, median, high = np.quantile(np.asarray(fractions, dtype=float), QUANTILES)
    return FractionPosterior(
        mean=float(np.mean(p_excluded)),
        median=float(median),
        low=float(low),
        high=float(high),
        draws=len(fractions),
    )


def excluded_fraction_posterior(
    history: PoolHistory | BoxHistory,
    *,
    to_unit: Callable[[np.ndarray], np.ndarray] | None = None,
    draws: int = 1000,
) -> tuple[FractionPosterior | None, FractionPosterior | None]:
    """Posterior of the excluded fraction after a learner's last step, for each output.

    The learner's last surrogate is refitted from the history (a fit is a pure function of the
    evaluated data, the seed and the step, so this is the same GP that produced
    ``history.final.p_excluded``, which is checked) and drawn jointly on the reference points:
    the candidates of a pool, the reference set of a box.

    Args:
        history: a :class:`~theory.active.pool.PoolHistory` or
            :class:`~theory.active.box.BoxHistory`.
        to_unit: the box's map to the unit cube (``space.to_unit``); needed for a box history,
            ignored for a pool (which normalises by its own range).
        draws: joint draws behind the quantiles (their Monte Carlo error on a quantile of a
            fraction is about √(q(1 − q) / draws) in probability).

    Returns:
        ``(label_output, other_output)``; the second is None when one output was modelled,
        and both are None when the learner never had a surrogate (fewer than two successful
        evaluations).

    Raises:
        ValueError: for a box history without ``to_unit``, or when the refit does not
            reproduce the history's last P(excluded) (another space, or an edited history).
    """
    steps = history.steps
    if not steps:
        return None, None
    opts, seed = history.options, history.seed
    values = history.evaluated_values
    fixed_rows = None
    if isinstance(history, PoolHistory):
        reference = pool_to_unit(history.candidates, history.log_scale)
        fixed_rows = history.evaluated_indices
        evaluated = reference[fixed_rows]
    else:
        if to_unit is None:
            raise ValueError("excluded_fraction_posterior: a box history needs to_unit")
        reference = to_unit(history.reference)
        evaluated = to_unit(history.evaluated_points)
    held = history.last_fit() if isinstance(history, PoolHistory) else None
    fit = held or fit_step(evaluated, values, opts=opts, seed=seed, step=len(steps))
    if fit.surrogate is None:
        return None, None
    final = steps[-1]
    measured = None if fixed_rows is None else (fixed_rows, values)
    refitted, _ = posterior(fit, reference, opts=opts, measured=measured)
    if not np.allclose(refitted, final.p_excluded, rtol=0.0, atol=1e-6):
        raise ValueError(
            "excluded_fraction_posterior: the refitted surrogate does not reproduce the "
            "history's last P(excluded); to_unit must be the space the learner ran on"
        )
    posteriors: list[FractionPosterior | None] = []
    for k, p in enumerate((final.p_excluded, final.p_excluded_other)):
        if p is None:
            posteriors.append(None)
            continue
        fixed = None
        if fixed_rows is not None and opts.trust_evaluated:
            known, labels = measured_labels(values, fit.output_order[k], opts=opts)
            fixed = (fixed_rows[known], labels)
        mean, cov = fit.surrogate.joint(reference, output=k)
        fractions = fraction_draws(
            mean,
            cov,
            threshold=fit.latent_threshold,
            draws=draws,
            seed=stream(seed, len(steps), _DRAWS_STREAM + k),
            fixed=fixed,
        )
        posteriors.append(summarise(fractions, p))
    return posteriors[0], posteriors[1]
