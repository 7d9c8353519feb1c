"""Toy theories with known exclusion contours, for testing and benchmarking active learning.

Like BoTorch's synthetic test functions these ship with the package: each is a deterministic
CLs(θ) (observed and expected) over a :class:`~theory.space.ParameterSpace`, so the active
learner can be exercised, and its misclassification measured exactly, without a simulator.

Each toy defines a log signal-to-limit ratio ``ℓ(θ)`` (excluded ⇔ ℓ > 0) and sets
``CLs = 0.05 ** exp(κ ℓ)`` — the CLs of a zero-background counting experiment, ``exp(-s)``,
with a signal ``s = 3.0 e^{κℓ}`` at the 95 % limit when ℓ = 0. The contour is exactly ℓ = 0, and
CLs saturates as real CLs does: at 1 where the signal vanishes and at 0 deep inside the
exclusion, so the surrogate cannot learn the contour from far-away points alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from theory.space import Parameter, ParameterSpace

Ratio = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class ToyTheory:
    """A toy theory: parameter space plus observed and expected log signal-to-limit ratios.

    Attributes:
        name: identifier.
        space: the parameter space (bounds, log flags, constraints).
        log_ratio: (n, d) → (n,) observed ``ℓ``; excluded where ℓ > 0.
        log_ratio_expected: (n, d) → (n,) expected ``ℓ``.
        kappa: steepness of CLs across the contour (log-signal scale).
    """

    name: str
    space: ParameterSpace
    log_ratio: Ratio
    log_ratio_expected: Ratio
    kappa: float = 1.0

    def _cls(self, points: np.ndarray, ratio: Ratio, noise: float, seed: int | None) -> np.ndarray:
        x = self.space.as_array(points)
        log_signal = self.kappa * ratio(x)
        if noise > 0:
            log_signal = log_signal + noise * np.random.default_rng(seed).standard_normal(len(x))
        return np.power(0.05, np.exp(log_signal))

    def cls(self, points: np.ndarray, *, noise: float = 0.0, seed: int | None = None) -> np.ndarray:
        """Observed CLs at ``points`` (n, d) → (n,); ``noise`` adds Gaussian noise of that width
        to the log signal (seeded by ``seed``), mimicking a simulation with few events."""
        return self._cls(points, self.log_ratio, noise, seed)

    def cls_pair(
        self, points: np.ndarray, *, noise: float = 0.0, seed: int | None = None
    ) -> np.ndarray:
        """(observed, expected) CLs, shape (n, 2)."""
        obs = self._cls(points, self.log_ratio, noise, seed)
        exp = self._cls(points, self.log_ratio_expected, noise, None if seed is None else seed + 1)
        return np.stack([obs, exp], axis=-1)

    def excluded(self, points: np.ndarray, *, expected: bool = False) -> np.ndarray:
        """True label (n,) bool: observed (or expected) CLs < 0.05."""
        ratio = self.log_ratio_expected if expected else self.log_ratio
        return ratio(self.space.as_array(points)) > 0

    def reference_scan(self, n_per_dim: int) -> np.ndarray:
        """A dense regular scan of the allowed space (grid in unit coordinates), (N, d)."""
        axis = (np.arange(n_per_dim) + 0.5) / n_per_dim
        grid = np.stack(np.meshgrid(*([axis] * self.space.dim), indexing="ij"), -1)
        points = self.space.from_unit(grid.reshape(-1, self.space.dim))
        return points[self.space.contains(points)]


def _ellipse(scale: float) -> Ratio:
    angle = np.deg2rad(25.0)
    c, s = np.cos(angle), np.sin(angle)

    def ratio(x: np.ndarray) -> np.ndarray:
        u, v = x[:, 0] - 0.45, x[:, 1] - 0.55
        a, b = c * u + s * v, -s * u + c * v
        return scale * (1.0 - np.hypot(a / 0.2, b / 0.12))

    return ratio


def ellipse_2d() -> ToyTheory:
    """A tilted ellipse in the unit square (about 7.5 % excluded); the simplest closed contour."""
    space = ParameterSpace(
        parameters=(Parameter(name="x", low=0.0, high=1.0), Parameter(name="y", low=0.0, high=1.0))
    )
    return ToyTheory("ellipse_2d", space, _ellipse(2.0), _ellipse(1.6))


def _sbottom(shift: float, wiggle: float) -> Ratio:
    def ratio(x: np.ndarray) -> np.ndarray:
        m_sb, m_n2 = x[:, 0], x[:, 1]
        gap = np.maximum(m_sb - m_n2 - 130.0, 1e-3)
        acceptance = np.log1p(-np.exp(-gap / 120.0))
        falling = -(m_sb - 1250.0) / 160.0
        bump = 0.5 * np.exp(-(((m_n2 - 600.0) / 350.0) ** 2))
        return falling + acceptance + bump - shift + wiggle * np.sin(m_n2 / 140.0)

    return ratio


def sbottom_like_2d() -> ToyTheory:
    """A mass–mass plane like a bottom-squark search: (m_sbottom, m_chi2) with
    ``m_chi2 < m_sbottom - 130``; the exclusion reaches far in m_sbottom for a light chi2 and
    bends back towards the compressed diagonal."""
    space = ParameterSpace(
        parameters=(
            Parameter(name="m_sbottom", low=250.0, high=1700.0, unit="GeV"),
            Parameter(name="m_chi2", low=130.0, high=1550.0, unit="GeV"),
        ),
        constraints=("m_chi2 < m_sbottom - 130",),
    )
    return ToyTheory("sbottom_like_2d", space, _sbottom(0.0, 0.15), _sbottom(0.2, 0.0))


def _mediator(shift: float) -> Ratio:
    def ratio(x: np.ndarray) -> np.ndarray:
        m_med, m_chi, g = x[:, 0], x[:, 1], x[:, 2]
        phase = np.clip(1.0 - 4.0 * (m_chi / m_med) ** 2, 1e-6, 1.0)
        return 2.0 * np.log(g / 0.25) - (m_med - 1200.0) / 700.0 + 0.75 * np.log(phase) - shift

    return ratio


def mediator_3d() -> ToyTheory:
    """A dark-matter mediator (m_med, m_chi, g), all log-scaled, with ``m_chi < m_med / 2``:
    a curved excluded volume in 3-D."""
    space = ParameterSpace(
        parameters=(
            Parameter(name="m_med", low=200.0, high=4000.0, log=True, unit="GeV"),
            Parameter(name="m_chi", low=1.0, high=1500.0, log=True, unit="GeV"),
            Parameter(name="g", low=0.02, high=1.0, log=True),
        ),
        constraints=("m_chi < m_med / 2",),
    )
    return ToyTheory("mediator_3d", space, _mediator(0.0), _mediator(0.3))


TOYS: dict[str, Callable[[], ToyTheory]] = {
    "ellipse_2d": ellipse_2d,
    "sbottom_like_2d": sbottom_like_2d,
    "mediator_3d": mediator_3d,
}
