"""Conditional density of features given the resonance mass: the CATHODE background model.

A neural spline flow (``zuko.flows.NSF``) learns ``p(x | m)`` on side-band events, where the
signal is absent; sampled at the masses of the signal region it gives a background template
there (CATHODE, arXiv:2109.00546). Inputs are standardised inside :class:`ConditionalFlow`.
"""

from __future__ import annotations

import numpy as np
import torch
import zuko
from pydantic import BaseModel, ConfigDict, Field

from searches.ml.device import default_dtype, seeded_global_rng, select_device, torch_threads


class FlowOptions(BaseModel):
    """Size and training of the conditional flow."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    transforms: int = Field(default=3, ge=1)
    hidden: tuple[int, ...] = (32, 32)
    epochs: int = Field(default=30, ge=1)
    batch_size: int = Field(default=512, ge=8)
    learning_rate: float = Field(default=3e-3, gt=0)
    oversampling: int = Field(default=4, ge=1, description="template events per SR event")
    device: str = "auto"
    n_threads: int | None = Field(default=1, ge=1, description="torch CPU threads (None: all)")


class ConditionalFlow:
    """``p(x | m)`` for features ``x (n, d)`` and masses ``m (n,)``."""

    def __init__(self, x: np.ndarray, m: np.ndarray, *, options: FlowOptions, seed: int):
        self.x_mean, self.x_std = x.mean(0), np.where(x.std(0) > 0, x.std(0), 1.0)
        self.m_mean, self.m_std = float(m.mean()), float(m.std() or 1.0)
        self.device = select_device(options.device)  # type: ignore[arg-type]
        with seeded_global_rng(seed), default_dtype(torch.float32):
            self.flow = zuko.flows.NSF(
                features=x.shape[1],
                context=1,
                transforms=options.transforms,
                hidden_features=tuple(options.hidden),
            ).to(self.device)
        self.n_threads = options.n_threads
        with torch_threads(options.n_threads), default_dtype(torch.float32):
            self._train(x, m, options, seed)

    def _inputs(
        self, x: np.ndarray | None, m: np.ndarray
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        c = torch.as_tensor((m - self.m_mean) / self.m_std, dtype=torch.float32, device=self.device)
        if x is None:
            return None, c[:, None]
        z = torch.as_tensor((x - self.x_mean) / self.x_std, dtype=torch.float32, device=self.device)
        return z, c[:, None]

    def _train(self, x: np.ndarray, m: np.ndarray, options: FlowOptions, seed: int) -> None:
        z, c = self._inputs(x, m)
        optimiser = torch.optim.Adam(self.flow.parameters(), lr=options.learning_rate)
        generator = torch.Generator().manual_seed(seed)
        self.flow.train()
        for _ in range(options.epochs):
            order = torch.randperm(len(z), generator=generator).to(self.device)
            for start in range(0, len(order), options.batch_size):
                batch = order[start : start + options.batch_size]
                loss = -self.flow(c[batch]).log_prob(z[batch]).mean()
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
        self.flow.eval()

    @torch.no_grad()
    def log_prob(self, x: np.ndarray, m: np.ndarray) -> np.ndarray:
        """``log p(x | m)`` ``(n,)`` in standardised feature units."""
        z, c = self._inputs(x, m)
        with torch_threads(self.n_threads), default_dtype(torch.float32):
            return self.flow(c).log_prob(z).double().cpu().numpy()

    @torch.no_grad()
    def sample(self, m: np.ndarray, *, seed: int) -> np.ndarray:
        """One feature vector per mass in ``m (n,)``: array ``(n, d)``."""
        _, c = self._inputs(None, m)
        with (
            seeded_global_rng(seed, device=self.device),
            torch_threads(self.n_threads),
            default_dtype(torch.float32),
        ):
            z = self.flow(c).sample().double().cpu().numpy()
        return z * self.x_std + self.x_mean
