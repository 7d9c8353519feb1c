"""The resonance search every ML method ends with: a mass spectrum, windows, a result.

An ML method turns events into a selection (an anomaly region, a CWoLa or CATHODE cut); what
it *searches* is then a resonance mass (``minv`` or a pair mass like ``m_j_j`` of
:mod:`searches.observables`) of the selected events: each window is tested against the smooth
side-band fit of :mod:`searches.ml.massfit`, and the result is a :class:`SearchResult` with a
background-only pyhf workspace of the selected spectrum
(:func:`searches.stats.workspace.build_workspace`; the fit's Poisson uncertainty as ``sumw2``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import awkward as ak
import numpy as np

from searches import observables, signatures
from searches.methods.base import ClassSlice
from searches.ml.massfit import SQRT_S, WindowTest, sidak, sliding_windows, window_test
from searches.result import ModelCut, Region, SearchResult, Selection
from searches.stats.workspace import build_workspace


def mass_values(
    events: ak.Array, observable: str, signature_config: Mapping[str, Any]
) -> np.ndarray:
    """The resonance observable ``(n,)`` of ``events`` (NaN where it does not exist)."""
    config = signatures.SignatureConfig.model_validate(dict(signature_config))
    return np.asarray(observables.compute(events, observable, config=config), dtype=np.float64)


def spectrum_edges(
    values: np.ndarray, observable: str, *, width_in_sigma: float = 2.0, top_quantile: float = 0.999
) -> np.ndarray:
    """Resolution-scaled edges from the spectrum's peak (where it starts to fall) upwards.

    A smooth falling fit only describes the spectrum above its turn-on, so the first edge is
    the most populated fine bin; the last is at the ``top_quantile`` of the values, and below
    √s, where the dijet function :mod:`~searches.ml.massfit` fits is defined (sums of pT
    such as ``st`` can pass it in simulated tails).
    """
    finite = values[np.isfinite(values) & (values > 0) & (values < SQRT_S)]
    if len(finite) < 20:
        raise ValueError(
            f"observable {observable!r}: fewer than 20 events with a finite value in "
            f"(0, {SQRT_S:g}) GeV"
        )
    hi = float(np.quantile(finite, top_quantile))
    fine = observables.resolution_binning((float(finite.min()), hi), observable, width_in_sigma=0.5)
    counts, _ = np.histogram(finite, bins=fine)
    low = float(fine[int(np.argmax(counts))])
    edges = observables.resolution_binning(
        (low, hi), observable, width_in_sigma=width_in_sigma, max_bins=400
    )
    return edges[edges < SQRT_S]


SIDE_BAND_BINS = 2
"""Bins each side of a window that the side-band fit needs at least."""


def scan_spectrum(
    edges: np.ndarray, counts: np.ndarray, *, window_bins: int, margin: int = SIDE_BAND_BINS
) -> list[WindowTest]:
    """Window tests for every sliding window of ``window_bins`` bins (side bands both sides)."""
    return [
        window_test(edges, counts, a, b)
        for a, b in sliding_windows(len(counts), window_bins, margin=margin)
    ]


def build_result(
    data: ClassSlice,
    *,
    method: str,
    observable: str,
    edges: np.ndarray,
    counts: np.ndarray,
    best: WindowTest,
    n_tests: int,
    model: ModelCut | None = None,
    details: Mapping[str, Any] | None = None,
) -> SearchResult:
    """A :class:`SearchResult` for the best window of a selected spectrum.

    ``p_tilde`` is the Šidák bound over all ``n_tests`` (windows × selections) tried — a
    conservative look-elsewhere correction that needs no retraining on pseudo-data.
    """
    expected = np.asarray(best.fitted)
    uncertainty = np.sqrt(np.maximum(expected, 0.0))
    region = Region(
        first_bin=best.first_bin,
        stop_bin=best.stop_bin,
        low=float(edges[best.first_bin]),
        high=float(edges[best.stop_bin]),
        observed=best.observed,
        expected=best.expected,
        uncertainty=best.uncertainty,
        p_local=best.p_local,
    )
    name = f"{data.event_class}_{method}_{observable}".replace("+", "plus")
    return SearchResult(
        event_class=data.event_class,
        method=method,
        observable=observable,
        edges=tuple(float(e) for e in edges),
        observed=tuple(float(c) for c in counts),
        expected=tuple(float(e) for e in expected),
        uncertainty=tuple(float(u) for u in uncertainty),
        region=region,
        p_local=best.p_local,
        p_tilde=sidak(best.p_local, n_tests),
        workspace=build_workspace(
            observed=counts, expected=expected, sumw2=expected, syst=0.0, channel=name
        ),
        selection=Selection(
            event_class=data.event_class,
            signatures=dict(data.signatures),
            observable=observable,
            edges=tuple(float(e) for e in edges),
            model=model,
        ),
        details={"n_tests": n_tests, **(details or {})},
    )


def weighted_histogram(values: np.ndarray, weights: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Sum of ``weights (n,)`` of ``values (n,)`` in ``edges`` (NaN values dropped)."""
    ok = np.isfinite(values)
    counts, _ = np.histogram(values[ok], bins=edges, weights=weights[ok])
    return counts
