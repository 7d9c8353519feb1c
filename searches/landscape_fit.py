"""The smooth-function bump hunt of one landscape cell (the second search of every cell).

The simulated-background scan of :mod:`searches.landscape` trusts the simulation's shape; the
bump hunt does not: the observed pair-mass spectrum of the cell is fitted with a smooth
falling function (:mod:`searches.methods.bumphunt`: ``dijet`` or ``expo``, a convex Poisson
fit), and every window of one to ``fit_window_bins`` neighbouring fit bins gets the local
p-value of Poisson ⊗ the fit's uncertainty on the window's background
(:func:`~searches.stats.pvalues.local_pvalue`). When the best window's p is below
``fit_exclude_p`` the fit is repeated without that window's bins (a signal would otherwise
pull the fit towards itself and hide part of the excess), as bumphunt does.

Everything that defines the test statistic is fixed before looking at data, from the
simulated background of the cell, so the observed spectrum and every background-only
pseudo-experiment of the landscape go through exactly the same procedure (the simulation
only chooses bin edges; the background *shape* always comes from the fit):

* **fit bins** — the cell's resolution-scaled bins (``bin_width_sigma`` wide) grouped to at
  least ``fit_bin_sigma`` resolution, starting at the bin of highest simulated density (a
  falling function cannot follow the turn-on below it), then merged from low to high mass
  until each holds at least ``fit_bin_count`` simulated background events (a short remainder
  joins the last bin), so no bin of a fit is expected empty. The fit range ends before the
  first bin wider than :data:`FIT_MAX_BIN_SIGMA` resolutions: the expected count of a bin is
  ``f(centre) × width``, which misses the integral of a steeply falling ``f`` over a wide bin
  (the sparse tail beyond is left to the scan);
* **windows** — one to ``fit_window_bins`` neighbouring fit bins holding at least
  ``fit_min_expected`` simulated events;
* **fit range start** — the function must describe the *simulated* background to within the
  statistical precision of the data: fitted to the simulated yields, its Pearson χ² per degree
  of freedom with the data's Poisson variance (the simulated yield of each bin) must not
  exceed ``max_chi2_ndf``. The range starts at the lowest fit bin where that holds, so a
  Standard-Model peak (the Z in e e, the top in j b) stays below it. A simulation too coarse
  for the luminosity (each simulated event standing for many data events) fails this
  everywhere: a smooth function cannot follow the simulated spectrum's own fluctuations at
  the data's precision, every background-only pseudo-experiment — resampled from that
  spectrum — would show "significant" bumps, and the bump hunt would have no power. Such a
  cell is not fitted (``mismodelled``);
* a cell is **fitted** when it has at least :data:`FIT_MIN_BINS` fit bins (four parameters
  and four degrees of freedom) from that start, and, per dataset, when at least
  ``fit_min_events`` events fall in the fit range. A dataset below that (the observed one or
  a pseudo-experiment) gets ``p = 1`` in every window of the cell — the same rule for both,
  so ``p̃`` stays calibrated.

Only excesses count (deficits get ``p = 1``): the landscape searches for resonances.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from searches.methods.bumphunt import FitResult, design_matrix, fit_and_scan, fit_spectrum
from searches.stats import regions

FitFunction = Literal["dijet", "expo"]
FIT_MIN_BINS = 8
"""Fit bins a cell needs to be fitted: four parameters and four degrees of freedom."""
FIT_MAX_BIN_SIGMA = 4.0
"""Widest fit bin, in resolution units (the fit range stops before a wider one)."""
FitStatus = Literal["fitted", "few_events", "few_bins", "mismodelled", "off"]


@dataclass(frozen=True)
class FitLayout:
    """The fit side of one cell, fixed by the simulated background.

    Attributes:
        groups: indices into the cell's fine edges of the fit-bin edges, ``(B + 1,)``.
        edges: fit-bin edges (GeV), ``(B + 1,)``.
        design: basis of ``ln f`` at the bin centres, ``(B, P)``.
        widths: fit-bin widths (GeV), ``(B,)``.
        windows: the tested windows over the ``B`` fit bins.
        expected: simulated background per fit bin, ``(B,)`` (defines bins and windows only).
    """

    groups: np.ndarray
    edges: np.ndarray
    design: np.ndarray
    widths: np.ndarray
    windows: regions.RegionSet
    expected: np.ndarray

    @property
    def low(self) -> np.ndarray:
        return self.edges[self.windows.first]

    @property
    def high(self) -> np.ndarray:
        return self.edges[self.windows.stop]


@dataclass(frozen=True)
class FitScan:
    """The bump hunt of one cell on ``N`` datasets at once.

    Attributes:
        counts: events per fit bin, ``(N, B)``.
        fit: the final fit (after the refit without the best window, where done).
        observed, expected, sigma, p: per window, ``(N, W)``; ``p = 1`` for deficits and for
            datasets with fewer than ``min_events`` events in the fit range.
        tested: datasets with enough events, ``(N,)``.
    """

    counts: np.ndarray
    fit: FitResult
    observed: np.ndarray
    expected: np.ndarray
    sigma: np.ndarray
    p: np.ndarray
    tested: np.ndarray


def fit_layout(
    fine_edges: np.ndarray,
    sumw: np.ndarray,
    *,
    function: FitFunction,
    bin_width_sigma: float,
    fit_bin_sigma: float,
    fit_bin_count: float,
    window_bins: int,
    min_expected: float,
    sqrt_s: float,
    max_chi2_ndf: float,
) -> tuple[FitLayout | None, FitStatus]:
    """Fit bins and windows of a cell from its simulated background.

    Args:
        fine_edges: the cell's resolution-scaled edges, ``(F + 1,)``.
        sumw: simulated background per fine bin, ``(F,)``.
        function: ``dijet`` or ``expo`` (:func:`searches.methods.bumphunt.design_matrix`).
        bin_width_sigma: width of the fine bins in resolution units.
        fit_bin_sigma: least width of a fit bin in resolution units.
        fit_bin_count: least simulated background per fit bin.
        window_bins: widest window in fit bins.
        min_expected: windows with less simulated background are not tested.
        sqrt_s: centre-of-mass energy (GeV); the dijet fit stops below it.
    """
    group = max(1, round(fit_bin_sigma / bin_width_sigma))
    coarse = np.arange(0, len(sumw) + 1, group)
    if coarse[-1] != len(sumw):
        coarse = np.append(coarse[:-1], len(sumw)) if len(coarse) > 1 else coarse
    if len(coarse) < 2:
        return None, "few_bins"
    cumulative = np.concatenate([[0.0], np.cumsum(sumw)])
    content = np.diff(cumulative[coarse])
    density = content / np.diff(fine_edges[coarse])
    start = int(np.argmax(density))
    keep = [coarse[start]]
    accumulated = 0.0
    for index in range(start, len(content)):
        accumulated += content[index]
        if accumulated >= fit_bin_count:
            keep.append(coarse[index + 1])
            accumulated = 0.0
    if keep[-1] != coarse[-1]:
        if len(keep) > 1:
            keep[-1] = coarse[-1]
        else:
            keep.append(coarse[-1])
    groups = np.asarray(keep, dtype=np.int64)
    wide = np.flatnonzero(np.diff(groups) * bin_width_sigma > FIT_MAX_BIN_SIGMA)
    if wide.size:
        groups = groups[: wide[0] + 1]
    if function == "dijet":
        groups = groups[fine_edges[groups] < sqrt_s]
    if len(groups) < FIT_MIN_BINS + 1:
        return None, "few_bins"
    start = _described_from(
        fine_edges[groups],
        np.diff(cumulative[groups]),
        function=function,
        sqrt_s=sqrt_s,
        max_chi2_ndf=max_chi2_ndf,
    )
    if start is None:
        return None, "mismodelled"
    groups = groups[start:]
    edges = fine_edges[groups]
    expected = np.diff(cumulative[groups])
    centres = 0.5 * (edges[1:] + edges[:-1])
    design = design_matrix(function, centres, sqrt_s=sqrt_s, low=edges[0], high=edges[-1])
    windows = regions.enumerate_regions(
        expected,
        np.zeros(len(expected)),
        systematic=0.0,
        min_bins=1,
        max_bins=window_bins,
        min_expected=min_expected,
    )
    if len(windows) == 0:
        return None, "few_bins"
    layout = FitLayout(
        groups=groups,
        edges=edges,
        design=design,
        widths=np.diff(edges),
        windows=windows,
        expected=expected,
    )
    return layout, "fitted"


def simulation_chi2_ndf(
    edges: np.ndarray, expected: np.ndarray, *, function: FitFunction, sqrt_s: float
) -> np.ndarray:
    """χ²/ndf of the function fitted to the simulated yields from each possible first bin.

    Entry ``s`` fits bins ``s, s+1, …`` (at least :data:`FIT_MIN_BINS`); the variance of a bin
    is its simulated yield, the data's Poisson variance at the campaign luminosity, so the
    number says how far the function misses the simulation in units of the data's noise.
    Shape ``(B − FIT_MIN_BINS + 1,)`` for ``B`` bins (empty when there are fewer).
    """
    n_bins = len(expected)
    starts = np.arange(max(n_bins - FIT_MIN_BINS + 1, 0))
    if not len(starts):
        return np.zeros(0)
    centres = 0.5 * (edges[1:] + edges[:-1])
    design = design_matrix(function, centres, sqrt_s=sqrt_s, low=edges[0], high=edges[-1])
    use = np.arange(n_bins)[None, :] >= starts[:, None]
    yields = np.broadcast_to(np.maximum(expected, 0.0), use.shape)
    fit = fit_spectrum(yields, design, np.diff(edges), mask=use)
    mu = np.where(use, fit.mu, yields)
    chi2 = np.sum((yields - mu) ** 2 / np.maximum(mu, 1e-12), axis=1)
    return chi2 / (n_bins - starts - design.shape[1])


def _described_from(
    edges: np.ndarray,
    expected: np.ndarray,
    *,
    function: FitFunction,
    sqrt_s: float,
    max_chi2_ndf: float,
) -> int | None:
    """The lowest first fit bin from which the function describes the simulation (None: none)."""
    good = np.flatnonzero(
        simulation_chi2_ndf(edges, expected, function=function, sqrt_s=sqrt_s) <= max_chi2_ndf
    )
    return int(good[0]) if good.size else None


def fit_scan(
    fine_cumulative: np.ndarray,
    layout: FitLayout,
    *,
    exclude_p: float,
    min_events: float,
) -> FitScan:
    """Fit and scan one cell for ``N`` datasets at once.

    Args:
        fine_cumulative: cumulative counts over the cell's fine bins, ``(N, F + 1)`` (any
            constant offset per row; only differences are used).
        layout: the cell's :class:`FitLayout`.
        exclude_p: refit without the best window when its p is below this.
        min_events: datasets with fewer events in the fit range are not tested.
    """
    counts = np.diff(np.atleast_2d(fine_cumulative)[:, layout.groups], axis=1)
    counts = np.maximum(np.rint(counts), 0.0)
    fit, expected, sigma, p = fit_and_scan(
        counts, layout.design, layout.widths, layout.windows, exclude_p, excess_only=True
    )
    tested = counts.sum(axis=1) >= min_events
    p = np.where(tested[:, None] & np.isfinite(p), p, 1.0)
    return FitScan(
        counts=counts,
        fit=fit,
        observed=regions.region_sums(counts, layout.windows),
        expected=expected,
        sigma=sigma,
        p=p,
        tested=tested,
    )
