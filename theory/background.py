"""Standard Model background processes of the fast simulator (truth level, pp at 13 TeV).

Cross sections are approximate, rounded values of the usual (N)NLO predictions, each *after*
the generator-level cut in the table; they set the event weights ``σ·L/N``.

=============  ===========  ==============================================================
process        σ [pb]       generator-level cut and content
=============  ===========  ==============================================================
qcd            1.26e5       2 → 2 partons, leading parton pT > 170 GeV (pT spectrum
                            ``P(>pT) ∝ pT^-4.8``); 4 % of jets are b jets; ISR jets
wjets          6.08e4       W → eν, μν, τν (20.3 nb each), no cut; Breit-Wigner W plus an
                            off-shell tail (3.1e-4 of events above 200 GeV); recoil jets
zee            2.0e3        Z/γ* → ee, m_ℓℓ > 50 GeV; Breit-Wigner Z plus Drell-Yan tail
                            (1.1 % above 120 GeV, falling to 6e-5 of that above 1.4 TeV)
zmumu          2.0e3        as zee with muons
ztautau        2.0e3        as zee with τ leptons (decayed by the detector)
znunu          4.0e2        Z → νν with pT(Z) > 100 GeV (balanced by a recoil jet)
ttbar          832          inclusive; t → Wb, W decays with PDG branching ratios
singletop      300          t-channel (217 pb) with a forward jet, tW (72 pb), s-channel (11 pb)
gammajets      1.2e3        prompt photon pT > 100 GeV plus recoil jet
diboson        182          WW (118.7), WZ (46.8), ZZ (16.5) pb, inclusive decays
=============  ===========  ==============================================================

Every process adds initial-state-radiation jets (Poisson multiplicity, ``P(>pT) ∝ pT^-2.2``
above 25 GeV). ``boost > 1`` importance-samples the falling spectra (pT, off-shell W mass) so
that tails get Monte Carlo events; the returned weights keep every distribution exact.

The Drell-Yan dilepton mass is always importance-sampled (:class:`DrellYanMass`): a quarter of
the Z/γ* → ee, μμ, ττ Monte Carlo lies in the tail above 120 GeV, log-uniform in mass, so a
dilepton resonance search at 0.3–3 TeV has hundreds of background Monte Carlo events under
its peak instead of a handful with weights of 10^3.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from theory.kinematics import (
    BJET,
    ELECTRON,
    INVISIBLE,
    JET,
    MUON,
    PHOTON,
    TAU,
    TOP_MASS,
    TOP_WIDTH,
    W_DECAYS,
    W_MASS,
    W_WIDTH,
    Z_DECAYS,
    Z_MASS,
    Z_WIDTH,
    Particles,
    breit_wigner,
    channel_table,
    decay,
    eta_from_rapidity,
    line_shape,
    power_law,
    sample_table,
    top_decay,
    wrap_phi,
)

Generator = Callable[[np.random.Generator, int, float], tuple[Particles, np.ndarray]]

BOSON_PT = (
    (0.0, 5.0, 10.0, 20.0, 30.0, 50.0, 100.0, 200.0, 400.0, 800.0, 1500.0, 3000.0),
    (1.0, 0.7, 0.45, 0.22, 0.13, 0.055, 0.012, 1.5e-3, 1.2e-4, 5e-6, 1e-7, 1e-10),
)
TOP_PT = (
    (0.0, 50.0, 100.0, 200.0, 300.0, 500.0, 800.0, 1200.0, 2000.0, 3000.0),
    (1.0, 0.75, 0.42, 0.10, 0.025, 2e-3, 1e-4, 4e-6, 1e-8, 1e-11),
)
DRELL_YAN_TAIL = (
    (120.0, 200.0, 400.0, 800.0, 1400.0, 2300.0, 3500.0, 6000.0),
    (1.0, 0.1345, 0.01166, 8.07e-4, 6.2e-5, 3.5e-6, 1.5e-7, 1e-10),
)
DRELL_YAN_TAIL_FRACTION = 0.0112
DRELL_YAN_TAIL_SHARE = 0.25
"""Share of the Z/γ* → ℓℓ Monte Carlo drawn in the mass tail above 120 GeV (physical: 1.1 %)."""
PT_LIMIT = 6500.0
"""Kinematic limit on a hard parton's transverse momentum at 13 TeV (√s / 2), GeV."""
W_TAIL = (
    (200.0, 500.0, 1000.0, 2000.0, 3000.0, 4500.0, 6500.0),
    (1.0, 0.0343, 2.05e-3, 8.9e-5, 4.6e-6, 1e-7, 1e-10),
)
W_TAIL_FRACTION = 3.1e-4
W_PLUS_FRACTION = 0.58


@dataclass(frozen=True)
class DrellYanMass:
    """The Z/γ* → ℓℓ mass spectrum above 50 GeV, and a sampler that fills its tail.

    Target density (normalised to one over ``[peak[0], tail_nodes[0][-1]]``)::

        f(m) = (1 - t) · BW(m; m_Z, Γ_Z | peak)            for peak[0] <= m < peak[1]
             = t · T(m)                                    for m >= peak[1] (= tail_nodes[0][0])

    with ``BW`` the Cauchy line shape truncated to ``peak`` and ``T`` the tail density whose
    survival function passes through the nodes ``tail_nodes`` (``t`` = ``tail_fraction``).
    Between nodes the survival is a power law, ``S(m) ∝ m^-k`` (log S linear in log m).
    Why a power law: above the Z the spectrum is the γ*/Z continuum, ``dσ/dm ∝ m^-3 ·
    L_qq̄(m²/s)``, and the quark-antiquark luminosity falls as a power of ``τ = m²/s`` whose
    index grows with ``τ``. The default nodes (13 TeV) follow the falling shape of the measured
    high-mass dilepton spectra: the density index steepens from ≈ 5 at 150 GeV to ≈ 7 at 2 TeV,
    ≈ 8.5 at 3 TeV and ≈ 15 above 3.5 TeV, where the antiquark luminosity dies out.

    :meth:`sample` importance-samples: with probability ``tail_share`` it draws the mass
    log-uniformly over the tail (equal Monte Carlo per e-fold of mass, 120 GeV – 6 TeV), else
    from the peak, and weights each event by target / proposal density, so the weighted
    spectrum is ``f`` exactly and the weights have mean one.

    Attributes:
        mass, width: the Z Breit-Wigner, GeV.
        peak: mass window of the Breit-Wigner, GeV; ``peak[1]`` is the first tail node.
        tail_nodes: increasing masses ``x`` (GeV) and the tail survival ``S(x) = P(M > x |
            M > x[0])`` at them (``S[0] = 1``); the last node ends the spectrum.
        tail_fraction: ``P(M > peak[1])``.
    """

    mass: float = Z_MASS
    width: float = Z_WIDTH
    peak: tuple[float, float] = (50.0, 120.0)
    tail_nodes: tuple[tuple[float, ...], tuple[float, ...]] = DRELL_YAN_TAIL
    tail_fraction: float = DRELL_YAN_TAIL_FRACTION

    def __post_init__(self) -> None:
        x, s = (np.asarray(v, dtype=np.float64) for v in self.tail_nodes)
        if (
            x[0] != self.peak[1]
            or s[0] != 1.0
            or np.any(np.diff(x) <= 0)
            or np.any(np.diff(s) >= 0)
        ):
            raise ValueError(
                "DrellYanMass.tail_nodes: masses must increase from peak[1] = "
                f"{self.peak[1]} and survival values fall from 1; got {self.tail_nodes}"
            )

    @property
    def upper(self) -> float:
        """End of the spectrum, GeV."""
        return float(self.tail_nodes[0][-1])

    def _log_nodes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        log_x = np.log(np.asarray(self.tail_nodes[0], dtype=np.float64))
        log_s = np.log(np.asarray(self.tail_nodes[1], dtype=np.float64))
        return log_x, log_s, -np.diff(log_s) / np.diff(log_x)

    def _peak_cdf(self, m: np.ndarray) -> np.ndarray:
        half = self.width / 2
        a, b = (np.arctan((edge - self.mass) / half) for edge in self.peak)
        return (np.arctan((np.clip(m, *self.peak) - self.mass) / half) - a) / (b - a)

    def _tail_survival(self, m: np.ndarray) -> np.ndarray:
        """``P(M > m | M > peak[1])`` (normalised to the spectrum's end), shape like ``m``."""
        log_x, log_s, _ = self._log_nodes()
        end = np.exp(log_s[-1])
        inside = np.clip(m, np.exp(log_x[0]), np.exp(log_x[-1]))
        return (np.exp(np.interp(np.log(inside), log_x, log_s)) - end) / (1.0 - end)

    def survival(self, m: np.ndarray | float) -> np.ndarray:
        """``P(M > m)`` of the target spectrum, shape like ``m``."""
        m = np.asarray(m, dtype=np.float64)
        t = self.tail_fraction
        return np.where(
            m < self.peak[1],
            t + (1.0 - t) * (1.0 - self._peak_cdf(m)),
            t * self._tail_survival(m),
        )

    def density(self, m: np.ndarray | float) -> np.ndarray:
        """Target density ``f(m)``, 1/GeV, shape like ``m``."""
        m = np.asarray(m, dtype=np.float64)
        half = self.width / 2
        a, b = (np.arctan((edge - self.mass) / half) for edge in self.peak)
        peak = (half / ((m - self.mass) ** 2 + half**2)) / (b - a)
        out = np.where(
            (m >= self.peak[0]) & (m < self.peak[1]), (1 - self.tail_fraction) * peak, 0.0
        )
        tail = (m >= self.peak[1]) & (m <= self.upper)
        return np.where(tail, self.tail_fraction * self._tail_density(m), out)

    def _tail_density(self, m: np.ndarray) -> np.ndarray:
        log_x, log_s, index = self._log_nodes()
        inside = np.clip(m, np.exp(log_x[0]), np.exp(log_x[-1]))
        log_m = np.log(inside)
        segment = np.clip(np.searchsorted(log_x, log_m, side="right") - 1, 0, len(index) - 1)
        end = np.exp(log_s[-1])
        return index[segment] * np.exp(np.interp(log_m, log_x, log_s) - log_m) / (1.0 - end)

    def sample(
        self, rng: np.random.Generator, n: int, *, tail_share: float | None = DRELL_YAN_TAIL_SHARE
    ) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``n`` masses with importance weights, each ``(n,)``.

        Args:
            tail_share: fraction of draws from the log-uniform tail proposal, in (0, 1);
                ``None`` draws the physical spectrum itself (unit weights).
        """
        if tail_share is not None and not 0.0 < tail_share < 1.0:
            raise ValueError(f"DrellYanMass.sample: tail_share = {tail_share}; allowed: (0, 1)")
        in_tail = rng.random(n) < (self.tail_fraction if tail_share is None else tail_share)
        mass = breit_wigner(rng, n, self.mass, self.width, *self.peak)
        k = int(in_tail.sum())
        log_x, log_s, _ = self._log_nodes()
        u = 1.0 - rng.random(k)
        if tail_share is None:
            end = np.exp(log_s[-1])
            log_target = np.log(end + (1.0 - end) * u)
            mass[in_tail] = np.exp(np.interp(-log_target, -log_s, log_x))
            return mass, np.ones(n)
        span = log_x[-1] - log_x[0]
        tail_mass = np.exp(log_x[0] + span * u)
        weight = np.full(n, (1.0 - self.tail_fraction) / (1.0 - tail_share))
        weight[in_tail] = (
            self.tail_fraction / tail_share * self._tail_density(tail_mass) * tail_mass * span
        )
        mass[in_tail] = tail_mass
        return mass, weight


DRELL_YAN = DrellYanMass()
"""The default Z/γ* → ℓℓ mass spectrum of the background cocktail."""


@dataclass(frozen=True)
class Process:
    """One SM process: its name, cross section after ``cut`` and its truth generator."""

    name: str
    xsec_pb: float
    cut: str
    generate: Generator


def _poisson_cdf(mean: float, cap: int = 4) -> np.ndarray:
    """CDF of Poisson(``mean``) at 0 … cap-1; drawing by inverse CDF caps the count at ``cap``."""
    k = np.arange(cap)
    pmf = np.exp(-mean) * np.cumprod(np.concatenate([[1.0], mean / k[1:]]))
    return np.cumsum(pmf)


def isr_jets(
    rng: np.random.Generator, n: int, mean: float, *, cap: np.ndarray | None = None
) -> Particles:
    """Initial-state-radiation jets: Poisson(``mean``) per event (at most 4), pT > 25 GeV."""
    counts = np.searchsorted(_poisson_cdf(mean), rng.random(n), side="right")
    event = np.repeat(np.arange(n), counts)
    k = len(event)
    pt, _ = power_law(rng, k, 25.0, 2.2, cap=None if cap is None else cap[event])
    eta = np.clip(2.0 * rng.standard_normal(k), -4.7, 4.7)
    kind = np.where(rng.random(k) < 0.03, BJET, JET)
    return Particles.make(event, kind, pt, eta, rng.uniform(-np.pi, np.pi, k), 0.0)


def recoil_jet(
    rng: np.random.Generator, event: np.ndarray, pt: np.ndarray, phi: np.ndarray
) -> Particles:
    """A jet balancing a system of transverse momentum ``pt`` at azimuth ``phi`` (both (k,))."""
    k = len(event)
    jet_pt = pt * (0.75 + 0.4 * rng.random(k))
    eta = np.clip(1.8 * rng.standard_normal(k), -4.7, 4.7)
    jet_phi = wrap_phi(phi + np.pi + 0.25 * rng.standard_normal(k))
    kind = np.where(rng.random(k) < 0.03, BJET, JET)
    return Particles.make(event, kind, jet_pt, eta, jet_phi, 0.0)


def _qcd(rng: np.random.Generator, n: int, boost: float) -> tuple[Particles, np.ndarray]:
    event = np.arange(n)
    pt1, weight = power_law(rng, n, 170.0, 4.8, cap=np.full(n, PT_LIMIT), boost=boost)
    pt2 = pt1 * np.clip(1.0 - 0.12 * np.abs(rng.standard_normal(n)), 0.3, 1.0)
    phi1 = rng.uniform(-np.pi, np.pi, n)
    phi2 = wrap_phi(phi1 + np.pi + 0.1 * rng.standard_normal(n))
    eta = np.clip(1.4 * rng.standard_normal((2, n)), -4.7, 4.7)
    kind = np.where(rng.random((2, n)) < 0.04, BJET, JET)
    jets = [
        Particles.make(event, kind[0], pt1, eta[0], phi1, 0.0),
        Particles.make(event, kind[1], pt2, eta[1], phi2, 0.0),
        isr_jets(rng, n, 1.2, cap=pt2),
    ]
    return Particles.concat(jets), weight


def _vector_boson(
    rng: np.random.Generator,
    n: int,
    boost: float,
    *,
    channels: tuple[tuple[int, int, int, int, float], ...],
    charged: bool,
    pt_lower: float | None = None,
    tail_share: float | None = None,
) -> tuple[Particles, np.ndarray]:
    event = np.arange(n)
    pt, weight = sample_table(rng, n, *BOSON_PT, lower=pt_lower, boost=boost)
    if charged:
        mass, mass_weight = line_shape(
            rng,
            n,
            mass=W_MASS,
            width=W_WIDTH,
            window=(40.0, 200.0),
            tail=W_TAIL,
            tail_fraction=W_TAIL_FRACTION,
            boost=boost,
        )
        charge = np.where(rng.random(n) < W_PLUS_FRACTION, 1, -1)
    else:
        mass, mass_weight = DRELL_YAN.sample(rng, n, tail_share=tail_share)
        charge = np.ones(n, dtype=np.int8)
    y = np.clip(2.0 * rng.standard_normal(n), -4.5, 4.5)
    phi = rng.uniform(-np.pi, np.pi, n)
    eta = eta_from_rapidity(pt, y, mass)
    leptons = decay(rng, event, pt, eta, phi, mass, channel_table(channels), charge=charge)
    hard = pt > 20.0
    parts = [leptons, recoil_jet(rng, event[hard], pt[hard], phi[hard]), isr_jets(rng, n, 0.4)]
    return Particles.concat(parts), weight * mass_weight


def _channels(
    *rows: tuple[int, int, int, int, float],
) -> tuple[tuple[int, int, int, int, float], ...]:
    return tuple(rows)


def _wjets(rng: np.random.Generator, n: int, boost: float) -> tuple[Particles, np.ndarray]:
    return _vector_boson(rng, n, boost, channels=W_DECAYS[:3], charged=True)


def _z_to(kind: int) -> Generator:
    charge = 0 if kind == INVISIBLE else 1
    rows = _channels((kind, kind, -charge, charge, 1.0))

    def generate(rng: np.random.Generator, n: int, boost: float) -> tuple[Particles, np.ndarray]:
        invisible = kind == INVISIBLE
        return _vector_boson(
            rng,
            n,
            boost,
            channels=rows,
            charged=False,
            pt_lower=100.0 if invisible else None,
            tail_share=None if invisible else DRELL_YAN_TAIL_SHARE,
        )

    return generate


def _top_pair(rng: np.random.Generator, n: int, boost: float) -> tuple[Particles, np.ndarray]:
    event = np.arange(n)
    pt, weight = sample_table(rng, n, *TOP_PT, boost=boost)
    phi = rng.uniform(-np.pi, np.pi, n)
    parts = []
    for charge, azimuth in ((1, phi), (-1, wrap_phi(phi + np.pi))):
        mass = breit_wigner(rng, n, TOP_MASS, TOP_WIDTH, 150.0, 195.0)
        eta = eta_from_rapidity(pt, np.clip(1.1 * rng.standard_normal(n), -4, 4), mass)
        parts.append(top_decay(rng, event, pt, eta, azimuth, mass, charge=charge))
    parts.append(isr_jets(rng, n, 1.0))
    return Particles.concat(parts), weight


def _single_top(rng: np.random.Generator, n: int, boost: float) -> tuple[Particles, np.ndarray]:
    event = np.arange(n)
    x, s = TOP_PT
    pt, weight = sample_table(rng, n, tuple(0.7 * v for v in x), s, boost=boost)
    phi = rng.uniform(-np.pi, np.pi, n)
    mass = breit_wigner(rng, n, TOP_MASS, TOP_WIDTH, 150.0, 195.0)
    eta = eta_from_rapidity(pt, np.clip(1.3 * rng.standard_normal(n), -4, 4), mass)
    charge = np.where(rng.random(n) < 0.62, 1, -1)
    parts = [top_decay(rng, event, pt, eta, phi, mass, charge=charge)]
    channel = rng.random(n)
    t_chan, tw = channel < 0.725, (channel >= 0.725) & (channel < 0.965)
    s_chan = channel >= 0.965
    k = int(t_chan.sum())
    fwd_pt, _ = power_law(rng, k, 25.0, 2.5, cap=np.full(k, PT_LIMIT))
    fwd_eta = np.clip(
        np.sign(rng.random(k) - 0.5) * (2.3 + 0.9 * rng.standard_normal(k)), -4.7, 4.7
    )
    fwd_phi = wrap_phi(phi[t_chan] + np.pi + rng.standard_normal(k))
    parts.append(Particles.make(event[t_chan], JET, fwd_pt, fwd_eta, fwd_phi, 0.0))
    k = int(tw.sum())
    w_mass = breit_wigner(rng, k, W_MASS, W_WIDTH, 60.0, 100.0)
    w_eta = eta_from_rapidity(pt[tw], np.clip(1.3 * rng.standard_normal(k), -4, 4), w_mass)
    parts.append(
        decay(
            rng,
            event[tw],
            pt[tw],
            w_eta,
            wrap_phi(phi[tw] + np.pi),
            w_mass,
            channel_table(W_DECAYS),
            charge=-charge[tw],
        )
    )
    k = int(s_chan.sum())
    b_eta = np.clip(1.3 * rng.standard_normal(k), -4, 4)
    b_phi = wrap_phi(phi[s_chan] + np.pi)
    parts.append(Particles.make(event[s_chan], BJET, pt[s_chan], b_eta, b_phi, 4.8))
    parts.append(isr_jets(rng, n, 0.8))
    return Particles.concat(parts), weight


def _gamma_jets(rng: np.random.Generator, n: int, boost: float) -> tuple[Particles, np.ndarray]:
    event = np.arange(n)
    pt, weight = power_law(rng, n, 100.0, 3.5, cap=np.full(n, PT_LIMIT), boost=boost)
    phi = rng.uniform(-np.pi, np.pi, n)
    eta = np.clip(1.3 * rng.standard_normal(n), -4, 4)
    photon = Particles.make(event, PHOTON, pt, eta, phi, 0.0)
    return Particles.concat(
        [photon, recoil_jet(rng, event, pt, phi), isr_jets(rng, n, 1.0, cap=pt)]
    ), weight


def _diboson(rng: np.random.Generator, n: int, boost: float) -> tuple[Particles, np.ndarray]:
    event = np.arange(n)
    x, s = TOP_PT
    pt, weight = sample_table(rng, n, tuple(0.6 * v for v in x), s, boost=boost)
    phi = rng.uniform(-np.pi, np.pi, n)
    u = rng.random(n) * (118.7 + 46.8 + 16.5)
    ww, wz = u < 118.7, (u >= 118.7) & (u < 165.5)
    first_w, second_w = ww | wz, ww
    plus = rng.random(n) < 0.5
    first_charge = np.where(ww | plus, 1, -1)
    parts = []
    for is_w, azimuth, charge in (
        (first_w, phi, first_charge),
        (second_w, wrap_phi(phi + np.pi), -np.ones(n, dtype=np.int64)),
    ):
        for mask, mass0, width, table in (
            (is_w, W_MASS, W_WIDTH, W_DECAYS),
            (~is_w, Z_MASS, Z_WIDTH, Z_DECAYS),
        ):
            k = int(mask.sum())
            mass = breit_wigner(rng, k, mass0, width, mass0 - 25.0, mass0 + 25.0)
            eta = eta_from_rapidity(pt[mask], np.clip(1.2 * rng.standard_normal(k), -4, 4), mass)
            parts.append(
                decay(
                    rng,
                    event[mask],
                    pt[mask],
                    eta,
                    azimuth[mask],
                    mass,
                    channel_table(table),
                    charge=charge[mask] if mass0 == W_MASS else 1,
                )
            )
    parts.append(isr_jets(rng, n, 0.6))
    return Particles.concat(parts), weight


PROCESSES: dict[str, Process] = {
    p.name: p
    for p in (
        Process("qcd", 1.26e5, "leading parton pT > 170 GeV", _qcd),
        Process("wjets", 6.08e4, "W -> l nu (l = e, mu, tau), inclusive", _wjets),
        Process("zee", 2.0e3, "Z/gamma* -> ee, m > 50 GeV", _z_to(ELECTRON)),
        Process("zmumu", 2.0e3, "Z/gamma* -> mumu, m > 50 GeV", _z_to(MUON)),
        Process("ztautau", 2.0e3, "Z/gamma* -> tautau, m > 50 GeV", _z_to(TAU)),
        Process("znunu", 4.0e2, "Z -> nunu, pT(Z) > 100 GeV", _z_to(INVISIBLE)),
        Process("ttbar", 832.0, "inclusive", _top_pair),
        Process("singletop", 300.0, "t-channel + tW + s-channel, inclusive", _single_top),
        Process("gammajets", 1.2e3, "photon pT > 100 GeV", _gamma_jets),
        Process("diboson", 182.0, "WW + WZ + ZZ, inclusive", _diboson),
    )
}


def get_process(name: str) -> Process:
    """The process called ``name``; the error lists the allowed names."""
    if name not in PROCESSES:
        raise KeyError(f"unknown background process '{name}'; allowed: {', '.join(PROCESSES)}")
    return PROCESSES[name]
