"""Reconstructed composite candidates (W/Z → qq, Z → ℓℓ, H → bb, top → bjj) and pair masses.

The two-body landscape (:mod:`searches.landscape`) pairs every object type with every other,
including the heavy SM states a new resonance may decay to. Each composite type has *one*
candidate per event at most, chosen by simple, documented mass windows:

=======  ===========================================  =========================================
token    boosted (``fatjet`` collection, if present)  resolved (otherwise, from selected objects)
=======  ===========================================  =========================================
``V``    65 ≤ m < 105 GeV and τ21 < 0.55               two leading light jets, 65 ≤ m_jj < 105
``H``    105 ≤ m < 140 GeV and τ21 < 0.55              two leading b-jets, 100 ≤ m_bb < 145
``top``  140 ≤ m < 210 GeV and τ32 < 0.60              leading b-jet + two leading light jets,
                                                       65 ≤ m_jj < 105 and 140 ≤ m_bjj < 210
``Zll``  —                                             two leading opposite-charge electrons
                                                       (else muons), 81 ≤ m_ℓℓ < 101
=======  ===========================================  =========================================

A boosted candidate takes precedence over a resolved one in the same event (the leading-pT
fat jet in the window). The fat-jet windows of ``V``, ``H`` and ``top`` do not overlap, so one
fat jet is never two candidates. Each candidate remembers the objects it consumed (its
resolved constituents, or the selected jets within ΔR < 0.8 of the fat jet), so that pairing
it with another object never uses the same jet or lepton twice; two composites that share an
object do not form a pair.

Pair masses: ``a_b`` is the invariant mass of the leading ``a`` and the leading ``b`` (the two
leading ``a`` when ``a == b``). For a composite paired with itself (``V_V``, ``H_H``,
``top_top``, ``Zll_Zll``) the second candidate is the leading one built, by the same rules,
from what the first left: its constituent jets and leptons are removed, and so are its fat jet
and every fat jet within ΔR < 0.8 of one of its constituents. Two resolved candidates thus
never share a jet or lepton, and two boosted ones are distinct fat jets. NaN where the pair is
absent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import awkward as ak
import numpy as np

from searches.observables import RESOLUTION, Resolution, pair_mass_squared
from searches.signatures import (
    COLLECTION_OF_TOKEN,
    OBJECT_TOKENS,
    ObjectColumns,
    SignatureConfig,
    object_columns,
)

COMPOSITE_TOKENS: tuple[str, ...] = ("V", "H", "top", "Zll")
OBJECT_TYPES: tuple[str, ...] = (*OBJECT_TOKENS, *COMPOSITE_TOKENS)
"""Every object type of the landscape, in table order."""

COMPOSITE_RESOLUTION: dict[str, Resolution] = {
    "V": Resolution(c=5.0, a=1.0, b=0.08),
    "H": Resolution(c=5.0, a=1.0, b=0.10),
    "top": Resolution(c=5.0, a=1.0, b=0.08),
    "Zll": Resolution(c=0.5, a=0.1, b=0.015),
}
"""Resolutions of the composites (the candidate-mass spread of hadronic jets, or leptons)."""

BOOSTED_DR = 0.8
_KIN = ("pt", "eta", "phi", "mass")


@dataclass(frozen=True)
class Candidates:
    """The leading candidate of one object type per event.

    Attributes:
        kinematics: ``pt, eta, phi, mass``, each float64 of shape ``(n_events,)``.
        exists: where the event has a candidate, bool ``(n_events,)``.
        used: token (``e, mu, j, b``) -> flat bool mask over that token's
            :class:`~searches.signatures.ObjectColumns`: the objects the candidate consumed.
        fatjet: flat index of the candidate's fat jet, ``-1`` where it is resolved or absent,
            int64 ``(n_events,)``.
    """

    kinematics: dict[str, np.ndarray]
    exists: np.ndarray
    used: dict[str, np.ndarray]
    fatjet: np.ndarray | None = None


def resolution(token: str, x: np.ndarray | float) -> np.ndarray:
    """Mass resolution σ(x) in GeV of one object type (elementary or composite)."""
    model = COMPOSITE_RESOLUTION.get(token) or RESOLUTION.get(token)
    if model is None:
        raise ValueError(f"unknown object type {token!r}; allowed: {', '.join(OBJECT_TYPES)}")
    return model.sigma(x)


def pair_resolution(a: str, b: str, x: np.ndarray | float) -> np.ndarray:
    """Resolution of the pair mass: the worse of the two types at each ``x``."""
    return np.maximum(resolution(a, x), resolution(b, x))


def pair_names(objects: Sequence[str]) -> list[tuple[str, str]]:
    """Unordered pairs ``(a, b)`` of ``objects`` in :data:`OBJECT_TYPES` order, each type
    paired with itself too."""
    unknown = [o for o in objects if o not in OBJECT_TYPES]
    if unknown:
        raise ValueError(
            f"unknown object type(s) {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(OBJECT_TYPES)}"
        )
    ordered = [o for o in OBJECT_TYPES if o in objects]
    return [(a, b) for i, a in enumerate(ordered) for b in ordered[i:]]


def _event_of(obj: ObjectColumns) -> np.ndarray:
    return np.repeat(np.arange(obj.offsets.size - 1), np.diff(obj.offsets))


def ranked(obj: ObjectColumns, mask: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat index of the ``rank``-th highest-pT object passing ``mask`` per event, and where
    it exists; shapes ``(n_events,)``."""
    n_events = obj.offsets.size - 1
    index = np.flatnonzero(mask)
    event = _event_of(obj)[index]
    order = np.lexsort((-obj.columns["pt"][index].astype(np.float64), event))
    index, event = index[order], event[order]
    per_event = np.bincount(event, minlength=n_events)
    start = np.cumsum(per_event) - per_event
    exists = per_event > rank
    chosen = np.zeros(n_events, dtype=np.int64)
    chosen[exists] = index[start[exists] + rank]
    return chosen, exists


def _take(obj: ObjectColumns, index: np.ndarray) -> dict[str, np.ndarray]:
    return {f: obj.columns[f][index].astype(np.float64) for f in _KIN}


def _four(k: dict[str, np.ndarray]) -> np.ndarray:
    """``(4, n)`` array of ``px, py, pz, E``."""
    px, py = k["pt"] * np.cos(k["phi"]), k["pt"] * np.sin(k["phi"])
    pz = k["pt"] * np.sinh(k["eta"])
    return np.stack([px, py, pz, np.sqrt(px**2 + py**2 + pz**2 + k["mass"] ** 2)])


def _from_four(p: np.ndarray) -> dict[str, np.ndarray]:
    px, py, pz, energy = p
    pt = np.hypot(px, py)
    safe = np.where(pt > 0, pt, 1e-12)
    return {
        "pt": pt,
        "eta": np.arcsinh(pz / safe),
        "phi": np.arctan2(py, px),
        "mass": np.sqrt(np.maximum(energy**2 - px**2 - py**2 - pz**2, 0.0)),
    }


def pair_mass(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> np.ndarray:
    """Invariant mass of two objects given ``pt, eta, phi, mass`` (arrays of one shape), by the
    cancellation-free formula of :func:`searches.observables.pair_mass_squared`."""
    return np.sqrt(np.maximum(pair_mass_squared(a, b), 0.0))


def _empty(n: int) -> dict[str, np.ndarray]:
    return {f: np.zeros(n) for f in _KIN}


def _no_use(objects: dict[str, ObjectColumns]) -> dict[str, np.ndarray]:
    return {t: np.zeros(objects[t].selected.size, dtype=bool) for t in ("e", "mu", "j", "b")}


def _resolved_pair(
    obj: ObjectColumns, low: float, high: float, *, charge_opposite: bool = False
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Two leading selected objects with mass in ``[low, high)``: kinematics, exists, used."""
    first, has_first = ranked(obj, obj.selected, 0)
    second, has_second = ranked(obj, obj.selected, 1)
    p = _four(_take(obj, first)) + _four(_take(obj, second))
    kinematics = _from_four(p)
    exists = has_first & has_second & (kinematics["mass"] >= low) & (kinematics["mass"] < high)
    if charge_opposite:
        charge = obj.columns["charge"]
        exists &= charge[first] * charge[second] < 0
    used = np.zeros(obj.selected.size, dtype=bool)
    used[first[exists]] = True
    used[second[exists]] = True
    return kinematics, exists, used


def _fatjet_columns(events: ak.Array) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
    if "fatjet" not in events.fields:
        return None
    fat = events["fatjet"]
    counts = ak.to_numpy(ak.num(fat, axis=1)).astype(np.int64)
    columns = {
        f: ak.to_numpy(ak.flatten(fat[f], axis=1)).astype(np.float64)
        for f in (*_KIN, "tau21", "tau32")
    }
    offsets = np.zeros(counts.size + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return offsets, columns


def _boosted(
    fat: tuple[np.ndarray, dict[str, np.ndarray]] | None,
    n_events: int,
    low: float,
    high: float,
    substructure: str,
    cut: float,
    allowed: np.ndarray | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Leading fat jet in the window (among ``allowed`` ones): kinematics, exists, flat index
    (``-1`` where none)."""
    if fat is None:
        return _empty(n_events), np.zeros(n_events, dtype=bool), np.full(n_events, -1)
    offsets, columns = fat
    mask = (columns["mass"] >= low) & (columns["mass"] < high) & (columns[substructure] < cut)
    if allowed is not None:
        mask &= allowed
    obj = ObjectColumns(offsets, columns, mask)
    index, exists = ranked(obj, mask, 0)
    kinematics = {
        f: np.where(exists, columns[f][index] if columns[f].size else 0.0, 0.0) for f in _KIN
    }
    return kinematics, exists, np.where(exists, index, -1)


def _fatjets_left(
    fat: tuple[np.ndarray, dict[str, np.ndarray]] | None,
    objects: dict[str, ObjectColumns],
    taken: Candidates,
) -> np.ndarray | None:
    """Fat jets a second candidate may use: not ``taken``'s own, and none within ΔR <
    :data:`BOOSTED_DR` of one of its constituents (flat bool over the fat jets)."""
    if fat is None:
        return None
    offsets, columns = fat
    event = np.repeat(np.arange(offsets.size - 1), np.diff(offsets))
    left = np.ones(event.size, dtype=bool)
    own = taken.fatjet if taken.fatjet is not None else np.full(offsets.size - 1, -1)
    left[own[own >= 0]] = False
    for token, used in taken.used.items():
        obj = objects[token]
        depth = int(np.max(ObjectColumns(obj.offsets, obj.columns, used).per_event(), initial=0))
        for rank in range(depth):
            index, exists = ranked(obj, used, rank)
            eta = obj.columns["eta"].astype(np.float64)[index]
            phi = obj.columns["phi"].astype(np.float64)[index]
            deta = columns["eta"] - eta[event]
            dphi = np.mod(columns["phi"] - phi[event] + np.pi, 2 * np.pi) - np.pi
            left &= ~(exists[event] & (deta**2 + dphi**2 < BOOSTED_DR**2))
    return left


def _without(objects: dict[str, ObjectColumns], taken: Candidates) -> dict[str, ObjectColumns]:
    """``objects`` with the constituents of ``taken`` deselected."""
    out = dict(objects)
    for token, used in taken.used.items():
        obj = objects[token]
        out[token] = ObjectColumns(obj.offsets, obj.columns, obj.selected & ~used)
    return out


def _jets_near(
    objects: dict[str, ObjectColumns], kinematics: dict[str, np.ndarray], exists: np.ndarray
) -> dict[str, np.ndarray]:
    """Selected jets (light and b) within ΔR < :data:`BOOSTED_DR` of each event's candidate."""
    jets = objects["j"]
    event = _event_of(jets)
    deta = jets.columns["eta"].astype(np.float64) - kinematics["eta"][event]
    dphi = jets.columns["phi"].astype(np.float64) - kinematics["phi"][event]
    dphi = np.mod(dphi + np.pi, 2 * np.pi) - np.pi
    near = exists[event] & (deta**2 + dphi**2 < BOOSTED_DR**2)
    return {"j": near & objects["j"].selected, "b": near & objects["b"].selected}


def _merge(
    objects: dict[str, ObjectColumns],
    boosted: tuple[dict[str, np.ndarray], np.ndarray, np.ndarray],
    resolved: tuple[dict[str, np.ndarray], np.ndarray, dict[str, np.ndarray]],
) -> Candidates:
    """Boosted where present, resolved otherwise."""
    b_kin, b_exists, b_index = boosted
    r_kin, r_exists, r_used = resolved
    kinematics = {f: np.where(b_exists, b_kin[f], r_kin[f]) for f in _KIN}
    used = _no_use(objects)
    near = _jets_near(objects, b_kin, b_exists)
    for token in used:
        from_resolved = r_used.get(token, np.zeros_like(used[token]))
        event = _event_of(objects[token])
        used[token] = np.where(b_exists[event], near.get(token, used[token]), from_resolved)
        used[token] &= (b_exists | r_exists)[event]
    return Candidates(kinematics=kinematics, exists=b_exists | r_exists, used=used, fatjet=b_index)


def composite_candidates(
    events: ak.Array,
    objects: dict[str, ObjectColumns],
    token: str,
    *,
    exclude: Candidates | None = None,
) -> Candidates:
    """The leading candidate of composite ``token`` (see the module table) per event.

    Args:
        events: events of :mod:`searches.events`, ``(n_events,)``.
        objects: :func:`searches.signatures.object_columns` of the same events, with fields
            ``pt, eta, phi, mass`` (and ``charge`` for ``Zll``).
        exclude: a candidate already taken (the first of a same-type pair): the new one uses
            none of its constituents, nor its fat jet or a fat jet overlapping them.
    """
    n = len(events)
    fat = _fatjet_columns(events)
    allowed = None
    if exclude is not None:
        allowed = _fatjets_left(fat, objects, exclude)
        objects = _without(objects, exclude)
    if token == "V":
        kin, exists, used = _resolved_pair(objects["j"], 65.0, 105.0)
        return _merge(
            objects,
            _boosted(fat, n, 65.0, 105.0, "tau21", 0.55, allowed),
            (kin, exists, {"j": used}),
        )
    if token == "H":
        kin, exists, used = _resolved_pair(objects["b"], 100.0, 145.0)
        return _merge(
            objects,
            _boosted(fat, n, 105.0, 140.0, "tau21", 0.55, allowed),
            (kin, exists, {"b": used}),
        )
    if token == "top":
        w_kin, w_exists, w_used = _resolved_pair(objects["j"], 65.0, 105.0)
        b_index, has_b = ranked(objects["b"], objects["b"].selected, 0)
        p = _four(w_kin) + _four(_take(objects["b"], b_index))
        kin = _from_four(p)
        exists = w_exists & has_b & (kin["mass"] >= 140.0) & (kin["mass"] < 210.0)
        event_j = _event_of(objects["j"])
        used_b = np.zeros(objects["b"].selected.size, dtype=bool)
        used_b[b_index[exists]] = True
        resolved = (kin, exists, {"j": w_used & exists[event_j], "b": used_b})
        return _merge(objects, _boosted(fat, n, 140.0, 210.0, "tau32", 0.60, allowed), resolved)
    if token == "Zll":
        e_kin, e_exists, e_used = _resolved_pair(objects["e"], 81.0, 101.0, charge_opposite=True)
        m_kin, m_exists, m_used = _resolved_pair(objects["mu"], 81.0, 101.0, charge_opposite=True)
        m_exists &= ~e_exists
        m_used &= m_exists[_event_of(objects["mu"])]
        kin = {f: np.where(e_exists, e_kin[f], m_kin[f]) for f in _KIN}
        used = _no_use(objects)
        used["e"], used["mu"] = e_used, m_used
        return Candidates(
            kinematics=kin, exists=e_exists | m_exists, used=used, fatjet=np.full(n, -1)
        )
    raise ValueError(f"unknown composite {token!r}; allowed: {', '.join(COMPOSITE_TOKENS)}")


def _leading_free(
    obj: ObjectColumns, used: np.ndarray | None, rank: int
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    mask = obj.selected if used is None else obj.selected & ~used
    index, exists = ranked(obj, mask, rank)
    return _take(obj, index), exists


def _shared(
    objects: dict[str, ObjectColumns], first: Candidates, second: Candidates, n: int
) -> np.ndarray:
    clash = np.zeros(n, dtype=bool)
    for token, mask in first.used.items():
        both = mask & second.used[token]
        clash[_event_of(objects[token])[both]] = True
    return clash


def pair_masses(
    events: ak.Array, config: SignatureConfig, objects: Sequence[str]
) -> dict[str, np.ndarray]:
    """Pair mass ``a_b`` (GeV) of every pair of :func:`pair_names` ``(objects)``.

    Returns:
        ``"a_b"`` -> float64 ``(n_events,)``, NaN where the event lacks the pair.
    """
    pairs = pair_names(objects)
    n = len(events)
    columns = object_columns(events, config, fields=_KIN)
    for token in ("e", "mu"):
        charge = ak.flatten(events[COLLECTION_OF_TOKEN[token]]["charge"], axis=1)
        columns[token].columns["charge"] = ak.to_numpy(charge)
    composites = {
        t: composite_candidates(events, columns, t)
        for t in COMPOSITE_TOKENS
        if any(t in pair for pair in pairs)
    }
    out: dict[str, np.ndarray] = {}
    for a, b in pairs:
        if a in OBJECT_TOKENS and b in OBJECT_TOKENS:
            first, has_first = _leading_free(columns[a], None, 0)
            second, has_second = _leading_free(columns[b], None, 1 if a == b else 0)
            exists = has_first & has_second
        elif b in OBJECT_TOKENS or a in OBJECT_TOKENS:
            composite, single = (a, b) if a in composites else (b, a)
            candidate = composites[composite]
            first, has_first = candidate.kinematics, candidate.exists
            second, has_second = _leading_free(columns[single], candidate.used.get(single), 0)
            exists = has_first & has_second
        elif a == b:
            one = composites[a]
            two = composite_candidates(events, columns, a, exclude=one)
            first, second = one.kinematics, two.kinematics
            exists = one.exists & two.exists
        else:
            one, two = composites[a], composites[b]
            first, second = one.kinematics, two.kinematics
            exists = one.exists & two.exists & ~_shared(columns, one, two, n)
        mass = np.full(n, np.nan)
        if exists.any():
            mass[exists] = pair_mass(
                {f: first[f][exists] for f in _KIN}, {f: second[f][exists] for f in _KIN}
            )
        out[f"{a}_{b}"] = mass
    return out
