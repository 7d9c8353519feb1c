"""What every benchmark model provides, and the shared pieces of their generators.

A model is plain data plus two functions: a parametric cross section (pp at √s = 13 TeV,
tabulated at reference masses and interpolated log-log, scaled by couplings) and a truth
generator that emits :class:`~theory.kinematics.Particles` for the fast simulator. External
simulators only need ``name``, ``space`` and ``cross_section_pb``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence

import numpy as np

from theory.kinematics import (
    Particles,
    breit_wigner,
    channel_table,
    decay,
    eta_from_rapidity,
    production,
    rapidity_width,
)
from theory.space import ParameterSpace

Point = Mapping[str, float]


class Model(ABC):
    """A benchmark BSM model.

    Attributes:
        name: registry name (see :func:`theory.models.get_model`).
        space: the parameter space.
        signature: the decay signature in words (for reports).
        isr_mean: mean number of extra initial-state-radiation jets the simulator adds.
    """

    name: str
    signature: str
    isr_mean: float = 1.0

    @property
    @abstractmethod
    def space(self) -> ParameterSpace:
        """The model's parameter space."""

    @abstractmethod
    def cross_section_pb(self, point: Point) -> float:
        """σ × BR of the simulated final states in pb at ``point``."""

    @abstractmethod
    def truth(self, point: Point, n: int, rng: np.random.Generator) -> tuple[Particles, np.ndarray]:
        """Truth particles of ``n`` events and their relative weights ``(n,)`` (mean 1)."""

    def check_point(self, point: Point) -> dict[str, float]:
        """The point as floats; one clear error if a parameter is missing, unknown or outside."""
        names = self.space.names
        missing = [n for n in names if n not in point]
        unknown = [k for k in point if k not in names]
        if missing or unknown:
            raise ValueError(
                f"model '{self.name}': point has missing {missing} / unknown {unknown} "
                f"parameters; allowed: {', '.join(names)}"
            )
        values = {n: float(point[n]) for n in names}
        for parameter in self.space.parameters:
            v = values[parameter.name]
            if not parameter.low <= v <= parameter.high:
                raise ValueError(
                    f"model '{self.name}': parameter '{parameter.name}' = {v} outside "
                    f"[{parameter.low}, {parameter.high}]"
                )
        if not self.space.satisfies_constraints(values)[0]:
            raise ValueError(
                f"model '{self.name}': point {values} violates constraints "
                f"{list(self.space.constraints)}"
            )
        return values

    def describe(self) -> dict[str, object]:
        """Plain-data description (name, signature, space) for reports and JSON."""
        return {
            "name": self.name,
            "signature": self.signature,
            "space": self.space.model_dump(mode="json"),
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def log_interp(x: float | np.ndarray, table: Sequence[tuple[float, float]]) -> np.ndarray:
    """Log-log interpolation of ``(x, y)`` reference points; linear in log-log beyond the ends."""
    xs = np.log([row[0] for row in table])
    ys = np.log([row[1] for row in table])
    lx = np.log(np.asarray(x, dtype=np.float64))
    inner = np.interp(lx, xs, ys)
    low_slope = (ys[1] - ys[0]) / (xs[1] - xs[0])
    high_slope = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
    out = np.where(lx < xs[0], ys[0] + low_slope * (lx - xs[0]), inner)
    out = np.where(lx > xs[-1], ys[-1] + high_slope * (lx - xs[-1]), out)
    return np.exp(out)


def resonance_truth(
    rng: np.random.Generator,
    n: int,
    *,
    mass: float,
    relative_width: float,
    channels: tuple[tuple[int, int, int, int, float], ...],
    charge: int | np.ndarray = 1,
    gaussian: bool = False,
) -> Particles:
    """Single production of a resonance decaying to two bodies, ``n`` events.

    The resonance recoils against ISR (``<pT> ≈ 15 GeV + 3 % of the mass``) with a rapidity
    spread that shrinks with the mass. The line shape is a Breit-Wigner truncated to
    ``[0.6, 1.4] × mass``, or a Gaussian of relative width ``relative_width`` when
    ``gaussian`` (the generic-resonance width option).
    """
    event = np.arange(n)
    pt, y, phi = production(
        rng, n, pt_scale=15.0 + 0.03 * mass, rapidity_width=float(rapidity_width(mass))
    )
    if gaussian:
        m = np.abs(mass * (1.0 + relative_width * rng.standard_normal(n)))
        m = np.maximum(m, 0.05 * mass)
    else:
        m = breit_wigner(rng, n, mass, relative_width * mass, 0.6 * mass, 1.4 * mass)
    eta = eta_from_rapidity(pt, y, m)
    return decay(rng, event, pt, eta, phi, m, channel_table(channels), charge=charge)


def random_sign(rng: np.random.Generator, n: int, plus_fraction: float = 0.5) -> np.ndarray:
    """Charge signs ±1, shape ``(n,)``, with ``plus_fraction`` positive."""
    return np.where(rng.random(n) < plus_fraction, 1, -1).astype(np.int8)
