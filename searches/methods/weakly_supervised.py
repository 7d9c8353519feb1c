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
are never trained on and are each scored by one fold model (so their scores have the spread of
out-of-fold scores). An event's fold is a seeded hash of its own features and mass
(:func:`~searches.ml.kfold.hashed_folds`), so the rule "score each event with the model of its
fold" needs nothing but the event. The selected mass spectrum is then
fitted in the side bands with a smooth function and the SR tested (:mod:`searches.ml.massfit`).
Look-elsewhere: Šidák over all windows × efficiencies.

Reinterpretation: with ``artifacts_dir`` set, the selection of the best window is exported as a
:class:`~searches.result.ModelCut` of kind ``weakly_supervised``: one file (tensors only,
loaded with ``weights_only=True``) holding the fold models — boosted trees as arrays
(:class:`~searches.ml.trees.TreeEnsemble`, scores bitwise equal to sklearn's) or MLP state
dicts — and the mass-decorrelation tables of the window's bins; the architecture dict holds
the feature pipeline and the fold-hash seed. :func:`selection_scores` applies it: on the
search's own events it reproduces the search's scores, hence its selection, exactly; new
events get one fold model each, like the side bands.

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

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import awkward as ak
import numpy as np
import torch
from pydantic import Field
from torch import nn

from searches.methods.base import ClassSlice, MethodOptions
from searches.ml import features
from searches.ml.classifiers import (
    ClassifierKind,
    FittedClassifier,
    cross_fit,
    score_by_fold,
)
from searches.ml.flows import ConditionalFlow, FlowOptions
from searches.ml.kfold import fold_labels, hashed_folds
from searches.ml.massfit import window_test
from searches.ml.networks import build_ensemble
from searches.ml.search import build_result, mass_values, spectrum_edges
from searches.ml.training import TrainingOptions, predict
from searches.ml.trees import TreeEnsemble
from searches.progress import track
from searches.result import ModelCut, SearchResult, register_model_scorer
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
    artifacts_dir: str | None = Field(
        default=None, description="where the selection's models are saved (None: not exported)"
    )


def _features(
    events: ak.Array, options: WeaklySupervisedOptions, signature_config: Mapping[str, Any]
) -> tuple[ak.Array, np.ndarray, np.ndarray]:
    """Events, features ``(n, d)`` and resonance masses ``(n,)`` the classifiers work on."""
    x, mass, keep = _prepare(events, options, signature_config)
    return events[keep], x[keep], mass[keep]


def _prepare(
    events: ak.Array, options: WeaklySupervisedOptions, signature_config: Mapping[str, Any]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features ``(n, d)``, masses ``(n,)`` of all events and the mask ``(n,)`` of usable ones.

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
    if options.scale_jet_masses and options.features == "substructure":
        x = x.copy()
        with np.errstate(divide="ignore", invalid="ignore"):
            x[:, :2] = np.where(keep[:, None], x[:, :2] * 1000.0 / mass[:, None], 0.0)
    return x, mass, keep


def _event_folds(x: np.ndarray, mass: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Fold ``(n,)`` of each event from a hash of its features and mass (before decorrelation)."""
    return hashed_folds(np.column_stack([x, mass]), n_folds, seed)


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

    @classmethod
    def from_tables(cls, edges: np.ndarray, tables: list[list[np.ndarray]]) -> _MassDecorrelation:
        out = cls.__new__(cls)
        out.edges, out.sorted = np.asarray(edges, dtype=np.float64), tables
        return out

    def restricted(self, first: int, stop: int) -> _MassDecorrelation:
        """The tables of bins ``[first, stop)`` only: the same ranks for masses inside them."""
        return self.from_tables(self.edges[first : stop + 1], self.sorted[first:stop])

    def to_tensors(self) -> dict[str, torch.Tensor]:
        state = {"decorrelation.edges": torch.from_numpy(self.edges.copy())}
        for k, columns in enumerate(self.sorted):
            for j, ref in enumerate(columns):
                state[f"decorrelation.{k}.{j}"] = torch.from_numpy(np.array(ref, np.float64))
        return state

    @classmethod
    def from_tensors(cls, state: Mapping[str, torch.Tensor], n_features: int) -> _MassDecorrelation:
        edges = state["decorrelation.edges"].numpy()
        tables = [
            [state[f"decorrelation.{k}.{j}"].numpy() for j in range(n_features)]
            for k in range(len(edges) - 1)
        ]
        return cls.from_tables(edges, tables)

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
    ``(x, mass, sr, sb, folds, options, seed) -> (scores (n,), fold models, details)`` with
    scores of SR ∪ SB events that no model trained on (``folds``: each event's fold)."""

    name: str
    options_model = WeaklySupervisedOptions

    def run(
        self, data: ClassSlice, *, options: WeaklySupervisedOptions, seed: int
    ) -> list[SearchResult]:
        events, x, mass = _features(data.observed, options, data.signatures)
        weights = ak.to_numpy(events["weight"]).astype(np.float64)
        raw = np.column_stack([x, mass])
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
            window_seed = seed + 1009 * a
            folds = hashed_folds(raw, options.n_folds, window_seed)
            scores, models, extra = self._scores(  # type: ignore[attr-defined]
                x, mass, sr, sbm, folds, options, window_seed
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
                        "fold_seed": window_seed,
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
        model = None
        if options.artifacts_dir is not None:
            model = self._export(data, options, best, decorrelation, seed=seed)
        return [
            build_result(
                data,
                method=self.name,
                observable=options.observable,
                edges=sub,
                counts=best["counts"],
                best=best["test"],
                n_tests=n_tests,
                model=model,
                details=details,
            )
        ]

    def _export(self, data, options, best, decorrelation, *, seed) -> ModelCut:  # type: ignore[no-untyped-def]
        sb = options.sideband_bins
        a, b = best["a"], best["b"]
        models: list[FittedClassifier] = best["models"]
        state: dict[str, torch.Tensor] = {}
        if decorrelation is not None:
            state.update(decorrelation.restricted(a - sb, b + sb).to_tensors())
        architecture: dict[str, Any] = {
            "method": self.name,
            "classifier": options.classifier,
            "n_members": len(models),
            "fold_seed": best["fold_seed"],
            "feature_set": options.features,
            "observable": options.observable,
            "signatures": dict(data.signatures),
            "complete_only": options.complete_only,
            "scale_jet_masses": options.scale_jet_masses,
            "decorrelate": options.decorrelate,
        }
        if options.classifier == "hgb":
            for i, m in enumerate(models):
                state.update(TreeEnsemble.from_fitted(m).to_tensors(f"member.{i}"))
        else:
            ensemble = nn.ModuleList([m.model for m in models])  # type: ignore[misc]
            state.update({f"mlp.{k}": v.detach().cpu() for k, v in ensemble.state_dict().items()})
            architecture.update(
                type="classifier",
                hidden=list(options.training.hidden),
                dropout=options.training.dropout,
            )
        _, names = features.build(data.observed[:1], options.features)
        architecture["n_features"] = len(names)
        path = Path(options.artifacts_dir) / f"{data.event_class}_{self.name}_{seed}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)
        return ModelCut(
            kind="weakly_supervised",
            weights=str(path),
            features=tuple(names),
            threshold=float(best["threshold"]),
            architecture=architecture,
        )

    def _sculpting(self, data, options, best, sub, decorrelation, *, seed) -> dict:  # type: ignore[no-untyped-def]
        sb, width = options.sideband_bins, options.window_bins
        bkg, xb, mb = _features(data.background, options, data.signatures)
        folds = _event_folds(xb, mb, options.n_folds, best["fold_seed"])
        if decorrelation is not None:
            xb = decorrelation(xb, mb)
        wb = ak.to_numpy(bkg["weight"]).astype(np.float64)
        inside = np.isfinite(mb) & (mb >= sub[0]) & (mb < sub[-1])
        scores = np.full(len(xb), -np.inf)
        scores[inside] = score_by_fold(best["models"], xb[inside], folds[inside])
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

    def _scores(self, x, mass, sr, sb, folds, options, seed):  # type: ignore[no-untyped-def]
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
            folds=folds[use],
        )
        scores[use] = oof
        return scores, models, {}


class CathodeMethod(_WeaklySupervised):
    """``cathode``: flow template from the SB sampled into the SR; data vs template."""

    name = "cathode"

    def _scores(self, x, mass, sr, sb, folds, options, seed):  # type: ignore[no-untyped-def]
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
            folds=np.r_[folds[sr], fold_labels(len(template), options.n_folds, seed + 2)],
        )
        scores = np.full(len(x), -np.inf)
        scores[sr] = oof[: len(x_sr)]
        scores[sb] = score_by_fold(models, x[sb], folds[sb])
        return scores, models, {"n_template": n_template}


def _members(cut: ModelCut, state: Mapping[str, torch.Tensor]) -> list:
    arch = cut.architecture
    n = int(arch["n_members"])
    if arch["classifier"] == "hgb":
        return [TreeEnsemble.from_tensors(state, f"member.{i}") for i in range(n)]
    ensemble = build_ensemble(arch)
    ensemble.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("mlp.")})
    return list(ensemble.eval())


def selection_scores(cut: ModelCut, events: ak.Array) -> np.ndarray:
    """Scores ``(n,)`` of ``events`` under an exported ``cwola``/``cathode`` selection.

    Each event goes through the search's feature pipeline and is scored by the fold model of
    its hashed fold; events the pipeline drops (missing objects, no resonance mass) score
    ``-inf``, so they never pass.

    Raises:
        ValueError: when the events' feature names differ from the trained ones.
    """
    arch = cut.architecture
    options = WeaklySupervisedOptions(
        observable=arch["observable"],
        features=arch["feature_set"],
        complete_only=arch["complete_only"],
        scale_jet_masses=arch["scale_jet_masses"],
        n_folds=max(2, int(arch["n_members"])),
    )
    _, names = features.build(events[:0], options.features)
    if tuple(names) != tuple(cut.features):
        raise ValueError(
            f"model selection '{cut.weights}': feature names differ from the trained ones "
            f"({len(names)} vs {len(cut.features)} features)"
        )
    x, mass, keep = _prepare(events, options, arch["signatures"])
    scores = np.full(len(x), -np.inf)
    if not keep.any():
        return scores
    x, mass = x[keep], mass[keep]
    folds = _event_folds(x, mass, options.n_folds, int(arch["fold_seed"]))
    state = torch.load(Path(cut.weights), map_location="cpu", weights_only=True)
    if arch["decorrelate"]:
        x = _MassDecorrelation.from_tensors(state, x.shape[1])(x, mass)
    members = _members(cut, state)
    kept = np.zeros(len(x))
    for k, member in enumerate(members):
        rows = folds == k
        if rows.any():
            kept[rows] = (
                member.score(x[rows])
                if isinstance(member, TreeEnsemble)
                else predict(member, x[rows])
            )
    scores[keep] = kept
    return scores


register_model_scorer("weakly_supervised", selection_scores)
