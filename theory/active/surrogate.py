"""Gaussian-process surrogates of the latent (transformed) CLs on unit-cube inputs.

Two back ends behind one small interface (:class:`Surrogate`):

* ``exact`` — BoTorch ``SingleTaskGP`` per output (independent outputs, each with its own
  hyperparameters) with a scaled Matérn-5/2 kernel, fitted by type-II maximum likelihood.
  Exact inference costs O(n³), which is fine up to about a thousand points.
* ``sparse`` — a stochastic variational GP (gpytorch ``ApproximateGP``) with learned inducing
  points, its variational distribution fitted by natural gradients. Memory and time scale as
  O(n m²) with m inducing points, so many thousands of evaluated points fit in a few hundred MB.

Observed and expected CLs are modelled together as independent outputs: they share inputs but
their contours differ by the data fluctuation, so forcing a shared kernel buys little.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import gpytorch
import numpy as np
import torch
from botorch.exceptions.errors import ModelFittingError
from botorch.exceptions.warnings import BotorchWarning, InputDataWarning, OptimizationWarning
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from gpytorch.mlls import ExactMarginalLogLikelihood, VariationalELBO
from gpytorch.utils.warnings import GPInputWarning, NumericalWarning

from searches.ml.device import default_dtype, seeded_global_rng, torch_threads

Backend = Literal["auto", "exact", "sparse"]
_CHUNK = 1024
_QUIET = (OptimizationWarning, BotorchWarning, InputDataWarning, NumericalWarning, GPInputWarning)
_LOG = logging.getLogger(__name__)
MATERN = "matern-5/2"
FALLBACK = "botorch-default"


@contextmanager
def _torch_state(threads: int | None) -> Iterator[None]:
    """Fit and predict in float64 with ``threads`` intra-op threads, whatever the process has.

    GP algebra on a few hundred points is dominated by per-call overhead; extra threads only
    add synchronisation, which on a loaded machine made fits ten times slower in our
    measurements (``None`` leaves torch's setting). The data tensors are float64 already, but
    gpytorch builds constraint bounds and prior parameters in the default dtype (under float32
    the noise floor 1e-4 became 9.9999997e-5), so a process with a float64 default (as BoTorch
    users set it) fitted another GP than one with torch's float32 default.
    """
    with torch_threads(threads), default_dtype(torch.float64):
        yield


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence the numerical chatter of fitting (jitter added, optimiser stopped early)."""
    with warnings.catch_warnings():
        for category in _QUIET:
            warnings.simplefilter("ignore", category)
        yield


class _SVGP(gpytorch.models.ApproximateGP):
    def __init__(self, inducing: torch.Tensor) -> None:
        distribution = gpytorch.variational.NaturalVariationalDistribution(inducing.shape[0])
        strategy = gpytorch.variational.VariationalStrategy(
            self, inducing, distribution, learn_inducing_locations=True
        )
        super().__init__(strategy)
        self.mean_module = gpytorch.means.ConstantMean()
        self.covar_module = matern_kernel(inducing.shape[1])
        self.covar_module.base_kernel.lengthscale = 0.2

    def forward(self, x: torch.Tensor) -> gpytorch.distributions.MultivariateNormal:
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


@dataclass(frozen=True)
class _Output:
    """One fitted output: a model plus the affine map from its scale to the latent scale.

    ``fallback_reason`` says why BoTorch's default kernel was fitted instead of the Matérn one
    (empty when the Matérn fit succeeded).
    """

    model: torch.nn.Module
    likelihood: gpytorch.likelihoods.GaussianLikelihood | None
    offset: float
    scale: float
    noise: float
    fallback_reason: str = ""

    @property
    def kernel(self) -> str:
        """:data:`MATERN`, or :data:`FALLBACK` where every Matérn fit failed."""
        return FALLBACK if self.fallback_reason else MATERN


@dataclass(frozen=True)
class Surrogate:
    """A fitted GP surrogate with ``m`` independent outputs on unit-cube inputs.

    Attributes:
        backend: ``"exact"`` or ``"sparse"``.
        outputs: one fitted model per output (output 0 carries the label by convention).
        n_train: number of training points.
        threads: torch threads used when predicting (see :func:`_torch_state`).
    """

    backend: str
    outputs: tuple[_Output, ...]
    n_train: int
    threads: int | None = 1

    @property
    def n_outputs(self) -> int:
        return len(self.outputs)

    @property
    def kernels(self) -> tuple[str, ...]:
        """Kernel fitted for each output: :data:`MATERN`, or :data:`FALLBACK` where it failed."""
        return tuple(out.kernel for out in self.outputs)

    def noise(self, output: int = 0) -> float:
        """Observation-noise variance of ``output`` on the latent scale."""
        return self.outputs[output].noise

    def _mvn(self, out: _Output, x: torch.Tensor) -> gpytorch.distributions.MultivariateNormal:
        if self.backend == "exact":
            return out.model.posterior(x).mvn
        return out.model(x)

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior marginals of the latent function (no observation noise).

        Args:
            x: (n, d) unit-cube points.

        Returns:
            ``(mean, var)``, each of shape (n, m).
        """
        x_t = torch.as_tensor(np.asarray(x, dtype=float), dtype=torch.float64)
        means = np.empty((x_t.shape[0], self.n_outputs))
        variances = np.empty_like(means)
        with torch.no_grad(), _quiet(), _torch_state(self.threads):
            for j, out in enumerate(self.outputs):
                for start in range(0, x_t.shape[0], _CHUNK):
                    mvn = self._mvn(out, x_t[start : start + _CHUNK])
                    sl = slice(start, start + _CHUNK)
                    means[sl, j] = out.offset + out.scale * mvn.mean.numpy()
                    variances[sl, j] = out.scale**2 * mvn.variance.clamp_min(1e-12).numpy()
        return means, variances

    def joint(self, x: np.ndarray, *, output: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Joint posterior of the latent function at ``x`` for one output.

        Args:
            x: (n, d) unit-cube points; n up to a few thousand (dense n x n covariance).
            output: which output.

        Returns:
            ``(mean, cov)`` with shapes (n,) and (n, n).
        """
        out = self.outputs[output]
        x_t = torch.as_tensor(np.asarray(x, dtype=float), dtype=torch.float64)
        with torch.no_grad(), _quiet(), _torch_state(self.threads):
            mvn = self._mvn(out, x_t)
            mean = out.offset + out.scale * mvn.mean.numpy()
            cov = out.scale**2 * mvn.covariance_matrix.numpy()
        return mean, cov


def matern_kernel(d: int) -> gpytorch.kernels.Kernel:
    """Scaled Matérn-5/2 kernel with one lengthscale per input.

    A transformed CLs is smooth within one search's reach but kinks where the most sensitive
    search changes, and saturates deep inside the excluded region. Matérn-5/2 (twice
    differentiable) follows such surfaces better than BoTorch's default squared-exponential
    kernel, whose infinitely smooth samples over-extrapolate from one side of a kink. On the
    sbottom pools of ``benchmarks/bench_active.py`` (regions A and C, same seeds) it lowered the
    median evaluations to ≤ 2 % misclassified for both misclassification and information gain,
    most for information gain in A (60 → 43; RESULTS.md).
    """
    return gpytorch.kernels.ScaleKernel(gpytorch.kernels.MaternKernel(nu=2.5, ard_num_dims=d))


def _gp(
    x: torch.Tensor, y: torch.Tensor, *, maxiter: int, kernel: gpytorch.kernels.Kernel | None
) -> SingleTaskGP:
    model = SingleTaskGP(x, y.unsqueeze(-1), covar_module=kernel)
    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    fit_gpytorch_mll(mll, optimizer_kwargs={"options": {"maxiter": maxiter}})
    return model


def _fit_exact(x: torch.Tensor, y: torch.Tensor, *, maxiter: int) -> _Output:
    """Fit with the Matérn kernel, or with BoTorch's default kernel if every attempt fails.

    The fallback keeps a campaign going, but its proposals then come from another model, so it
    is logged and recorded on the output (:attr:`Surrogate.kernels`), never silent.
    """
    reason = ""
    try:
        model = _gp(x, y, maxiter=maxiter, kernel=matern_kernel(x.shape[1]))
    except ModelFittingError as problem:
        reason = f"Matérn-5/2 fit failed on {x.shape[0]} points: {problem}"
        _LOG.warning("GP surrogate: %s; fitting BoTorch's default kernel instead", reason)
        model = _gp(x, y, maxiter=maxiter, kernel=None)
    model.eval()
    stdv = float(model.outcome_transform.stdvs.squeeze())
    noise = float(model.likelihood.noise.detach().squeeze()) * stdv**2
    return _Output(
        model=model,
        likelihood=None,
        offset=0.0,
        scale=1.0,
        noise=noise,
        fallback_reason=reason,
    )


def _fit_sparse(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    generator: torch.Generator,
    num_inducing: int,
    iterations: int,
    batch: int,
) -> _Output:
    """Fit one sparse output: natural-gradient steps for the variational distribution, Adam for
    the kernel, the inducing locations and the noise.

    With Adam on every parameter and a squared-exponential kernel (the first version), 300
    steps left the fit unconverged: on 5,000 noisy points of the sbottom-like toy 1.7–1.8 % of
    fresh points were mislabelled, 1,000 steps brought that to 1.0 % at 3.3 times the cost,
    and 512 instead of 256 inducing points only to 1.5 %. Natural gradients reach 0.9 % in the
    same 300 steps, and the exact back end's Matérn-5/2 kernel 0.5–0.7 % (RESULTS.md,
    "Surrogate scaling").
    """
    offset = float(y.mean())
    scale = float(y.std()) if y.numel() > 1 and float(y.std()) > 0 else 1.0
    target = (y - offset) / scale
    pick = torch.randperm(x.shape[0], generator=generator)[: min(num_inducing, x.shape[0])]
    model = _SVGP(x[pick].clone()).double()
    likelihood = gpytorch.likelihoods.GaussianLikelihood().double()
    likelihood.noise = 1e-3
    model.train()
    likelihood.train()
    mll = VariationalELBO(likelihood, model, num_data=x.shape[0])
    optimizers = (
        gpytorch.optim.NGD(model.variational_parameters(), num_data=x.shape[0], lr=0.1),
        torch.optim.Adam([*model.hyperparameters(), *likelihood.parameters()], lr=0.05),
    )
    n = x.shape[0]
    for _ in range(iterations):
        if n > batch:
            rows = torch.randperm(n, generator=generator)[:batch]
            xb, yb = x[rows], target[rows]
        else:
            xb, yb = x, target
        for optimizer in optimizers:
            optimizer.zero_grad()
        loss = -mll(model(xb), yb)
        loss.backward()
        for optimizer in optimizers:
            optimizer.step()
    model.eval()
    likelihood.eval()
    noise = float(likelihood.noise.detach().squeeze()) * scale**2
    return _Output(model=model, likelihood=likelihood, offset=offset, scale=scale, noise=noise)


def fit_surrogate(
    x: np.ndarray,
    y: np.ndarray,
    *,
    seed: int,
    backend: Backend = "auto",
    exact_max: int = 1000,
    num_inducing: int = 256,
    iterations: int = 300,
    batch: int = 1024,
    maxiter: int = 200,
    threads: int | None = 1,
) -> Surrogate:
    """Fit one independent GP per output column of ``y``.

    The result depends only on ``(x, y, seed)`` and the options, which is what lets the active
    learner's proposals be replayed from a stored history.

    Args:
        x: (n, d) training inputs in the unit cube.
        y: (n,) or (n, m) latent targets (e.g. probit CLs); column 0 is the label output. NaN
            marks a value that is unknown (an evaluation that gave the observed CLs but not
            the expected one, say): each output is fitted on the rows where it is known.
        seed: seeds torch for the fit (hyperparameter restarts, inducing points, minibatches).
        backend: ``"exact"``, ``"sparse"``, or ``"auto"`` (exact up to ``exact_max`` points).
        exact_max: largest training set fitted exactly under ``"auto"``.
        num_inducing: inducing points of the sparse back end.
        iterations: optimisation steps of the sparse back end.
        batch: minibatch size of the sparse back end (full batch below it).
        maxiter: L-BFGS iterations of the exact back end.
        threads: torch threads while fitting and predicting (None: leave torch's setting).

    Returns:
        A fitted :class:`Surrogate`.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if y.ndim == 1:
        y = y[:, None]
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(
            f"x must be (n, d) and y (n,) or (n, m) with n ≥ 1; got {x.shape}, {y.shape}"
        )
    known = ~np.isnan(y)
    if not (np.isfinite(x).all() and np.isfinite(y[known]).all() and known.any(axis=0).all()):
        raise ValueError("x must be finite, and y finite or NaN with a value in every column")
    if backend not in ("auto", "exact", "sparse"):
        raise ValueError(f"backend={backend!r}; allowed values: auto, exact, sparse")
    chosen = backend if backend != "auto" else ("exact" if x.shape[0] <= exact_max else "sparse")
    x_t = torch.as_tensor(x, dtype=torch.float64)
    outputs = []
    with seeded_global_rng(seed), _quiet(), _torch_state(threads):
        generator = torch.Generator().manual_seed(seed)
        for j in range(y.shape[1]):
            rows = torch.as_tensor(known[:, j])
            x_j = x_t[rows]
            y_t = torch.as_tensor(y[known[:, j], j], dtype=torch.float64)
            if chosen == "exact":
                outputs.append(_fit_exact(x_j, y_t, maxiter=maxiter))
            else:
                outputs.append(
                    _fit_sparse(
                        x_j,
                        y_t,
                        generator=generator,
                        num_inducing=num_inducing,
                        iterations=iterations,
                        batch=batch,
                    )
                )
    return Surrogate(backend=chosen, outputs=tuple(outputs), n_train=x.shape[0], threads=threads)
