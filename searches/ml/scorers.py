"""Model scorers for :class:`searches.result.ModelCut`, registered on import.

A trained ML selection is stored as an ensemble state dict (one network per fold) plus an
architecture dict naming the feature set. New events — never seen in training — are scored by
the mean of the ensemble, which is what reinterpretation applies.

Registered kinds: ``autoencoder`` (reconstruction error) and ``supervised_mlp`` (classifier
probability). The ``cwola``/``cathode`` selections (kind ``weakly_supervised``) score each event
with one fold model through their own feature pipeline; their scorer lives with them in
:mod:`searches.methods.weakly_supervised`.
"""

from __future__ import annotations

import os
from pathlib import Path

import awkward as ak
import numpy as np
from torch import nn

from searches.ml import features
from searches.ml.networks import load_ensemble, save_state
from searches.ml.training import predict
from searches.result import ModelCut, register_model_scorer

KINDS = ("autoencoder", "supervised_mlp")


def save_ensemble(models: list[nn.Module], path: str | os.PathLike[str]) -> Path:
    """Save fold models as one state dict (keys ``<member>.<parameter>``)."""
    return save_state(nn.ModuleList(models), path)


def ensemble_scores(cut: ModelCut, events: ak.Array) -> np.ndarray:
    """Mean ensemble score ``(n,)`` of ``events`` for a stored ML selection.

    Raises:
        ValueError: when the events lack the features the model was trained on.
    """
    x, names = features.build(events, str(cut.architecture["feature_set"]))
    if tuple(names) != tuple(cut.features):
        raise ValueError(
            f"model selection '{cut.weights}': feature names differ from the trained ones "
            f"({len(names)} vs {len(cut.features)} features)"
        )
    ensemble = load_ensemble(cut.architecture, cut.weights)
    return np.mean([predict(member, x) for member in ensemble], axis=0)


for _kind in KINDS:
    register_model_scorer(_kind, ensemble_scores)
