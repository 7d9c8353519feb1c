"""Unsupervised anomaly regions: autoencoder outlier score → anomaly regions → mass scan.

Per event class an autoencoder learns to reconstruct the per-event object features of the
*observed* events (background dominates, so rare signal reconstructs badly). k-fold training:
the events are split into folds and each fold is scored by the autoencoder trained on the
others, so no event's score comes from a model that saw it. Anomaly regions keep the events
above score quantiles (efficiencies, e.g. 10 %, 1 %, 0.1 %); in each region the resonance
observable is scanned with sliding windows against a smooth side-band fit. The look-elsewhere
correction covers every region and every window (Šidák bound over all of them). The plain scan
of the class (no anomaly cut, same windows) is reported alongside for comparison.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import awkward as ak
import numpy as np
from pydantic import Field

from searches.methods.base import ClassSlice, MethodOptions
from searches.ml import features, scorers
from searches.ml.kfold import fold_labels
from searches.ml.search import (
    SIDE_BAND_BINS,
    build_result,
    mass_values,
    scan_spectrum,
    spectrum_edges,
)
from searches.ml.training import TrainingOptions, predict, train_autoencoder
from searches.progress import track
from searches.result import ModelCut, SearchResult


class AutoencoderOptions(MethodOptions):
    """Options of the ``autoencoder`` method (campaign file ``{method: autoencoder, ...}``)."""

    observable: str = Field(default="minv", description="resonance observable scanned")
    features: Literal["objects", "rmm", "substructure"] = "objects"
    efficiencies: tuple[float, ...] = Field(default=(0.1, 0.01, 0.001), min_length=1)
    n_folds: int = Field(default=5, ge=2, le=20)
    window_bins: int = Field(default=2, ge=1, description="window width in bins")
    width_in_sigma: float = Field(default=2.0, gt=0, description="bin width in resolutions")
    min_selected: int = Field(default=50, ge=1, description="skip regions with fewer events")
    training: TrainingOptions = TrainingOptions(hidden=(32,), latent=3, epochs=15)
    artifacts_dir: str | None = Field(
        default=None, description="where the fold models are saved (None: not exported)"
    )


class AutoencoderMethod:
    """The ``autoencoder`` search method (see the module docstring)."""

    name = "autoencoder"
    options_model = AutoencoderOptions

    def run(
        self, data: ClassSlice, *, options: AutoencoderOptions, seed: int
    ) -> list[SearchResult]:
        events = data.observed
        x, names = features.build(events, options.features)
        weights = ak.to_numpy(events["weight"]).astype(np.float64)
        mass = mass_values(events, options.observable, data.signatures)
        edges = spectrum_edges(mass, options.observable, width_in_sigma=options.width_in_sigma)
        needed = options.window_bins + 2 * SIDE_BAND_BINS
        if len(edges) - 1 < needed:
            raise ValueError(
                f"{data.event_class}: the {options.observable!r} spectrum has "
                f"{len(edges) - 1} bins above its peak; windows of {options.window_bins} bins "
                f"with {SIDE_BAND_BINS} side-band bins each side need at least {needed}"
            )
        folds = fold_labels(len(x), options.n_folds, seed)
        scores = np.full(len(x), np.nan)
        models = []
        for k in track(range(options.n_folds), description=f"autoencoder {data.event_class}"):
            train = folds != k
            model, _ = train_autoencoder(
                x[train], weights=weights[train], options=options.training, seed=seed + k
            )
            scores[folds == k] = predict(model, x[folds == k])
            models.append(model)

        def scan(mask: np.ndarray) -> tuple[np.ndarray, list]:
            counts, _ = np.histogram(
                mass[mask & np.isfinite(mass)],
                bins=edges,
                weights=weights[mask & np.isfinite(mass)],
            )
            return counts, scan_spectrum(edges, counts, window_bins=options.window_bins)

        plain_counts, plain_tests = scan(np.ones(len(x), dtype=bool))
        plain_best = min(plain_tests, key=lambda t: t.p_local)
        regions, best = [], None
        for eff in options.efficiencies:
            threshold = float(np.quantile(scores, 1.0 - eff))
            mask = scores >= threshold
            if mask.sum() < options.min_selected:
                continue
            counts, tests = scan(mask)
            top = min(tests, key=lambda t: t.p_local)
            regions.append(
                {
                    "efficiency": eff,
                    "threshold": threshold,
                    "p_local": top.p_local,
                    "low": float(edges[top.first_bin]),
                    "high": float(edges[top.stop_bin]),
                }
            )
            if best is None or top.p_local < best[2].p_local:
                best = (eff, threshold, top, counts, len(tests))
        if best is None:
            raise ValueError(
                f"autoencoder on {data.event_class}: every efficiency leaves fewer than "
                f"min_selected={options.min_selected} events; lower min_selected or raise efficiencies"
            )
        eff, threshold, top, counts, n_windows = best
        model_cut = None
        if options.artifacts_dir is not None:
            path = Path(options.artifacts_dir) / f"{data.event_class}_autoencoder_{seed}.pt"
            scorers.save_ensemble(models, path)
            model_cut = ModelCut(
                kind="autoencoder",
                weights=str(path),
                features=names,
                threshold=threshold,
                architecture={
                    "type": "autoencoder",
                    "n_features": len(names),
                    "hidden": list(options.training.hidden),
                    "latent": options.training.latent,
                    "n_members": len(models),
                    "feature_set": options.features,
                },
            )
        return [
            build_result(
                data,
                method=self.name,
                observable=options.observable,
                edges=edges,
                counts=counts,
                best=top,
                n_tests=n_windows * len(regions),
                model=model_cut,
                details={
                    "efficiency": eff,
                    "threshold": threshold,
                    "regions": regions,
                    "plain_scan": {
                        "p_local": plain_best.p_local,
                        "low": float(edges[plain_best.first_bin]),
                        "high": float(edges[plain_best.stop_bin]),
                        "observed": plain_best.observed,
                        "expected": plain_best.expected,
                    },
                    "plain_counts": [float(c) for c in plain_counts],
                    "n_folds": options.n_folds,
                    "features": options.features,
                },
            )
        ]
