from __future__ import annotations

import numpy as np
import optuna
import pytest

from searches import events as event_model
from searches.methods.supervised import SupervisedMethod, SupervisedOptions, tune
from searches.ml import scorers
from searches.ml.training import TrainingOptions
from theory.testing import dijet_slice, signal_events


def test_injected_trial_runner_runs_batches():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(800, 3))
    y = (x[:, 0] + 0.5 * rng.normal(size=800) > 0).astype(float)
    batches = []

    def runner(tasks):
        batches.append(len(tasks))
        return [t.run() for t in tasks]

    options = SupervisedOptions(
        benchmark="toy",
        signal_path="unused.parquet",
        n_trials=5,
        parallel_trials=2,
        training=TrainingOptions(epochs=3, device="cpu", n_threads=1),
    )
    params, study = tune(x, y, np.ones(800), options=options, seed=1, trial_runner=runner)
    assert batches == [2, 2, 1] and len(study.trials) == 5
    assert set(params) == {"layers", "width", "learning_rate", "weight_decay", "dropout"}
    assert all(t.state != optuna.trial.TrialState.RUNNING for t in study.trials)


def test_tuning_leaves_the_callers_optuna_verbosity_alone():
    """Trials are logged at WARNING inside ``tune`` only: a user's own studies keep theirs."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 2))
    y = (x[:, 0] > 0).astype(float)
    options = SupervisedOptions(
        benchmark="toy",
        signal_path="unused.parquet",
        n_trials=1,
        training=TrainingOptions(epochs=1, device="cpu", n_threads=1),
    )
    seen = []

    def runner(tasks):
        seen.append(optuna.logging.get_verbosity())
        return [t.run() for t in tasks]

    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.DEBUG)
    try:
        tune(x, y, np.ones(200), options=options, seed=1, trial_runner=runner)
        assert optuna.logging.get_verbosity() == optuna.logging.DEBUG
    finally:
        optuna.logging.set_verbosity(before)
    assert seen == [optuna.logging.WARNING]


@pytest.mark.slow
def test_supervised_export_reload_and_reinterpretation(tmp_path):
    data, _ = dijet_slice(n_background=5_000, s_over_sqrt_b=2.0, seed=4)
    signal_path = event_model.write_parquet(signal_events()[:3000], tmp_path / "signal.parquet")
    options = SupervisedOptions(
        benchmark="x_yz:m_X=2500,m_Y=400",
        signal_path=str(signal_path),
        observable="m_j_j",
        features="substructure",
        n_trials=4,
        n_folds=2,
        artifacts_dir=str(tmp_path / "models"),
        training=TrainingOptions(epochs=4, device="cpu", n_threads=1),
    )
    (result,) = SupervisedMethod().run(data, options=options, seed=0)
    cut = result.selection.model
    assert cut is not None and cut.kind == "supervised_mlp"
    first = scorers.ensemble_scores(cut, data.observed)
    second = scorers.ensemble_scores(cut, data.observed)
    assert np.array_equal(first, second)
    restored = type(result).from_json(result.to_json())
    counts, _ = restored.selection.histogram(data.observed)
    assert np.allclose(counts, result.observed)
    new_signal = signal_events()[3000:4000]
    sig_counts, _ = restored.selection.histogram(new_signal)
    assert sig_counts.sum() > 0
