"""A parametric detector: truth particles in, reconstructed events (the Lamppost schema) out.

Numbers are round values typical of the ATLAS/CMS Run-2 detectors, chosen to give plausible
object multiplicities and resolutions rather than to reproduce one experiment:

============  ==========  =======  =========  ====================================================
object        efficiency  |η| max  pT min     resolution σ(pT)/pT
============  ==========  =======  =========  ====================================================
electron      0.90        2.47     10 GeV     0.10/√pT ⊕ 0.010
muon          0.95        2.50     10 GeV     0.015 ⊕ 5e-5·pT (curvature term: 5 % at 1 TeV)
τ_h           0.60        2.50     20 GeV     0.80/√pT ⊕ 0.05
photon        0.85        2.37     15 GeV     0.10/√pT ⊕ 0.010
jet           1.00        4.50     20 GeV     1.00/√pT ⊕ 0.05; jet mass smeared by 10 %
============  ==========  =======  =========  ====================================================

* τ leptons decay hadronically (64.8 %, visible fraction of pT uniform in [0.3, 1]) or to
  e / μ (17.8 % / 17.4 %, visible fraction uniform in [0.1, 0.8]); the rest is missing pT.
* b-tagging: 77 % for b jets within |η| < 2.5, mistag 1 % for light jets.
* Fakes per light jet: electron 5e-4, muon 1e-4, photon 1e-3, τ_h 5e-3 (random charge).
* MET: the vector sum of invisible particles, minus the mismeasurement of every
  reconstructed object, plus a soft term with σ = 0.6·√(200 GeV + Σ pT) per component.
* Jet masses: partons (one prong) get ``m/pT`` log-normal around 0.08; merged boosted
  decays keep the parent mass, smeared by 10 %.
* Fat jets (optional ``fatjet`` collection): reconstructed jets with pT > 200 GeV and
  |η| < 2.0; τ21 / τ32 drawn from Kumaraswamy (Beta-like, closed-form inverse) distributions
  by the number of hard prongs (QCD-like: τ21 ≈ τ32 ≈ 0.70; two-prong W/Z/Y: τ21 ≈ 0.44;
  three-prong top: τ21 ≈ 0.58, τ32 ≈ 0.47).
"""

from __future__ import annotations

from dataclasses import dataclass

import awkward as ak
import numpy as np
from pydantic import BaseModel, ConfigDict

from searches.events import make_collection, make_events
from theory.kinematics import (
    BJET,
    ELECTRON,
    INVISIBLE,
    JET,
    MASS,
    MUON,
    PHOTON,
    TAU,
    Particles,
    standard_normal32,
)
from theory.kinematics import LOG_MASS_OVER_PT as _LOG_MASS_OVER_PT
from theory.kinematics import LOG_MASS_SPREAD as _LOG_MASS_SPREAD

_COLLECTION_OF_KIND = np.array([-1, 0, 1, 2, 3, 4, 4, -1], dtype=np.int8)
_COLLECTIONS = ("electron", "muon", "tau", "photon", "jet")
_MASS_OF_COLLECTION = {
    "electron": MASS[ELECTRON],
    "muon": MASS[MUON],
    "tau": MASS[TAU],
    "photon": 0.0,
}
_SUBJETTINESS = (
    (6.0, 5.0, 6.0, 5.0),
    (2.5, 5.0, 6.0, 5.0),
    (3.0, 3.0, 3.0, 6.0),
)
"""Kumaraswamy shapes (a, b) of τ21 and τ32 for jets with 1, 2 and 3 hard prongs."""
_SUBJETTINESS_TABLE = np.array(_SUBJETTINESS, dtype=np.float32)


class ObjectResponse(BaseModel):
    """Efficiency, acceptance, threshold and ``σ/pT = a ⊕ b/√pT ⊕ c·pT`` of one object."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    efficiency: float
    eta_max: float
    pt_min: float
    constant: float
    stochastic: float
    curvature: float = 0.0


class DetectorConfig(BaseModel):
    """Every number of the parametric detector (defaults: the table of the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    electron: ObjectResponse = ObjectResponse(
        efficiency=0.90, eta_max=2.47, pt_min=10.0, constant=0.010, stochastic=0.10
    )
    muon: ObjectResponse = ObjectResponse(
        efficiency=0.95, eta_max=2.5, pt_min=10.0, constant=0.015, stochastic=0.0, curvature=5e-5
    )
    tau: ObjectResponse = ObjectResponse(
        efficiency=0.60, eta_max=2.5, pt_min=20.0, constant=0.05, stochastic=0.80
    )
    photon: ObjectResponse = ObjectResponse(
        efficiency=0.85, eta_max=2.37, pt_min=15.0, constant=0.010, stochastic=0.10
    )
    jet: ObjectResponse = ObjectResponse(
        efficiency=1.0, eta_max=4.5, pt_min=20.0, constant=0.05, stochastic=1.0
    )
    jet_mass_resolution: float = 0.10
    btag_efficiency: float = 0.77
    btag_eta_max: float = 2.5
    mistag_rate: float = 0.01
    fake_electron: float = 5e-4
    fake_muon: float = 1e-4
    fake_photon: float = 1e-3
    fake_tau: float = 5e-3
    tau_hadronic_fraction: float = 0.648
    tau_electron_fraction: float = 0.178
    met_soft_offset: float = 200.0
    met_soft_scale: float = 0.6
    fatjet_pt_min: float = 200.0
    fatjet_eta_max: float = 2.0

    def tables(self) -> dict[str, np.ndarray]:
        """Per-kind lookup arrays indexed by the particle code, shape ``(8,)`` each.

        The resolution terms are returned squared, ready to add in quadrature.
        """
        responses = {
            ELECTRON: self.electron,
            MUON: self.muon,
            TAU: self.tau,
            PHOTON: self.photon,
            JET: self.jet,
            BJET: self.jet,
        }
        out = {
            name: np.zeros(8)
            for name in ("efficiency", "eta_max", "pt_min", "constant", "stochastic", "curvature")
        }
        for kind, response in responses.items():
            for name, table in out.items():
                table[kind] = getattr(response, name)
        for name in ("constant", "stochastic", "curvature"):
            out[name] = out[name] ** 2
        out["pt_min"][0] = out["pt_min"][INVISIBLE] = np.inf
        return out


@dataclass(frozen=True)
class RecoBlock:
    """Reconstructed events as flat numpy columns, cheap to concatenate before Awkward.

    Attributes:
        counts: objects per event per collection, ``{name: (n_events,)}``.
        columns: flat per-object columns per collection, ``{name: {field: (n_objects,)}}``.
        met, met_phi, weight: event-level columns, ``(n_events,)``.
    """

    counts: dict[str, np.ndarray]
    columns: dict[str, dict[str, np.ndarray]]
    met: np.ndarray
    met_phi: np.ndarray
    weight: np.ndarray

    def __len__(self) -> int:
        return len(self.met)

    @classmethod
    def concat(cls, blocks: list[RecoBlock]) -> RecoBlock:
        if len(blocks) == 1:
            return blocks[0]
        first = blocks[0]
        return cls(
            counts={c: np.concatenate([b.counts[c] for b in blocks]) for c in first.counts},
            columns={
                c: {f: np.concatenate([b.columns[c][f] for b in blocks]) for f in fields}
                for c, fields in first.columns.items()
            },
            met=np.concatenate([b.met for b in blocks]),
            met_phi=np.concatenate([b.met_phi for b in blocks]),
            weight=np.concatenate([b.weight for b in blocks]),
        )

    def with_weight(self, weight: np.ndarray) -> RecoBlock:
        return RecoBlock(self.counts, self.columns, self.met, self.met_phi, weight)

    def to_events(self) -> ak.Array:
        """The Awkward event array of :mod:`searches.events` (with a ``fatjet`` collection)."""
        collections = {
            name: make_collection(self.counts[name], **columns)
            for name, columns in self.columns.items()
        }
        return make_events(collections, met=self.met, met_phi=self.met_phi, weight=self.weight)


def reconstruct(
    particles: Particles,
    *,
    n_events: int,
    weight: np.ndarray,
    rng: np.random.Generator,
    config: DetectorConfig | None = None,
) -> RecoBlock:
    """Apply the detector to truth particles of ``n_events`` events.

    Per-particle work is float32 (the schema stores float32 kinematics) with Box-Muller
    normals and float32 trigonometry, which numpy vectorises; per-event sums (MET, soft
    term) are accumulated in float64 by ``bincount``.

    Args:
        particles: flat truth particles; blocks with ascending ``event`` (see
            :mod:`theory.kinematics`).
        weight: per-event weights, shape ``(n_events,)``.

    Returns:
        Flat reconstructed events; ``.to_events()`` gives the Awkward array.
    """
    config = config or DetectorConfig()
    tables = {k: v.astype(np.float32) for k, v in config.tables().items()}
    event, kind, charge = particles.event, particles.kind.copy(), particles.charge.copy()
    pt, eta, phi, mass = particles.pt, particles.eta, particles.phi, particles.mass
    n = len(event)

    pt_visible = np.where(kind == INVISIBLE, np.float32(0.0), pt)
    taus = np.flatnonzero(kind == TAU)
    if len(taus):
        mode = rng.random(len(taus), dtype=np.float32)
        hadronic = mode < config.tau_hadronic_fraction
        to_electron = ~hadronic & (
            mode < config.tau_hadronic_fraction + config.tau_electron_fraction
        )
        z = rng.random(len(taus), dtype=np.float32)
        pt_visible[taus] *= np.where(hadronic, 0.3 + 0.7 * z, 0.1 + 0.7 * z)
        kind[taus[to_electron]] = ELECTRON
        kind[taus[~hadronic & ~to_electron]] = MUON

    light = np.flatnonzero(kind == JET)
    fake_edges = np.cumsum(
        [config.fake_electron, config.fake_muon, config.fake_photon, config.fake_tau]
    )
    faked = light[rng.random(len(light), dtype=np.float32) < fake_edges[-1]]
    if len(faked):
        fake_kind = np.array([ELECTRON, MUON, PHOTON, TAU], dtype=np.int8)[
            np.searchsorted(fake_edges, rng.random(len(faked)) * fake_edges[-1], side="right")
        ]
        kind[faked] = fake_kind
        sign = np.where(rng.random(len(faked)) < 0.5, -1, 1).astype(np.int8)
        charge[faked] = np.where(fake_kind == PHOTON, 0, sign)

    index = kind.astype(np.intp)
    variance = np.maximum(pt_visible, np.float32(1.0))
    np.divide(tables["stochastic"][index], variance, out=variance)
    variance += tables["constant"][index]
    variance += tables["curvature"][index] * (pt_visible * pt_visible)
    smear = np.sqrt(variance, out=variance)
    smear *= standard_normal32(rng, n)
    smear += np.float32(1.0)
    pt_reco = np.abs(pt_visible * smear, out=smear)
    keep = rng.random(n, dtype=np.float32) < tables["efficiency"][index]
    keep &= np.abs(eta) < tables["eta_max"][index]
    keep &= pt_reco > tables["pt_min"][index]
    measured = np.where(keep, pt_reco, np.float32(0.0))
    missing = np.where(keep, pt - pt_reco, pt - pt_visible)
    met_x = np.bincount(event, weights=missing * np.cos(phi), minlength=n_events)
    met_y = np.bincount(event, weights=missing * np.sin(phi), minlength=n_events)
    sum_pt = np.bincount(event, weights=measured, minlength=n_events)
    soft = config.met_soft_scale * np.sqrt(config.met_soft_offset + sum_pt)
    met_x += soft * standard_normal32(rng, n_events)
    met_y += soft * standard_normal32(rng, n_events)

    # Order kept objects by (collection, event, descending pT): a run-merging sort on an
    # integer key (event, then the bits of -pT; blocks arrive with ascending events), then a
    # radix sort on the int8 collection code; each collection is then one contiguous slice.
    kept = np.flatnonzero(keep)
    o_pt = pt_reco[kept]
    key = event[kept] << 31
    key |= 0x7FFFFFFF - o_pt.view(np.int32)
    by_event = np.argsort(key, kind="stable")
    code = _COLLECTION_OF_KIND[kind[kept]][by_event]
    by_code = np.argsort(code, kind="stable")
    order = kept[by_event[by_code]]
    o_pt = o_pt[by_event[by_code]]
    bounds = np.concatenate([[0], np.cumsum(np.bincount(code, minlength=len(_COLLECTIONS)))])
    o_event, o_kind = event[order], kind[order]
    o_eta, o_phi, o_mass, o_charge = eta[order], phi[order], mass[order], charge[order]

    counts: dict[str, np.ndarray] = {}
    columns: dict[str, dict[str, np.ndarray]] = {}
    for index, name in enumerate(_COLLECTIONS):
        sel = slice(bounds[index], bounds[index + 1])
        counts[name] = np.bincount(o_event[sel], minlength=n_events)
        cols = {"pt": o_pt[sel], "eta": o_eta[sel], "phi": o_phi[sel]}
        if name == "jet":
            jet_kind = o_kind[sel]
            k = len(jet_kind)
            jet_prongs = particles.prongs[order[sel]]
            gauss = standard_normal32(rng, k)
            cols["mass"] = np.where(
                jet_prongs > 1,
                o_mass[sel] * np.abs(1.0 + np.float32(config.jet_mass_resolution) * gauss),
                o_pt[sel]
                * np.exp(np.float32(_LOG_MASS_OVER_PT) + np.float32(_LOG_MASS_SPREAD) * gauss),
            )
            u = rng.random(k, dtype=np.float32)
            tag_rate = np.full(8, config.mistag_rate, dtype=np.float32)
            tag_rate[BJET] = config.btag_efficiency
            cols["btag"] = (np.abs(cols["eta"]) < config.btag_eta_max) & (u < tag_rate[jet_kind])
            counts["fatjet"], columns["fatjet"] = _fatjets(
                rng, config, cols, o_event[sel], jet_prongs, n_events
            )
        else:
            cols["mass"] = np.full(
                bounds[index + 1] - bounds[index], _MASS_OF_COLLECTION[name], dtype=np.float32
            )
            if name != "photon":
                cols["charge"] = o_charge[sel]
        columns[name] = cols
    return RecoBlock(
        counts=counts,
        columns=columns,
        met=np.sqrt(met_x * met_x + met_y * met_y),
        met_phi=np.arctan2(met_y, met_x),
        weight=np.asarray(weight, dtype=np.float64),
    )


def _fatjets(
    rng: np.random.Generator,
    config: DetectorConfig,
    jets: dict[str, np.ndarray],
    event: np.ndarray,
    prongs: np.ndarray,
    n_events: int,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Large-R jets: the hard central jets, with N-subjettiness ratios by prong count."""
    sel = np.flatnonzero(
        (jets["pt"] > config.fatjet_pt_min) & (np.abs(jets["eta"]) < config.fatjet_eta_max)
    )
    prongs = prongs[sel]
    shapes = _SUBJETTINESS_TABLE[np.minimum(prongs, 3) - 1]
    tau21 = _kumaraswamy(rng, shapes[:, 0], shapes[:, 1])
    tau32 = _kumaraswamy(rng, shapes[:, 2], shapes[:, 3])
    columns = {
        "pt": jets["pt"][sel],
        "eta": jets["eta"][sel],
        "phi": jets["phi"][sel],
        "mass": jets["mass"][sel],
        "tau21": tau21,
        "tau32": tau32,
    }
    return np.bincount(event[sel], minlength=n_events), columns


def _kumaraswamy(rng: np.random.Generator, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Kumaraswamy(a, b) draws on (0, 1) by inverse CDF, shape like ``a``."""
    u = rng.random(len(a), dtype=np.float32)
    return (1.0 - (1.0 - u) ** (1.0 / b)) ** (1.0 / a)
