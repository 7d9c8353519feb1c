from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from searches.methods.weakly_supervised import (
    CathodeMethod,
    CwolaMethod,
    WeaklySupervisedOptions,
    _features,
    _MassDecorrelation,
    selection_scores,
)
from searches.ml.search import spectrum_edges
from searches.result import SearchResult
from theory.testing import M_X, dijet_slice, signal_events

FAST = {"n_folds": 3, "max_iter": 50, "mass_range": (0.7 * M_X, 1.3 * M_X)}
FLOW = {"epochs": 10, "oversampling": 2}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "seeds"), [(CwolaMethod(), (1, 2, 3, 4, 5)), (CathodeMethod(), (1, 2, 3, 4, 5))]
)
def test_finds_injected_resonance_at_the_right_mass(method, seeds, tmp_path):
    """X(2500) at S/sqrt(B) = 2 is found at the right mass, without sculpting.

    One run's local significance varies with the random fold assignment and, for CATHODE, the
    flow's training (CWoLa on this dataset, seeds 1-8: z = 2.6-6.0, mean 4.3, the same with
    permutation folds; CATHODE with zuko 1.6 and scikit-learn 1.9, seeds 1-5: z = 2.86, 2.34,
    4.02, 4.51, 3.99), so both are held to the median of five seeds. CATHODE was held to seed 1
    alone until a fresh install brought these versions.
    """
    data, n_signal = dijet_slice(n_background=30_000, s_over_sqrt_b=2.0, seed=1)
    assert n_signal > 0
    options = WeaklySupervisedOptions(
        **FAST, flow=FLOW, sculpting_check=True, artifacts_dir=str(tmp_path)
    )
    results = [method.run(data, options=options, seed=seed)[0] for seed in seeds]
    assert np.median([r.z_local for r in results]) >= 3.0
    at_mass = [r.region.low <= M_X * 1.05 and r.region.high >= M_X * 0.95 for r in results]
    assert sum(at_mass) > len(results) / 2
    # The same selection applied to independent simulated background creates no bump.
    assert all(r.details["sculpting"]["z"] < 3.0 for r in results)
    result = max(results, key=lambda r: r.z_local)
    assert result.selection.observable == "m_j_j"

    # Reinterpretation: the exported selection, read back from JSON and its weights file
    # (weights_only), selects exactly the search's events from the search's own data ...
    selection = SearchResult.from_json(result.to_json()).selection
    assert selection.model is not None and selection.model.kind == "weakly_supervised"
    counts, _ = selection.histogram(data.observed)
    assert np.array_equal(counts, np.asarray(result.observed))
    scores = selection_scores(selection.model, data.observed)
    assert np.array_equal(scores, selection_scores(selection.model, data.observed))

    # ... and applied to new events it keeps signal far more often than background.
    def efficiency(events):
        kept, _ = selection.histogram(events)
        every, _ = replace(selection, model=None).histogram(events)
        return kept.sum() / every.sum()

    signal, background = efficiency(signal_events()), efficiency(data.background)
    assert signal > 3.0 * background
    with pytest.raises(ValueError, match="feature names differ"):
        selection_scores(replace(selection.model, features=("m_j1",)), data.observed)


def _null_p_tilde(method, options: WeaklySupervisedOptions, n_background: int) -> np.ndarray:
    p_tilde = []
    for seed in range(20):
        data, _ = dijet_slice(n_background=n_background, s_over_sqrt_b=0.0, seed=100 + seed)
        (result,) = method.run(data, options=options, seed=seed)
        p_tilde.append(result.p_tilde)
    return np.array(p_tilde)


@pytest.mark.slow
def test_cwola_without_injection_stays_within_look_elsewhere_expectation():
    """20 background-only pseudo-datasets: the Šidák-corrected p is uniform or conservative,
    so p_tilde < 0.05 happens in at most 3 of them (P = 1.6 % for a uniform p). Without the
    mass decorrelation at least 7 of 20 fail here (the classifier learns the dijet mass)."""
    options = WeaklySupervisedOptions(**FAST, sculpting_check=False)
    p_tilde = _null_p_tilde(CwolaMethod(), options, n_background=12_000)
    assert np.sum(p_tilde < 0.05) <= 3


@pytest.mark.slow
def test_cathode_without_injection_stays_within_look_elsewhere_expectation():
    """As for CWoLa, with one signal-region window per pseudo-dataset (one flow each) to keep
    20 flow trainings within the test budget."""
    options = WeaklySupervisedOptions(
        **{**FAST, "mass_range": (0.9 * M_X, 1.2 * M_X)},
        flow={"epochs": 5, "oversampling": 2},
        sculpting_check=False,
    )
    p_tilde = _null_p_tilde(CathodeMethod(), options, n_background=12_000)
    assert np.sum(p_tilde < 0.05) <= 3


def test_decorrelated_features_are_flat_in_mass():
    data, _ = dijet_slice(n_background=6_000, s_over_sqrt_b=0.0, seed=7)
    options = WeaklySupervisedOptions()
    _, x, mass = _features(data.observed, options, data.signatures)
    edges = spectrum_edges(mass, options.observable)
    u = _MassDecorrelation(x, mass, edges)(x, mass)
    assert np.all((u > 0) & (u < 1))
    low, high = mass < np.median(mass), mass >= np.median(mass)
    assert np.allclose(np.median(u[low], axis=0), 0.5, atol=0.05)
    assert np.allclose(np.median(u[high], axis=0), 0.5, atol=0.05)


@pytest.mark.slow
def test_exported_mlp_selection_reproduces_the_search(tmp_path):
    """The MLP variant of the export (state dicts instead of tree arrays)."""
    data, _ = dijet_slice(n_background=8_000, s_over_sqrt_b=2.0, seed=1)
    options = WeaklySupervisedOptions(
        n_folds=3,
        mass_range=(0.8 * M_X, 1.2 * M_X),
        classifier="mlp",
        training={"hidden": (16,), "epochs": 2},
        sculpting_check=False,
        min_window_events=50,
        min_selected=20,
        artifacts_dir=str(tmp_path),
    )
    (result,) = CwolaMethod().run(data, options=options, seed=2)
    assert result.selection.model.architecture["classifier"] == "mlp"
    counts, _ = SearchResult.from_json(result.to_json()).selection.histogram(data.observed)
    assert np.array_equal(counts, np.asarray(result.observed))
    assert counts.sum() > 0
