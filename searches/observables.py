"""Per-event observables of the selected objects, and binning that follows detector resolution.

Every observable is computed from the objects :mod:`searches.signatures` selects (the same
cuts and overlap removal that defined the event class), with explicit numpy four-vector
arithmetic on flat arrays (no loop over events):

* ``st`` — scalar sum of the pT of all selected objects, plus MET when the event carries the
  MET flag (m_eff, the ATLAS general-search S_T);
* ``minv`` — invariant mass of all selected visible objects; for events with the MET flag the
  transverse mass of (visible system + MET),
  ``m_T² = (√(m_vis² + pT_vis²) + MET)² − |pT_vis + MET|²``; 0 when nothing is selected;
* ``met`` — the missing transverse momentum;
* ``m_<a>_<b>`` — invariant mass of the leading selected object of type ``a`` and the leading
  of type ``b`` (the two leading of ``a`` when ``a == b``), NaN when absent; types from
  ``e, mu, tau, gamma, j, b`` with ``a`` not after ``b`` in that order.

Binning. A bin should be about as wide as the detector smears the observable, so that a
narrow signal lands in one or two bins and the scan's minimum region width means something.
The resolution model is the calorimeter form ``σ(x) = √(c² + a²·x + b²·x²)`` (GeV; noise,
stochastic and constant terms) with approximate values per observable in :data:`RESOLUTION`;
edges start at a low edge (e.g. :func:`lower_edge`, the class's threshold sum for ``st``) and
grow by ``width_in_sigma·σ`` until the background runs out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import awkward as ak
import numpy as np

from searches.signatures import (
    OBJECT_TOKENS,
    ObjectColumns,
    SignatureConfig,
    object_columns,
    parse_class_name,
)


@dataclass(frozen=True)
class Resolution:
    """``σ(x) = √(c² + a²·x + b²·x²)`` in GeV: noise ``c`` (GeV), stochastic ``a`` (√GeV),
    constant ``b`` (fraction)."""

    c: float
    a: float
    b: float

    def sigma(self, x: np.ndarray | float) -> np.ndarray:
        x = np.maximum(np.asarray(x, dtype=np.float64), 0.0)
        return np.sqrt(self.c**2 + self.a**2 * x + self.b**2 * x**2)


RESOLUTION: dict[str, Resolution] = {
    # Sums over many objects (jets dominate) and MET: jet-like stochastic term, a few % constant.
    "st": Resolution(c=10.0, a=0.5, b=0.03),
    "minv": Resolution(c=5.0, a=0.5, b=0.03),
    "met": Resolution(c=15.0, a=0.5, b=0.05),
    # Single-object types, used for the pairwise masses (the worse of the two types counts).
    "e": Resolution(c=0.5, a=0.1, b=0.01),
    "gamma": Resolution(c=0.5, a=0.1, b=0.01),
    "mu": Resolution(c=0.5, a=0.05, b=0.02),
    "tau": Resolution(c=5.0, a=0.5, b=0.05),
    "j": Resolution(c=5.0, a=1.0, b=0.05),
    "b": Resolution(c=5.0, a=1.0, b=0.07),
}
"""Approximate LHC-detector resolutions (ATLAS/CMS performance papers, rounded)."""

_PAIRS = [(a, b) for i, a in enumerate(OBJECT_TOKENS) for b in OBJECT_TOKENS[i:]]
OBSERVABLES: dict[str, str] = {
    "st": "scalar sum of selected-object pT, plus MET when the MET flag is set (GeV)",
    "minv": "invariant mass of selected visible objects; transverse mass with MET (GeV)",
    "met": "missing transverse momentum (GeV)",
    **{
        f"m_{a}_{b}": (
            f"invariant mass of the two leading {a} (GeV)"
            if a == b
            else f"invariant mass of the leading {a} and the leading {b} (GeV)"
        )
        for a, b in _PAIRS
    },
}
"""Observable name -> description; every name :func:`compute` accepts."""


def _check_name(name: str) -> None:
    if name not in OBSERVABLES:
        raise ValueError(
            f"unknown observable {name!r}; allowed: st, minv, met, or m_<a>_<b> with a, b in "
            f"{', '.join(OBJECT_TOKENS)} and a not after b (e.g. m_e_mu, m_j_j)"
        )


def compute(events: ak.Array, name: str, *, config: SignatureConfig) -> np.ndarray:
    """One value of observable ``name`` per event.

    Args:
        events: events in the schema of :mod:`searches.events`, shape ``(n_events,)``.
        name: a key of :data:`OBSERVABLES`.
        config: the signature configuration whose cuts select the objects.

    Returns:
        float64 array of shape ``(n_events,)`` (NaN for absent pairs in ``m_<a>_<b>``).
    """
    _check_name(name)
    if name == "met":
        return ak.to_numpy(events["met"]).astype(np.float64)
    objects = object_columns(events, config, fields=("pt", "eta", "phi", "mass"))
    n = len(events)
    if name.startswith("m_"):
        _, a, b = name.split("_")
        return _pair_mass(objects[a], objects[b], same=a == b, n_events=n)
    met = ak.to_numpy(events["met"]).astype(np.float64)
    flag = met >= config.met_min
    if name == "st":
        total = np.zeros(n)
        for obj in objects.values():
            event, pt, *_ = _selected_vectors(obj)
            total += np.bincount(event, weights=pt, minlength=n)
        return total + np.where(flag, met, 0.0)
    return _visible_mass(objects, events, met, flag, n)


def _selected_vectors(obj: ObjectColumns) -> tuple[np.ndarray, ...]:
    """(event index, pt, px, py, pz, E) of the selected objects, each ``(n_selected,)``."""
    counts = np.diff(obj.offsets)
    event = np.repeat(np.arange(counts.size), counts)[obj.selected]
    pt = obj.columns["pt"][obj.selected].astype(np.float64)
    eta = obj.columns["eta"][obj.selected].astype(np.float64)
    phi = obj.columns["phi"][obj.selected].astype(np.float64)
    mass = obj.columns["mass"][obj.selected].astype(np.float64)
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    energy = np.sqrt(px**2 + py**2 + pz**2 + mass**2)
    return event, pt, px, py, pz, energy


def _visible_mass(
    objects: dict[str, ObjectColumns],
    events: ak.Array,
    met: np.ndarray,
    flag: np.ndarray,
    n: int,
) -> np.ndarray:
    sums = np.zeros((4, n))
    for obj in objects.values():
        event, _, *p4 = _selected_vectors(obj)
        for row, component in enumerate(p4):
            sums[row] += np.bincount(event, weights=component, minlength=n)
    px, py, pz, energy = sums
    mass2 = np.maximum(energy**2 - px**2 - py**2 - pz**2, 0.0)
    visible = np.sqrt(mass2)
    met_phi = ak.to_numpy(events["met_phi"]).astype(np.float64)
    et_vis = np.sqrt(mass2 + px**2 + py**2)
    mt2 = (
        (et_vis + met) ** 2 - (px + met * np.cos(met_phi)) ** 2 - (py + met * np.sin(met_phi)) ** 2
    )
    return np.where(flag, np.sqrt(np.maximum(mt2, 0.0)), visible)


def _leading(obj: ObjectColumns, n_events: int, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """Index of the ``rank``-th highest-pT selected object per event, and where it exists."""
    index = np.flatnonzero(obj.selected)
    counts = np.diff(obj.offsets)
    event = np.repeat(np.arange(n_events), counts)[index]
    order = np.lexsort((-obj.columns["pt"][index].astype(np.float64), event))
    index = index[order]
    per_event = np.bincount(event, minlength=n_events)
    start = np.cumsum(per_event) - per_event
    exists = per_event > rank
    chosen = np.zeros(n_events, dtype=np.int64)
    chosen[exists] = index[start[exists] + rank]
    return chosen, exists


def pair_mass_squared(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> np.ndarray:
    """Invariant mass squared of two objects given (pt, eta, phi, mass), without cancellation.

    Uses ``m² = m_a² + m_b² + 2·[(m_Ta m_Tb − p_Ta p_Tb) + 2 m_Ta m_Tb sinh²(Δy/2)
    + 2 p_Ta p_Tb sin²(Δφ/2)]`` with ``m_Ta m_Tb − p_Ta p_Tb`` written as a positive ratio,
    so collinear and massless pairs keep full precision (``E² − p²`` would lose it).
    """
    mt_a = np.hypot(a["pt"], a["mass"])
    mt_b = np.hypot(b["pt"], b["mass"])
    y_a = np.arcsinh(a["pt"] * np.sinh(a["eta"]) / np.where(mt_a > 0, mt_a, 1.0))
    y_b = np.arcsinh(b["pt"] * np.sinh(b["eta"]) / np.where(mt_b > 0, mt_b, 1.0))
    denominator = mt_a * mt_b + a["pt"] * b["pt"]
    transverse = np.divide(
        a["mass"] ** 2 * b["pt"] ** 2
        + b["mass"] ** 2 * a["pt"] ** 2
        + (a["mass"] * b["mass"]) ** 2,
        denominator,
        out=np.zeros_like(denominator),
        where=denominator > 0,
    )
    cross = (
        transverse
        + 2 * mt_a * mt_b * np.sinh((y_a - y_b) / 2) ** 2
        + 2 * a["pt"] * b["pt"] * np.sin((a["phi"] - b["phi"]) / 2) ** 2
    )
    return a["mass"] ** 2 + b["mass"] ** 2 + 2 * cross


def _kinematics(obj: ObjectColumns, index: np.ndarray) -> dict[str, np.ndarray]:
    return {f: obj.columns[f][index].astype(np.float64) for f in ("pt", "eta", "phi", "mass")}


def _pair_mass(a: ObjectColumns, b: ObjectColumns, *, same: bool, n_events: int) -> np.ndarray:
    first, has_first = _leading(a, n_events, 0)
    second, has_second = _leading(a if same else b, n_events, 1 if same else 0)
    exists = has_first & has_second
    out = np.full(n_events, np.nan)
    if exists.any():
        mass2 = pair_mass_squared(_kinematics(a, first[exists]), _kinematics(b, second[exists]))
        out[exists] = np.sqrt(mass2)
    return out


def resolution(name: str, x: np.ndarray | float) -> np.ndarray:
    """Detector resolution σ(x) in GeV of observable ``name`` at value(s) ``x``.

    A pairwise mass takes the worse of its two object types at each ``x``.
    """
    _check_name(name)
    if name.startswith("m_"):
        _, a, b = name.split("_")
        return np.maximum(RESOLUTION[a].sigma(x), RESOLUTION[b].sigma(x))
    return RESOLUTION[name].sigma(x)


def lower_edge(name: str, event_class: str, *, config: SignatureConfig) -> float:
    """Kinematic lower bound of ``name`` in ``event_class``: where its binning should start.

    ``st`` cannot be below the sum of the thresholds of the class's objects (plus ``met_min``
    with the MET flag), ``met`` not below ``met_min`` in a MET class; masses start at 0.
    """
    _check_name(name)
    counts, _ = parse_class_name(event_class, config=config)
    if name == "st":
        return float(
            sum(counts[t] * config.cut(t).pt for t in OBJECT_TOKENS)
            + counts["MET"] * config.met_min
        )
    if name == "met":
        return float(config.met_min if counts["MET"] else 0.0)
    return 0.0


def resolution_binning(
    values_or_range: np.ndarray | Sequence[float] | tuple[float, float],
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    width_in_sigma: float = 1.0,
    max_bins: int = 2000,
) -> np.ndarray:
    """Bin edges whose widths follow the resolution: ``width_in_sigma·σ`` at each bin centre.

    Args:
        values_or_range: a ``(low, high)`` tuple, or values (non-finite ones ignored) whose
            minimum and maximum give the range.
        name: the observable (its resolution model is used).
        low: first edge; default the range's low end (values: their minimum).
        high: the last edge is the first one at or above ``high``; default the range's high
            end (values: their maximum, where the background runs out).
        width_in_sigma: bin width in units of σ (1–2 is the usual choice).
        max_bins: refuse to make more bins than this (a sign of a wrong range or width).

    Returns:
        float64 edges, strictly increasing, shape ``(n_bins + 1,)``.
    """
    _check_name(name)
    if width_in_sigma <= 0:
        raise ValueError(f"width_in_sigma must be > 0; got {width_in_sigma}")
    if isinstance(values_or_range, tuple) and len(values_or_range) == 2:
        range_low, range_high = (float(v) for v in values_or_range)
    else:
        values = np.asarray(values_or_range, dtype=np.float64).ravel()
        values = values[np.isfinite(values)]
        if values.size == 0:
            raise ValueError(f"observable {name!r}: no finite values to derive a binning from")
        range_low, range_high = float(values.min()), float(values.max())
    low = range_low if low is None else float(low)
    high = range_high if high is None else float(high)
    if not (np.isfinite(low) and np.isfinite(high)):
        raise ValueError(f"observable {name!r}: low and high must be finite; got {low}, {high}")
    edges = [low]
    while edges[-1] < high or len(edges) == 1:
        x = edges[-1]
        width = width_in_sigma * float(resolution(name, x))
        width = width_in_sigma * float(resolution(name, x + width / 2))
        edges.append(x + width)
        if len(edges) > max_bins + 1:
            raise ValueError(
                f"observable {name!r}: more than max_bins={max_bins} bins from {low} to {high} "
                f"at width_in_sigma={width_in_sigma}; raise max_bins or width_in_sigma"
            )
    return np.asarray(edges, dtype=np.float64)


def edges_for(
    name: str,
    values: np.ndarray,
    weights: np.ndarray,
    *,
    min_expected: float = 0.1,
    low: float | None = None,
    high: float | None = None,
    width_in_sigma: float = 1.0,
) -> np.ndarray:
    """Bin edges for one class and observable, picked from its background (deterministic).

    Resolution-scaled bins from ``low`` (default: the smallest value) to where the background
    runs out (default: the largest value), then neighbouring bins are merged from low to high
    until each holds at least ``min_expected`` weighted background events; a short remainder at
    the top joins the last bin. Bins never get narrower than the resolution.

    Args:
        name: observable name.
        values: background values, shape ``(n,)`` (NaN, e.g. absent pairs, are ignored).
        weights: background event weights, shape ``(n,)``.
        min_expected: minimum weighted background per bin.

    Returns:
        float64 edges, strictly increasing, at least two.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    weights = np.asarray(weights, dtype=np.float64).ravel()
    if values.shape != weights.shape:
        raise ValueError(
            f"observable {name!r}: values and weights must have the same shape; "
            f"got {values.shape} and {weights.shape}"
        )
    finite = np.isfinite(values)
    fine = resolution_binning(
        values[finite], name, low=low, high=high, width_in_sigma=width_in_sigma
    )
    content, _ = np.histogram(values[finite], bins=fine, weights=weights[finite])
    keep = [0]
    accumulated = 0.0
    for i, value in enumerate(content):
        accumulated += value
        if accumulated >= min_expected:
            keep.append(i + 1)
            accumulated = 0.0
    if keep[-1] != len(content):
        if len(keep) > 1:
            keep[-1] = len(content)
        else:
            keep.append(len(content))
    return fine[keep]
