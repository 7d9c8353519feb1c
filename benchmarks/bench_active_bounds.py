"""Diagnostic for issue 5: how few evaluations could any acquisition need on the sbottom pools?

``bench_active_surrogate.py`` showed that the learners' own hyperparameter fits cost a few
evaluations against hyperparameters fitted to the whole pool. This script asks the next
question: with those whole-pool hyperparameters held fixed, which is the best a learner could
do with the same Gaussian process, and how close do the library's acquisitions come?

Every run here conditions a Matérn-5/2 GP with the whole-pool hyperparameters (fitted once by
the library, ``bench_active_surrogate.whole_pool_hyperparameters``) on the points evaluated so
far; nothing is refitted, so each step is a few matrix products and every seed takes seconds.
The methods differ only in which point comes next:

* ``oracle-greedy`` — the point whose evaluation leaves the fewest *truly* misclassified pool
  points (ties to the larger misclassification probability). It reads the answer, so no
  learner can do this; it measures how many well-chosen points the surrogate needs to label
  the pool, i.e. whether the ≥ 3× target is out of reach of this surrogate or of the choosing;
* ``misclassification``, ``straddle``, ``information_gain`` — the library's criteria, sequential
  (×1) and in batches of 10 (×10) through the library's ``select_batch`` on this GP, so the
  batch rows say whether the batch gap is one of hyperparameters or of batch selection;
* ``loo-inflated`` — misclassification with the variance inflated near evaluated points that
  the GP mispredicts when they are left out (``overconfidence``), meant to find the regions
  where the GP is confidently wrong;
* ``expected-flips`` — the point whose outcome is expected to change the most plug-in labels of
  unevaluated points (expected model change rather than expected uncertainty reduction);
* ``random`` — a seeded permutation, labels from the same GP after every evaluation.

Start, labels and metric are the learners': the library's Latin-hypercube initial design of
2 d + 2 points (one batch of 10 for ×10), space filling (greedy maximin) until both labels have been seen, labels
P(excluded) > ½ with evaluated points taking their measured label, evaluations until ≤ 5 % and
≤ 2 % of the pool is misclassified.

Usage:
    python benchmarks/bench_active_bounds.py [--sbottom-cls auto|PATH] [--seeds 20]
        [--regions RegionA,RegionB,RegionC] [--json OUT]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from bench_active import (
    TOLERANCES,
    initial_size,
    needed,
    ratio_interval,
    sbottom_regions,
    summarise,
    write_runs,
)
from bench_active_surrogate import whole_pool_hyperparameters
from provenance import code_under_test
from scipy.special import ndtr

from searches.progress import track
from theory.active.acquisition import misclassification
from theory.active.batch import select_batch
from theory.active.design import latin_hypercube, nearest_unique
from theory.active.engine import _INITIAL, _ORDER, maximin, stream
from theory.active.options import ActiveOptions
from theory.active.pool import pool_to_unit
from theory.active.transforms import cls_to_latent, latent_threshold

METHODS = (
    ("oracle-greedy", 1),
    ("misclassification", 1),
    ("straddle", 1),
    ("information_gain", 1),
    ("loo-inflated", 1),
    ("expected-flips", 1),
    ("misclassification", 10),
    ("straddle", 10),
    ("information_gain", 10),
    ("random", 1),
)
CAP = 200


def matern52(
    a: np.ndarray, b: np.ndarray, lengthscale: np.ndarray, outputscale: float
) -> np.ndarray:
    """The library's kernel (``surrogate.matern_kernel``) between two sets of unit-cube points."""
    scale = np.asarray(lengthscale, dtype=float).reshape(1, -1)
    diff = (a / scale)[:, None, :] - (b / scale)[None, :, :]
    s5 = np.sqrt(5.0) * np.sqrt((diff**2).sum(-1))
    return outputscale * (1.0 + s5 + s5**2 / 3.0) * np.exp(-s5)


@dataclass(frozen=True)
class FixedGP:
    """Exact GP regression with fixed hyperparameters, conditioned on some pool points.

    It has the ``predict`` / ``joint`` / ``noise`` methods of
    :class:`theory.active.surrogate.Surrogate`, so the library's batch selection runs on it.
    """

    train: np.ndarray
    y: np.ndarray
    lengthscale: np.ndarray
    outputscale: float
    noise_var: float
    constant: float

    @cached_property
    def inverse(self) -> np.ndarray:
        """(K + σ² I)⁻¹ on the training points, factorised once per conditioning."""
        gram = matern52(self.train, self.train, self.lengthscale, self.outputscale)
        return np.linalg.inv(gram + self.noise_var * np.eye(len(self.y)))

    @cached_property
    def alpha(self) -> np.ndarray:
        return self.inverse @ (self.y - self.constant)

    def _solve(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cross = matern52(x, self.train, self.lengthscale, self.outputscale)
        return self.constant + cross @ self.alpha, cross

    def joint(self, x: np.ndarray, *, output: int = 0) -> tuple[np.ndarray, np.ndarray]:
        mean, cross = self._solve(x)
        prior = matern52(x, x, self.lengthscale, self.outputscale)
        return mean, prior - cross @ self.inverse @ cross.T

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean, cross = self._solve(x)
        var = self.outputscale - np.einsum("ij,jk,ik->i", cross, self.inverse, cross)
        return mean[:, None], np.maximum(var, 1e-12)[:, None]

    def noise(self, output: int = 0) -> float:
        return self.noise_var


def overconfidence(gp: FixedGP, unit: np.ndarray) -> np.ndarray:
    """Variance factor ``1 + Σ_i ρ_i(x)² max(z_i² - 1, 0)`` from leave-one-out residuals.

    ``z_i`` is evaluated point i's leave-one-out residual in units of its leave-one-out sd
    (closed form from the inverse Gram matrix) and ``ρ_i(x)`` the prior correlation of x with
    it: where the GP mispredicts its own data, it is trusted less nearby.
    """
    z2 = gp.alpha**2 / np.diag(gp.inverse)
    rho = matern52(unit, gp.train, gp.lengthscale, gp.outputscale) / gp.outputscale
    return 1.0 + rho**2 @ np.maximum(z2 - 1.0, 0.0)


def run(
    method: str,
    batch: int,
    unit: np.ndarray,
    y: np.ndarray,
    t: float,
    raw: dict[str, Any],
    *,
    seed: int,
) -> list[float]:
    """Evaluations to each tolerance for one (method, batch size, seed) on one pool."""
    n, d = unit.shape
    truth = y < t
    opts = ActiveOptions()
    first = initial_size(batch, d)
    order = np.random.default_rng(stream(seed, 0, _ORDER)).permutation(n)
    if method == "random":
        rows = order[:first]
    else:
        design = latin_hypercube(first, d, seed=stream(seed, 0, _INITIAL))
        rows = nearest_unique(design, unit, np.ones(n, dtype=bool))
    hyper = {
        "lengthscale": np.ravel(raw["lengthscale"]),
        "outputscale": raw["outputscale"],
        "noise_var": raw["noise"],
        "constant": raw["constant"],
    }
    counts, errors = [], []
    while True:
        gp = FixedGP(unit[rows], y[rows], **hyper)
        mean, cov = gp.joint(unit)
        var = np.maximum(np.diag(cov), 1e-12)
        labels = mean < t
        labels[rows] = truth[rows]
        counts.append(rows.size)
        errors.append(float(np.mean(labels != truth)))
        if errors[-1] <= min(TOLERANCES) or rows.size >= CAP:
            return needed(np.array(counts), np.array(errors))
        available = np.ones(n, dtype=bool)
        available[rows] = False
        free = np.flatnonzero(available)
        if method == "random":
            picks = order[rows.size : rows.size + batch]
        elif truth[rows].all() or not truth[rows].any():
            picks = maximin(unit, available, unit[rows], batch)
        elif method == "oracle-greedy":
            shift = cov[:, free] * ((y[free] - mean[free]) / (var[free] + gp.noise_var))[None, :]
            future = (mean[:, None] + shift) < t
            future[rows] = truth[rows, None]
            future[free, np.arange(free.size)] = truth[free]
            wrong = (future != truth[:, None]).sum(axis=0)
            unsure = misclassification(mean[free], var[free], t)
            picks = free[np.lexsort((-unsure, wrong))[:1]]
        elif method == "loo-inflated":
            inflated = var * overconfidence(gp, unit)
            picks = free[[int(np.argmax(misclassification(mean[free], inflated[free], t)))]]
        elif method == "expected-flips":
            spread = np.abs(cov[:, free]) / np.sqrt(var[free] + gp.noise_var)[None, :]
            flips = ndtr(-np.abs(mean - t)[:, None] / np.maximum(spread, 1e-12))
            flips[rows] = 0.0
            picks = free[[int(np.argmax(flips.sum(axis=0)))]]
        else:
            picks = select_batch(
                gp,
                unit,
                q=batch,
                acquisition=method,
                threshold=t,
                available=available,
                reference=unit,
                beta=opts.beta,
            )
        rows = np.append(rows, picks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sbottom-cls", default=os.environ.get("LAMPPOST_SBOTTOM_CLS", "auto"))
    parser.add_argument("--regions", default="RegionA,RegionB,RegionC")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--json", type=Path, help="write every run's result here")
    args = parser.parse_args()
    print(code_under_test(), flush=True)
    start = time.perf_counter()
    pools = sbottom_regions(args.sbottom_cls, args.regions)
    regions = list(pools)
    done: list[dict[str, Any]] = []
    tables = []
    for region in regions:
        pool = pools[region]
        raw = whole_pool_hyperparameters(pool.points, pool.cls)
        unit = pool_to_unit(pool.points)
        y = cls_to_latent(pool.cls)
        t = latent_threshold(0.05)
        results: dict[str, list[list[float]]] = {}
        t0 = time.process_time()
        jobs = [(m, b, s) for m, b in METHODS for s in range(args.seeds)]
        for method, batch, seed in track(jobs, total=len(jobs), description=region):
            reached = run(method, batch, unit, y, t, raw, seed=seed)
            label = f"{method} ×{batch}"
            results.setdefault(label, []).append(reached)
            done.append({"problem": region, "method": label, "seed": seed, "reached": reached})
        lengthscale = ", ".join(f"{v:.2f}" for v in np.ravel(raw["lengthscale"]))
        title = (
            f"sbottom {region}, {len(y)} points, whole-pool hyperparameters (lengthscales "
            f"{lengthscale}; output scale {raw['outputscale']:.2f}, noise {raw['noise']:.3f} "
            f"latent²), {time.process_time() - t0:.0f} CPU-s"
        )
        lines = [summarise(title, results, CAP), ""]
        rand = [r[1] for r in results["random ×1"]]
        for label, rows in results.items():
            if label.startswith("random"):
                continue
            ratio, low, high = ratio_interval(rand, [r[1] for r in rows])
            lines.append(f"- random / {label} at ≤ 2 % = {ratio:.2f} [{low:.2f}, {high:.2f}]")
            if label.endswith("×10"):
                single = [r[1] for r in results[label.replace("×10", "×1")]]
                ratio, low, high = ratio_interval([r[1] for r in rows], single)
                lines.append(f"- {label} / ×1 at ≤ 2 % = {ratio:.2f} [{low:.2f}, {high:.2f}]")
        tables.append("\n".join(lines))
    print(
        f"\nmachine: {platform.platform()}, {os.cpu_count()} cores; "
        f"{len(done)} runs, total {time.perf_counter() - start:.0f} s wall"
    )
    print("\n".join(tables))
    if args.json:
        write_runs(args.json, done)


if __name__ == "__main__":
    main()
