"""Acquisition functions for learning the level set {θ : CLs(θ) = threshold}.

Everything here works on the latent scale (see :mod:`theory.active.transforms`): the surrogate
gives a Gaussian ``f(θ) ~ N(mean, var)`` and a point is excluded when ``f < t``. The pointwise
criteria score one candidate by how unsure its label is; the integrated criterion scores it by
how much evaluating it is expected to shrink the misclassification probability summed over a
reference set — the stepwise-uncertainty-reduction idea of excursion-set estimation
(Bect et al. 2012; Chevalier et al. 2014), which avoids spending evaluations on isolated
uncertain spots that teach nothing about the rest of the contour.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr, owens_t

POINTWISE: tuple[str, ...] = ("straddle", "misclassification", "entropy")
INTEGRATED: tuple[str, ...] = ("information_gain",)
BASELINES: tuple[str, ...] = ("random", "grid", "lhs")
ACQUISITIONS: tuple[str, ...] = POINTWISE + INTEGRATED + BASELINES

_TINY = 1e-12


def p_excluded(mean: np.ndarray, var: np.ndarray, threshold: float) -> np.ndarray:
    """P(f < t) for Gaussian marginals; shapes broadcast."""
    return ndtr((threshold - mean) / np.sqrt(np.maximum(var, _TINY)))


def misclassification(mean: np.ndarray, var: np.ndarray, threshold: float) -> np.ndarray:
    """Probability that the plug-in label (``mean < t``) is wrong: ``min(p, 1 - p)``."""
    return ndtr(-np.abs(mean - threshold) / np.sqrt(np.maximum(var, _TINY)))


def straddle(
    mean: np.ndarray, var: np.ndarray, threshold: float, *, beta: float = 1.96
) -> np.ndarray:
    """Straddle score ``beta * sd - |mean - t|`` (Bryan et al. 2005): high on the contour and
    where the surrogate is unsure."""
    return beta * np.sqrt(np.maximum(var, 0.0)) - np.abs(mean - threshold)


def entropy(mean: np.ndarray, var: np.ndarray, threshold: float) -> np.ndarray:
    """Binary entropy (nats) of the excluded/allowed label."""
    p = np.clip(p_excluded(mean, var, threshold), _TINY, 1.0 - _TINY)
    return -(p * np.log(p) + (1.0 - p) * np.log1p(-p))


def expected_misclassification(
    mean: np.ndarray, var: np.ndarray, post_var: np.ndarray, threshold: float
) -> np.ndarray:
    """Expected misclassification probability after new data shrink the variance.

    Before the data, ``f ~ N(mean, var)``. New observations move the posterior mean by a
    Gaussian amount of variance ``s² = var - post_var`` and leave variance ``post_var``. The
    future misclassification probability ``Φ(-|m'|/σ')``, averaged over the future mean
    ``m' ~ N(mean - t, s²)``, has the closed form ``2 T((mean - t)/√var, √post_var / s)`` with
    Owen's T function (a bivariate-normal orthant probability in disguise).

    Args:
        mean, var: current marginals (any broadcastable shapes).
        post_var: variance after the new data, ``0 ≤ post_var ≤ var``.
        threshold: latent threshold ``t``.

    Returns:
        Expected misclassification probability, broadcast shape.
    """
    var = np.maximum(var, _TINY)
    post_var = np.clip(post_var, 0.0, var)
    gained = np.maximum(var - post_var, _TINY * var)
    h = (mean - threshold) / np.sqrt(var)
    return 2.0 * owens_t(h, np.sqrt(post_var / gained))


def pointwise_score(
    name: str, mean: np.ndarray, var: np.ndarray, threshold: float, *, beta: float = 1.96
) -> np.ndarray:
    """Score candidates with one of :data:`POINTWISE` (larger is better)."""
    if name == "straddle":
        return straddle(mean, var, threshold, beta=beta)
    if name == "misclassification":
        return misclassification(mean, var, threshold)
    if name == "entropy":
        return entropy(mean, var, threshold)
    raise ValueError(f"acquisition={name!r} is not pointwise; allowed: {', '.join(POINTWISE)}")


def information_gain(
    ref_mean: np.ndarray,
    ref_var0: np.ndarray,
    ref_var: np.ndarray,
    cross: np.ndarray,
    cand_var: np.ndarray,
    noise: float,
    threshold: float,
) -> np.ndarray:
    """Expected reduction of the mean misclassification probability over a reference set.

    The state is the posterior after some (fantasised) points of the current batch: reference
    variances ``ref_var`` and candidate variances ``cand_var``, with ``cross`` their covariance.
    Adding candidate ``c`` lowers reference variances to
    ``ref_var - cross[:, c]² / (cand_var[c] + noise)``; the score is the resulting drop of the
    expected misclassification, averaged over the reference set.

    Args:
        ref_mean: (r,) current means on the reference set (unchanged by kriging believers).
        ref_var0: (r,) variances before the batch.
        ref_var: (r,) variances after the points already in the batch.
        cross: (r, c) covariance between reference points and candidates.
        cand_var: (c,) candidate variances.
        noise: observation-noise variance.
        threshold: latent threshold.

    Returns:
        (c,) expected reduction of the reference-averaged misclassification probability.
    """
    mean = ref_mean[:, None]
    var0 = ref_var0[:, None]
    before = expected_misclassification(mean, var0, ref_var[:, None], threshold)
    after_var = ref_var[:, None] - cross**2 / np.maximum(cand_var[None, :] + noise, _TINY)
    after = expected_misclassification(mean, var0, after_var, threshold)
    return np.mean(before - after, axis=0)
