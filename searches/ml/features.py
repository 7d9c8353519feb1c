"""Per-event feature matrices built from the event schema of :mod:`searches.events`.

Three feature sets, chosen per method option ``features``:

* ``objects`` — padded kinematics of the leading objects of each collection
  (``log(1+pT)``, η, ``log(1+m)``; zeros where an object is missing) plus ``log(1+MET)``;
* ``rmm`` — the rapidity–mass matrix (Chekanov, arXiv:1805.11650) of the leading objects:
  transverse energies on the diagonal, pair masses above and rapidity differences below it,
  all dimensionless, so one network sees every object type on the same footing;
* ``substructure`` — the LHC-Olympics dijet features of the two leading fat jets
  (lighter jet mass, mass difference, τ21 of both), in TeV where masses are concerned.
"""

from __future__ import annotations

from collections.abc import Mapping

import awkward as ak
import numpy as np

FEATURE_SETS = ("objects", "rmm", "substructure")
SQRT_S = 13_000.0
DEFAULT_OBJECTS: Mapping[str, int] = {"jet": 4, "electron": 2, "muon": 2, "tau": 1, "photon": 2}


def _padded(collection: ak.Array, field: str, n: int) -> np.ndarray:
    padded = ak.pad_none(collection[field], n, clip=True, axis=1)
    return ak.to_numpy(ak.fill_none(padded, 0.0)).astype(np.float64).reshape(-1, n)


def _present(collection: ak.Array, n: int) -> np.ndarray:
    return np.arange(n)[None, :] < ak.to_numpy(ak.num(collection, axis=1))[:, None]


def padded_objects(
    events: ak.Array, *, objects: Mapping[str, int] = DEFAULT_OBJECTS
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Features ``(n_events, 3·Σ objects + 1)`` and their names."""
    columns, names = [], []
    for name, n in objects.items():
        if name not in events.fields:
            raise ValueError(
                f"feature set 'objects': collection '{name}' missing; available: {', '.join(events.fields)}"
            )
        coll = events[name]
        columns += [
            np.log1p(_padded(coll, "pt", n)),
            _padded(coll, "eta", n),
            np.log1p(np.maximum(_padded(coll, "mass", n), 0.0)),
        ]
        names += [f"{name}{i}_{f}" for f in ("logpt", "eta", "logm") for i in range(n)]
    columns.append(np.log1p(ak.to_numpy(events["met"]))[:, None])
    names.append("logmet")
    return np.hstack(columns), tuple(names)


def rapidity_mass_matrix(
    events: ak.Array, *, objects: Mapping[str, int] = DEFAULT_OBJECTS
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Flattened RMM ``(n_events, k²)`` with ``k = Σ objects + 1`` (MET first); names.

    Entries: ``[0, 0] = MET/√s``; diagonal ``[i, i] = E_T,i/√s``; above the diagonal the pair
    mass ``m_ij/√s`` (transverse mass with MET in row 0); below it ``h_ij = cosh(Δy/2) − 1``.
    """
    pts, ys, phis, masses, present, labels = [], [], [], [], [], ["met"]
    for name, n in objects.items():
        coll = events[name]
        pt, eta = _padded(coll, "pt", n), _padded(coll, "eta", n)
        phi, mass = _padded(coll, "phi", n), np.maximum(_padded(coll, "mass", n), 0.0)
        mt = np.sqrt(pt**2 + mass**2)
        pz = pt * np.sinh(eta)
        energy = np.sqrt(mt**2 + pz**2)
        y = 0.5 * np.log(np.maximum(energy + pz, 1e-12) / np.maximum(energy - pz, 1e-12))
        pts.append(pt), ys.append(y), phis.append(phi), masses.append(mass)
        present.append(_present(coll, n))
        labels += [f"{name}{i}" for i in range(n)]
    pt, y, phi = np.hstack(pts), np.hstack(ys), np.hstack(phis)
    mass, ok = np.hstack(masses), np.hstack(present)
    n_events, k = len(pt), pt.shape[1] + 1
    px, py = pt * np.cos(phi), pt * np.sin(phi)
    mt = np.sqrt(pt**2 + mass**2)
    energy, pz = mt * np.cosh(y), mt * np.sinh(y)
    rmm = np.zeros((n_events, k, k))
    met = ak.to_numpy(events["met"]).astype(np.float64)
    met_phi = ak.to_numpy(events["met_phi"]).astype(np.float64)
    rmm[:, 0, 0] = met / SQRT_S
    et = np.where(ok, mt, 0.0)
    rmm[:, np.arange(1, k), np.arange(1, k)] = et / SQRT_S
    mt_met = np.sqrt(np.maximum(2 * pt * met[:, None] * (1 - np.cos(phi - met_phi[:, None])), 0.0))
    rmm[:, 0, 1:] = np.where(ok, mt_met, 0.0) / SQRT_S
    for i in range(k - 1):
        j = np.arange(i + 1, k - 1)
        if not len(j):
            continue
        e2 = (energy[:, [i]] + energy[:, j]) ** 2
        p2 = (
            (px[:, [i]] + px[:, j]) ** 2
            + (py[:, [i]] + py[:, j]) ** 2
            + (pz[:, [i]] + pz[:, j]) ** 2
        )
        both = ok[:, [i]] & ok[:, j]
        rmm[:, i + 1, j + 1] = np.where(both, np.sqrt(np.maximum(e2 - p2, 0.0)), 0.0) / SQRT_S
        rmm[:, j + 1, i + 1] = np.where(both, np.cosh(0.5 * (y[:, [i]] - y[:, j])) - 1.0, 0.0)
    names = tuple(f"rmm_{a}_{b}" for a in labels for b in labels)
    return rmm.reshape(n_events, k * k), names


SUBSTRUCTURE_NAMES = ("m_j1", "delta_m_j", "tau21_j1", "tau21_j2")


def substructure(events: ak.Array) -> tuple[np.ndarray, tuple[str, ...]]:
    """LHC-Olympics features ``(n_events, 4)`` of the two leading fat jets (masses in TeV).

    ``m_j1`` is the lighter of the two, ``delta_m_j = m_heavier − m_lighter``; τ21 follow the
    jets. Events with fewer than two fat jets get zeros for the missing jet (the ``fatjet``
    collection is required).
    """
    if "fatjet" not in events.fields:
        raise ValueError(
            "feature set 'substructure': events have no 'fatjet' collection; "
            "allowed feature sets for these events: objects, rmm"
        )
    fat = events["fatjet"]
    mass = np.maximum(_padded(fat, "mass", 2), 0.0) / 1000.0
    tau21 = _padded(fat, "tau21", 2)
    light = np.argmin(mass, axis=1)
    rows = np.arange(len(mass))
    m1, m2 = mass[rows, light], mass[rows, 1 - light]
    t1, t2 = tau21[rows, light], tau21[rows, 1 - light]
    return np.column_stack([m1, m2 - m1, t1, t2]), SUBSTRUCTURE_NAMES


def build(events: ak.Array, kind: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """Feature matrix ``(n_events, d)`` and names for feature set ``kind``.

    Raises:
        ValueError: naming the option when ``kind`` is not one of :data:`FEATURE_SETS`.
    """
    if kind == "objects":
        return padded_objects(events)
    if kind == "rmm":
        return rapidity_mass_matrix(events)
    if kind == "substructure":
        return substructure(events)
    raise ValueError(f"option 'features': {kind!r} not allowed; allowed: {', '.join(FEATURE_SETS)}")
