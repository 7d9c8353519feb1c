"""pyhf workspaces: one per search, the full distribution of its event class and observable.

The background sample carries the MC statistical uncertainty per bin (``staterror``, from the
sum of squared weights) and the relative systematic as one ``normsys`` (fully correlated across
bins, as in the scan). The signal sample is what reinterpretation replaces: by default it is a
*placeholder* of zeros (the search ran without a signal hypothesis), scaled by the normfactor
``mu``; :func:`with_signal` patches real yields in, with the signal's MC statistics (in the
``staterror``, or a Poisson-constrained ``shapesys`` where the signal dominates). Inference on a placeholder is refused,
because ``mu`` is not identifiable there.

Bins without background get a floor of ``EMPTY_BIN`` events with 100 % MC-statistics
uncertainty, so ``staterror`` stays defined (pyhf divides by the nominal). Every other bin's
relative MC-statistics uncertainty is at least ``MCSTAT_FLOOR``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyhf
from numpy.typing import ArrayLike

SIGNAL = "signal"
BACKGROUND = "background"
POI = "mu"
SYSTEMATIC = "background_norm"
EMPTY_BIN = 1e-6
SIGNAL_MCSTAT = "mcstat_signal"
MCSTAT_FLOOR = 1e-4
"""Smallest relative MC-statistics uncertainty of a bin (about 1e8 effective simulated events).

A tighter constraint can make the likelihood too stiff to fit: pyhf's default SLSQP then stops
near its start reporting success (CLs ≈ 1 or NaN on 23 of 48 workspaces at 1e-4 and 1e-6,
``benchmarks/bench_inference.py``), and where the signal dominates a bin MINUIT finds no valid
minimum at 1e-5 and below (``searches.testing.stiff_workspace``). At the floor the batched
engine and MINUIT agree with the model without MC statistics: to 3e-6 in a one-off
comparison on 2026-12-07 (the 3-bin workspace b = 1000, 31.6, 1 of ``STIFF_BACKGROUND``: CLs
0.489014 and 0.489015 against 0.489015), to 1e-4 as the workspace tests assert (their
reference runs on pyhf's default tolerance). The floor only widens an uncertainty:
conservative."""


def _bins(name: str, values: ArrayLike, n_bins: int | None = None) -> list[float]:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or len(array) == 0:
        raise ValueError(f"workspace '{name}' must be a non-empty 1-d list of bin values")
    if n_bins is not None and len(array) != n_bins:
        raise ValueError(f"workspace '{name}' has {len(array)} bins; expected {n_bins}")
    if not np.all(np.isfinite(array)) or np.any(array < 0):
        raise ValueError(f"workspace '{name}' must be finite and >= 0 in every bin")
    return [float(v) for v in array]


def build_workspace(
    *,
    observed: ArrayLike,
    expected: ArrayLike,
    sumw2: ArrayLike,
    syst: float,
    signal: ArrayLike | None = None,
    channel: str = "search",
) -> dict[str, Any]:
    """A pyhf workspace (validated JSON dict) for one search's distribution.

    Args:
        observed: observed counts per bin, shape ``(B,)``.
        expected: background expectation per bin.
        sumw2: sum of squared background weights per bin.
        syst: relative background normalisation uncertainty (``normsys`` ``1 ± syst``).
        signal: signal yields at ``mu = 1``; ``None`` writes the zero placeholder.
        channel: channel name (must be a valid pyhf name).

    Returns:
        The workspace specification; ``pyhf.Workspace(spec)`` accepts it.
    """
    if not 0.0 <= syst < 1.0:
        raise ValueError(f"workspace 'syst' must be in [0, 1), got {syst}")
    background = np.asarray(_bins("expected", expected), dtype=np.float64)
    n_bins = len(background)
    data = _bins("observed", observed, n_bins)
    stat = np.sqrt(np.asarray(_bins("sumw2", sumw2, n_bins)))
    empty = background <= 0.0
    background = np.where(empty, EMPTY_BIN, background)
    stat = np.where(empty, EMPTY_BIN, np.maximum(stat, MCSTAT_FLOOR * background))
    signal_yields = [0.0] * n_bins if signal is None else _bins("signal", signal, n_bins)
    background_modifiers: list[dict[str, Any]] = [
        {"name": f"staterror_{channel}", "type": "staterror", "data": stat.tolist()}
    ]
    if syst > 0:
        background_modifiers.append(
            {"name": SYSTEMATIC, "type": "normsys", "data": {"hi": 1 + syst, "lo": 1 - syst}}
        )
    spec = {
        "version": "1.0.0",
        "channels": [
            {
                "name": channel,
                "samples": [
                    {
                        "name": SIGNAL,
                        "data": signal_yields,
                        "modifiers": [{"name": POI, "type": "normfactor", "data": None}],
                    },
                    {
                        "name": BACKGROUND,
                        "data": background.tolist(),
                        "modifiers": background_modifiers,
                    },
                ],
            }
        ],
        "observations": [{"name": channel, "data": data}],
        "measurements": [{"name": "measurement", "config": {"poi": POI, "parameters": []}}],
    }
    pyhf.schema.validate(spec, "workspace.json")
    return spec


def validate(spec: Mapping[str, Any]) -> pyhf.Workspace:
    """Validate against pyhf's workspace schema and build it (raises on any violation)."""
    pyhf.schema.validate(dict(spec), "workspace.json")
    return pyhf.Workspace(dict(spec))


def current_signal(spec: Mapping[str, Any]) -> np.ndarray:
    """The signal sample's yields (all channels concatenated)."""
    return np.concatenate(
        [
            np.asarray(sample["data"], dtype=np.float64)
            for channel in spec["channels"]
            for sample in channel["samples"]
            if sample["name"] == SIGNAL
        ]
    )


def with_signal(
    workspace: Mapping[str, Any],
    signal_yields: ArrayLike,
    *,
    signal_sumw2: ArrayLike | None = None,
) -> dict[str, Any]:
    """The workspace with its signal sample replaced by ``signal_yields`` (reinterpretation).

    Args:
        workspace: a workspace from :func:`build_workspace` (one channel).
        signal_yields: new signal yields at ``mu = 1``, one per bin.
        signal_sumw2: sums of squared weights of the signal Monte Carlo per bin; when given,
            the signal is not tested as if its shape were exact. Where the signal is at most
            the background, its variance is added to the background's ``staterror`` of that
            bin (one Gaussian γ per bin for the MC statistics of the prediction, as
            Barlow–Beeston lite). That variance is the signal's at ``mu = 1``: the verdict
            (CLs at ``mu = 1``) carries it as it is, an upper limit far from ``mu = 1`` only
            approximately (the γ scales the background, not ``mu · s``). Where it dominates, it gets its own Poisson-constrained
            ``shapesys`` (``SIGNAL_MCSTAT``: auxiliary count τ = (s/σ)², Barlow–Beeston for
            the signal): a weak Gaussian there lets the fit scale a poorly simulated but huge
            signal to zero at little cost (a strong signal then came out "allowed" with
            CLs = 0.5), while the Poisson term costs −log γ as γ → 0. Only the few dominated
            bins get new parameters, so fits stay as fast as without signal MC statistics.
            A relative uncertainty below ``MCSTAT_FLOOR`` is raised to it; zeros (an exact
            signal) stay zero.
    """
    spec = copy.deepcopy(dict(workspace))
    channels = spec["channels"]
    if len(channels) != 1:
        raise ValueError(f"with_signal expects a one-channel workspace, got {len(channels)}")
    samples = {sample["name"]: sample for sample in channels[0]["samples"]}
    if SIGNAL not in samples:
        raise ValueError(f"workspace has no '{SIGNAL}' sample; samples: {sorted(samples)}")
    n_bins = len(samples[SIGNAL]["data"])
    yields = _bins("signal_yields", signal_yields, n_bins)
    samples[SIGNAL]["data"] = yields
    if signal_sumw2 is not None:
        variance = np.asarray(_bins("signal_sumw2", signal_sumw2, n_bins), dtype=np.float64)
        signal = np.asarray(yields)
        floor = (MCSTAT_FLOOR * signal) ** 2
        variance = np.where((signal > 0.0) & (variance > 0.0), np.maximum(variance, floor), 0.0)
        others = [sample for name, sample in samples.items() if name != SIGNAL]
        background = np.sum([np.asarray(s["data"], dtype=np.float64) for s in others], axis=0)
        dominant = signal > background
        _add_variance(others, np.where(dominant, 0.0, variance))
        own = f"{SIGNAL_MCSTAT}_{channels[0]['name']}"
        modifiers = [m for m in samples[SIGNAL]["modifiers"] if m["name"] != own]
        poisson = np.sqrt(np.where(dominant, variance, 0.0))
        if np.any(poisson > 0):
            modifiers.append({"name": own, "type": "shapesys", "data": poisson.tolist()})
        samples[SIGNAL]["modifiers"] = modifiers
    validate(spec)
    return spec


def _add_variance(samples: list[dict[str, Any]], variance: np.ndarray) -> None:
    """Add ``variance`` (B,) to the bins of the first ``staterror`` among ``samples``.

    pyhf's relative uncertainty of a ``staterror`` bin is √(Σ σ²) / Σ nominal over the samples
    carrying it, so the added variance is the signal's, on the background's prediction.
    """
    if not np.any(variance > 0):
        return
    for sample in samples:
        for modifier in sample.get("modifiers", []):
            if modifier["type"] == "staterror":
                sigma = np.asarray(modifier["data"], dtype=np.float64)
                modifier["data"] = np.sqrt(sigma**2 + variance).tolist()
                return
