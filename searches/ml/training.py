"""Deterministic training loops for the classifier and the autoencoder.

A fraction of the *training* events is held out to pick the best epoch (the state with the
lowest validation loss is kept); events outside the training set are never touched, so the
out-of-fold guarantee of :mod:`searches.ml.kfold` holds. Everything random (initial weights,
the validation split, batch order, dropout masks) comes from ``seed``.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from searches.ml.device import (
    DevicePreference,
    Precision,
    autocast,
    default_dtype,
    seeded_global_rng,
    select_device,
    torch_threads,
)
from searches.ml.networks import AutoEncoder, Classifier

EpochCallback = Callable[[int, float], None]
"""Called after each epoch with ``(epoch, validation_loss)``; may raise to stop (pruning)."""


class TrainingOptions(BaseModel):
    """How a network is trained (shared by all ML methods; part of their options)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hidden: tuple[int, ...] = Field(default=(64, 64), description="hidden layer widths")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    latent: int = Field(default=3, ge=1, description="autoencoder bottleneck width")
    epochs: int = Field(default=20, ge=1, le=10_000)
    batch_size: int = Field(default=512, ge=8)
    learning_rate: float = Field(default=1e-3, gt=0.0)
    weight_decay: float = Field(default=0.0, ge=0.0)
    validation_fraction: float = Field(default=0.2, gt=0.0, lt=0.9)
    device: DevicePreference = "auto"
    precision: Precision = "auto"
    n_threads: int | None = Field(default=None, ge=1, description="torch CPU threads")


@dataclass(frozen=True)
class TrainingLog:
    """What a training run did: per-epoch validation losses, best epoch, events/s, device."""

    validation_loss: tuple[float, ...]
    best_epoch: int
    events_per_second: float
    device: str


def _split(n: int, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    order = rng.permutation(n)
    n_val = max(1, round(fraction * n))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def _fit(
    model: torch.nn.Module,
    loss_fn: Callable[[torch.nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    x: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    *,
    options: TrainingOptions,
    seed: int,
    on_epoch: EpochCallback | None,
) -> tuple[torch.nn.Module, TrainingLog]:
    with torch_threads(options.n_threads), default_dtype(torch.float32):
        return _fit_unthreaded(
            model, loss_fn, x, y, w, options=options, seed=seed, on_epoch=on_epoch
        )


def _fit_unthreaded(
    model: torch.nn.Module,
    loss_fn: Callable[[torch.nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    x: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    *,
    options: TrainingOptions,
    seed: int,
    on_epoch: EpochCallback | None,
) -> tuple[torch.nn.Module, TrainingLog]:
    device = select_device(options.device)
    rng = np.random.default_rng(seed)
    train, val = _split(len(x), options.validation_fraction, rng)
    model.standardize.fit(x[train])
    model.to(device)
    tensors = [torch.as_tensor(a, dtype=torch.float32, device=device) for a in (x, y, w)]
    xt, yt, wt = (t[torch.as_tensor(train, device=device)] for t in tensors)
    xv, yv, wv = (t[torch.as_tensor(val, device=device)] for t in tensors)
    optimiser = torch.optim.AdamW(
        model.parameters(), lr=options.learning_rate, weight_decay=options.weight_decay
    )
    generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
    best, best_loss, losses = copy.deepcopy(model.state_dict()), float("inf"), []
    best_epoch, seen, started = 0, 0, time.perf_counter()
    with seeded_global_rng(int(rng.integers(2**62)), device=device):
        for epoch in range(options.epochs):
            model.train()
            order = torch.randperm(len(xt), generator=generator).to(device)
            for start in range(0, len(order), options.batch_size):
                batch = order[start : start + options.batch_size]
                with autocast(device, options.precision):
                    loss = loss_fn(model, xt[batch], yt[batch], wt[batch])
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                seen += len(batch)
            model.eval()
            with torch.no_grad(), autocast(device, options.precision):
                val_loss = float(loss_fn(model, xv, yv, wv))
            losses.append(val_loss)
            if val_loss < best_loss:
                best_loss, best_epoch = val_loss, epoch
                best = copy.deepcopy(model.state_dict())
            if on_epoch is not None:
                on_epoch(epoch, val_loss)
    elapsed = max(time.perf_counter() - started, 1e-9)
    model.load_state_dict(best)
    model.eval()
    log = TrainingLog(tuple(losses), best_epoch, seen / elapsed, str(device))
    return model.cpu(), log


def _classifier_loss(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor
) -> torch.Tensor:
    logits = model(x).float()
    terms = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")
    return (terms * w).sum() / w.sum()


def _autoencoder_loss(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor
) -> torch.Tensor:
    return (model.loss_terms(x).float() * w).sum() / w.sum()


def balanced_weights(y: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Per-event weights ``(n,)`` that give both classes equal total weight (mean 1)."""
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=np.float64)
    out = np.empty(len(y))
    for label in (0, 1):
        mask = y == label
        total = w[mask].sum()
        out[mask] = w[mask] / total * 0.5 * len(y) if total > 0 else 0.0
    return out


def train_classifier(
    x: np.ndarray,
    y: np.ndarray,
    *,
    weights: np.ndarray | None = None,
    options: TrainingOptions,
    seed: int,
    on_epoch: EpochCallback | None = None,
) -> tuple[Classifier, TrainingLog]:
    """Train a binary classifier on features ``x (n, d)`` and labels ``y (n,)`` in {0, 1}.

    Classes are balanced (:func:`balanced_weights`) so the score is a monotonic function of the
    likelihood ratio whatever the sample sizes.
    """
    y = np.asarray(y, dtype=np.float64)
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("train_classifier: labels 'y' must be 0 or 1")
    with seeded_global_rng(seed), default_dtype(torch.float32):
        model = Classifier(x.shape[1], hidden=options.hidden, dropout=options.dropout)
    return _fit(
        model,
        _classifier_loss,
        x,
        y,
        balanced_weights(y, weights),
        options=options,
        seed=seed,
        on_epoch=on_epoch,
    )


def train_autoencoder(
    x: np.ndarray,
    *,
    weights: np.ndarray | None = None,
    options: TrainingOptions,
    seed: int,
    on_epoch: EpochCallback | None = None,
) -> tuple[AutoEncoder, TrainingLog]:
    """Train an autoencoder on features ``x (n, d)`` (optionally event-weighted)."""
    w = np.ones(len(x)) if weights is None else np.abs(np.asarray(weights, dtype=np.float64))
    with seeded_global_rng(seed), default_dtype(torch.float32):
        model = AutoEncoder(x.shape[1], hidden=options.hidden, latent=options.latent)
    return _fit(
        model,
        _autoencoder_loss,
        x,
        np.zeros(len(x)),
        w,
        options=options,
        seed=seed,
        on_epoch=on_epoch,
    )


@torch.no_grad()
def predict(model: torch.nn.Module, x: np.ndarray, *, batch_size: int = 65_536) -> np.ndarray:
    """Scores ``(n,)``: classifier probability, or autoencoder reconstruction error (CPU, fp32)."""
    model = model.cpu().eval()
    out = []
    for start in range(0, len(x), batch_size):
        xb = torch.as_tensor(x[start : start + batch_size], dtype=torch.float32)
        if isinstance(model, AutoEncoder):
            out.append(model.loss_terms(xb))
        else:
            out.append(torch.sigmoid(model(xb)))
    if not out:
        return np.zeros(0)
    return torch.cat(out).double().numpy()
