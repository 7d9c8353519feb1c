"""Supervised search for one signal benchmark: an Optuna-tuned classifier, exported for reuse.

The signal comes from simulation of the benchmark (the campaign writes it to Parquet and gives
its path: ``searches`` never imports ``theory``); the background is the class's simulated
background. Hyperparameters are tuned with Optuna (TPE sampler, median pruner on the per-epoch
validation loss). Trials are pure functions of their :class:`TrialTask`; by default they run
in-process one after another with live pruning, and a campaign may inject a ``trial_runner``
that runs batches of tasks elsewhere (Ray tasks) — those are pruned from their loss curves
when they come back.

Honest statistics: the final classifier is a k-fold ensemble. Simulated background events are
scored out of fold (the background expectation after the cut never comes from a model trained
on those events); observed data are never trained on and get the ensemble mean. The cut
threshold maximises the expected Asimov significance of the benchmark on out-of-fold scores.
The search then compares selected data with selected background in windows of the observable
(Poisson ⊗ Gaussian p-values, Šidák over windows).

The selection is exported as a :class:`~searches.result.ModelCut` of kind ``supervised_mlp``
(state dict of the ensemble, feature names, threshold) that :meth:`Selection.histogram`
applies to any new events.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import awkward as ak
import numpy as np
import optuna
from pydantic import Field

from searches import events as event_model
from searches import observables, signatures
from searches.methods.base import ClassSlice, MethodOptions
from searches.ml import features, scorers
from searches.ml.kfold import fold_labels
from searches.ml.massfit import sidak, sliding_windows
from searches.ml.search import mass_values
from searches.ml.training import EpochCallback, TrainingOptions, predict, train_classifier
from searches.progress import track
from searches.result import ModelCut, Region, SearchResult, Selection
from searches.stats.pvalues import local_pvalue
from searches.stats.workspace import build_workspace


class SupervisedOptions(MethodOptions):
    """Options of the ``supervised`` method."""

    benchmark: str = Field(description="name of the signal benchmark (model and point)")
    signal_path: str = Field(description="Parquet file of simulated benchmark signal events")
    observable: str = "minv"
    features: Literal["objects", "rmm", "substructure"] = "objects"
    n_trials: int = Field(default=12, ge=1)
    parallel_trials: int = Field(default=4, ge=1, description="trials per batch (runner)")
    n_folds: int = Field(default=3, ge=2, le=20)
    training: TrainingOptions = TrainingOptions(epochs=15)
    window_bins: int = Field(default=2, ge=1)
    background_systematic: float = Field(
        default=0.1, ge=0, lt=1, description="relative, per window"
    )
    min_background: float = Field(default=1.0, gt=0, description="weighted bkg kept by the cut")
    artifacts_dir: str | None = Field(
        default=None,
        description="where the trained selection is saved (a campaign stores it in its store; "
        "required outside a campaign)",
    )


@dataclass(frozen=True)
class TrialTask:
    """One Optuna trial as a pure function: train on fixed data with ``params``.

    ``run`` returns the per-epoch validation losses. It is picklable (arrays and plain data),
    so an executor can ship it to a worker.
    """

    number: int
    params: dict[str, Any]
    x: np.ndarray = field(repr=False)
    y: np.ndarray = field(repr=False)
    w: np.ndarray = field(repr=False)
    training: TrainingOptions
    seed: int

    def run(self, on_epoch: EpochCallback | None = None) -> tuple[float, ...]:
        options = self.training.model_copy(update=_training_update(self.params))
        _, log = train_classifier(
            self.x, self.y, weights=self.w, options=options, seed=self.seed, on_epoch=on_epoch
        )
        return log.validation_loss


TrialRunner = Callable[[Sequence[TrialTask]], list[tuple[float, ...]]]
"""Runs a batch of trial tasks (anywhere) and returns their per-epoch validation losses."""


def _training_update(params: dict[str, Any]) -> dict[str, Any]:
    return {
        "hidden": tuple([int(params["width"])] * int(params["layers"])),
        "learning_rate": float(params["learning_rate"]),
        "weight_decay": float(params["weight_decay"]),
        "dropout": float(params["dropout"]),
    }


def _suggest(trial: optuna.Trial) -> dict[str, Any]:
    return {
        "layers": trial.suggest_int("layers", 1, 3),
        "width": trial.suggest_categorical("width", [16, 32, 64]),
        "learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
        "dropout": trial.suggest_float("dropout", 0.0, 0.3),
    }


@contextlib.contextmanager
def _optuna_warnings_only() -> Iterator[None]:
    """Optuna logs every trial at INFO, which would flood a campaign's log; a caller's own
    studies keep the verbosity the caller set."""
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(previous)


@_optuna_warnings_only()
def tune(
    x: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    *,
    options: SupervisedOptions,
    seed: int,
    trial_runner: TrialRunner | None = None,
) -> tuple[dict[str, Any], optuna.Study]:
    """Optuna TPE search with median pruning; returns the best parameters and the study."""
    study = optuna.create_study(
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2),
    )
    batch = 1 if trial_runner is None else options.parallel_trials
    done = 0
    while done < options.n_trials:
        trials = [study.ask() for _ in range(min(batch, options.n_trials - done))]
        tasks = [
            TrialTask(t.number, _suggest(t), x, y, w, options.training, seed + t.number)
            for t in trials
        ]
        if trial_runner is None:
            for trial, task in zip(trials, tasks, strict=True):
                _tell_live(study, trial, task)
        else:
            for trial, curve in zip(trials, trial_runner(tasks), strict=True):
                _tell_curve(study, trial, curve)
        done += len(trials)
    best = (
        study.best_trial
        if any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
        else study.trials[0]
    )
    return dict(best.params), study


def _tell_live(study: optuna.Study, trial: optuna.Trial, task: TrialTask) -> None:
    def on_epoch(epoch: int, loss: float) -> None:
        trial.report(loss, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned()

    try:
        curve = task.run(on_epoch)
    except optuna.TrialPruned:
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        return
    study.tell(trial, min(curve))


def _tell_curve(study: optuna.Study, trial: optuna.Trial, curve: Sequence[float]) -> None:
    for epoch, loss in enumerate(curve):
        trial.report(loss, epoch)
        if trial.should_prune():
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            return
    study.tell(trial, min(curve))


def asimov_z(s: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Median discovery significance ``√(2((s+b)ln(1+s/b) − s))`` (Cowan et al. 2011)."""
    b = np.maximum(b, 1e-12)
    return np.sqrt(np.maximum(2 * ((s + b) * np.log1p(s / b) - s), 0.0))


class SupervisedMethod:
    """The ``supervised`` search method; ``trial_runner`` runs Optuna trial batches."""

    name = "supervised"
    options_model = SupervisedOptions

    def __init__(self, trial_runner: TrialRunner | None = None) -> None:
        self.trial_runner = trial_runner

    def run(self, data: ClassSlice, *, options: SupervisedOptions, seed: int) -> list[SearchResult]:
        if options.artifacts_dir is None:
            raise ValueError(
                f"supervised on {data.event_class}: option 'artifacts_dir' is not set; the "
                "trained selection must be saved (a campaign sets it to its store)"
            )
        config = signatures.SignatureConfig.model_validate(dict(data.signatures))
        signal = event_model.read_parquet(options.signal_path)
        signal = signal[signatures.class_mask(signal, data.event_class, config=config)]
        if len(signal) < 20 or len(data.background) < 20:
            raise ValueError(
                f"supervised on {data.event_class}: {len(signal)} signal and "
                f"{len(data.background)} background events in the class; need >= 20 of each"
            )
        xs, names = features.build(signal, options.features)
        xb, _ = features.build(data.background, options.features)
        ws = ak.to_numpy(signal["weight"]).astype(np.float64)
        wb = ak.to_numpy(data.background["weight"]).astype(np.float64)
        x = np.vstack([xb, xs])
        y = np.r_[np.zeros(len(xb)), np.ones(len(xs))]
        w = np.abs(np.r_[wb, ws])
        folds = fold_labels(len(x), options.n_folds, seed)
        params, study = tune(
            x[folds != 0],
            y[folds != 0],
            w[folds != 0],
            options=options,
            seed=seed,
            trial_runner=self.trial_runner,
        )
        training = options.training.model_copy(update=_training_update(params))
        oof = np.full(len(x), np.nan)
        models = []
        for k in track(range(options.n_folds), description=f"supervised {data.event_class}"):
            model, _ = train_classifier(
                x[folds != k], y[folds != k], weights=w[folds != k], options=training, seed=seed + k
            )
            oof[folds == k] = predict(model, x[folds == k])
            models.append(model)
        threshold, z_exp = self._threshold(oof[: len(xb)], wb, oof[len(xb) :], ws, options)
        path = Path(options.artifacts_dir) / f"{data.event_class}_supervised_{seed}.pt"
        scorers.save_ensemble(models, path)
        cut = ModelCut(
            kind="supervised_mlp",
            weights=str(path),
            features=names,
            threshold=threshold,
            architecture={
                "type": "classifier",
                "n_features": len(names),
                "hidden": list(training.hidden),
                "dropout": training.dropout,
                "n_members": len(models),
                "feature_set": options.features,
            },
        )
        observed_scores = scorers.ensemble_scores(cut, data.observed)
        return [
            self._search(
                data,
                options,
                cut,
                observed_scores,
                oof[: len(xb)],
                wb,
                config,
                details={
                    "benchmark": options.benchmark,
                    "best_params": params,
                    "n_trials": len(study.trials),
                    "n_pruned": sum(
                        t.state == optuna.trial.TrialState.PRUNED for t in study.trials
                    ),
                    "expected_significance": z_exp,
                    "signal_efficiency": float(ws[oof[len(xb) :] >= threshold].sum() / ws.sum()),
                    "background_efficiency": float(
                        wb[oof[: len(xb)] >= threshold].sum() / wb.sum()
                    ),
                },
            )
        ]

    @staticmethod
    def _threshold(
        sb: np.ndarray, wb: np.ndarray, ss: np.ndarray, ws: np.ndarray, options: SupervisedOptions
    ) -> tuple[float, float]:
        candidates = np.unique(np.quantile(sb, np.linspace(0.0, 0.9999, 400)))
        b = np.array([wb[sb >= c].sum() for c in candidates])
        s = np.array([ws[ss >= c].sum() for c in candidates])
        z = np.where(b >= options.min_background, asimov_z(s, b), -1.0)
        i = int(np.argmax(z))
        return float(candidates[i]), float(z[i])

    def _search(self, data, options, cut, observed_scores, bkg_scores, wb, config, *, details):  # type: ignore[no-untyped-def]
        mass_obs = mass_values(data.observed, options.observable, data.signatures)
        mass_bkg = mass_values(data.background, options.observable, data.signatures)
        keep_b = (bkg_scores >= cut.threshold) & np.isfinite(mass_bkg)
        keep_o = (observed_scores >= cut.threshold) & np.isfinite(mass_obs)
        edges = observables.edges_for(
            options.observable, mass_bkg[keep_b], wb[keep_b], min_expected=1.0, width_in_sigma=2.0
        )
        wo = ak.to_numpy(data.observed["weight"]).astype(np.float64)
        observed, _ = np.histogram(mass_obs[keep_o], bins=edges, weights=wo[keep_o])
        expected, _ = np.histogram(mass_bkg[keep_b], bins=edges, weights=wb[keep_b])
        sumw2, _ = np.histogram(mass_bkg[keep_b], bins=edges, weights=wb[keep_b] ** 2)
        windows = sliding_windows(len(expected), options.window_bins, margin=0) or [
            (0, len(expected))
        ]
        n = np.array([observed[a:b].sum() for a, b in windows])
        bexp = np.array([expected[a:b].sum() for a, b in windows])
        sigma = np.sqrt(
            np.array([sumw2[a:b].sum() for a, b in windows])
            + (options.background_systematic * bexp) ** 2
        )
        p = np.where(n >= bexp, local_pvalue(n, np.maximum(bexp, 0.0), sigma), 1.0)
        i = int(np.argmin(p))
        a, b = windows[i]
        uncertainty = np.sqrt(sumw2 + (options.background_systematic * expected) ** 2)
        region = Region(
            a,
            b,
            float(edges[a]),
            float(edges[b]),
            float(n[i]),
            float(bexp[i]),
            float(sigma[i]),
            float(p[i]),
        )
        name = f"{data.event_class}_supervised_{options.observable}".replace("+", "plus")
        return SearchResult(
            event_class=data.event_class,
            method=self.name,
            observable=options.observable,
            edges=tuple(float(e) for e in edges),
            observed=tuple(float(o) for o in observed),
            expected=tuple(float(e) for e in expected),
            uncertainty=tuple(float(u) for u in uncertainty),
            region=region,
            p_local=float(p[i]),
            p_tilde=sidak(float(p[i]), len(windows)),
            workspace=build_workspace(
                observed=observed,
                expected=expected,
                sumw2=sumw2,
                syst=options.background_systematic,
                channel=name,
            ),
            selection=Selection(
                event_class=data.event_class,
                signatures=dict(data.signatures),
                observable=options.observable,
                edges=tuple(float(e) for e in edges),
                model=cut,
            ),
            details={"n_tests": len(windows), **details},
        )
