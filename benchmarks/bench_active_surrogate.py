"""Diagnostic for issue 5: can a better surrogate fit close the pool benchmark's gap?

On the sbottom pools of ``bench_active.py`` the learners fall just short of 3× fewer
evaluations than random in regions A and C, and with the GP hyperparameters fixed to those
fitted to the whole pool (which no learner has) the same acquisitions get there. This script
reruns the sequential learners with one piece of the library swapped, everything else (design,
acquisition, batch selection, labels) being the library's own:

* ``default`` — the library as it is (type-II maximum likelihood, one L-BFGS run);
* ``multistart`` — four L-BFGS runs from different initial noise and lengthscales, keeping the
  highest marginal likelihood (is the fit stuck in a poor local optimum?);
* ``mixture`` — the fitted GP plus copies with the noise variance ×1, 2, 4, 8 and the output
  scale ×1, 2, 4, weighted by their marginal likelihood and moment-matched into one Gaussian (a
  cheap marginalisation over the two hyperparameters small-sample fits underestimate);
* ``loo`` — hyperparameters by leave-one-out predictive likelihood instead of the marginal
  likelihood (more robust when the kernel is misspecified, Bachoc 2013);
* ``predictive`` — P(excluded) and every acquisition use the variance of the oracle's value
  (latent + fitted noise) rather than of the latent function;
* ``unlabelled-reference`` — the integrated criterion averages over unevaluated points only;
* ``bayesian`` — hyperparameters marginalised, not optimised: 16 draws from their posterior
  (slice sampling of the Matérn lengthscales, output scale, noise and constant mean under
  weakly informative log-normal priors, started at the library's fit), the 16 GPs
  moment-matched into one Gaussian (does averaging over the small-sample spread of
  hyperparameters, which ``mixture`` did only for noise and scale, label better?);
* ``whole-pool`` — hyperparameters fitted once to the *whole* pool and held fixed. No learner
  has these; the row says how far better hyperparameters alone would go.

Each swap is installed per run inside the worker process (``install`` restores the library's
pieces first), so one pool of workers can run every variant.

Usage:
    nice -n 10 python benchmarks/bench_active_surrogate.py [--sbottom-cls auto|PATH]
        [--variants default,loo,...] [--regions RegionA,RegionC]
        [--acquisitions misclassification,information_gain] [--seeds 10] [--processes 2]
        [--json OUT]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from bench_active import (
    TOLERANCES,
    initial_size,
    needed,
    ratio_interval,
    run_in_workers,
    sbottom_regions,
    summarise,
    write_runs,
)
from provenance import code_under_test

VARIANTS = (
    "default",
    "multistart",
    "mixture",
    "whole-pool",
    "loo",
    "predictive",
    "unlabelled-reference",
    "bayesian",
)
STARTS = (None, (0.1, 0.3), (0.01, 0.15), (0.3, 0.6))
"""Initial (standardised noise variance, lengthscale) of the multistart fits; None = BoTorch's."""
NOISE_FACTORS = (1.0, 2.0, 4.0, 8.0)
SCALE_FACTORS = (1.0, 2.0, 4.0)
POSTERIOR_DRAWS, BURN_IN, THIN = 16, 100, 8
"""Hyperparameter draws kept by ``bayesian``, slice-sampling sweeps discarded, sweeps per draw."""


class _MomentMatched:
    """Stands in for a BoTorch posterior: a Gaussian with a mixture's mean and covariance."""

    def __init__(self, mean: Any, cov: Any) -> None:
        self.mean = mean
        self.covariance_matrix = cov
        self.variance = cov.diagonal().clone()

    @property
    def mvn(self) -> _MomentMatched:
        return self


class _Mixture:
    """Weighted GPs that predict through one moment-matched Gaussian."""

    def __init__(self, models: list[Any], weights: np.ndarray) -> None:
        self.models, self.weights = models, weights

    def posterior(self, x: Any) -> _MomentMatched:
        import torch

        parts = [m.posterior(x).mvn for m in self.models]
        mean = sum(w * p.mean for w, p in zip(self.weights, parts, strict=True))
        second = sum(
            w * (p.covariance_matrix + torch.outer(p.mean, p.mean))
            for w, p in zip(self.weights, parts, strict=True)
        )
        return _MomentMatched(mean, second - torch.outer(mean, mean))


def _log_evidence(model: Any) -> float:
    """Exact marginal log likelihood (summed over points) of a model at its current values."""
    import torch
    from gpytorch.mlls import ExactMarginalLogLikelihood

    model.train()
    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    with torch.no_grad():
        value = float(mll(model(*model.train_inputs), model.train_targets))
    model.eval()
    return value * model.train_targets.numel()


def _output(model: Any, noise_standardised: float) -> Any:
    from theory.active import surrogate

    stdv = float(model.outcome_transform.stdvs.squeeze())
    return surrogate._Output(
        model=model, likelihood=None, offset=0.0, scale=1.0, noise=noise_standardised * stdv**2
    )


def _matern_fit(
    x: Any, y: Any, *, maxiter: int, loo: bool = False, start: tuple[float, float] | None = None
) -> Any:
    """The library's GP fitted by marginal (or leave-one-out) likelihood; None if it fails.

    ``start`` sets the initial (standardised noise variance, lengthscale); None keeps
    BoTorch's.
    """
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from gpytorch.mlls import ExactMarginalLogLikelihood, LeaveOneOutPseudoLikelihood

    from theory.active import surrogate

    model = SingleTaskGP(x, y.unsqueeze(-1), covar_module=surrogate.matern_kernel(x.shape[1]))
    if start is not None:
        model.likelihood.noise, model.covar_module.base_kernel.lengthscale = start
    objective = LeaveOneOutPseudoLikelihood if loo else ExactMarginalLogLikelihood
    try:
        fit_gpytorch_mll(
            objective(model.likelihood, model), optimizer_kwargs={"options": {"maxiter": maxiter}}
        )
    except Exception:  # a failed fit is just not a candidate
        return None
    model.eval()
    return model


def _multistart(x: Any, y: Any, *, maxiter: int) -> Any:
    fits = [_matern_fit(x, y, maxiter=maxiter, start=start) for start in STARTS]
    fits = [model for model in fits if model is not None]
    if not fits:
        return _library()["fit"](x, y, maxiter=maxiter)
    best = max(fits, key=_log_evidence)
    return _output(best, float(best.likelihood.noise.detach().squeeze()))


def _mixture(x: Any, y: Any, *, maxiter: int, fit: Callable[..., Any]) -> Any:
    base = fit(x, y, maxiter=maxiter).model
    kernel = base.covar_module
    if not hasattr(kernel, "outputscale"):
        return _output(base, float(base.likelihood.noise.detach().squeeze()))
    noise0 = float(base.likelihood.noise.detach().squeeze())
    scale0 = float(kernel.outputscale.detach())
    models, log_weights = [], []
    for a in NOISE_FACTORS:
        for b in SCALE_FACTORS:
            model = copy.deepcopy(base)
            model.likelihood.noise = noise0 * a
            model.covar_module.outputscale = scale0 * b
            try:
                evidence = _log_evidence(model)
                model.posterior(model.train_inputs[0][:1]).mvn.variance  # noqa: B018
            except Exception:  # a copy whose covariance is not positive definite is dropped
                continue
            models.append(model)
            log_weights.append(evidence)
    weights = np.exp(np.asarray(log_weights) - max(log_weights))
    weights /= weights.sum()
    noise = float(
        sum(
            w * float(m.likelihood.noise.detach().squeeze())
            for w, m in zip(weights, models, strict=True)
        )
    )
    return dataclasses.replace(_output(base, noise), model=_Mixture(models, weights))


def _log_posterior(theta: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    """Log posterior of (log lengthscales, log output scale, log noise, mean) on standardised y.

    Priors: lengthscales LogNormal(√2 + ½ log d, √3) (BoTorch's dimension-scaled prior), output
    scale LogNormal(0, 1), noise BoTorch's LogNormal(-4, 1) above the library's floor 1e-4,
    mean Normal(0, 1).
    """
    d = x.shape[1]
    log_ell, log_scale, log_noise, mean = theta[:d], theta[d], theta[d + 1], theta[d + 2]
    if log_noise < np.log(1e-4) or np.abs(theta[: d + 2]).max() > 12:
        return -np.inf
    r = np.sqrt(
        (((x[:, None, :] - x[None, :, :]) / np.exp(log_ell)) ** 2).sum(-1) + 1e-300
    ) * np.sqrt(5.0)
    k = np.exp(log_scale) * (1 + r + r**2 / 3) * np.exp(-r)
    k[np.diag_indices_from(k)] += np.exp(log_noise)
    try:
        chol = np.linalg.cholesky(k)
    except np.linalg.LinAlgError:
        return -np.inf
    alpha = np.linalg.solve(chol, y - mean)
    loc = np.sqrt(2.0) + 0.5 * np.log(d)
    prior = (
        -0.5 * (((log_ell - loc) / np.sqrt(3.0)) ** 2).sum()
        - 0.5 * log_scale**2
        - 0.5 * (log_noise + 4.0) ** 2
        - 0.5 * mean**2
    )
    return float(-0.5 * alpha @ alpha - np.log(np.diag(chol)).sum() + prior)


def _slice_sample(
    theta: np.ndarray, log_p: Callable[[np.ndarray], float], rng: np.random.Generator
) -> list[np.ndarray]:
    """Coordinate-wise slice sampling with stepping out (Neal 2003), width 1 per coordinate."""
    draws, current = [], log_p(theta)
    for sweep in range(BURN_IN + POSTERIOR_DRAWS * THIN):
        for i in rng.permutation(theta.size):
            level = current + np.log(rng.uniform())
            left = theta[i] - rng.uniform()
            right = left + 1.0
            trial = theta.copy()
            for _ in range(8):
                trial[i] = left
                if log_p(trial) <= level:
                    break
                left -= 1.0
            for _ in range(8):
                trial[i] = right
                if log_p(trial) <= level:
                    break
                right += 1.0
            while True:
                trial[i] = rng.uniform(left, right)
                value = log_p(trial)
                if value > level:
                    theta, current = trial.copy(), value
                    break
                if trial[i] < theta[i]:
                    left = trial[i]
                else:
                    right = trial[i]
        if sweep >= BURN_IN and (sweep - BURN_IN) % THIN == THIN - 1:
            draws.append(theta.copy())
    return draws


def _bayesian(x: Any, y: Any, *, maxiter: int, fit: Callable[..., Any]) -> Any:
    """Average over hyperparameter draws; the library's fit starts the chain."""
    import torch

    base = fit(x, y, maxiter=maxiter).model
    kernel = base.covar_module
    if not hasattr(kernel, "outputscale"):
        return _output(base, float(base.likelihood.noise.detach().squeeze()))
    xs = base.train_inputs[0].numpy()
    ys = base.train_targets.numpy()
    start = np.concatenate(
        [
            np.log(kernel.base_kernel.lengthscale.detach().numpy().ravel()),
            [np.log(float(kernel.outputscale.detach()))],
            [np.log(max(float(base.likelihood.noise.detach().squeeze()), 1.01e-4))],
            [float(base.mean_module.constant.detach())],
        ]
    )
    start = np.clip(start, -11.0, 11.0)
    rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,))))
    draws = _slice_sample(start, lambda t: _log_posterior(t, xs, ys), rng)
    d = xs.shape[1]
    models = []
    for theta in draws:
        model = copy.deepcopy(base)
        model.covar_module.base_kernel.lengthscale = torch.as_tensor(np.exp(theta[:d]))
        model.covar_module.outputscale = float(np.exp(theta[d]))
        model.likelihood.noise = float(np.exp(theta[d + 1]))
        model.mean_module.constant.data.fill_(float(theta[d + 2]))
        model.eval()
        models.append(model)
    weights = np.full(len(models), 1.0 / len(models))
    noise = float(np.mean([np.exp(t[d + 1]) for t in draws]))
    return dataclasses.replace(_output(base, noise), model=_Mixture(models, weights))


def _loo(x: Any, y: Any, *, maxiter: int) -> Any:
    """Hyperparameters by leave-one-out predictive likelihood; the library's fit if it fails."""
    model = _matern_fit(x, y, maxiter=maxiter, loo=True)
    if model is None:
        return _library()["fit"](x, y, maxiter=maxiter)
    return _output(model, float(model.likelihood.noise.detach().squeeze()))


def _whole_pool(x: Any, y: Any, *, maxiter: int, raw: dict[str, Any]) -> Any:
    """Fit nothing: set the whole-pool hyperparameters, converted to this data's scale."""
    import torch
    from botorch.models import SingleTaskGP

    from theory.active import surrogate

    model = SingleTaskGP(x, y.unsqueeze(-1), covar_module=surrogate.matern_kernel(x.shape[1]))
    mean, std = float(y.mean()), float(y.std()) if y.numel() > 1 else 1.0
    std = std if std > 0 else 1.0
    model.covar_module.base_kernel.lengthscale = torch.as_tensor(raw["lengthscale"])
    model.covar_module.outputscale = raw["outputscale"] / std**2
    model.likelihood.noise = max(raw["noise"] / std**2, 2e-4)
    model.mean_module.constant.data.fill_((raw["constant"] - mean) / std)
    model.eval()
    return _output(model, float(model.likelihood.noise.detach().squeeze()))


def whole_pool_hyperparameters(points: np.ndarray, cls: np.ndarray) -> dict[str, Any]:
    """The library's fit to every point of a pool, in raw latent units."""
    import torch

    from theory.active import surrogate
    from theory.active.pool import pool_to_unit
    from theory.active.transforms import cls_to_latent

    x = torch.as_tensor(pool_to_unit(points), dtype=torch.float64)
    y = torch.as_tensor(cls_to_latent(cls), dtype=torch.float64)
    model = surrogate._fit_exact(x, y, maxiter=200).model
    std = float(model.outcome_transform.stdvs.squeeze())
    mean = float(model.outcome_transform.means.squeeze())
    return {
        "lengthscale": model.covar_module.base_kernel.lengthscale.detach().tolist(),
        "outputscale": float(model.covar_module.outputscale.detach()) * std**2,
        "noise": float(model.likelihood.noise.detach().squeeze()) * std**2,
        "constant": float(model.mean_module.constant.detach()) * std + mean,
    }


def _library() -> dict[str, Any]:
    """The library's own pieces that variants replace, saved once per process."""
    import theory.active.engine as engine
    from theory.active import surrogate

    if not hasattr(surrogate, "_bench_library"):
        cls = surrogate.Surrogate
        surrogate._bench_library = {
            "fit": surrogate._fit_exact,
            "predict": cls.predict,
            "joint": cls.joint,
            "noise": cls.noise,
            "select": engine.select_batch,
        }
    return surrogate._bench_library


def _predictive(library: dict[str, Any]) -> None:
    """Label uncertainty of a pool point includes the fitted observation noise.

    The label that is scored is the oracle's CLs at the point, which the GP models as latent +
    noise, so P(excluded) and every acquisition see variance σ² + σ_n² there; a fantasised
    evaluation makes that point's own label certain (the noise enters the covariance of a
    point with itself, and the downdate's denominator once).
    """
    from theory.active import surrogate

    def predict(self: Any, x: Any) -> Any:
        mean, var = library["predict"](self, x)
        return mean, var + np.array([o.noise for o in self.outputs])[None, :]

    def joint(self: Any, x: Any, *, output: int = 0) -> Any:
        mean, cov = library["joint"](self, x, output=output)
        x = np.asarray(x, dtype=float)
        same = (np.abs(x[:, None, :] - x[None, :, :]).max(axis=-1) == 0).astype(float)
        return mean, cov + self.outputs[output].noise * same

    cls = surrogate.Surrogate
    cls.predict, cls.joint = predict, joint
    cls.noise = lambda self, output=0: 0.0


def _unlabelled_reference(library: dict[str, Any]) -> None:
    """The integrated criterion averages over the pool points not yet evaluated only (the
    evaluated ones carry their measured label, so their misclassification is already 0)."""
    import theory.active.engine as engine

    def select(*args: Any, available: Any, reference: Any, **kwargs: Any) -> Any:
        if reference is not None and reference.shape[0] == available.shape[0]:
            reference = reference[available]
        return library["select"](*args, available=available, reference=reference, **kwargs)

    engine.select_batch = select


def install(variant: str, raw: dict[str, Any] | None) -> None:
    """Restore the library's pieces in this process, then swap in ``variant``'s."""
    import theory.active.engine as engine
    from theory.active import surrogate

    library = _library()
    cls = surrogate.Surrogate
    surrogate._fit_exact = library["fit"]
    cls.predict, cls.joint, cls.noise = library["predict"], library["joint"], library["noise"]
    engine.select_batch = library["select"]
    fit = library["fit"]
    if variant == "multistart":
        surrogate._fit_exact = _multistart
    elif variant == "loo":
        surrogate._fit_exact = _loo
    elif variant == "mixture":
        surrogate._fit_exact = lambda x, y, *, maxiter: _mixture(x, y, maxiter=maxiter, fit=fit)
    elif variant == "bayesian":
        surrogate._fit_exact = lambda x, y, *, maxiter: _bayesian(x, y, maxiter=maxiter, fit=fit)
    elif variant == "whole-pool":
        surrogate._fit_exact = lambda x, y, *, maxiter: _whole_pool(x, y, maxiter=maxiter, raw=raw)
    elif variant == "predictive":
        _predictive(library)
    elif variant == "unlabelled-reference":
        _unlabelled_reference(library)


def job(spec: dict[str, Any]) -> dict[str, Any]:
    """One (variant, region, acquisition, seed) sequential run in a worker process."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    from theory.active import learn_pool

    torch.set_num_threads(1)
    install(spec["variant"], spec["raw"])
    points, cls = np.asarray(spec["points"]), np.asarray(spec["cls"])
    truth = cls < 0.05
    t0 = time.process_time()
    history = learn_pool(
        points,
        lambda i: cls[i],
        budget=min(200, len(points)),
        batch_size=1,
        initial=initial_size(1, points.shape[1]),
        seed=spec["seed"],
        acquisition=spec["acquisition"],
        until=lambda step: np.mean(step.excluded != truth) <= min(TOLERANCES),
    )
    reached = needed(history.n_evaluated, history.misclassified(truth))
    return {**spec["key"], "reached": reached, "cpu_s": time.process_time() - t0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sbottom-cls", default=os.environ.get("LAMPPOST_SBOTTOM_CLS", "auto"))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--regions", default="RegionA,RegionC")
    parser.add_argument("--acquisitions", default="misclassification,information_gain")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write every run's result here")
    args = parser.parse_args()
    print(code_under_test(), flush=True)
    variants = args.variants.split(",")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"--variants: unknown {unknown}; allowed: {', '.join(VARIANTS)}")

    start = time.perf_counter()
    pools = sbottom_regions(args.sbottom_cls, args.regions)
    regions = list(pools)
    jobs = []
    for region in regions:
        pool = pools[region]
        raw = (
            whole_pool_hyperparameters(pool.points, pool.cls) if "whole-pool" in variants else None
        )
        for variant in variants:
            for acquisition in args.acquisitions.split(","):
                for seed in range(args.seeds):
                    label = f"{acquisition} ×1, {variant}"
                    jobs.append(
                        {
                            "key": {"problem": region, "method": label, "seed": seed},
                            "variant": variant,
                            "raw": raw,
                            "points": pool.points,
                            "cls": pool.cls,
                            "acquisition": acquisition,
                            "seed": seed,
                        }
                    )
    done = run_in_workers(job, jobs, processes=args.processes, start=start)
    order = {j["key"]["method"]: i for i, j in enumerate(jobs)}
    for region in regions:
        mine = sorted(
            (d for d in done if d["problem"] == region),
            key=lambda d: (order[d["method"]], d["seed"]),
        )
        results: dict[str, list[list[float]]] = {}
        for run in mine:
            results.setdefault(run["method"], []).append(run["reached"])
        cpu = sum(d["cpu_s"] for d in mine)
        print(
            summarise(f"sbottom {region}, surrogate fit variants ({cpu:.0f} CPU-s)", results, 200)
        )
        for label, rows in results.items():
            base = results.get(label.replace(label.split(", ")[-1], "default"))
            if base is not None and base is not rows:
                ratio, low, high = ratio_interval([r[1] for r in base], [r[1] for r in rows])
                print(
                    f"- {label}: default / variant at ≤ 2 % = {ratio:.2f} [{low:.2f}, {high:.2f}]"
                )
    if args.json:
        write_runs(args.json, done)


if __name__ == "__main__":
    main()
