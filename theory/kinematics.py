"""Truth-level particles and the vectorised kinematics the fast simulator is built from.

Generators (SM processes in :mod:`theory.background`, BSM models in :mod:`theory.models`) emit
:class:`Particles`: flat arrays of final-state partons, leptons, photons and invisibles with
the index of the event each belongs to. :mod:`theory.detector` turns them into reconstructed
events. Flat arrays (not padded ``(n, k)`` slots) keep the work proportional to the number of
particles, and every block a generator appends has ascending event indices, which lets the
detector sort objects per event with a cheap run-merging sort.

All functions are vectorised over events; none loops in Python over events.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ELECTRON, MUON, TAU, PHOTON, JET, BJET, INVISIBLE = 1, 2, 3, 4, 5, 6, 7
KIND_NAMES = {
    ELECTRON: "e",
    MUON: "mu",
    TAU: "tau",
    PHOTON: "gamma",
    JET: "j",
    BJET: "b",
    INVISIBLE: "nu",
}
KIND_OF = {name: kind for kind, name in KIND_NAMES.items()}
MASS = {ELECTRON: 0.000511, MUON: 0.10566, TAU: 1.77686, PHOTON: 0.0, JET: 0.0, BJET: 4.8}

_MASS_OF_KIND = np.array([MASS.get(k, 0.0) for k in range(8)])

W_MASS, W_WIDTH = 80.377, 2.085
Z_MASS, Z_WIDTH = 91.1876, 2.4952
TOP_MASS, TOP_WIDTH = 172.5, 1.42
MERGE_RADIUS = 0.8
"""Decay products of a hadronic decay closer than this (ΔR ≈ 2m/pT) form one large-R jet."""


@dataclass(frozen=True)
class Particles:
    """Flat truth particles of a batch of events; every array has shape ``(n_particles,)``.

    Attributes:
        event: index of the event the particle belongs to.
        kind: particle code (``ELECTRON`` … ``INVISIBLE``).
        pt, eta, phi, mass: kinematics in GeV, float32 (generators compute in float64; the
            detector and the event schema need no more than float32, and half the bytes
            make the detector's passes over every particle cheaper).
        charge: electric charge sign for leptons, 0 otherwise.
        prongs: hard sub-jets of a jet (1 for a parton, 2 for a merged W/Z/Y → qq,
            3 for a merged t → bqq); drives the substructure of fat jets.
    """

    event: np.ndarray
    kind: np.ndarray
    pt: np.ndarray
    eta: np.ndarray
    phi: np.ndarray
    mass: np.ndarray
    charge: np.ndarray
    prongs: np.ndarray

    @classmethod
    def make(
        cls,
        event: np.ndarray,
        kind: int | np.ndarray,
        pt: np.ndarray,
        eta: np.ndarray,
        phi: np.ndarray,
        mass: float | np.ndarray,
        charge: int | np.ndarray = 0,
        prongs: int | np.ndarray = 1,
    ) -> Particles:
        """Build from arrays or scalars broadcast to the number of particles."""
        n = len(event)

        def full(value: float | np.ndarray, dtype: type) -> np.ndarray:
            if np.ndim(value) == 0:
                return np.full(n, value, dtype=dtype)
            return np.asarray(value, dtype=dtype)

        return cls(
            event=np.asarray(event, dtype=np.int64),
            kind=full(kind, np.int8),
            pt=full(pt, np.float32),
            eta=full(eta, np.float32),
            phi=full(phi, np.float32),
            mass=full(mass, np.float32),
            charge=full(charge, np.int8),
            prongs=full(prongs, np.int8),
        )

    @classmethod
    def concat(cls, parts: list[Particles]) -> Particles:
        names = cls.__dataclass_fields__
        return cls(**{f: np.concatenate([getattr(p, f) for p in parts]) for f in names})

    def select(self, mask: np.ndarray) -> Particles:
        return Particles(**{f: getattr(self, f)[mask] for f in self.__dataclass_fields__})

    def __len__(self) -> int:
        return len(self.event)


# -- spectra -----------------------------------------------------------------------------------


def sample_table(
    rng: np.random.Generator,
    n: int,
    x: np.ndarray | tuple[float, ...],
    survival: np.ndarray | tuple[float, ...],
    *,
    lower: float | None = None,
    boost: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw from a tabulated survival function ``S(x) = P(X > x)``, interpolated exponentially.

    Args:
        x: increasing nodes, shape ``(k,)``; ``survival[0] == 1`` and decreasing.
        lower: optional generator cut; draw from the tail ``X > lower`` only.
        boost: importance-sampling exponent (see :func:`survival_draw`).

    Returns:
        values ``(n,)`` and weights ``(n,)`` (all ones when ``boost == 1``).
    """
    x = np.asarray(x, dtype=np.float64)
    log_s = -np.log(np.asarray(survival, dtype=np.float64))
    offset = 0.0 if lower is None else float(np.interp(lower, x, log_s))
    s, weights = survival_draw(rng, n, boost)
    return np.interp(offset - np.log(s), log_s, x), weights


def power_law(
    rng: np.random.Generator,
    n: int,
    x0: float,
    index: float,
    *,
    cap: np.ndarray | None = None,
    boost: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``x > x0`` with ``P(X > x) = (x / x0) ** -index``, optionally below ``cap`` (n,).

    Returns:
        values ``(n,)`` and importance weights ``(n,)`` (see :func:`survival_draw`).
    """
    s, weights = survival_draw(rng, n, boost)
    if cap is not None:
        floor = (np.maximum(cap, x0) / x0) ** -index
        s = floor + s * (1.0 - floor)
    return x0 * s ** (-1.0 / index), weights


def breit_wigner(
    rng: np.random.Generator,
    n: int,
    mass: float | np.ndarray,
    width: float | np.ndarray,
    low: float | np.ndarray,
    high: float | np.ndarray,
) -> np.ndarray:
    """Relativistic-enough (Cauchy) line shape truncated to ``[low, high]``, shape ``(n,)``."""
    mass = np.asarray(mass, dtype=np.float64)
    half = np.maximum(np.asarray(width, dtype=np.float64), 1e-9 * mass) / 2
    a = np.arctan((np.asarray(low) - mass) / half)
    b = np.arctan((np.asarray(high) - mass) / half)
    return mass + half * np.tan(a + (b - a) * rng.random(n))


def line_shape(
    rng: np.random.Generator,
    n: int,
    *,
    mass: float,
    width: float,
    window: tuple[float, float],
    tail: tuple[np.ndarray, np.ndarray],
    tail_fraction: float,
    boost: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """A W/Z/γ* mass: Breit-Wigner peak in ``window`` plus an off-shell tail above it.

    The tail (tabulated survival above ``window[1]``) holds ``tail_fraction`` of the events;
    it falls like the parton luminosities and is what high-mass searches see as background.
    ``boost`` importance-samples the tail (see :func:`sample_table`).

    Returns:
        masses ``(n,)`` and weights ``(n,)``.
    """
    peak = breit_wigner(rng, n, mass, width, window[0], window[1])
    in_tail = rng.random(n) < tail_fraction
    weights = np.ones(n)
    k = int(in_tail.sum())
    if k:
        tail_mass, tail_weight = sample_table(rng, k, tail[0], tail[1], boost=boost)
        peak[in_tail] = tail_mass
        weights[in_tail] = tail_weight
    return peak, weights


LOG_MASS_OVER_PT = float(np.log(0.08))
LOG_MASS_SPREAD = 0.45
"""One-prong (QCD) jets get ``m / pT`` log-normal: ``exp(N(log 0.08, 0.45))``."""


# -- four-vectors ------------------------------------------------------------------------------


def to_cartesian(
    pt: np.ndarray, eta: np.ndarray, phi: np.ndarray, mass: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    return px, py, pz, np.sqrt(px * px + py * py + pz * pz + mass * mass)


def to_collider(
    px: np.ndarray, py: np.ndarray, pz: np.ndarray, energy: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    pt = np.hypot(px, py)
    eta = np.arcsinh(pz / np.maximum(pt, 1e-9))
    m2 = energy * energy - px * px - py * py - pz * pz
    return pt, eta, np.arctan2(py, px), np.sqrt(np.maximum(m2, 0.0))


def two_body(
    rng: np.random.Generator,
    pt: np.ndarray,
    eta: np.ndarray,
    phi: np.ndarray,
    mass: np.ndarray,
    m1: float | np.ndarray,
    m2: float | np.ndarray,
) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    """Isotropic two-body decays of parents ``(n,)`` into daughters of masses ``m1``, ``m2``.

    Computed in float32 (what :class:`Particles` stores): numpy vectorises float32
    trigonometry and square roots several times faster than float64, and the boost loses
    no more than the float32 rounding of the stored daughters.

    Returns:
        ``(pt, eta, phi, mass)`` of the first and of the second daughter, each ``(n,)``.
    """
    n = len(pt)
    pt, eta, phi, mass = (np.asarray(v, dtype=np.float32) for v in (pt, eta, phi, mass))
    m1 = np.broadcast_to(np.asarray(m1, dtype=np.float32), (n,))
    m2 = np.broadcast_to(np.asarray(m2, dtype=np.float32), (n,))
    mass = np.maximum(mass, (m1 + m2) * np.float32(1 + 1e-6))
    px, py, pz, energy = to_cartesian(pt, eta, phi, mass)
    m_sq = mass * mass
    p_star = np.sqrt(np.maximum((m_sq - (m1 + m2) ** 2) * (m_sq - (m1 - m2) ** 2), 0)) / (2 * mass)
    u = rng.random((2, n), dtype=np.float32)
    cos_t = 2 * u[0] - 1
    sin_t = np.sqrt(np.maximum(1 - cos_t * cos_t, 0))
    phi_star = np.float32(np.pi) * (2 * u[1] - 1)
    dx, dy, dz = (
        p_star * sin_t * np.cos(phi_star),
        p_star * sin_t * np.sin(phi_star),
        p_star * cos_t,
    )
    bx, by, bz = px / energy, py / energy, pz / energy
    gamma = energy / mass
    b_dot_d = bx * dx + by * dy + bz * dz
    daughters = []
    for sign, m in ((1.0, m1), (-1.0, m2)):
        e_star = np.sqrt(p_star * p_star + m * m)
        bd = sign * b_dot_d
        coef = gamma * gamma / (gamma + 1) * bd + gamma * e_star
        qx, qy, qz = sign * dx + coef * bx, sign * dy + coef * by, sign * dz + coef * bz
        q_pt = np.sqrt(qx * qx + qy * qy)
        daughters.append(
            (q_pt, np.arcsinh(qz / np.maximum(q_pt, 1e-9)), np.arctan2(qy, qx), np.array(m))
        )
    return daughters[0], daughters[1]


def wrap_phi(phi: np.ndarray) -> np.ndarray:
    """Angles to ``[-pi, pi)``."""
    return (phi + np.pi) % (2 * np.pi) - np.pi


def production(
    rng: np.random.Generator, n: int, *, pt_scale: float, rapidity_width: float | np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Transverse momentum, rapidity and φ of a produced system, each ``(n,)``.

    ``pT`` has mean ≈ ``pt_scale`` (recoil against initial-state radiation); the rapidity is
    Gaussian with ``rapidity_width`` (narrower for heavier systems, see
    :func:`rapidity_width`). Convert with :func:`eta_from_rapidity` before decaying.
    """
    pt = -pt_scale * np.log(1.0 - rng.random(n)) * (0.5 + rng.random(n))
    y = np.clip(rapidity_width * rng.standard_normal(n), -4.5, 4.5)
    phi = np.pi * (2 * rng.random(n) - 1)
    return pt, y, phi


def eta_from_rapidity(pt: np.ndarray, y: np.ndarray, mass: np.ndarray) -> np.ndarray:
    """Pseudorapidity of a massive system from its rapidity: ``sinh η = mT sinh y / pT``."""
    pt = np.maximum(pt, 1e-6)
    return np.arcsinh(np.sqrt(pt * pt + mass * mass) * np.sinh(y) / pt)


def rapidity_width(mass: float | np.ndarray, sqrt_s: float = 13000.0) -> np.ndarray:
    """Rapidity spread of a system of ``mass``: shrinks as ``log(sqrt_s / mass)`` closes."""
    return np.clip(0.45 * np.log(sqrt_s / np.asarray(mass, dtype=np.float64)), 0.15, 2.2)


def standard_normal32(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` standard normal draws, float32, by the Box-Muller transform.

    Three times faster than ``rng.standard_normal(n, dtype=np.float32)`` (the ziggurat's
    per-draw branches against vectorised float32 log/sqrt/cos/sin). From float32 uniforms the
    draws are exact up to the float32 rounding and end at ``|z| = 5.77`` (P = 8e-9 beyond),
    which is irrelevant for detector smearing.
    """
    half = (n + 1) // 2
    u = rng.random((2, half), dtype=np.float32)
    radius = np.sqrt(np.float32(-2.0) * np.log1p(-u[0]))
    angle = u[1]
    angle *= np.float32(2.0 * np.pi)
    out = np.empty(2 * half, dtype=np.float32)
    np.multiply(radius, np.cos(angle), out=out[:half])
    np.multiply(radius, np.sin(angle), out=out[half:])
    return out[:n]


def survival_draw(
    rng: np.random.Generator, n: int, boost: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Survival values ``s in (0, 1]`` to invert, with importance weights, each ``(n,)``.

    With ``boost = k > 1`` the draw is ``s = u**k``, which populates the far tail of any
    spectrum ``k`` times deeper in ``log s``; the weight ``k * s**(1 - 1/k)`` (mean 1) makes
    the weighted sample exact.
    """
    u = 1.0 - rng.random(n)
    if boost == 1.0:
        return u, np.ones(n)
    s = u**boost
    return s, boost * s ** (1.0 - 1.0 / boost)


# -- decays ------------------------------------------------------------------------------------

# Channel tables: (kind of daughter 1, kind of daughter 2, charge 1, charge 2, branching ratio).
# For a charged parent the charges are multiplied by the parent's charge sign.
W_DECAYS = (
    (ELECTRON, INVISIBLE, 1, 0, 0.1071),
    (MUON, INVISIBLE, 1, 0, 0.1063),
    (TAU, INVISIBLE, 1, 0, 0.1138),
    (JET, JET, 0, 0, 0.6728),
)
Z_DECAYS = (
    (ELECTRON, ELECTRON, -1, 1, 0.03363),
    (MUON, MUON, -1, 1, 0.03366),
    (TAU, TAU, -1, 1, 0.03370),
    (INVISIBLE, INVISIBLE, 0, 0, 0.2000),
    (JET, JET, 0, 0, 0.5477),
    (BJET, BJET, 0, 0, 0.1513),
)


def channel_table(channels: tuple[tuple[int, int, int, int, float], ...]) -> np.ndarray:
    """Channel rows as an array ``(k, 5)`` with branching ratios normalised to one."""
    table = np.array(channels, dtype=np.float64)
    table[:, 4] /= table[:, 4].sum()
    return table


def decay(
    rng: np.random.Generator,
    event: np.ndarray,
    pt: np.ndarray,
    eta: np.ndarray,
    phi: np.ndarray,
    mass: np.ndarray,
    channels: np.ndarray,
    *,
    charge: int | np.ndarray = 1,
    merge: bool = True,
) -> Particles:
    """Decay parents ``(n,)`` into two daughters, choosing the channel per event.

    Hadronic decays (two quarks) whose opening angle ``≈ 2m/pT`` is below
    :data:`MERGE_RADIUS` become one jet with the parent's four-momentum and ``prongs=2``.

    Args:
        channels: rows of :func:`channel_table`.
        charge: the parents' charge sign (±1), scalar or ``(n,)``.
    """
    n = len(event)
    if n == 0:
        return Particles.make(event, 0, pt, eta, phi, 0.0)
    if len(channels) == 1:
        row = np.broadcast_to(channels[0], (n, channels.shape[1]))
    else:
        cumulative = np.cumsum(channels[:, 4])
        index = np.minimum(
            np.searchsorted(cumulative, rng.random(n) * cumulative[-1]), len(channels) - 1
        )
        row = channels[index]
    kind1, kind2 = row[:, 0].astype(np.int8), row[:, 1].astype(np.int8)
    m1, m2 = _MASS_OF_KIND[kind1], _MASS_OF_KIND[kind2]
    d1, d2 = two_body(rng, pt, eta, phi, mass, m1, m2)
    sign = np.asarray(charge, dtype=np.int8)
    q1, q2 = (row[:, 2] * sign).astype(np.int8), (row[:, 3] * sign).astype(np.int8)
    hadronic = ((kind1 == JET) | (kind1 == BJET)) & ((kind2 == JET) | (kind2 == BJET))
    merged = (
        hadronic & (2 * mass / np.maximum(pt, 1e-9) < MERGE_RADIUS) if merge else np.zeros(n, bool)
    )
    first = Particles.make(
        event,
        np.where(merged, JET, kind1),
        np.where(merged, pt, d1[0]),
        np.where(merged, eta, d1[1]),
        np.where(merged, phi, d1[2]),
        np.where(merged, mass, d1[3]),
        q1,
        np.where(merged, 2, 1),
    )
    keep = ~merged
    second = Particles.make(
        event[keep], kind2[keep], d2[0][keep], d2[1][keep], d2[2][keep], d2[3][keep], q2[keep]
    )
    return Particles.concat([first, second])


def top_decay(
    rng: np.random.Generator,
    event: np.ndarray,
    pt: np.ndarray,
    eta: np.ndarray,
    phi: np.ndarray,
    mass: np.ndarray,
    *,
    charge: int | np.ndarray,
) -> Particles:
    """t → W b with W decays; a boosted hadronic top becomes one jet with ``prongs=3``."""
    n = len(event)
    w_mass = breit_wigner(rng, n, W_MASS, W_WIDTH, 60.0, 100.0)
    w, b = two_body(rng, pt, eta, phi, mass, w_mass, MASS[BJET])
    w_products = decay(rng, event, *w, channel_table(W_DECAYS), charge=charge)
    b_jets = Particles.make(event, BJET, *b)
    quark = (w_products.kind == JET) | (w_products.kind == BJET)
    lookup = np.zeros(int(event.max()) + 1 if n else 0, dtype=bool)
    lookup[w_products.event[quark]] = True
    merged = (2 * mass / np.maximum(pt, 1e-9) < MERGE_RADIUS) & lookup[event]
    if not merged.any():
        return Particles.concat([b_jets, w_products])
    whole = Particles.make(
        event[merged], JET, pt[merged], eta[merged], phi[merged], mass[merged], 0, 3
    )
    lookup[:] = False
    lookup[event[merged]] = True
    return Particles.concat(
        [b_jets.select(~merged), w_products.select(~lookup[w_products.event]), whole]
    )
