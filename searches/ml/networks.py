"""Small fully connected networks that carry their own input standardisation.

The feature means and widths are buffers of the network, so one state dict (saved with
:func:`save_state`, loaded with ``torch.load(..., weights_only=True)``) plus the architecture
dict rebuilds a model that scores raw features exactly as the trained one did.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from searches.ml.device import default_dtype

ARCHITECTURES = ("classifier", "autoencoder")


class Standardize(nn.Module):
    """``(x - mean) / scale`` with statistics stored as buffers; shapes ``(..., d)``."""

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("scale", torch.ones(n_features))

    def fit(self, x: np.ndarray) -> Standardize:
        """Set the statistics from training features ``x`` of shape ``(n, d)``."""
        mean = np.mean(x, axis=0)
        scale = np.std(x, axis=0)
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.scale.copy_(torch.as_tensor(np.where(scale > 0, scale, 1.0), dtype=torch.float32))
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.scale


def _mlp(sizes: Sequence[int], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class Classifier(nn.Module):
    """Binary classifier: features ``(n, d)`` → logits ``(n,)``."""

    def __init__(self, n_features: int, hidden: Sequence[int] = (64, 64), dropout: float = 0.0):
        super().__init__()
        self.standardize = Standardize(n_features)
        self.body = _mlp([n_features, *hidden, 1], dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.standardize(x)).squeeze(-1)


class AutoEncoder(nn.Module):
    """Autoencoder on standardised features: ``(n, d)`` → reconstruction ``(n, d)``.

    The anomaly score is the mean squared reconstruction error in standardised units
    (:meth:`score`), so every feature counts on the same scale.
    """

    def __init__(self, n_features: int, hidden: Sequence[int] = (32,), latent: int = 3):
        super().__init__()
        self.standardize = Standardize(n_features)
        self.encoder = _mlp([n_features, *hidden, latent], 0.0)
        self.decoder = _mlp([latent, *reversed(hidden), n_features], 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.standardize(x)
        return self.decoder(torch.relu(self.encoder(z)))

    def loss_terms(self, x: torch.Tensor) -> torch.Tensor:
        """Per-event reconstruction error ``(n,)`` in standardised units."""
        z = self.standardize(x)
        return ((self.decoder(torch.relu(self.encoder(z))) - z) ** 2).mean(dim=-1)


def build_network(architecture: Mapping[str, Any]) -> nn.Module:
    """Rebuild a network from its architecture dict (``{"type": ..., "n_features": ...}``).

    Raises:
        ValueError: naming the field when the type is unknown or a field is missing.
    """
    kind = architecture.get("type")
    if kind not in ARCHITECTURES:
        raise ValueError(
            f"architecture field 'type': {kind!r} not allowed; allowed: {', '.join(ARCHITECTURES)}"
        )
    if "n_features" not in architecture:
        raise ValueError("architecture field 'n_features': missing")
    n = int(architecture["n_features"])
    with default_dtype(torch.float32):
        if kind == "classifier":
            return Classifier(
                n,
                hidden=tuple(architecture.get("hidden", (64, 64))),
                dropout=float(architecture.get("dropout", 0.0)),
            )
        return AutoEncoder(
            n,
            hidden=tuple(architecture.get("hidden", (32,))),
            latent=int(architecture.get("latent", 3)),
        )


def save_state(module: nn.Module, path: str | os.PathLike[str]) -> Path:
    """Write the module's state dict (tensors only, CPU) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_state(architecture: Mapping[str, Any], path: str | os.PathLike[str]) -> nn.Module:
    """Rebuild the network of ``architecture`` and load ``path`` with ``weights_only=True``."""
    module = build_network(architecture)
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    module.load_state_dict(state)
    return module.eval()


def build_ensemble(architecture: Mapping[str, Any]) -> nn.ModuleList:
    """``architecture["n_members"]`` networks of one architecture (the fold models)."""
    n = int(architecture.get("n_members", 1))
    if n < 1:
        raise ValueError(f"architecture field 'n_members': {n}; allowed: >= 1")
    return nn.ModuleList([build_network(architecture) for _ in range(n)])


def load_ensemble(architecture: Mapping[str, Any], path: str | os.PathLike[str]) -> nn.ModuleList:
    """Rebuild an ensemble and load its state dict (``weights_only=True``)."""
    ensemble = build_ensemble(architecture)
    ensemble.load_state_dict(torch.load(Path(path), map_location="cpu", weights_only=True))
    return ensemble.eval()
