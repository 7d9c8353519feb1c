"""Weakly supervised resonance searches: CWoLa hunting and CATHODE-style templates.

Both slide a signal-region (SR) window over the resonance observable, with side bands (SB)
of ``sideband_bins`` bins on each side, and select events in SR ∪ SB with a classifier:

* **CWoLa hunting** (arXiv:1805.02664): the classifier separates SR from SB events of the
  data itself; a localised signal makes the SR distinguishable.
* **CATHODE** (arXiv:2109.00546): a conditional normalising flow ``p(x | m)`` trained on SB
  events is sampled at SR masses into a background template; the classifier separates SR data
  from the template.

Honest statistics: the classifier is trained with k-fold cross-fitting — every data event in
the training sample is scored by the fold model that did not see it (the nested level: the
boosted trees or the MLP's epoch choice use only the training folds); side-band data in CATHODE
are never trained on and are each scored by one fold model (:func:`fold_score`, so their
scores have the spread of out-of-fold scores). The selected mass spectrum is then
fitted in the side bands with a smooth function and the SR tested (:mod:`searches.ml.massfit`).
Look-elsewhere: Šidák over all windows × efficiencies.

Mass decorrelation: the classifiers see each feature as its rank among the data in the
same mass bin (``decorrelate``), after dropping zero-padded events (``complete_only``) and
scaling jet masses by the resonance mass (``scale_jet_masses``). In the built-in simulation
fat-jet masses grow with the dijet mass; without this, CWoLa on background-only pseudo-data
gave look-elsewhere-corrected p < 0.05 in at least 7 of 20 seeds.

Sculpting check: the selection of the best window is applied to the simulated background of
the class (``ClassSlice.background``, never trained on) and that background-only selected
spectrum is tested the same way; a significant "excess" there means the selection creates a
bump, which ``details["sculpting"]`` reports.
"""

from __future__ import annotations

from typing import Literal

import awkward as ak
import numpy as np
from pydantic import Field

from searches.methods.base import ClassSlice, MethodOptions
from searches.ml import features
from searches.ml.classifiers import ClassifierKind, cross_fit, fold_score
from searches.ml.flows import ConditionalFlow, FlowOptions
from searches.ml.massfit import window_test
from searches.ml.search import build_result, mass_values, spectrum_edges
from searches.ml.training import TrainingOptions
from searches.progress import track
from searches.result import SearchResult
from searches.stats.pvalues import significance


class WeaklySupervisedOptions(MethodOptions):
    """Options shared by ``cwola`` and ``cathode``."""

    observable: str = Field(default="m_j_j", description="resonance observable")
    features: Literal["objects", "rmm", "substructure"] = "substructure"
    window_bins: int = Field(default=2, ge=1, description="SR width in bins")
    sideband_bins: int = Field(default=3, ge=2, description="SB width in bins, each side")
    width_in_sigma: float = Field(default=2.0, gt=0)
    efficiencies: tuple[float, ...] = Field(default=(0.1, 0.02), min_length=1)
    n_folds: int = Field(default=5, ge=2, le=20)
    classifier: ClassifierKind = "hgb"
    training: TrainingOptions = TrainingOptions(hidden=(32, 32), epochs=20)
    flow: FlowOptions = FlowOptions()
    min_window_events: int = Field(default=100, ge=10, description="skip sparser windows")
    sculpting_check: bool = True
    mass_range: tuple[float, float] | None = Field(
        default=None, description="only signal regions inside [low, high) of the observable"
    )
    max_iter: int = Field(default=100, ge=1, description="boosting iterations (hgb)")
    complete_only: bool = Field(
        default=True, description="keep only events with every feature present (no zero padding)"
    )
    scale_jet_masses: bool = Field(
        default=True,
        description="substructure features: jet masses divided by the resonance mass",
    )
    decorrelate: bool = Field(
        default=True,
        description="replace each feature by its rank among the data in the same mass bin",
    )
    min_selected: int = Field(
        default=100, ge=1, description="skip efficiencies leaving fewer selected SR+SB events"
    )


def _features(
    events: ak.Array, options: WeaklySupervisedOptions, signature_config: dict
) -> tuple[ak.Array, np.ndarray, np.ndarray]:
    """Events, features ``(n, d)`` and resonance masses ``(n,)`` the classifiers work on.

    ``complete_only`` drops events with a missing object: it is padded with exact zeros, a
    point mass no flow can model, so a CATHODE classifier would separate data from template
    on the padding alone. ``scale_jet_masses`` divides the substructure jet masses by the
    resonance mass: QCD jet masses grow with the dijet mass, and a signal-region-vs-side-band
    classifier would otherwise learn the mass itself and sculpt a bump (their ratio is nearly
    flat). Both are fixed preselections/transformations of every event, blind to the labels.
    """
    x, _ = features.build(events, options.features)
    mass = mass_values(events, options.observable, signature_config)
    keep = np.isfinite(mass)
    if options.complete_only:
        keep &= np.all(x != 0.0, axis=1)
    events, x, mass = events[keep], x[keep], mass[keep]
    if options.scale_jet_masses and options.features == "substructure":
        x = x.copy()
        x[:, :2] = x[:, :2] * 1000.0 / mass[:, None]
    return events, x, mass


class _MassDecorrelation:
    """Per-mass-bin empirical CDF of each feature, estimated on the data (labels unused).

    Features correlated with the resonance mass let a signal-region-vs-side-band classifier
    learn the mass itself and sculpt a bump in background (seen in the built-in simulation
    even with jet masses scaled by the dijet mass). Replacing every feature by its rank among
    the data in the same mass bin makes each feature's distribution the same in every bin, so
    such a classifier has nothing but joint (signal-like) structure left to learn. Simulation
    is mapped with the data's CDFs, so the sculpting check tests the very same selection.
    """

    def __init__(self, x: np.ndarray, mass: np.ndarray, edges: np.ndarray) -> None:
        self.edges = edges
        bins = self._bins(mass)
        self.sorted = [
            [np.sort(x[bins == k, j]) for j in range(x.shape[1])] for k in range(len(edges) - 1)
        ]

    def _bins(self, mass: np.ndarray) -> np.ndarray:
        return np.clip(np.searchsorted(self.edges, mass, side="right") - 1, 0, len(self.edges) - 2)

    def __call__(self, x: np.ndarray, mass: np.ndarray) -> np.ndarray:
        """Ranks ``(n, d)`` in (0, 1) of features ``x (n, d)`` at masses ``mass (n,)``."""
        bins, out = self._bins(mass), np.empty_like(x, dtype=np.float64)
        for k, columns in enumerate(self.sorted):
            rows = bins == k
            for j, ref in enumerate(columns):
                n = len(ref)
                below = np.searchsorted(ref, x[rows, j], side="left")
                above = np.searchsorted(ref, x[rows, j], side="right")
                out[rows, j] = (0.5 * (below + above) + 0.5) / (n + 1)
        return out


def _window_masks(
    mass: np.ndarray, edges: np.ndarray, a: int, b: int, sb: int
) -> tuple[np.ndarray, np.ndarray]:
    sr = (mass >= edges[a]) & (mass < edges[b])
    sbm = ((mass >= edges[a - sb]) & (mass < edges[a])) | (
        (mass >= edges[b]) & (mass < edges[b + sb])
    )
    return sr, sbm


class _WeaklySupervised:
    """Window loop, selection, fit and sculpting check; subclasses define ``_scores``:
    ``(x, mass, sr, sb, options, seed) -> (scores (n,), fold models, details)`` with scores
    of SR ∪ SB events that no model trained on."""

    name: str
    options_model = WeaklySupervisedOptions

    def run(
        self, data: ClassSlice, *, options: WeaklySupervisedOptions, seed: int
    ) -> list[SearchResult]:
        events, x, mass = _features(data.observed, options, data.signatures)
        weights = ak.to_numpy(events["weight"]).astype(np.float64)
        edges = spectrum_edges(mass, options.observable, width_in_sigma=options.width_in_sigma)
        decorrelation = _MassDecorrelation(x, mass, edges) if options.decorrelate else None
        if decorrelation is not None:
            x = decorrelation(x, mass)
        sb, width = options.sideband_bins, options.window_bins
        windows = [(a, a + width) for a in range(sb, len(edges) - 1 - width - sb + 1)]
        if options.mass_range is not None:
            low, high = options.mass_range
            windows = [(a, b) for a, b in windows if edges[a] >= low and edges[b] <= high]
        best, scanned, n_tests = None, [], 0
        for a, b in track(windows, description=f"{self.name} {data.event_class}"):
            sr, sbm = _window_masks(mass, edges, a, b, sb)
            if sr.sum() < options.min_window_events or sbm.sum() < options.min_window_events:
                continue
            scores, models, extra = self._scores(  # type: ignore[attr-defined]
                x, mass, sr, sbm, options, seed + 1009 * a
            )
            use = sr | sbm
            sub = edges[a - sb : b + sb + 1]
            for eff in options.efficiencies:
                threshold = float(np.quantile(scores[sr], 1.0 - eff))
                keep = use & (scores >= threshold)
                if keep.sum() < options.min_selected:
                    continue
                counts, _ = np.histogram(mass[keep], bins=sub, weights=weights[keep])
                test = window_test(sub, counts, sb, sb + width)
                n_tests += 1
                scanned.append(
                    {
                        "low": float(edges[a]),
                        "high": float(edges[b]),
                        "efficiency": eff,
                        "p_local": test.p_local,
                    }
                )
                if best is None or test.p_local < best["test"].p_local:
                    best = {
                        "a": a,
                        "b": b,
                        "eff": eff,
                        "threshold": threshold,
                        "test": test,
                        "counts": counts,
                        "models": models,
                        "extra": extra,
                    }
        if best is None:
            raise ValueError(
                f"{self.name} on {data.event_class}: no window has min_window_events="
                f"{options.min_window_events} events in SR and SB; lower it or widen the bins"
            )
        a, b = best["a"], best["b"]
        sub = edges[a - sb : b + sb + 1]
        details = {
            "efficiency": best["eff"],
            "threshold": best["threshold"],
            "signal_region": [float(edges[a]), float(edges[b])],
            "windows": scanned,
            "classifier": options.classifier,
            "n_folds": options.n_folds,
            **best["extra"],
        }
        if options.sculpting_check and len(data.background):
            details["sculpting"] = self._sculpting(
                data, options, best, sub, decorrelation, seed=seed
            )
        return [
            build_result(
                data,
                method=self.name,
                observable=options.observable,
                edges=sub,
                counts=best["counts"],
                best=best["test"],
                n_tests=n_tests,
                details=details,
            )
        ]

    def _sculpting(self, data, options, best, sub, decorrelation, *, seed) -> dict:  # type: ignore[no-untyped-def]
        sb, width = options.sideband_bins, options.window_bins
        bkg, xb, mb = _features(data.background, options, data.signatures)
        if decorrelation is not None:
            xb = decorrelation(xb, mb)
        wb = ak.to_numpy(bkg["weight"]).astype(np.float64)
        inside = np.isfinite(mb) & (mb >= sub[0]) & (mb < sub[-1])
        scores = np.full(len(xb), -np.inf)
        scores[inside] = fold_score(best["models"], xb[inside], seed=seed + 3)
        keep = inside & (scores >= best["threshold"])
        counts, _ = np.histogram(mb[keep], bins=sub, weights=wb[keep])
        before, _ = np.histogram(mb[inside], bins=sub, weights=wb[inside])
        sumw2, _ = np.histogram(mb[keep], bins=sub, weights=wb[keep] ** 2)
        if counts.sum() <= 0 or (counts > 0).sum() < 4:
            return {"p_local": 1.0, "z": 0.0, "selected_background": float(counts.sum())}
        # Weighted Monte Carlo in units of its effective number of events, so the test has the
        # statistical power the simulation really has.
        scale = counts.sum() / sumw2.sum()
        test = window_test(sub, counts * scale, sb, sb + width)
        return {
            "p_local": test.p_local,
            "z": max(float(significance(test.p_local)), 0.0),
            "selected_background": float(counts.sum()),
            "effective_events": float(counts.sum() * scale),
            "efficiency_per_bin": [
                float(c / n) if n > 0 else 0.0 for c, n in zip(counts, before, strict=True)
            ],
        }


class CwolaMethod(_WeaklySupervised):
    """``cwola``: CWoLa hunting, classifier SR vs SB of the data (nested k-fold)."""

    name = "cwola"

    def _scores(self, x, mass, sr, sb, options, seed):  # type: ignore[no-untyped-def]
        use = sr | sb
        scores = np.full(len(x), -np.inf)
        oof, models = cross_fit(
            options.classifier,
            x[use],
            sr[use].astype(np.float64),
            n_folds=options.n_folds,
            training=options.training,
            seed=seed,
            max_iter=options.max_iter,
        )
        scores[use] = oof
        return scores, models, {}


class CathodeMethod(_WeaklySupervised):
    """``cathode``: flow template from the SB sampled into the SR; data vs template."""

    name = "cathode"

    def _scores(self, x, mass, sr, sb, options, seed):  # type: ignore[no-untyped-def]
        flow = ConditionalFlow(x[sb], mass[sb], options=options.flow, seed=seed)
        rng = np.random.default_rng(seed)
        n_template = options.flow.oversampling * int(sr.sum())
        m_template = rng.choice(mass[sr], size=n_template, replace=True)
        template = flow.sample(m_template, seed=seed + 1)
        x_sr = x[sr]
        xx = np.vstack([x_sr, template])
        yy = np.r_[np.ones(len(x_sr)), np.zeros(len(template))]
        oof, models = cross_fit(
            options.classifier,
            xx,
            yy,
            n_folds=options.n_folds,
            training=options.training,
            seed=seed,
            max_iter=options.max_iter,
        )
        scores = np.full(len(x), -np.inf)
        scores[sr] = oof[: len(x_sr)]
        scores[sb] = fold_score(models, x[sb], seed=seed + 2)
        return scores, models, {"n_template": n_template}
