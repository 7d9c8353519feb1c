"""The model-agnostic region-of-interest scan against simulated background.

The general-search method of ATLAS (1807.07447) and CMS MUSiC (2010.02984): for each observable
of an event class, histogram the simulated background and the data in resolution-scaled bins,
scan every contiguous bin range (:mod:`searches.stats.regions`), take the region with the
smallest Poisson ⊗ Gaussian p-value as the region of interest, and correct for having looked
at all regions with ``p̃`` from background-only pseudo-experiments scanned the same way
(:mod:`searches.stats.lee`). The result keeps the pseudo-experiment minima (for the
look-elsewhere correction across searches), the pyhf workspace of the full distribution and the
Selection that maps new events into the same bins.

Events above the background's last bin edge are not dropped: the last edge is widened to
include every observed event, so an excess beyond the simulated range lands in the last bin.
Observables with no background in the class are not searched (no result): there is nothing to
compare the data with.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Literal

import awkward as ak
import numpy as np
from pydantic import Field

from searches import observables, signatures
from searches.methods.base import ClassSlice, MethodOptions
from searches.result import Region, SearchResult, Selection
from searches.stats import lee, regions
from searches.stats.workspace import build_workspace


class ScanOptions(MethodOptions):
    """Options of the scan (campaign file: ``{method: scan, ...}``).

    Attributes:
        min_region_bins: minimum region width in bins.
        pseudo_rounds: background-only pseudo-experiments for ``p̃`` (0: no ``p̃``).
        systematic: relative background systematic, fully correlated across bins.
        min_expected: regions with less expected background are skipped.
        bin_min_expected: minimum expected background per bin when choosing the edges.
        bin_width_sigma: bin width in units of the observable's resolution.
        max_region_bins: widest region in bins (``None``: up to the whole distribution).
        backend: where pseudo-experiments run: ``numpy``, or ``torch`` (cuda if available).
        device: torch device (``None``: cuda when available, else cpu).
    """

    min_region_bins: int = Field(1, ge=1)
    pseudo_rounds: int = Field(10_000, ge=0, le=1_000_000)
    systematic: float = Field(0.1, ge=0.0, lt=1.0)
    min_expected: float = Field(0.1, ge=0.0)
    bin_min_expected: float = Field(0.1, gt=0.0)
    bin_width_sigma: float = Field(1.0, gt=0.0, le=10.0)
    max_region_bins: int | None = Field(None, ge=1)
    backend: Literal["numpy", "torch"] = "numpy"
    device: str | None = None


def derived_seed(seed: int, *keys: int) -> int:
    """A seed for one sub-task, independent of the others (``SeedSequence`` spawning)."""
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1)[0])


def plain(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """JSON-normal form (tuples as lists), so a result equals itself after a JSON round trip."""
    return json.loads(json.dumps(dict(mapping)))


def channel_name(event_class: str, observable: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", f"{event_class}__{observable}")


def weighted_histogram(
    values: np.ndarray, weights: np.ndarray, edges: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Sum of weights and of squared weights per bin (non-finite values ignored)."""
    finite = np.isfinite(values)
    sumw, _ = np.histogram(values[finite], bins=edges, weights=weights[finite])
    sumw2, _ = np.histogram(values[finite], bins=edges, weights=weights[finite] ** 2)
    return sumw, sumw2


def scan_result(
    *,
    event_class: str,
    signature_config: Mapping[str, Any],
    observable: str,
    edges: np.ndarray,
    observed: np.ndarray,
    expected: np.ndarray,
    sumw2: np.ndarray,
    options: ScanOptions,
    seed: int,
    method: str = "scan",
    details: Mapping[str, Any] | None = None,
) -> SearchResult:
    """Scan one distribution and package it as a :class:`SearchResult`.

    Other methods (e.g. an anomaly score turned into a distribution) call this with their own
    histograms. Shapes: ``edges (B+1,)``, the others ``(B,)``.
    """
    region_set = regions.enumerate_regions(
        expected,
        sumw2,
        systematic=options.systematic,
        min_bins=options.min_region_bins,
        max_bins=options.max_region_bins,
        min_expected=options.min_expected,
    )
    outcome = regions.scan_histogram(observed, region_set)
    region = None
    p_local, p_tilde, minima = 1.0, None, np.empty(0)
    direction = None
    if outcome is not None:
        i = outcome.index
        first, stop = int(region_set.first[i]), int(region_set.stop[i])
        p_local = outcome.p_min
        region = Region(
            first_bin=first,
            stop_bin=stop,
            low=float(edges[first]),
            high=float(edges[stop]),
            observed=float(outcome.counts[i]),
            expected=float(region_set.expected[i]),
            uncertainty=float(region_set.uncertainty[i]),
            p_local=p_local,
        )
        direction = "excess" if region.observed >= region.expected else "deficit"
        if options.pseudo_rounds:
            minima = regions.pseudo_minima(
                expected,
                sumw2,
                region_set,
                systematic=options.systematic,
                rounds=options.pseudo_rounds,
                seed=seed,
                backend=options.backend,
                device=options.device,
            )
            p_tilde = lee.p_tilde(p_local, minima)
    uncertainty = np.sqrt(sumw2 + (options.systematic * expected) ** 2)
    selection = Selection(
        event_class=event_class,
        signatures=plain(signature_config),
        observable=observable,
        edges=tuple(float(e) for e in edges),
    )
    return SearchResult(
        event_class=event_class,
        method=method,
        observable=observable,
        edges=selection.edges,
        observed=tuple(float(v) for v in observed),
        expected=tuple(float(v) for v in expected),
        uncertainty=tuple(float(v) for v in uncertainty),
        region=region,
        p_local=float(p_local),
        p_tilde=p_tilde,
        workspace=build_workspace(
            observed=observed,
            expected=expected,
            sumw2=sumw2,
            syst=options.systematic,
            channel=channel_name(event_class, observable),
        ),
        selection=selection,
        n_pseudo=len(minima),
        pseudo_p_min=tuple(float(f"{v:.6g}") for v in np.sort(minima)),
        details={
            "n_regions": len(region_set),
            "direction": direction,
            "systematic": options.systematic,
            "min_region_bins": options.min_region_bins,
            "min_expected": options.min_expected,
            "backend": options.backend,
            "pseudo_p_min_storage": "sorted, 6 significant digits",
            **(details or {}),
        },
    )


class ScanMethod:
    """The scan behind the :class:`~searches.methods.base.SearchMethod` protocol."""

    name = "scan"
    options_model = ScanOptions

    def run(self, data: ClassSlice, *, options: MethodOptions, seed: int) -> list[SearchResult]:
        if not isinstance(options, ScanOptions):
            options = ScanOptions.model_validate(options.model_dump())
        config = signatures.SignatureConfig.model_validate(dict(data.signatures))
        bg_weights = ak.to_numpy(data.background["weight"]).astype(np.float64)
        obs_weights = ak.to_numpy(data.observed["weight"]).astype(np.float64)
        results = []
        for index, name in enumerate(data.observables):
            bg_values = np.asarray(observables.compute(data.background, name, config=config))
            obs_values = np.asarray(observables.compute(data.observed, name, config=config))
            usable = np.isfinite(bg_values) & (bg_weights > 0)
            if not np.any(usable) or bg_weights[usable].sum() <= 0:
                continue
            edges = observables.edges_for(
                name,
                bg_values[usable],
                bg_weights[usable],
                min_expected=options.bin_min_expected,
                low=observables.lower_edge(name, data.event_class, config=config),
                width_in_sigma=options.bin_width_sigma,
            )
            finite_obs = obs_values[np.isfinite(obs_values)]
            if len(finite_obs) and finite_obs.max() >= edges[-1]:
                edges = edges.copy()
                edges[-1] = np.nextafter(finite_obs.max(), np.inf)
            expected, sumw2 = weighted_histogram(bg_values, bg_weights, edges)
            expected = np.maximum(expected, 0.0)
            observed, _ = weighted_histogram(obs_values, obs_weights, edges)
            results.append(
                scan_result(
                    event_class=data.event_class,
                    signature_config=data.signatures,
                    observable=name,
                    edges=edges,
                    observed=observed,
                    expected=expected,
                    sumw2=sumw2,
                    options=options,
                    seed=derived_seed(seed, index),
                )
            )
        return results


scan = ScanMethod()
