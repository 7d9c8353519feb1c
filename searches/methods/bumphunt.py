"""Smooth-function bump hunt: fit the observed spectrum, look for a localized excess.

No simulated background is needed (the slice's background events are not used): the observed
spectrum, binned at the detector resolution, is fitted with a smooth falling function, and every
window of ``min_window_bins`` to ``max_window_bins`` neighbouring bins (so window widths scale
with the resolution) gets a local p-value from Poisson ⊗ the fit uncertainty of the window's
background (:func:`~searches.stats.pvalues.local_pvalue`). ``p̃`` comes from pseudo-experiments
drawn from the fitted function and *refitted*, so the look-elsewhere correction includes the
fit's freedom to absorb fluctuations.

Function families, both log-linear in their parameters ``θ``, so the binned Poisson likelihood
is convex (a Poisson GLM with log link) and a batched Newton iteration fits many
pseudo-experiments at once without starting-value trouble:

* ``dijet`` — ``f(x) = p0 (1−x)^p1 / x^(p2 + p3 ln x)``, ``x = m/√s`` (the standard dijet
  function; ``ln f`` is linear in ``ln p0, p1, p2, p3``);
* ``expo`` — ``f(m) = exp(θ0 + θ1 y + θ2 y² + θ3 y³)``, ``y`` the mass scaled to ``[0, 1]``
  over the fit range (for low masses and short ranges).

The expected count of a bin is ``f(centre) × width`` (bins are one resolution wide, where the
function's curvature is small). A signal pulls a global fit towards itself and hides part of
the excess; as in the ATLAS/CMS dijet searches, when the best window's p-value is below
``exclude_window_p`` the fit is repeated without that window's bins and the windows are
re-evaluated. Pseudo-experiments go through the same procedure, so ``p̃`` stays calibrated.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import awkward as ak
import numpy as np
from pydantic import Field

from searches import observables, signatures
from searches.methods.base import ClassSlice, MethodOptions
from searches.methods.scan import channel_name, derived_seed, plain, weighted_histogram
from searches.result import Region, SearchResult, Selection
from searches.stats import lee, regions
from searches.stats.pvalues import local_pvalue
from searches.stats.workspace import build_workspace

Function = Literal["dijet", "expo"]


class BumpHuntOptions(MethodOptions):
    """Options of the bump hunt (campaign file: ``{method: bumphunt, ...}``).

    Attributes:
        function: background family, ``dijet`` or ``expo``.
        sqrt_s: centre-of-mass energy in GeV (scales ``x`` of the dijet function).
        low, high: fit range of the observable in GeV (default: the data's range).
        bin_min_count: minimum observed events per bin when merging resolution bins.
        min_window_bins, max_window_bins: window widths in bins.
        min_expected: windows with less fitted background are skipped.
        pseudo_rounds: refitted pseudo-experiments for ``p̃`` (0: none).
        exclude_window_p: when the best window's p is below this, refit without it (0: never).
    """

    function: Function = "dijet"
    sqrt_s: float = Field(13_000.0, gt=0.0)
    low: float | None = None
    high: float | None = None
    bin_min_count: float = Field(5.0, gt=0.0)
    min_window_bins: int = Field(1, ge=1)
    max_window_bins: int = Field(3, ge=1)
    min_expected: float = Field(1.0, ge=0.0)
    pseudo_rounds: int = Field(200, ge=0, le=20_000)
    exclude_window_p: float = Field(0.01, ge=0.0, le=1.0)


def design_matrix(
    function: Function, centres: np.ndarray, *, sqrt_s: float, low: float, high: float
) -> np.ndarray:
    """Basis functions of ``ln f`` at the bin centres, columns standardised; shape ``(B, 4)``.

    Standardising (zero mean, unit spread; the constant column kept) conditions the Newton
    iteration; the fitted ``θ`` are coefficients of these standardised columns.
    """
    if function == "dijet":
        x = centres / sqrt_s
        if np.any(x >= 1.0) or np.any(x <= 0.0):
            raise ValueError(f"dijet function needs 0 < m < sqrt_s = {sqrt_s} GeV in every bin")
        log_x = np.log(x)
        columns = [np.log1p(-x), -log_x, -(log_x**2)]
    elif function == "expo":
        y = (centres - low) / max(high - low, 1e-12)
        columns = [y, y**2, y**3]
    else:
        raise ValueError(f"bump-hunt 'function' must be 'dijet' or 'expo', got {function!r}")
    standardised = [(c - c.mean()) / (c.std() or 1.0) for c in columns]
    return np.column_stack([np.ones_like(centres), *standardised])


@dataclass(frozen=True)
class FitResult:
    """Batched fit: ``theta (N, P)``, ``mu (N, B)``, ``covariance (N, P, P)``, ``converged (N,)``."""

    theta: np.ndarray
    mu: np.ndarray
    covariance: np.ndarray
    converged: np.ndarray


def _nll(counts: np.ndarray, mu: np.ndarray, use: np.ndarray) -> np.ndarray:
    return np.sum(use * (mu - counts * np.log(np.maximum(mu, 1e-300))), axis=-1)


def fit_spectrum(
    counts: np.ndarray,
    design: np.ndarray,
    widths: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    iterations: int = 100,
) -> FitResult:
    """Binned Poisson maximum-likelihood fit of ``ln(μ/width) = design · θ``, batched.

    Args:
        counts: observed counts, shape ``(N, B)``.
        design: basis, shape ``(B, P)``.
        widths: bin widths, shape ``(B,)``.
        mask: bins that enter the fit, shape ``(N, B)`` or ``(B,)`` (default all).
        iterations: Newton iterations at most (step halving keeps every step downhill).
    """
    counts = np.atleast_2d(np.asarray(counts, dtype=np.float64))
    use = np.broadcast_to(
        np.ones(counts.shape[1], dtype=bool) if mask is None else mask, counts.shape
    ).astype(np.float64)
    log_width = np.log(widths)
    weights = (counts + 0.5) * use
    target = np.log(counts + 0.5) - log_width
    wd = design[None, :, :] * weights[:, :, None]
    theta = np.linalg.solve(
        np.einsum("bp,nbq->npq", design, wd), np.einsum("nbp,nb->np", wd, target)[:, :, None]
    )[:, :, 0]

    def expected(t: np.ndarray) -> np.ndarray:
        return np.exp(np.clip(t @ design.T + log_width, -700.0, 700.0))

    mu = expected(theta)
    nll = _nll(counts, mu, use)
    converged = np.zeros(len(counts), dtype=bool)
    for _ in range(iterations):
        gradient = ((mu - counts) * use) @ design
        hessian = np.einsum("bp,nb,bq->npq", design, mu * use, design)
        step = np.linalg.solve(hessian, gradient[:, :, None])[:, :, 0]
        scale = np.ones(len(counts))
        for _ in range(30):
            trial = expected(theta - scale[:, None] * step)
            worse = _nll(counts, trial, use) > nll + 1e-12
            if not np.any(worse):
                break
            scale = np.where(worse, scale / 2.0, scale)
        theta = theta - scale[:, None] * step
        mu = expected(theta)
        new_nll = _nll(counts, mu, use)
        converged = np.abs(nll - new_nll) < 1e-9 * np.maximum(1.0, np.abs(new_nll))
        nll = new_nll
        if np.all(converged):
            break
    hessian = np.einsum("bp,nb,bq->npq", design, mu * use, design)
    return FitResult(theta=theta, mu=mu, covariance=np.linalg.inv(hessian), converged=converged)


def window_uncertainty(
    fit: FitResult, design: np.ndarray, windows: regions.RegionSet
) -> tuple[np.ndarray, np.ndarray]:
    """Fitted background and its fit uncertainty per window: shapes ``(N, W)`` each."""
    cumulative = np.concatenate(
        [
            np.zeros((len(fit.mu), 1, design.shape[1])),
            np.cumsum(fit.mu[:, :, None] * design[None], axis=1),
        ],
        axis=1,
    )
    jacobian = cumulative[:, windows.stop] - cumulative[:, windows.first]
    variance = np.einsum("nwp,npq,nwq->nw", jacobian, fit.covariance, jacobian)
    expected = regions.region_sums(fit.mu, windows)
    return expected, np.sqrt(np.maximum(variance, 0.0))


def fit_and_scan(
    counts: np.ndarray,
    design: np.ndarray,
    widths: np.ndarray,
    windows: regions.RegionSet,
    exclude_below: float,
    *,
    excess_only: bool = False,
) -> tuple[FitResult, np.ndarray, np.ndarray, np.ndarray]:
    """Fit ``counts (N, B)``, p-value every window; refit without the best window if p is small.

    Args:
        counts: spectra, shape ``(N, B)`` (pseudo-experiments in one batch).
        design, widths: the fit basis ``(B, P)`` and bin widths ``(B,)``.
        windows: the windows over the ``B`` bins.
        exclude_below: refit without the best window's bins when its p is below this.
        excess_only: deficits get ``p = 1`` (a resonance search), so neither the best window
            nor the refit is driven by a deficit; default: both directions, as in
            :func:`~searches.stats.pvalues.local_pvalue`.

    Returns:
        The final fit and ``expected, sigma, pvalues`` of shape ``(N, W)``; a window whose
        fitted background is not finite (a diverged fit) gets ``p = 1``, ``expected = sigma =
        0``, so one bad pseudo-experiment cannot stop a batch.
    """
    n_w = regions.region_sums(counts, windows)

    def scan(fit: FitResult) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        expected, sigma = window_uncertainty(fit, design, windows)
        finite = np.isfinite(expected) & np.isfinite(sigma)
        expected, sigma = np.where(finite, expected, 0.0), np.where(finite, sigma, 0.0)
        use = finite & (n_w >= expected) if excess_only else finite
        pvalues = np.ones_like(expected)
        pvalues[use] = local_pvalue(n_w[use], expected[use], sigma[use])
        return expected, sigma, pvalues

    fit = fit_spectrum(counts, design, widths)
    expected, sigma, pvalues = scan(fit)
    best = np.argmin(pvalues, axis=1)
    refit = pvalues[np.arange(len(counts)), best] < exclude_below
    if np.any(refit):
        bins = np.arange(counts.shape[1])
        mask = ~(
            (bins[None, :] >= windows.first[best][:, None])
            & (bins[None, :] < windows.stop[best][:, None])
        )
        mask[~refit] = True
        fit = fit_spectrum(counts, design, widths, mask=mask)
        expected, sigma, pvalues = scan(fit)
    return fit, expected, sigma, pvalues


def hunt(
    observed: np.ndarray,
    edges: np.ndarray,
    *,
    options: BumpHuntOptions,
    seed: int,
) -> dict[str, Any]:
    """Fit, scan windows and compute ``p̃`` for one binned spectrum (``observed (B,)``).

    Returns a dict with ``fit``, ``windows``, ``pvalues`` (W,), ``index`` of the best window,
    ``minima`` of the pseudo-experiments and the goodness of fit.
    """
    centres = 0.5 * (edges[1:] + edges[:-1])
    widths = np.diff(edges)
    design = design_matrix(
        options.function, centres, sqrt_s=options.sqrt_s, low=edges[0], high=edges[-1]
    )
    if len(observed) <= design.shape[1]:
        raise ValueError(
            f"bump hunt needs more bins than fit parameters ({design.shape[1]}), "
            f"got {len(observed)} bins"
        )
    first_fit = fit_spectrum(observed[None, :], design, widths)
    windows = regions.enumerate_regions(
        first_fit.mu[0],
        np.zeros(len(observed)),
        systematic=0.0,
        min_bins=options.min_window_bins,
        max_bins=options.max_window_bins,
        min_expected=options.min_expected,
    )
    if len(windows) == 0:
        raise ValueError("bump hunt: no window passes 'min_expected'; lower it or widen bins")
    fit, expected_w, sigma_w, pvalues = fit_and_scan(
        observed[None, :], design, widths, windows, options.exclude_window_p
    )
    mu = fit.mu[0]
    minima = np.empty(0)
    pseudo_converged = None
    if options.pseudo_rounds:
        rng = np.random.default_rng(seed)
        pseudo = rng.poisson(mu, size=(options.pseudo_rounds, len(mu))).astype(np.float64)
        pseudo_fit, _, _, pseudo_p = fit_and_scan(
            pseudo, design, widths, windows, options.exclude_window_p
        )
        minima = pseudo_p.min(axis=1)
        pseudo_converged = float(np.mean(pseudo_fit.converged))
    pearson = float(np.sum((observed - mu) ** 2 / np.maximum(mu, 1e-12)))
    deviance = float(
        2.0 * np.sum(mu - observed + observed * np.log(np.maximum(observed, 1e-300) / mu))
    )
    bin_sigma = mu * np.sqrt(
        np.maximum(np.einsum("bp,pq,bq->b", design, fit.covariance[0], design), 0.0)
    )
    return {
        "fit": fit,
        "mu": mu,
        "bin_sigma": bin_sigma,
        "windows": windows,
        "expected": expected_w[0],
        "sigma": sigma_w[0],
        "counts": regions.region_sums(observed, windows),
        "pvalues": pvalues[0],
        "index": int(np.argmin(pvalues[0])),
        "minima": minima,
        "pseudo_converged": pseudo_converged,
        "chi2": pearson,
        "deviance": deviance,
        "ndf": len(observed) - design.shape[1],
    }


def bumphunt_result(
    *,
    event_class: str,
    signature_config: Mapping[str, Any],
    observable: str,
    edges: np.ndarray,
    observed: np.ndarray,
    options: BumpHuntOptions,
    seed: int,
) -> SearchResult:
    """Bump-hunt one binned spectrum and package it as a :class:`SearchResult`."""
    out = hunt(observed, edges, options=options, seed=seed)
    windows: regions.RegionSet = out["windows"]
    region, p_local, p_tilde = None, 1.0, None
    if out["index"] is not None:
        i = out["index"]
        first, stop = int(windows.first[i]), int(windows.stop[i])
        p_local = float(out["pvalues"][i])
        region = Region(
            first_bin=first,
            stop_bin=stop,
            low=float(edges[first]),
            high=float(edges[stop]),
            observed=float(out["counts"][i]),
            expected=float(out["expected"][i]),
            uncertainty=float(out["sigma"][i]),
            p_local=p_local,
        )
        if len(out["minima"]):
            p_tilde = lee.p_tilde(p_local, out["minima"])
    mu, bin_sigma = out["mu"], out["bin_sigma"]
    selection = Selection(
        event_class=event_class,
        signatures=plain(signature_config),
        observable=observable,
        edges=tuple(float(e) for e in edges),
    )
    fit: FitResult = out["fit"]
    return SearchResult(
        event_class=event_class,
        method="bumphunt",
        observable=observable,
        edges=selection.edges,
        observed=tuple(float(v) for v in observed),
        expected=tuple(float(v) for v in mu),
        uncertainty=tuple(float(v) for v in bin_sigma),
        region=region,
        p_local=p_local,
        p_tilde=p_tilde,
        workspace=build_workspace(
            observed=observed,
            expected=mu,
            sumw2=bin_sigma**2,
            syst=0.0,
            channel=channel_name(event_class, observable),
        ),
        selection=selection,
        n_pseudo=len(out["minima"]),
        pseudo_p_min=tuple(float(f"{v:.6g}") for v in np.sort(out["minima"])),
        details={
            "function": options.function,
            "sqrt_s": options.sqrt_s,
            "parameters": [float(v) for v in fit.theta[0]],
            "parameter_basis": "standardised columns of ln f (see design_matrix)",
            "converged": bool(fit.converged[0]),
            "chi2": out["chi2"],
            "deviance": out["deviance"],
            "ndf": out["ndf"],
            "chi2_ndf": out["chi2"] / out["ndf"],
            "n_windows": len(windows),
            "direction": None
            if region is None
            else ("excess" if region.observed >= region.expected else "deficit"),
            "pseudo_fits_converged": out["pseudo_converged"],
        },
    )


class BumpHuntMethod:
    """The bump hunt behind the :class:`~searches.methods.base.SearchMethod` protocol."""

    name = "bumphunt"
    options_model = BumpHuntOptions

    def run(self, data: ClassSlice, *, options: MethodOptions, seed: int) -> list[SearchResult]:
        if not isinstance(options, BumpHuntOptions):
            options = BumpHuntOptions.model_validate(options.model_dump())
        config = signatures.SignatureConfig.model_validate(dict(data.signatures))
        weights = ak.to_numpy(data.observed["weight"]).astype(np.float64)
        results = []
        for index, name in enumerate(data.observables):
            values = np.asarray(observables.compute(data.observed, name, config=config))
            keep = np.isfinite(values)
            if options.low is not None:
                keep &= values >= options.low
            if options.high is not None:
                keep &= values < options.high
            if np.count_nonzero(keep) < 2:
                continue
            edges = observables.edges_for(
                name,
                values[keep],
                np.ones(np.count_nonzero(keep)),
                min_expected=options.bin_min_count,
                low=options.low,
                high=options.high,
            )
            observed, _ = weighted_histogram(values, weights, edges)
            if len(observed) <= 4:
                continue
            results.append(
                bumphunt_result(
                    event_class=data.event_class,
                    signature_config=data.signatures,
                    observable=name,
                    edges=edges,
                    observed=observed,
                    options=options,
                    seed=derived_seed(seed, index),
                )
            )
        return results


bumphunt = BumpHuntMethod()
