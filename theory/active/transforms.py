"""Map CLs onto a scale where a Gaussian process is a sensible prior.

CLs lives in (0, 1] and spans many decades deep inside the excluded region, while only the
neighbourhood of the threshold matters for the exclusion contour. A probit (or log) transform
with clipping turns it into an unbounded, roughly linear function of the theory parameters and
caps the far-excluded tail, so the surrogate spends its flexibility near the boundary.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy.special import ndtri

Transform = Literal["probit", "log"]
TRANSFORMS: tuple[str, ...] = ("probit", "log")


def _check(kind: str) -> None:
    if kind not in TRANSFORMS:
        raise ValueError(
            f"transform={kind!r} is not known; allowed values: {', '.join(TRANSFORMS)}"
        )


def cls_to_latent(cls: np.ndarray, *, kind: Transform = "probit", eps: float = 1e-4) -> np.ndarray:
    """Transform CLs values to the latent scale the surrogate models.

    Args:
        cls: CLs values, any shape; values outside [eps, 1 - eps] are clipped first.
        kind: ``"probit"`` (Φ⁻¹(CLs)) or ``"log"`` (log CLs).
        eps: clipping floor; deep exclusion carries no information about the contour, so it
            is flattened to keep the GP from chasing it.

    Returns:
        Array of the same shape as ``cls``.
    """
    _check(kind)
    clipped = np.clip(np.asarray(cls, dtype=float), eps, 1.0 - eps)
    return ndtri(clipped) if kind == "probit" else np.log(clipped)


def latent_to_cls(latent: np.ndarray, *, kind: Transform = "probit") -> np.ndarray:
    """Inverse of :func:`cls_to_latent` (up to clipping)."""
    _check(kind)
    latent = np.asarray(latent, dtype=float)
    if kind == "probit":
        from scipy.special import ndtr

        return ndtr(latent)
    return np.exp(np.minimum(latent, 0.0))


def latent_threshold(threshold: float, *, kind: Transform = "probit") -> float:
    """The CLs threshold on the latent scale: excluded ⇔ latent < this value."""
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold={threshold} must lie strictly between 0 and 1")
    return float(cls_to_latent(np.array(threshold), kind=kind, eps=0.0))
