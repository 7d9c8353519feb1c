"""Pair-produced scalar leptoquarks: LQ LQ̄ → ℓℓjj / ℓνjj / ννjj.

Pair production is pure QCD, so σ depends on the mass only (NLO+NLL, pp at 13 TeV, the
values of scalar top-partner pair production); ``beta`` = BR(LQ → ℓq) splits it into
ℓℓjj (β²), ℓνjj (2β(1−β)) and ννjj ((1−β)²). All three are simulated; ``cross_section_pb``
is the total pair cross section.

==========  =====  =====  ======  ======  =======  ======  =======  =======
mass/GeV    200    500    800     1000    1200     1500    2000     2500
σ [pb]      64.5   0.609  0.0326  6.83e-3  1.70e-3  2.7e-4  1.4e-5   1.0e-6
==========  =====  =====  ======  ======  =======  ======  =======  =======
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from theory.kinematics import (
    ELECTRON,
    INVISIBLE,
    JET,
    MUON,
    TAU,
    Particles,
    breit_wigner,
    channel_table,
    decay,
    eta_from_rapidity,
    wrap_phi,
)
from theory.models.base import Model, Point, log_interp, random_sign
from theory.space import Parameter, ParameterSpace

LEPTOQUARK_XSEC = (
    (200.0, 64.5),
    (500.0, 0.609),
    (800.0, 0.0326),
    (1000.0, 6.83e-3),
    (1200.0, 1.70e-3),
    (1500.0, 2.7e-4),
    (2000.0, 1.4e-5),
    (2500.0, 1.0e-6),
)
_LEPTONS = {"e": ELECTRON, "mu": MUON, "tau": TAU}


@dataclass(frozen=True, repr=False)
class Leptoquark(Model):
    """Scalar leptoquark pair (mass, beta) coupling to quarks and ``lepton`` (e, mu or tau)."""

    lepton: str = "mu"
    name: str = "leptoquark"
    signature: str = "LQ LQ -> l l j j / l nu j j"

    def __post_init__(self) -> None:
        if self.lepton not in _LEPTONS:
            raise ValueError(
                f"leptoquark: lepton '{self.lepton}' not allowed; allowed: {', '.join(_LEPTONS)}"
            )

    @cached_property
    def space(self) -> ParameterSpace:
        return ParameterSpace(
            parameters=(
                Parameter(name="mass", low=200.0, high=2500.0, log=True, unit="GeV"),
                Parameter(name="beta", low=0.0, high=1.0),
            )
        )

    def cross_section_pb(self, point: Point) -> float:
        return float(log_interp(self.check_point(point)["mass"], LEPTOQUARK_XSEC))

    def truth(self, point: Point, n: int, rng: np.random.Generator) -> tuple[Particles, np.ndarray]:
        p = self.check_point(point)
        mass, beta = p["mass"], p["beta"]
        event = np.arange(n)
        pt = -0.4 * mass * np.log(1.0 - rng.random(n)) * (0.5 + rng.random(n))
        phi = rng.uniform(-np.pi, np.pi, n)
        lepton = _LEPTONS[self.lepton]
        rows = channel_table(
            ((lepton, JET, 1, 0, max(beta, 1e-12)), (INVISIBLE, JET, 0, 0, max(1 - beta, 1e-12)))
        )
        sign = random_sign(rng, n)
        parts = []
        for azimuth, charge in ((phi, sign), (wrap_phi(phi + np.pi), -sign)):
            m = breit_wigner(rng, n, mass, 0.005 * mass, 0.9 * mass, 1.1 * mass)
            y = np.clip(0.8 * rng.standard_normal(n), -3.5, 3.5)
            eta = eta_from_rapidity(pt, y, m)
            parts.append(decay(rng, event, pt, eta, azimuth, m, rows, charge=charge, merge=False))
        return Particles.concat(parts), np.ones(n)
