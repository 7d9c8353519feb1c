"""X(m_X) → Y(m_Y) Z → (qq)(qq): two fat jets with two-prong substructure (LHC Olympics).

The LHC Olympics 2020 R&D signal is m_X = 3.5 TeV, m_Y = 500 GeV, m_Z = 100 GeV; here
``m_X`` and ``m_Y`` are parameters and ``m_z`` (the lighter daughter, 100 GeV by default) is
an option. Both daughters decay to quarks; boosted decays (2m/pT < 0.8) become single jets
with ``prongs = 2`` (low τ21, jet mass at the daughter mass) in both ``jet`` and ``fatjet``.

σ × BR(X → YZ → 4q) (pp at 13 TeV), a W′-like curve independent of m_Y:

==========  ====  =====  =====  ======  ======  ======
m_X/TeV     1     2      3.5    5       6       7
σ [pb]      5.0   0.20   5e-3   3e-4    5e-5    8e-6
==========  ====  =====  =====  ======  ======  ======
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from theory.kinematics import (
    JET,
    Particles,
    breit_wigner,
    channel_table,
    decay,
    eta_from_rapidity,
    production,
    rapidity_width,
    two_body,
)
from theory.models.base import Model, Point, log_interp
from theory.space import Parameter, ParameterSpace

XYZ_XSEC = (
    (1000.0, 5.0),
    (2000.0, 0.20),
    (3500.0, 5.0e-3),
    (5000.0, 3.0e-4),
    (6000.0, 5.0e-5),
    (7000.0, 8.0e-6),
)


@dataclass(frozen=True, repr=False)
class XToYZ(Model):
    """X(m_X) → Y(m_Y) Z(m_z), both to quarks: the dijet-with-substructure topology."""

    m_z: float = 100.0
    name: str = "x_yz"
    signature: str = "X -> Y Z -> 2 fat jets (two-prong)"

    def __post_init__(self) -> None:
        if not 10.0 <= self.m_z <= 500.0:
            raise ValueError(f"x_yz: m_z = {self.m_z} GeV not allowed; allowed: 10 to 500 GeV")

    @cached_property
    def space(self) -> ParameterSpace:
        return ParameterSpace(
            parameters=(
                Parameter(name="m_X", low=1000.0, high=7000.0, log=True, unit="GeV"),
                Parameter(name="m_Y", low=30.0, high=1000.0, log=True, unit="GeV"),
            ),
            constraints=(f"m_Y + {self.m_z} < 0.9 * m_X",),
        )

    def cross_section_pb(self, point: Point) -> float:
        return float(log_interp(self.check_point(point)["m_X"], XYZ_XSEC))

    def truth(self, point: Point, n: int, rng: np.random.Generator) -> tuple[Particles, np.ndarray]:
        p = self.check_point(point)
        m_x, m_y = p["m_X"], p["m_Y"]
        event = np.arange(n)
        pt, y, phi = production(
            rng, n, pt_scale=15.0 + 0.03 * m_x, rapidity_width=float(rapidity_width(m_x))
        )
        mass_x = breit_wigner(rng, n, m_x, 0.01 * m_x, 0.8 * m_x, 1.2 * m_x)
        mass_y = breit_wigner(rng, n, m_y, 0.01 * m_y, 0.9 * m_y, 1.1 * m_y)
        mass_z = breit_wigner(rng, n, self.m_z, 0.01 * self.m_z, 0.9 * self.m_z, 1.1 * self.m_z)
        eta = eta_from_rapidity(pt, y, mass_x)
        daughter_y, daughter_z = two_body(rng, pt, eta, phi, mass_x, mass_y, mass_z)
        quarks = channel_table(((JET, JET, 0, 0, 1.0),))
        parts = [decay(rng, event, *daughter_y, quarks), decay(rng, event, *daughter_z, quarks)]
        return Particles.concat(parts), np.ones(n)
