"""Dark-matter mediator (m_med, m_chi) → χχ recoiling against a jet: the monojet signature.

Vector mediator with g_q = 0.25, g_χ = 1 (the LHC DM working-group benchmark). The cross
section is that of events with a generator-level ISR jet pT > 150 GeV, tabulated for light
dark matter and multiplied by the vector-mediator phase-space factor
``√(1 − 4r²) (1 + 2r²)``, ``r = m_chi / m_med``; the space keeps ``m_chi < m_med / 2``
(on-shell decays).

==========  ====  ===  ====  ====  =====  =====  ======
m_med/GeV   50    100  500   1000  2000   3000   4000
σ [pb]      15    8.0  1.5   0.35  0.025  2.5e-3  2.5e-4
==========  ====  ===  ====  ====  =====  =====  ======

The jet pT spectrum hardens with the mediator mass: ``P(> pT) ∝ pT^-a`` with
``a = 2 + 400 GeV / (m_med + 100 GeV)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from theory.kinematics import INVISIBLE, JET, Particles, breit_wigner, power_law, wrap_phi
from theory.models.base import Model, Point, log_interp
from theory.space import Parameter, ParameterSpace

MONOJET_XSEC = (
    (50.0, 15.0),
    (100.0, 8.0),
    (500.0, 1.5),
    (1000.0, 0.35),
    (2000.0, 0.025),
    (3000.0, 2.5e-3),
    (4000.0, 2.5e-4),
)
JET_PT_CUT = 150.0


@dataclass(frozen=True, repr=False)
class DarkMatterMediator(Model):
    """Vector mediator (m_med, m_chi) → χχ + ISR jet (jet + MET)."""

    name: str = "dm_mediator"
    signature: str = "jet + MET (mediator -> chi chi)"
    isr_mean: float = 0.5

    @cached_property
    def space(self) -> ParameterSpace:
        return ParameterSpace(
            parameters=(
                Parameter(name="m_med", low=50.0, high=4000.0, log=True, unit="GeV"),
                Parameter(name="m_chi", low=1.0, high=1990.0, log=True, unit="GeV"),
            ),
            constraints=("m_chi < m_med / 2",),
        )

    def cross_section_pb(self, point: Point) -> float:
        p = self.check_point(point)
        r = p["m_chi"] / p["m_med"]
        phase_space = np.sqrt(max(1.0 - 4.0 * r * r, 0.0)) * (1.0 + 2.0 * r * r)
        return float(log_interp(p["m_med"], MONOJET_XSEC) * phase_space)

    def truth(self, point: Point, n: int, rng: np.random.Generator) -> tuple[Particles, np.ndarray]:
        p = self.check_point(point)
        m_med, m_chi = p["m_med"], p["m_chi"]
        event = np.arange(n)
        index = 2.0 + 400.0 / (m_med + 100.0)
        pt, _ = power_law(rng, n, JET_PT_CUT, index, cap=np.full(n, 6500.0))
        phi = rng.uniform(-np.pi, np.pi, n)
        eta = np.clip(1.5 * rng.standard_normal(n), -4.5, 4.5)
        jet = Particles.make(event, JET, pt, eta, phi, 0.0)
        mass = breit_wigner(rng, n, m_med, 0.05 * m_med, 2.0 * m_chi * 1.0001, 1.5 * m_med)
        recoil_pt = pt * (0.9 + 0.2 * rng.random(n))
        recoil_phi = wrap_phi(phi + np.pi + 0.1 * rng.standard_normal(n))
        recoil_eta = np.clip(1.5 * rng.standard_normal(n), -4.5, 4.5)
        pair = Particles.make(event, INVISIBLE, recoil_pt, recoil_eta, recoil_phi, mass)
        return Particles.concat([jet, pair]), np.ones(n)
