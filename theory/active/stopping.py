"""The stopping rule: expected fraction of the space whose excluded/allowed label is wrong.

With ``p(θ) = P(excluded | data)``, the plug-in label is wrong with probability
``min(p, 1 - p)``; its mean over the pool (or a reference sample of the box, i.e. a Monte
Carlo volume integral) is the expected misclassified volume fraction. It needs no truth, so
it can stop a campaign; the benchmarks check that it tracks the true error.
"""

from __future__ import annotations

import numpy as np


def expected_misclassified_fraction(
    p_excluded: np.ndarray, weights: np.ndarray | None = None
) -> float:
    """Mean of ``min(p, 1 - p)``, optionally weighted (e.g. by a prior density).

    Args:
        p_excluded: (n,) posterior probabilities of exclusion.
        weights: optional (n,) non-negative weights.

    Returns:
        The expected misclassified fraction, in [0, 0.5].
    """
    p = np.asarray(p_excluded, dtype=float)
    if p.ndim != 1 or p.size == 0:
        raise ValueError(f"p_excluded must be a non-empty 1-D array; got shape {p.shape}")
    wrong = np.minimum(p, 1.0 - p)
    if weights is None:
        return float(wrong.mean())
    w = np.asarray(weights, dtype=float)
    if w.shape != p.shape or (w < 0).any() or w.sum() <= 0:
        raise ValueError("weights must be non-negative, not all zero, and shaped like p_excluded")
    return float(np.sum(w * wrong) / w.sum())
