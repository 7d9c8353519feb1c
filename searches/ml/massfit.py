"""Smooth background of a resonance mass inside an anomaly-selected region, and window tests.

After an ML selection the mass spectrum is still smooth for background (the methods check
this; a sculpted spectrum is what the sculpting check reports). The background in a window is
the four-parameter dijet function ``f(x) = p0 (1 − x)^p1 / x^(p2 + p3 ln x)`` (``x = m/√s``,
the ATLAS/CMS dijet fit, ``p3`` fixed to 0 when few bins are available) fitted by a binned
Poisson likelihood to the bins *outside* the window, then integrated over the window.
Its uncertainty is the fit covariance propagated to that integral; the local p-value is the
Poisson ⊗ Gaussian tail of :func:`searches.stats.pvalues.local_pvalue` for an excess
(a deficit gets ``p = 1``: these searches look for resonances, not holes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from iminuit import Minuit

from searches.stats.pvalues import local_pvalue

SQRT_S = 13_000.0


def _shape(x: np.ndarray, p: np.ndarray) -> np.ndarray:
    log_x = np.log(x)
    exponent = p[0] + p[1] * np.log1p(-x) - (p[2] + p[3] * log_x) * log_x
    return np.exp(np.clip(exponent, -700.0, 700.0))


@dataclass(frozen=True)
class WindowTest:
    """Observed and fitted background in one window ``[first_bin, stop_bin)`` and its p-value."""

    first_bin: int
    stop_bin: int
    observed: float
    expected: float
    uncertainty: float
    p_local: float
    fitted: tuple[float, ...]


def _bin_expectation(edges: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Expected counts per bin (Simpson's rule on each bin of the density)."""
    lo, hi = edges[:-1] / SQRT_S, edges[1:] / SQRT_S
    mid = 0.5 * (lo + hi)
    return (hi - lo) / 6.0 * (_shape(lo, p) + 4 * _shape(mid, p) + _shape(hi, p))


def fit_background(
    edges: np.ndarray, counts: np.ndarray, use: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fit the dijet function to ``counts`` in the bins ``use``; expected counts of all bins.

    Args:
        edges: bin edges ``(B + 1,)`` in GeV (all > 0 and below √s).
        counts: observed counts ``(B,)``.
        use: boolean ``(B,)``, the bins that enter the fit.

    Returns:
        ``(expected (B,), jacobian (B, P), covariance (P, P))`` of the fitted parameters.
    """
    edges = np.asarray(edges, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    if edges[0] <= 0 or edges[-1] >= SQRT_S:
        raise ValueError(f"fit_background: edges must lie in (0, {SQRT_S}) GeV")
    n_params = 4 if use.sum() >= 8 else 3
    total = max(counts[use].sum(), 1.0)
    scale = _bin_expectation(edges, np.array([0.0, 5.0, 5.0, 0.0]))[use].sum()

    def nll(*p: float) -> float:
        full = np.zeros(4)
        full[:n_params] = p
        mu = np.maximum(_bin_expectation(edges, full)[use], 1e-300)
        return float(np.sum(mu - counts[use] * np.log(mu)))

    start = [np.log(total / scale), 5.0, 5.0, 0.0][:n_params]
    minuit = Minuit(nll, *start, name=[f"p{i}" for i in range(n_params)])
    minuit.errordef = Minuit.LIKELIHOOD
    minuit.strategy = 1
    minuit.migrad()
    minuit.hesse()
    p = np.zeros(4)
    p[:n_params] = np.array(minuit.values)
    expected = _bin_expectation(edges, p)
    jac = np.empty((len(expected), n_params))
    for i in range(n_params):
        step = np.zeros(4)
        step[i] = 1e-5 * max(1.0, abs(p[i]))
        jac[:, i] = (_bin_expectation(edges, p + step) - _bin_expectation(edges, p - step)) / (
            2 * step[i]
        )
    cov = np.array(minuit.covariance) if minuit.valid else np.diag(np.full(n_params, np.inf))
    return expected, jac, cov


def window_test(edges: np.ndarray, counts: np.ndarray, first_bin: int, stop_bin: int) -> WindowTest:
    """Fit the side bands (all bins outside the window) and test the window for an excess."""
    n_bins = len(counts)
    window = np.zeros(n_bins, dtype=bool)
    window[first_bin:stop_bin] = True
    expected, jac, cov = fit_background(edges, counts, ~window)
    b = float(expected[window].sum())
    grad = jac[window].sum(axis=0)
    var = float(grad @ cov @ grad) if np.all(np.isfinite(cov)) else b
    sigma = float(np.sqrt(max(var, 0.0)))
    n = float(np.asarray(counts)[window].sum())
    p = float(local_pvalue(n, max(b, 0.0), sigma)) if n >= b else 1.0
    return WindowTest(first_bin, stop_bin, n, b, sigma, p, tuple(float(e) for e in expected))


def sliding_windows(n_bins: int, width: int, *, margin: int = 2) -> list[tuple[int, int]]:
    """Windows ``[i, i + width)`` that leave at least ``margin`` side-band bins on both sides."""
    return [(i, i + width) for i in range(margin, n_bins - width - margin + 1)]


def sidak(p_min: float, n_tests: int) -> float:
    """Look-elsewhere bound ``1 − (1 − p)^N`` for ``N`` tests (conservative when correlated)."""
    return float(-np.expm1(n_tests * np.log1p(-min(max(p_min, 0.0), 1.0 - 1e-16))))
