"""Singly produced s-channel resonances: Z′, W′, excited quark and a generic X → a b.

Cross sections (pp, √s = 13 TeV) are tabulated at reference masses and interpolated log-log;
the numbers follow the order of magnitude of the LO(+K) benchmark predictions the LHC
experiments use (sequential SM Z′/W′, excited quark with Λ = m, f = f′ = f_s = 1):

=========  =====  =====  =====  ======  ======  ======  ======  ======  ==========================
mass/TeV   0.2    0.5    1      2       3       4       5       6       meaning of σ
=========  =====  =====  =====  ======  ======  ======  ======  ======  ==========================
Z′ (g=.5)  1000   67     6.0    0.32    0.033   5.3e-3  1.1e-3  2.4e-4  σ(pp → Z′), × (g/0.5)²
W′         --     75     6.0    0.30    0.036   6.0e-3  1.1e-3  1.8e-4  σ × BR(ℓν), ℓ = e+μ+τ
q*         --     150    10     0.60    0.070   0.010   1.5e-3  1.8e-4  σ × BR(q γ)
=========  =====  =====  =====  ======  ======  ======  ======  ======  ==========================

Z′ branching fractions (fixed; visible final states, normalised to one): ee 4 %, μμ 4 %,
ττ 4 %, light-quark jj 70 %, bb 18 %; total width Γ/m = 3 % × (g/0.5)².
W′: ℓν with ℓ = e, μ, τ equally, Γ/m = 3.3 %, 65 % W′⁺. q*: q γ, Γ/m = 3.5 %.
The generic resonance uses the Z′ cross-section curve with BR(X → a b) = 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from theory.kinematics import (
    BJET,
    ELECTRON,
    INVISIBLE,
    JET,
    KIND_OF,
    MUON,
    PHOTON,
    TAU,
    Particles,
)
from theory.models.base import Model, Point, log_interp, random_sign, resonance_truth
from theory.space import Parameter, ParameterSpace

ZPRIME_XSEC = (
    (200.0, 1000.0),
    (300.0, 280.0),
    (500.0, 67.0),
    (1000.0, 6.0),
    (2000.0, 0.32),
    (3000.0, 0.033),
    (4000.0, 5.3e-3),
    (5000.0, 1.07e-3),
    (6000.0, 2.4e-4),
    (7000.0, 5.0e-5),
)
WPRIME_XSEC = (
    (300.0, 450.0),
    (500.0, 75.0),
    (1000.0, 6.0),
    (2000.0, 0.30),
    (3000.0, 0.036),
    (4000.0, 6.0e-3),
    (5000.0, 1.05e-3),
    (6000.0, 1.8e-4),
    (7000.0, 3.0e-5),
)
QSTAR_XSEC = (
    (500.0, 150.0),
    (1000.0, 10.0),
    (2000.0, 0.6),
    (3000.0, 0.07),
    (4000.0, 0.01),
    (5000.0, 1.5e-3),
    (6000.0, 1.8e-4),
    (7000.0, 1.5e-5),
)
ZPRIME_CHANNELS: dict[str, tuple[int, int, int, int, float]] = {
    "ee": (ELECTRON, ELECTRON, -1, 1, 0.04),
    "mumu": (MUON, MUON, -1, 1, 0.04),
    "tautau": (TAU, TAU, -1, 1, 0.04),
    "jj": (JET, JET, 0, 0, 0.70),
    "bb": (BJET, BJET, 0, 0, 0.18),
}
RESONANCE_PRODUCTS = ("e", "mu", "tau", "gamma", "j", "b")
_REFERENCE_COUPLING = 0.5


def _mass(low: float, high: float, name: str = "mass") -> Parameter:
    return Parameter(name=name, low=low, high=high, log=True, unit="GeV")


def _coupling() -> Parameter:
    return Parameter(name="g", low=0.01, high=1.0, log=True)


@dataclass(frozen=True, repr=False)
class ZPrime(Model):
    """Z′(mass, g) → ee / μμ / ττ / jj / bb; ``channels`` restricts the simulated decays.

    σ × BR = σ_table(mass) × (g/0.5)² × Σ BR(selected channels).
    """

    channels: tuple[str, ...] = tuple(ZPRIME_CHANNELS)
    name: str = "zprime"
    signature: str = "Z' -> ee / mumu / tautau / jj / bb"

    def __post_init__(self) -> None:
        bad = [c for c in self.channels if c not in ZPRIME_CHANNELS]
        if bad or not self.channels:
            raise ValueError(
                f"zprime: unknown channels {bad or '(none given)'}; allowed: "
                f"{', '.join(ZPRIME_CHANNELS)}"
            )

    @cached_property
    def space(self) -> ParameterSpace:
        return ParameterSpace(parameters=(_mass(200.0, 6000.0), _coupling()))

    @property
    def branching_fraction(self) -> float:
        return float(sum(ZPRIME_CHANNELS[c][4] for c in self.channels))

    def relative_width(self, g: float) -> float:
        return 0.03 * (g / _REFERENCE_COUPLING) ** 2

    def cross_section_pb(self, point: Point) -> float:
        p = self.check_point(point)
        sigma = log_interp(p["mass"], ZPRIME_XSEC) * (p["g"] / _REFERENCE_COUPLING) ** 2
        return float(sigma * self.branching_fraction)

    def truth(self, point: Point, n: int, rng: np.random.Generator) -> tuple[Particles, np.ndarray]:
        p = self.check_point(point)
        rows = tuple(ZPRIME_CHANNELS[c] for c in self.channels)
        particles = resonance_truth(
            rng, n, mass=p["mass"], relative_width=self.relative_width(p["g"]), channels=rows
        )
        return particles, np.ones(n)


@dataclass(frozen=True, repr=False)
class WPrime(Model):
    """Sequential W′(mass) → ℓν (ℓ = e, μ, τ); σ × BR(ℓν) summed over the three leptons."""

    name: str = "wprime"
    signature: str = "W' -> e nu / mu nu / tau nu"

    @cached_property
    def space(self) -> ParameterSpace:
        return ParameterSpace(parameters=(_mass(300.0, 7000.0),))

    def cross_section_pb(self, point: Point) -> float:
        return float(log_interp(self.check_point(point)["mass"], WPRIME_XSEC))

    def truth(self, point: Point, n: int, rng: np.random.Generator) -> tuple[Particles, np.ndarray]:
        p = self.check_point(point)
        rows = tuple((lep, INVISIBLE, 1, 0, 1.0) for lep in (ELECTRON, MUON, TAU))
        particles = resonance_truth(
            rng,
            n,
            mass=p["mass"],
            relative_width=0.033,
            channels=rows,
            charge=random_sign(rng, n, 0.65),
        )
        return particles, np.ones(n)


@dataclass(frozen=True, repr=False)
class ExcitedQuark(Model):
    """Excited quark q*(mass) → q γ (Λ = mass); σ × BR(qγ)."""

    name: str = "qstar"
    signature: str = "q* -> q gamma"

    @cached_property
    def space(self) -> ParameterSpace:
        return ParameterSpace(parameters=(_mass(500.0, 7000.0),))

    def cross_section_pb(self, point: Point) -> float:
        return float(log_interp(self.check_point(point)["mass"], QSTAR_XSEC))

    def truth(self, point: Point, n: int, rng: np.random.Generator) -> tuple[Particles, np.ndarray]:
        p = self.check_point(point)
        particles = resonance_truth(
            rng, n, mass=p["mass"], relative_width=0.035, channels=((JET, PHOTON, 0, 0, 1.0),)
        )
        return particles, np.ones(n)


@dataclass(frozen=True, repr=False)
class Resonance(Model):
    """Generic narrow resonance X(mass, g, width) → a b.

    ``a``, ``b`` are among ``e, mu, tau, gamma, j, b``. σ = Z′ curve × (g/0.5)², BR = 1. The
    parameter ``width`` is a relative Gaussian width (0–15 %) of the produced mass: 0 is a
    line, larger values emulate broad states or poor resolution without changing σ.
    """

    a: str = "mu"
    b: str = "mu"
    name: str = "resonance"

    def __post_init__(self) -> None:
        for label, value in (("a", self.a), ("b", self.b)):
            if value not in RESONANCE_PRODUCTS:
                raise ValueError(
                    f"resonance: product {label}='{value}' not allowed; "
                    f"allowed: {', '.join(RESONANCE_PRODUCTS)}"
                )

    @property
    def signature(self) -> str:  # type: ignore[override]
        return f"X -> {self.a} {self.b}"

    @cached_property
    def space(self) -> ParameterSpace:
        return ParameterSpace(
            parameters=(
                _mass(200.0, 6000.0),
                _coupling(),
                Parameter(name="width", low=0.0, high=0.15),
            )
        )

    def cross_section_pb(self, point: Point) -> float:
        p = self.check_point(point)
        return float(log_interp(p["mass"], ZPRIME_XSEC) * (p["g"] / _REFERENCE_COUPLING) ** 2)

    def truth(self, point: Point, n: int, rng: np.random.Generator) -> tuple[Particles, np.ndarray]:
        p = self.check_point(point)
        kind_a, kind_b = KIND_OF[self.a], KIND_OF[self.b]
        charged_a, charged_b = self.a in ("e", "mu", "tau"), self.b in ("e", "mu", "tau")
        q_a, q_b = (-1, 1) if charged_a and charged_b else (int(charged_a), int(charged_b))
        particles = resonance_truth(
            rng,
            n,
            mass=p["mass"],
            relative_width=p["width"],
            channels=((kind_a, kind_b, q_a, q_b, 1.0),),
            charge=random_sign(rng, n),
            gaussian=True,
        )
        return particles, np.ones(n)
