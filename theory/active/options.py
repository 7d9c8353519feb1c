"""Validated settings shared by the pool, box and model-choice learners."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Acquisition = Literal[
    "straddle", "misclassification", "entropy", "information_gain", "random", "grid", "lhs"
]


class ActiveOptions(BaseModel):
    """How the active learner proposes points.

    Attributes:
        threshold: CLs below which a point is excluded.
        acquisition: the criterion, or a model-free baseline (``random``, ``grid``, ``lhs``).
        batch_size: points proposed per step after the initial design.
        initial: size of the initial Latin-hypercube design (default ``max(batch_size, 5 d)``).
        transform: latent scale of the GP (``probit`` or ``log`` CLs).
        eps: CLs clipping floor of the transform, at most ``threshold / 10``.
        label: which output defines the label when ``evaluate`` returns (observed, expected).
        stop_at: stop when the expected misclassified fraction is at most this (and the data
            hold both an excluded and an allowed point, so the contour has been seen).
        backend: GP back end, ``auto`` switches to the sparse GP above ``exact_max`` points.
        exact_max: largest training set fitted exactly under ``auto``.
        max_joint: candidates kept (best pointwise score first) for the joint batch selection.
        n_reference: reference points over which the integrated criterion averages.
        beta: straddle width.
        trust_evaluated: label evaluated points by their measured CLs rather than the GP.
        torch_threads: torch threads while fitting and predicting (``None``: leave as is);
            small GP algebra runs fastest on one thread.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    threshold: float = Field(0.05, gt=0.0, lt=1.0)
    acquisition: Acquisition = "straddle"
    batch_size: int = Field(1, ge=1)
    initial: int | None = Field(None, ge=1)
    transform: Literal["probit", "log"] = "probit"
    eps: float = Field(1e-4, gt=0.0, lt=0.05)
    label: Literal["observed", "expected"] = "observed"
    stop_at: float | None = Field(None, gt=0.0, lt=0.5)
    backend: Literal["auto", "exact", "sparse"] = "auto"
    exact_max: int = Field(1000, ge=2)
    max_joint: int = Field(1000, ge=1)
    n_reference: int = Field(1000, ge=1)
    beta: float = Field(1.96, gt=0.0)
    trust_evaluated: bool = True
    torch_threads: int | None = Field(1, ge=1)

    @model_validator(mode="after")
    def _floor_below_threshold(self) -> ActiveOptions:
        """A clipping floor at or above the threshold lifts every CLs above it on the latent
        scale, so nothing could ever be labelled excluded; one just below it flattens the
        latent surface where the contour is learned. A decade of room avoids both."""
        if self.eps * 10 > self.threshold:
            raise ValueError(
                f"eps={self.eps} must be at most threshold/10 = {self.threshold / 10:g}: "
                "CLs is clipped at eps before the transform"
            )
        return self

    def initial_size(self, dim: int) -> int:
        """The initial design size for a ``dim``-dimensional space."""
        return self.initial if self.initial is not None else max(self.batch_size, 5 * dim)
