"""The two-body resonance landscape: a bump search in the mass of every object pair.

Almost every cell of the table "X → a b, for a, b among e, μ, τ, γ, j, b, W/Z, H, top" is
empty because nobody wrote that search. The landscape fills the whole table at once:

* **cells** — for every unordered pair of object types (:mod:`searches.composites`, composites
  included) and every event class (``inclusive``: every event holding the pair; and each
  exclusive class of :mod:`searches.signatures` holding it), a cell is scanned when at least
  ``min_events`` simulated background events populate it. Its observable is the pair mass
  ``m_<a>_<b>`` of the leading a and the leading b.
* **generic Gaussian signal scan** — bins ``bin_width_sigma`` resolution wide; at the centre
  ``m`` of every bin a window of ``window_bins`` bins around it is a counting experiment with
  the background ``b`` (simulated) and its uncertainty ``σ_b = √(Σw² + (systematic·b)²)``.
  Its local p-value is the profile-likelihood discovery p-value of pyhf's single-bin model
  with a ``shapesys`` background (``q0``, asymptotic; the closed form of
  :mod:`searches.stats.counting`, tested against pyhf). The 95 % CL (CLs, ``qtilde``) upper
  limit on the *visible* cross section ``σ × BR × A × ε`` (fb) of a Gaussian signal of width
  ``√(σ_res(m)² + (width·m)²)`` at ``m`` is the window's limit on signal events divided by the
  luminosity and by the fraction of the Gaussian inside the window (observed, and median
  expected). Where the simulation is sparse (tails) a window with less than ``min_expected``
  background grows, one bin each side at a time, up to ``max_window_bins``; windows still
  short are not tested. The simulated background's statistical uncertainty enters every
  window, so a cell's reach is limited by how many simulated events populate it.
* **smooth-function bump hunt** — the second search of every cell (``fit_function``, default
  ``dijet``; ``null`` turns it off): the observed spectrum of the cell is fitted with a smooth
  falling function and every window of one to ``fit_window_bins`` resolution-scaled fit bins
  gets the local p of Poisson ⊗ the fit uncertainty, with a refit without the best window
  (:mod:`searches.landscape_fit`, which says which cells are fitted). It does not trust the
  simulated shape; the scan does not depend on a fit. The limits come from the scan.
* **look-elsewhere** — each search's statistic is its smallest local p over every window of
  every cell, and the landscape's is the smaller of the two searches' ``p̃``, each calibrated
  on the same pseudo-experiments (:func:`searches.stats.lee.joint_p_global`; combining raw
  local p-values would let a search whose local p-values run small in every
  pseudo-experiment hide the other). Background-only pseudo-experiments of the
  *whole* landscape resample the simulated events (each event enters with a Poisson count of
  mean equal to its weight), so a pseudo-experiment has exactly the overlaps of the real one:
  an event in several cells (inclusive and exclusive classes, several pairs) moves all of them
  together; every pseudo-experiment is refitted cell by cell (batched over pseudo-experiments).
  The global p-value is ``p̃ = (k + 1)/(R + 1)`` of :func:`searches.stats.lee.p_tilde`; each
  search alone gets its own global ``p̃`` (:class:`SearchSummary`), and each cell its own
  ``p̃`` per search, from the same pseudo-experiments.
* **sensitivity** — a cell *has sensitivity* when a tested window covers the reference mass;
  its colour in the table is the expected limit there.

Masses above the last simulated background event of a cell are not scanned (there is no
expectation to compare to). The scan is split into :func:`prepare` (everything that depends
on the background only) and :meth:`LandscapeModel.scan` (one observed dataset), so many
pseudo-campaigns can reuse one preparation.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import awkward as ak
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator
from scipy import sparse
from scipy.special import ndtr

from searches.composites import OBJECT_TYPES, pair_masses, pair_names, pair_resolution
from searches.landscape_fit import (
    FitFunction,
    FitLayout,
    FitScan,
    FitStatus,
    fit_layout,
    fit_scan,
)
from searches.progress import progress_bar
from searches.signatures import SignatureConfig, classify
from searches.stats import counting, lee
from searches.stats.pvalues import significance

LANDSCAPE_SCHEMA_VERSION = "2"
"""2: the smooth-function bump hunt of every cell, and per-search summaries (1 still reads)."""
LIMIT_MU_MAX = 100.0
"""Bound of the signal strength in the limit's free fit (the reference signal makes μ ~ 1)."""
INCLUSIVE = "inclusive"
ClassKind = Literal["inclusive", "exclusive"]
SearchKind = Literal["scan", "fit"]
_CHUNK_ELEMENTS = 4_000_000


class LandscapeOptions(BaseModel):
    """What the landscape scans and how (campaign file: the ``landscape:`` section).

    Attributes:
        objects: object types to pair (:data:`searches.composites.OBJECT_TYPES`).
        classes: ``inclusive`` (every event with the pair) and/or ``exclusive`` (each
            exclusive event class holding the pair).
        min_events: simulated background events a cell needs to be scanned.
        pseudo_experiments: background-only pseudo-experiments of the whole landscape
            (0: no look-elsewhere correction).
        bin_width_sigma: bin width in units of the pair-mass resolution.
        window_bins: bins per mass window (odd; 5 bins of 0.5 σ hold 79 % of a narrow signal).
        max_window_bins: widest window, where sparse background makes windows grow.
        systematic: relative background uncertainty, added in quadrature to the MC statistics.
        min_expected: windows with less background are not tested.
        width: relative intrinsic width of the generic Gaussian signal (0–15 % of the mass).
        reference_mass: mass (GeV) at which the table shows each cell's expected limit.
        fit_function: the bump hunt's function (``dijet``, ``expo``; None: no bump hunt).
            ``dijet`` by default: pair masses above the turn-on fall like parton luminosities,
            which it was made for, and it extrapolates into sparse tails without turning up.
        fit_bin_sigma: least fit-bin width in resolution units.
        fit_bin_count: least simulated background per fit bin (bins are merged to it).
        fit_window_bins: widest bump-hunt window in fit bins.
        fit_min_events: events a dataset needs in a cell's fit range for the cell to be fitted.
        fit_exclude_p: refit without the best window when its local p is below this (0: never).
        fit_max_chi2_ndf: how well the function must describe the simulated background (χ²/ndf
            with the data's Poisson variance); the fit range starts where it does, and a cell
            where it nowhere does is not fitted.
        sqrt_s: centre-of-mass energy (GeV) of the dijet function.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    objects: tuple[str, ...] = OBJECT_TYPES
    classes: tuple[ClassKind, ...] = ("inclusive", "exclusive")
    min_events: int = Field(100, ge=1)
    pseudo_experiments: int = Field(200, ge=0, le=100_000)
    bin_width_sigma: float = Field(0.5, gt=0.0, le=5.0)
    window_bins: int = Field(5, ge=1, le=51)
    max_window_bins: int = Field(21, ge=1, le=201)
    systematic: float = Field(0.1, ge=0.0, lt=1.0)
    min_expected: float = Field(0.5, gt=0.0)
    width: float = Field(0.0, ge=0.0, le=0.15)
    reference_mass: float = Field(1000.0, gt=0.0)
    fit_function: FitFunction | None = "dijet"
    fit_bin_sigma: float = Field(1.0, gt=0.0, le=5.0)
    fit_bin_count: float = Field(2.0, gt=0.0)
    fit_window_bins: int = Field(3, ge=1, le=20)
    fit_min_events: int = Field(50, ge=1)
    fit_exclude_p: float = Field(0.01, ge=0.0, le=1.0)
    fit_max_chi2_ndf: float = Field(1.0, gt=0.0)
    sqrt_s: float = Field(13_000.0, gt=0.0)

    @field_validator("objects")
    @classmethod
    def _known_objects(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [o for o in value if o not in OBJECT_TYPES]
        if unknown or not value:
            raise ValueError(
                f"{', '.join(map(repr, unknown)) or 'empty list'} not allowed; "
                f"allowed: {', '.join(OBJECT_TYPES)}"
            )
        if len(set(value)) != len(value):
            raise ValueError("duplicate entries; list each object type once")
        return value

    @field_validator("classes")
    @classmethod
    def _some_classes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value or len(set(value)) != len(value):
            raise ValueError("give 'inclusive' and/or 'exclusive', each once")
        return value

    @field_validator("window_bins")
    @classmethod
    def _odd(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError(f"{value} is even; allowed: an odd number of bins")
        return value


@dataclass(frozen=True)
class LandscapeCell:
    """One (pair × event class) cell: its windows, local p-values and limits, of both searches.

    Per-window tuples of the scan all have one entry per tested mass ``(W,)``; those of the
    bump hunt (``fit_*``) one per fit window ``(V,)``.

    Attributes:
        a, b: the object types (``a`` not after ``b`` in table order).
        event_class: ``inclusive`` or an exclusive class name.
        mc_events: simulated background events in the cell.
        expected, observed: background and observed yields in the cell.
        masses: tested masses (GeV); ``low``, ``high``: window edges.
        background, uncertainty, observed_counts: window counts.
        signal_fraction: fraction of the generic Gaussian signal inside each window.
        p_local: local discovery p-values.
        limit_observed_fb, limit_expected_fb: 95 % CL upper limits on the visible
            cross section of the generic signal (fb; expected: median).
        best_mass, best_p_local: the most significant window (None / 1 when none tested).
        p_tilde: the cell's own look-elsewhere-corrected p-value (None without pseudo runs).
        reference_limit_fb: expected limit at the reference mass (None: no sensitivity there).
        fit_status: ``fitted``; ``few_events`` (fewer than ``fit_min_events`` observed in the
            fit range); ``few_bins`` (too short a spectrum to fit); ``mismodelled`` (the
            function cannot describe the simulated background at the data's precision
            anywhere, :mod:`searches.landscape_fit`); ``off`` (no bump hunt).
        fit_edges, fit_counts, fit_background: fit bins ``(V_b + 1,)``, observed and fitted
            events per bin ``(V_b,)`` (empty unless fitted).
        fit_low, fit_high, fit_observed_counts, fit_background_window, fit_uncertainty,
            fit_p_local: the bump hunt's windows (edges, observed, fitted background and its
            fit uncertainty, local p; deficits have p = 1).
        fit_best_mass, fit_best_p_local, fit_p_tilde: as for the scan, of the bump hunt.
        fit_chi2, fit_ndf: Pearson χ² of the final fit and its degrees of freedom.
    """

    a: str
    b: str
    event_class: str
    mc_events: int
    expected: float
    observed: float
    masses: tuple[float, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    background: tuple[float, ...]
    uncertainty: tuple[float, ...]
    observed_counts: tuple[float, ...]
    signal_fraction: tuple[float, ...]
    p_local: tuple[float, ...]
    limit_observed_fb: tuple[float, ...]
    limit_expected_fb: tuple[float, ...]
    best_mass: float | None
    best_p_local: float
    p_tilde: float | None
    reference_limit_fb: float | None
    fit_status: str = "off"
    fit_edges: tuple[float, ...] = ()
    fit_counts: tuple[float, ...] = ()
    fit_background: tuple[float, ...] = ()
    fit_low: tuple[float, ...] = ()
    fit_high: tuple[float, ...] = ()
    fit_observed_counts: tuple[float, ...] = ()
    fit_background_window: tuple[float, ...] = ()
    fit_uncertainty: tuple[float, ...] = ()
    fit_p_local: tuple[float, ...] = ()
    fit_best_mass: float | None = None
    fit_best_p_local: float = 1.0
    fit_p_tilde: float | None = None
    fit_chi2: float | None = None
    fit_ndf: int | None = None

    @property
    def pair(self) -> str:
        return f"{self.a}_{self.b}"

    @property
    def name(self) -> str:
        return f"{self.pair}/{self.event_class}"

    @property
    def observable(self) -> str:
        return f"m_{self.pair}"

    @property
    def z_local(self) -> float:
        return float(significance(self.best_p_local))

    @property
    def fit_z_local(self) -> float:
        return float(significance(self.fit_best_p_local))

    @property
    def fitted(self) -> bool:
        return self.fit_status == "fitted"

    @property
    def sensitive(self) -> bool:
        return self.reference_limit_fb is not None

    def best_of(self, search: SearchKind) -> tuple[float, float | None]:
        """Smallest local p and its mass for one search (``scan`` or ``fit``)."""
        if search == "fit":
            return self.fit_best_p_local, self.fit_best_mass
        return self.best_p_local, self.best_mass


@dataclass(frozen=True)
class SearchSummary:
    """The most significant excess of one search over the whole landscape.

    Attributes:
        best_cell: index of its cell (None: no window tested).
        p_local_min: its local p (1 when nothing tested).
        p_global, z_global: corrected for the look-elsewhere effect over every window of every
            cell of this search alone (None without pseudo-experiments).
    """

    best_cell: int | None
    p_local_min: float
    p_global: float | None
    z_global: float | None


@dataclass(frozen=True)
class Landscape:
    """The scanned landscape, JSON-serialisable (:meth:`to_json` / :meth:`from_json`).

    Attributes:
        objects: the object types paired.
        pairs: every pair considered (``a_b``), scanned or not.
        cells: the scanned cells.
        luminosity_fb: the luminosity the limits are divided by.
        best_cell: index in ``cells`` of the most significant excess of ``best_search``
            (None: nothing tested).
        p_local_min: its local p (1 when nothing tested).
        p_global, z_global: look-elsewhere-corrected over every window of every cell of both
            searches: the global p of the smaller of the two searches' ``p̃`` (None without
            pseudo-experiments); ``z_global`` is finite even when ``p_global = 1`` (the
            largest p below one the rounds resolve stands in).
        n_pseudo: pseudo-experiments used.
        options: the :class:`LandscapeOptions` as data.
        best_search: which search (``scan`` or ``fit``) has the smaller ``p̃`` (without
            pseudo-experiments: the smaller local p).
        scan, fit: each search alone (the scan's is what schema 1 called the landscape's).
    """

    objects: tuple[str, ...]
    pairs: tuple[str, ...]
    cells: tuple[LandscapeCell, ...]
    luminosity_fb: float
    best_cell: int | None
    p_local_min: float
    p_global: float | None
    z_global: float | None
    n_pseudo: int
    options: dict[str, Any] = field(default_factory=dict)
    best_search: SearchKind | None = None
    scan: SearchSummary | None = None
    fit: SearchSummary | None = None
    schema_version: str = LANDSCAPE_SCHEMA_VERSION

    @property
    def n_cells(self) -> int:
        return len(self.cells)

    @property
    def n_sensitive(self) -> int:
        return sum(cell.sensitive for cell in self.cells)

    @property
    def best(self) -> LandscapeCell | None:
        return None if self.best_cell is None else self.cells[self.best_cell]

    @property
    def z_local(self) -> float:
        return float(significance(self.p_local_min))

    def table(self) -> dict[str, Any]:
        """The object × object table: per pair its cells, best expected limit at the
        reference mass and most significant local excess of each search (``best_*``: the scan,
        ``fit_best_*``: the bump hunt); ``None`` where no cell was scanned.

        Returns:
            ``{"objects": [...], "cells": [[entry | None] * n] * n}`` (symmetric).
        """
        index = {o: i for i, o in enumerate(self.objects)}
        grid: list[list[dict[str, Any] | None]] = [[None] * len(self.objects) for _ in index]
        for cell in self.cells:
            i, j = index[cell.a], index[cell.b]
            entry = grid[i][j] or {
                "pair": cell.pair,
                "n_cells": 0,
                "n_sensitive": 0,
                "best_reference_limit_fb": None,
                "best_limit_class": None,
                "best_z_local": None,
                "best_class": None,
                "best_mass": None,
                "n_fitted": 0,
                "fit_best_z_local": None,
                "fit_best_class": None,
                "fit_best_mass": None,
            }
            entry["n_cells"] += 1
            limit = cell.reference_limit_fb
            if limit is not None:
                entry["n_sensitive"] += 1
                if (
                    entry["best_reference_limit_fb"] is None
                    or limit < entry["best_reference_limit_fb"]
                ):
                    entry["best_reference_limit_fb"] = limit
                    entry["best_limit_class"] = cell.event_class
            if cell.best_mass is not None and (
                entry["best_z_local"] is None or cell.z_local > entry["best_z_local"]
            ):
                entry["best_z_local"] = cell.z_local
                entry["best_class"] = cell.event_class
                entry["best_mass"] = cell.best_mass
            entry["n_fitted"] += cell.fitted
            if cell.fit_best_mass is not None and (
                entry["fit_best_z_local"] is None or cell.fit_z_local > entry["fit_best_z_local"]
            ):
                entry["fit_best_z_local"] = cell.fit_z_local
                entry["fit_best_class"] = cell.event_class
                entry["fit_best_mass"] = cell.fit_best_mass
            grid[i][j] = grid[j][i] = entry
        return {"objects": list(self.objects), "cells": grid}

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["cells"] = [asdict(cell) for cell in self.cells]
        return json.loads(json.dumps(data))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), allow_nan=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Landscape:
        """Read schema 2, or schema 1 (scan only: its numbers become the scan's summary, the
        cells are marked ``fit_status = "off"``)."""
        version = data.get("schema_version")
        if version not in ("1", LANDSCAPE_SCHEMA_VERSION):
            raise ValueError(
                f"landscape: schema_version {version!r} not supported; "
                f"allowed: '1', {LANDSCAPE_SCHEMA_VERSION!r}"
            )
        cells = tuple(
            LandscapeCell(**{k: tuple(v) if isinstance(v, list) else v for k, v in cell.items()})
            for cell in data["cells"]
        )
        rest = {k: v for k, v in data.items() if k not in ("cells", "scan", "fit")}
        rest["objects"], rest["pairs"] = tuple(rest["objects"]), tuple(rest["pairs"])
        if version == "1":
            scan = {k: data[k] for k in ("best_cell", "p_local_min", "p_global", "z_global")}
            fit = {"best_cell": None, "p_local_min": 1.0, "p_global": None, "z_global": None}
            best = None if data["best_cell"] is None else "scan"
            rest.update(schema_version=LANDSCAPE_SCHEMA_VERSION, best_search=best)
        else:
            scan, fit = data["scan"], data["fit"]
        return cls(
            cells=cells,
            scan=None if scan is None else SearchSummary(**scan),
            fit=None if fit is None else SearchSummary(**fit),
            **rest,
        )

    @classmethod
    def from_json(cls, text: str) -> Landscape:
        return cls.from_dict(json.loads(text))


@dataclass(frozen=True)
class _Layout:
    """Background side of one cell: bins and tested windows (local bin indices), and the
    bump hunt's bins and windows (None: the cell is not fitted)."""

    a: str
    b: str
    event_class: str
    mc_events: int
    expected: float
    edges: np.ndarray
    first: np.ndarray
    stop: np.ndarray
    masses: np.ndarray
    background: np.ndarray
    uncertainty: np.ndarray
    fraction: np.ndarray
    fit: FitLayout | None = None
    fit_status: FitStatus = "off"


@dataclass(frozen=True)
class PseudoMinima:
    """Smallest local p of every background-only pseudo-experiment, per cell and search.

    Attributes:
        scan, fit: per cell, ``(R, n_cells)`` (1 where a cell has no tested window).
    """

    scan: np.ndarray
    fit: np.ndarray

    def of(self, search: SearchKind) -> np.ndarray:
        """Over every cell of one search, ``(R,)``."""
        per_cell = self.scan if search == "scan" else self.fit
        return per_cell.min(axis=1, initial=1.0)


def _edges(a: str, b: str, low: float, high: float, width_sigma: float) -> np.ndarray:
    """Resolution-scaled edges from ``low`` to the first edge above ``high``."""
    edges = [low]
    while edges[-1] <= high:
        x = edges[-1]
        step = width_sigma * float(pair_resolution(a, b, x))
        edges.append(x + width_sigma * float(pair_resolution(a, b, x + step / 2)))
    return np.asarray(edges)


def _windows(
    a: str,
    b: str,
    edges: np.ndarray,
    sumw: np.ndarray,
    sumw2: np.ndarray,
    options: LandscapeOptions,
) -> tuple[np.ndarray, ...]:
    """Windows of ``window_bins`` bins centred on every bin that has room; only tested ones.

    Where the simulated background is sparse (tails) a window holding less than
    ``min_expected`` grows by one bin on each side (clipped at the cell's ends) until it holds
    enough, up to ``max_window_bins``; windows still short are not tested. Identical windows
    (clipped at an end) are tested once.

    Returns:
        ``first, stop, masses, background, uncertainty, fraction``, each ``(W,)``.
    """
    half = options.window_bins // 2
    n_bins = len(sumw)
    first = np.arange(0, max(n_bins - options.window_bins + 1, 0))
    stop = first + options.window_bins
    centre = first + half
    cumulative = np.concatenate([[0.0], np.cumsum(sumw)])
    cumulative2 = np.concatenate([[0.0], np.cumsum(sumw2)])
    for _ in range(max(options.max_window_bins - options.window_bins, 0) // 2):
        short = (cumulative[stop] - cumulative[first] < options.min_expected) & (
            (first > 0) | (stop < n_bins)
        )
        if not short.any():
            break
        first = np.where(short, np.maximum(first - 1, 0), first)
        stop = np.where(short, np.minimum(stop + 1, n_bins), stop)
    _, unique = np.unique(np.stack([first, stop]), axis=1, return_index=True)
    unique = np.sort(unique)
    first, stop, centre = first[unique], stop[unique], centre[unique]
    masses = 0.5 * (edges[centre] + edges[centre + 1])
    background = cumulative[stop] - cumulative[first]
    mc_variance = np.maximum(cumulative2[stop] - cumulative2[first], 0.0)
    uncertainty = np.sqrt(mc_variance + (options.systematic * background) ** 2)
    width = np.hypot(pair_resolution(a, b, masses), options.width * masses)
    fraction = ndtr((edges[stop] - masses) / width) - ndtr((edges[first] - masses) / width)
    keep = (background >= options.min_expected) & (uncertainty > 0) & (fraction > 0)
    return (
        first[keep],
        stop[keep],
        masses[keep],
        background[keep],
        uncertainty[keep],
        fraction[keep],
    )


def _cell_masks(
    values: Mapping[str, np.ndarray],
    codes: np.ndarray,
    names: Sequence[str],
    pair: str,
    event_class: str,
) -> np.ndarray:
    finite = np.isfinite(values[pair])
    if event_class == INCLUSIVE:
        return finite
    if event_class not in names:
        return np.zeros_like(finite)
    return finite & (codes == list(names).index(event_class))


def _local_p(n: np.ndarray, b: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Asymptotic ``q0`` discovery p-value (``n < b``: 0.5), broadcast over leading axes."""
    scale = 1.0 + np.sqrt(b + sigma**2)
    return counting.discovery_p0(n, b, sigma, scale, mu_max=1e12).p0


@dataclass(frozen=True)
class LandscapeModel:
    """Everything of the landscape that depends on the background only.

    Attributes:
        options, config, luminosity_fb: what it was prepared with.
        layouts: one per scanned cell.
        pairs: every pair considered.
        matrix: background event × global bin incidence, sparse ``(n_events, n_bins)``.
        weights: background weights ``(n_events,)``.
    """

    options: LandscapeOptions
    config: SignatureConfig
    luminosity_fb: float
    layouts: tuple[_Layout, ...]
    pairs: tuple[str, ...]
    matrix: sparse.csr_matrix
    weights: np.ndarray
    bin_offsets: np.ndarray

    def _window_arrays(self) -> tuple[np.ndarray, ...]:
        """Global ``first, stop`` (bin indices), ``b``, ``σ`` and owning cell of every window."""
        first, stop, b, sigma, owner = [], [], [], [], []
        for index, (layout, offset) in enumerate(zip(self.layouts, self.bin_offsets, strict=True)):
            first.append(layout.first + offset)
            stop.append(layout.stop + offset)
            b.append(layout.background)
            sigma.append(layout.uncertainty)
            owner.append(np.full(len(layout.first), index))
        if not first:
            empty = np.zeros(0)
            return empty.astype(int), empty.astype(int), empty, empty, empty.astype(int)
        return tuple(np.concatenate(x) for x in (first, stop, b, sigma, owner))

    def pseudo_minima(self, *, rounds: int, seed: int) -> PseudoMinima:
        """Smallest local p per background-only pseudo-experiment, per cell, of the scan and
        of the bump hunt (every pseudo-experiment refitted, batched per cell)."""
        first, stop, b, sigma, owner = self._window_arrays()
        n_cells = len(self.layouts)
        scan_min, fit_min = np.ones((rounds, n_cells)), np.ones((rounds, n_cells))
        fitted = [i for i, layout in enumerate(self.layouts) if layout.fit is not None]
        if rounds == 0 or (len(first) == 0 and not fitted):
            return PseudoMinima(scan=scan_min, fit=fit_min)
        rows = np.flatnonzero(np.diff(self.matrix.indptr) > 0)
        transposed = self.matrix[rows].T.tocsr()
        mean = np.maximum(self.weights[rows], 0.0)
        rng = np.random.default_rng(seed)
        chunk = max(1, _CHUNK_ELEMENTS // max(len(rows), len(first), 1))
        starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
        with progress_bar() as progress:
            task = progress.add_task("landscape pseudo-experiments", total=rounds)
            for begin in range(0, rounds, chunk):
                size = min(chunk, rounds - begin)
                counts = rng.poisson(mean, size=(size, len(rows))).astype(np.float64)
                bins = np.asarray(transposed @ counts.T).T
                cumulative = np.concatenate([np.zeros((size, 1)), np.cumsum(bins, axis=1)], axis=1)
                if len(first):
                    n = np.rint(cumulative[:, stop] - cumulative[:, first])
                    p = _local_p(n, b, sigma)
                    scan_min[begin : begin + size, owner[starts]] = np.minimum.reduceat(
                        p, starts, axis=1
                    )
                for i in fitted:
                    fit_min[begin : begin + size, i] = self._fit(i, cumulative).p.min(axis=1)
                progress.advance(task, size)
        return PseudoMinima(scan=scan_min, fit=fit_min)

    def _fit(self, index: int, cumulative: np.ndarray) -> FitScan:
        """Bump hunt of cell ``index`` from cumulative counts over the global bins ``(N, G+1)``."""
        layout, offset = self.layouts[index], int(self.bin_offsets[index])
        assert layout.fit is not None
        n_fine = len(layout.edges) - 1
        return fit_scan(
            cumulative[:, offset : offset + n_fine + 1],
            layout.fit,
            exclude_p=self.options.fit_exclude_p,
            min_events=self.options.fit_min_events,
        )

    def scan(self, observed: ak.Array, *, seed: int, limits: bool = True) -> Landscape:
        """Scan ``observed`` events against the prepared background, and bump-hunt every
        fitted cell.

        Args:
            observed: events of :mod:`searches.events` (weights: counts, normally 1 or
                Poisson integers).
            seed: seed of the pseudo-experiments.
            limits: compute the upper limits (two thirds of the time of a scan); without,
                the limit tuples are empty and no cell has sensitivity — for calibration
                studies that need the p-values only.
        """
        values = pair_masses(observed, self.config, self.options.objects)
        classes = classify(observed, self.config) if len(observed) else None
        names = () if classes is None else classes.names
        codes = np.zeros(len(observed), dtype=np.int32) if classes is None else classes.codes
        weights = ak.to_numpy(observed["weight"]).astype(np.float64)
        rounds = self.options.pseudo_experiments
        pseudo = self.pseudo_minima(rounds=rounds, seed=seed)
        counts, totals, fits = [], [], []
        for layout in self.layouts:
            pair = f"{layout.a}_{layout.b}"
            mask = _cell_masks(values, codes, names, pair, layout.event_class)
            content, _ = np.histogram(values[pair][mask], bins=layout.edges, weights=weights[mask])
            cumulative = np.concatenate([[0.0], np.cumsum(content)])
            counts.append(cumulative[layout.stop] - cumulative[layout.first])
            totals.append(float(weights[mask].sum()))
            fits.append(
                None
                if layout.fit is None
                else fit_scan(
                    cumulative[None, :],
                    layout.fit,
                    exclude_p=self.options.fit_exclude_p,
                    min_events=self.options.fit_min_events,
                )
            )
        statistics = self._window_statistics(
            np.concatenate(counts) if counts else np.zeros(0), limits=limits
        )
        cells = [
            self._cell(
                layout,
                counts[i],
                totals[i],
                (pseudo.scan[:, i], pseudo.fit[:, i]),
                *statistics[i],
                fits[i],
            )
            for i, layout in enumerate(self.layouts)
        ]
        kinds: tuple[SearchKind, ...] = ("scan", "fit")
        summaries = {
            search: _summary(cells, search, pseudo.of(search) if rounds else None)
            for search in kinds
        }
        best_search = min(kinds, key=lambda k: summaries[k].p_local_min)
        p_global = z_global = None
        if rounds:
            index, p_global = lee.joint_p_global(
                [summaries[k].p_local_min for k in kinds], [pseudo.of(k) for k in kinds]
            )
            best_search = kinds[index]
            if summaries[best_search].best_cell is None:
                best_search = min(kinds, key=lambda k: summaries[k].best_cell is None)
            z_global = _z_global(p_global, rounds)
        best = summaries[best_search].best_cell
        p_min = summaries[best_search].p_local_min
        if best is None:
            p_global = z_global = None
        return Landscape(
            objects=tuple(o for o in OBJECT_TYPES if o in self.options.objects),
            pairs=self.pairs,
            cells=tuple(cells),
            luminosity_fb=self.luminosity_fb,
            best_cell=best,
            p_local_min=p_min,
            p_global=p_global,
            z_global=z_global,
            n_pseudo=rounds,
            options=self.options.model_dump(mode="json"),
            best_search=None if best is None else best_search,
            scan=summaries["scan"],
            fit=summaries["fit"],
        )

    def _window_statistics(
        self, n: np.ndarray, *, limits: bool
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Local p, observed and expected limits (fb) of every window, split by cell.

        All windows of the landscape go through one vectorised call (``n`` has shape ``(W,)``,
        the windows of every cell in order).
        """
        _, _, b, sigma, owner = self._window_arrays()
        fraction = np.concatenate([layout.fraction for layout in self.layouts] or [np.zeros(0)])
        if len(n) == 0:
            return [(np.zeros(0),) * 3 for _ in self.layouts]
        p = _local_p(n, b, sigma)
        bounds = np.searchsorted(owner, np.arange(len(self.layouts) + 1))
        if not limits:
            return [(p[lo:hi], np.zeros(0), np.zeros(0)) for lo, hi in itertools.pairwise(bounds)]
        scale = 1.0 + np.sqrt(b + sigma**2)
        upper = counting.upper_limit(n, b, sigma, scale, mu_max=LIMIT_MU_MAX, iterations=50)
        per_fb = scale / (fraction * self.luminosity_fb)
        observed_fb, expected_fb = upper.observed * per_fb, upper.expected[2] * per_fb
        return [
            (p[lo:hi], observed_fb[lo:hi], expected_fb[lo:hi])
            for lo, hi in itertools.pairwise(bounds)
        ]

    def _cell(
        self,
        layout: _Layout,
        n: np.ndarray,
        observed: float,
        pseudo: tuple[np.ndarray, np.ndarray],
        p: np.ndarray,
        observed_fb: np.ndarray,
        expected_fb: np.ndarray,
        fit: FitScan | None,
    ) -> LandscapeCell:
        b, sigma, fraction = layout.background, layout.uncertainty, layout.fraction
        best_mass, best_p = None, 1.0
        if len(n):
            best = int(np.argmin(p))
            best_mass, best_p = float(layout.masses[best]), float(p[best])
        reference = None
        m_ref = self.options.reference_mass
        low, high = layout.edges[layout.first], layout.edges[layout.stop]
        inside = np.flatnonzero((low <= m_ref) & (m_ref < high))
        if inside.size and len(expected_fb):
            nearest = inside[np.argmin(np.abs(layout.masses[inside] - m_ref))]
            reference = float(expected_fb[nearest])
        p_tilde = None
        if len(pseudo[0]) and best_mass is not None:
            p_tilde = lee.p_tilde(best_p, pseudo[0])
        return LandscapeCell(
            a=layout.a,
            b=layout.b,
            event_class=layout.event_class,
            mc_events=layout.mc_events,
            expected=layout.expected,
            observed=observed,
            masses=_floats(layout.masses),
            low=_floats(low),
            high=_floats(high),
            background=_floats(b),
            uncertainty=_floats(sigma),
            observed_counts=_floats(n),
            signal_fraction=_floats(fraction),
            p_local=_floats(p),
            limit_observed_fb=_floats(observed_fb),
            limit_expected_fb=_floats(expected_fb),
            best_mass=best_mass,
            best_p_local=best_p,
            p_tilde=p_tilde,
            reference_limit_fb=reference,
            **self._fit_fields(layout, fit, pseudo[1]),
        )

    def _fit_fields(
        self, layout: _Layout, fit: FitScan | None, pseudo: np.ndarray
    ) -> dict[str, Any]:
        """The ``fit_*`` fields of a cell from its observed bump hunt (one dataset)."""
        if self.options.fit_function is None:
            return {"fit_status": "off"}
        if fit is None or layout.fit is None:
            return {"fit_status": layout.fit_status}
        if not fit.tested[0]:
            return {"fit_status": "few_events"}
        windows = layout.fit
        p = fit.p[0]
        best = int(np.argmin(p))
        best_mass = None
        if p[best] < 1.0:
            best_mass = float(0.5 * (windows.low[best] + windows.high[best]))
        mu, counts = fit.fit.mu[0], fit.counts[0]
        return {
            "fit_status": "fitted",
            "fit_edges": _floats(windows.edges),
            "fit_counts": _floats(counts),
            "fit_background": _floats(mu),
            "fit_low": _floats(windows.low),
            "fit_high": _floats(windows.high),
            "fit_observed_counts": _floats(fit.observed[0]),
            "fit_background_window": _floats(fit.expected[0]),
            "fit_uncertainty": _floats(fit.sigma[0]),
            "fit_p_local": _floats(p),
            "fit_best_mass": best_mass,
            "fit_best_p_local": float(p[best]),
            "fit_p_tilde": None
            if best_mass is None or not len(pseudo)
            else lee.p_tilde(float(p[best]), pseudo),
            "fit_chi2": float(np.sum((counts - mu) ** 2 / np.maximum(mu, 1e-12))),
            "fit_ndf": int(len(counts) - windows.design.shape[1]),
        }


def _summary(
    cells: Sequence[LandscapeCell], search: SearchKind, pseudo: np.ndarray | None
) -> SearchSummary:
    """The most significant excess of one search, corrected over all its windows."""
    p_values = [cell.best_of(search)[0] for cell in cells]
    best = int(np.argmin(p_values)) if cells and min(p_values) < 1.0 else None
    p_min = 1.0 if best is None else float(p_values[best])
    p_global = z_global = None
    if pseudo is not None and best is not None:
        p_global = lee.p_tilde(p_min, pseudo)
        z_global = _z_global(p_global, len(pseudo))
    return SearchSummary(best_cell=best, p_local_min=p_min, p_global=p_global, z_global=z_global)


def _z_global(p_global: float, rounds: int) -> float:
    return float(significance(min(p_global, rounds / (rounds + 1))))


def _floats(values: np.ndarray) -> tuple[float, ...]:
    return tuple(float(v) for v in np.asarray(values, dtype=np.float64))


def prepare(
    background: ak.Array,
    *,
    config: SignatureConfig,
    options: LandscapeOptions,
    luminosity_fb: float,
) -> LandscapeModel:
    """Cells, bins and windows of the landscape from the simulated background.

    Args:
        background: weighted simulated background (events of :mod:`searches.events`).
        config: the event-class definition (object cuts).
        options: what to scan.
        luminosity_fb: divides the limits on signal events into cross sections.

    Raises:
        ValueError: non-positive luminosity or an empty background.
    """
    if not luminosity_fb > 0:
        raise ValueError(f"landscape: luminosity_fb = {luminosity_fb}; allowed: > 0")
    if len(background) == 0:
        raise ValueError("landscape: the background has no events; a simulated one is needed")
    values = pair_masses(background, config, options.objects)
    classes = classify(background, config)
    weights = ak.to_numpy(background["weight"]).astype(np.float64)
    layouts: list[_Layout] = []
    event_rows: list[np.ndarray] = []
    bin_columns: list[np.ndarray] = []
    offsets: list[int] = []
    total_bins = 0
    for a, b in pair_names(options.objects):
        pair = f"{a}_{b}"
        finite = np.isfinite(values[pair])
        candidates: list[str] = []
        if INCLUSIVE in options.classes:
            candidates.append(INCLUSIVE)
        if "exclusive" in options.classes:
            populated = np.bincount(classes.codes[finite], minlength=len(classes.names))
            candidates += [classes.names[i] for i in np.flatnonzero(populated)]
        for event_class in candidates:
            mask = _cell_masks(values, classes.codes, classes.names, pair, event_class)
            rows = np.flatnonzero(mask)
            if len(rows) < options.min_events:
                continue
            x = values[pair][rows]
            edges = _edges(a, b, float(x.min()), float(x.max()), options.bin_width_sigma)
            sumw, _ = np.histogram(x, bins=edges, weights=weights[rows])
            sumw2, _ = np.histogram(x, bins=edges, weights=weights[rows] ** 2)
            first, stop, masses, bkg, sigma, fraction = _windows(a, b, edges, sumw, sumw2, options)
            fit, fit_status = None, "off"
            if options.fit_function is not None:
                fit, fit_status = fit_layout(
                    edges,
                    sumw,
                    function=options.fit_function,
                    bin_width_sigma=options.bin_width_sigma,
                    fit_bin_sigma=options.fit_bin_sigma,
                    fit_bin_count=options.fit_bin_count,
                    window_bins=options.fit_window_bins,
                    min_expected=options.min_expected,
                    sqrt_s=options.sqrt_s,
                    max_chi2_ndf=options.fit_max_chi2_ndf,
                )
            layouts.append(
                _Layout(
                    a=a,
                    b=b,
                    event_class=event_class,
                    mc_events=len(rows),
                    expected=float(weights[rows].sum()),
                    edges=edges,
                    first=first,
                    stop=stop,
                    masses=masses,
                    background=bkg,
                    uncertainty=sigma,
                    fraction=fraction,
                    fit=fit,
                    fit_status=fit_status,
                )
            )
            event_rows.append(rows)
            bin_columns.append(np.searchsorted(edges, x, side="right") - 1 + total_bins)
            offsets.append(total_bins)
            total_bins += len(edges) - 1
    rows_all = np.concatenate(event_rows) if event_rows else np.zeros(0, dtype=int)
    columns_all = np.concatenate(bin_columns) if bin_columns else np.zeros(0, dtype=int)
    matrix = sparse.csr_matrix(
        (np.ones(len(rows_all)), (rows_all, np.minimum(columns_all, max(total_bins - 1, 0)))),
        shape=(len(background), max(total_bins, 1)),
    )
    return LandscapeModel(
        options=options,
        config=config,
        luminosity_fb=float(luminosity_fb),
        layouts=tuple(layouts),
        pairs=tuple(f"{a}_{b}" for a, b in pair_names(options.objects)),
        matrix=matrix,
        weights=weights,
        bin_offsets=np.asarray(offsets, dtype=np.int64),
    )


def scan_landscape(
    background: ak.Array,
    observed: ak.Array,
    *,
    config: SignatureConfig,
    options: LandscapeOptions,
    luminosity_fb: float,
    seed: int,
) -> Landscape:
    """The whole landscape in one call: :func:`prepare`, then :meth:`LandscapeModel.scan`."""
    model = prepare(background, config=config, options=options, luminosity_fb=luminosity_fb)
    return model.scan(observed, seed=seed)
