"""Vectorised asymptotic CLs, p0 and upper limits for single-bin counting experiments.

The model is exactly pyhf's single-bin model with a ``shapesys`` background uncertainty:

    n ~ Pois(μ s + γ b),   a ~ Pois(τ γ),   a_obs = τ = (b / σ_b)²,

(``mu`` a normfactor on the signal, ``γ`` the shapesys factor with its Poisson auxiliary
measurement). The nuisance ``γ`` is profiled analytically — the conditional maximum is the
positive root of a quadratic — so thousands of setups are evaluated at once with numpy, with
the same test statistics (``qtilde`` for CLs, ``q0`` for discovery), the same Asimov data
(nuisances fitted to the observed data at ``mu = 0`` for CLs, ``mu = 1`` for p0) and the same
asymptotic formulae as :func:`pyhf.infer.hypotest`. ``mu`` is bounded to ``[0, mu_max]`` like
pyhf's normfactor bounds (pyhf's default is 10; tests use the same bound in both).
Inputs broadcast to a common shape; outputs have that shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import ndtr, xlogy

N_SIGMA = (2.0, 1.0, 0.0, -1.0, -2.0)
"""Test-statistic shifts of the expected band; CLs from −2σ to +2σ (pyhf's order)."""


@dataclass(frozen=True)
class CountingSetups:
    """Broadcast single-bin setups: observed ``n``, background ``b ± sigma``, signal ``s``."""

    n: np.ndarray
    b: np.ndarray
    sigma: np.ndarray
    s: np.ndarray

    @property
    def tau(self) -> np.ndarray:
        return (self.b / self.sigma) ** 2


def setups(n: ArrayLike, b: ArrayLike, sigma: ArrayLike, s: ArrayLike) -> CountingSetups:
    """Validate and broadcast counting setups (``b``, ``sigma``, ``s`` > 0; ``n`` >= 0)."""
    arrays = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (n, b, sigma, s)))
    names, strictness = ("n", "b", "sigma", "s"), (False, True, True, True)
    for name, array, strict in zip(names, arrays, strictness, strict=True):
        bad = ~np.isfinite(array) | ((array <= 0) if strict else (array < 0))
        if np.any(bad):
            bound = "> 0" if strict else ">= 0"
            raise ValueError(f"counting setup '{name}' must be finite and {bound}")
    return CountingSetups(*arrays)


def _nll(mu, gamma, n, a, c: CountingSetups):  # type: ignore[no-untyped-def]
    rate = mu * c.s + gamma * c.b
    aux = c.tau * gamma
    return rate - xlogy(n, rate) + aux - xlogy(a, aux)


def _gamma_hat(mu, n, a, c: CountingSetups):  # type: ignore[no-untyped-def]
    """Conditional MLE of ``γ`` at fixed ``mu`` (positive root of the score equation)."""
    ms = mu * c.s
    quad = c.b * (c.b + c.tau)
    lin = (c.b + c.tau) * ms - c.b * (n + a)
    root = np.sqrt(lin * lin + 4.0 * quad * a * ms)
    stable = np.where(lin > 0, 2.0 * a * ms / np.where(lin + root > 0, lin + root, 1.0), 0.0)
    return np.where(lin > 0, stable, (root - lin) / (2.0 * quad))


def _free_fit(n, a, c: CountingSetups, mu_max: float):  # type: ignore[no-untyped-def]
    mu = np.clip((n - c.b * a / c.tau) / c.s, 0.0, mu_max)
    return mu, _gamma_hat(mu, n, a, c)


def _qtilde(mu, n, a, c: CountingSetups, mu_max: float):  # type: ignore[no-untyped-def]
    mu_hat, gamma_hat = _free_fit(n, a, c, mu_max)
    q = 2.0 * (_nll(mu, _gamma_hat(mu, n, a, c), n, a, c) - _nll(mu_hat, gamma_hat, n, a, c))
    return np.where(mu_hat > mu, 0.0, np.maximum(q, 0.0))


def _asimov(mu_prime, c: CountingSetups):  # type: ignore[no-untyped-def]
    gamma = _gamma_hat(mu_prime, c.n, c.tau, c)
    return mu_prime * c.s + gamma * c.b, c.tau * gamma


def _cls_parts(mu, c: CountingSetups, mu_max: float):  # type: ignore[no-untyped-def]
    q = _qtilde(mu, c.n, c.tau, c, mu_max)
    n_a, a_a = _asimov(0.0, c)
    q_a = _qtilde(mu, n_a, a_a, c, mu_max)
    sqrt_q, sqrt_qa = np.sqrt(q), np.sqrt(q_a)
    safe = np.where(sqrt_qa > 0, sqrt_qa, 1.0)
    stat = np.where(sqrt_q <= sqrt_qa, sqrt_q - sqrt_qa, (q - q_a) / (2.0 * safe))
    return stat, sqrt_qa


def _cls_at(stat, sqrt_qa):  # type: ignore[no-untyped-def]
    return ndtr(-(stat + sqrt_qa)) / ndtr(-stat)


@dataclass(frozen=True)
class CountingCLs:
    """Observed CLs and expected band, shapes ``(...)`` and ``(5, ...)`` (−2σ … +2σ)."""

    observed: np.ndarray
    expected: np.ndarray


def cls(
    n: ArrayLike,
    b: ArrayLike,
    sigma: ArrayLike,
    s: ArrayLike,
    *,
    mu: ArrayLike = 1.0,
    mu_max: float = 10.0,
) -> CountingCLs:
    """Asymptotic ``qtilde`` CLs of signal strength ``mu`` for every setup."""
    c = setups(n, b, sigma, s)
    mu_arr = np.broadcast_to(np.asarray(mu, dtype=np.float64), c.n.shape)
    stat, sqrt_qa = _cls_parts(mu_arr, c, mu_max)
    expected = np.stack([_cls_at(np.full_like(stat, k), sqrt_qa) for k in N_SIGMA])
    return CountingCLs(observed=_cls_at(stat, sqrt_qa), expected=expected)


@dataclass(frozen=True)
class CountingDiscovery:
    """Observed p0 and median expected p0 (at ``mu = 1``), shape ``(...)``."""

    p0: np.ndarray
    p0_expected: np.ndarray


def discovery_p0(
    n: ArrayLike, b: ArrayLike, sigma: ArrayLike, s: ArrayLike, *, mu_max: float = 10.0
) -> CountingDiscovery:
    """Asymptotic ``q0`` discovery p-value for every setup (pyhf's ``test_stat="q0"``)."""
    c = setups(n, b, sigma, s)

    def q0(n_data, a_data):  # type: ignore[no-untyped-def]
        mu_hat, gamma_hat = _free_fit(n_data, a_data, c, mu_max)
        q = 2.0 * (
            _nll(0.0, _gamma_hat(0.0, n_data, a_data, c), n_data, a_data, c)
            - _nll(mu_hat, gamma_hat, n_data, a_data, c)
        )
        return np.where(mu_hat > 0, np.maximum(q, 0.0), 0.0)

    n_a, a_a = _asimov(1.0, c)
    return CountingDiscovery(
        p0=ndtr(-np.sqrt(q0(c.n, c.tau))), p0_expected=ndtr(-np.sqrt(q0(n_a, a_a)))
    )


@dataclass(frozen=True)
class CountingLimits:
    """Upper limits on ``mu``: observed ``(...)`` and expected band ``(5, ...)`` (−2σ … +2σ)."""

    observed: np.ndarray
    expected: np.ndarray


def upper_limit(
    n: ArrayLike,
    b: ArrayLike,
    sigma: ArrayLike,
    s: ArrayLike,
    *,
    level: float = 0.05,
    mu_max: float = 10.0,
    iterations: int = 60,
) -> CountingLimits:
    """Upper limits on ``mu`` where CLs = ``level``, by vectorised bisection.

    CLs falls monotonically with ``mu``; the bracket ``[0, hi]`` starts from a generous
    Gaussian bound and doubles until every setup is excluded at ``hi``. The free fit keeps
    ``mu <= mu_max`` (like pyhf); the limit itself may exceed it.
    """
    c = setups(n, b, sigma, s)

    def curves(mu_rows: np.ndarray) -> np.ndarray:
        """Row 0: observed CLs at ``mu_rows[0]``; rows 1-5: the bands at their own ``mu``."""
        out = np.empty_like(mu_rows)
        for k in range(len(mu_rows)):
            stat, sqrt_qa = _cls_parts(mu_rows[k], c, mu_max)
            shift = stat if k == 0 else np.full_like(stat, N_SIGMA[k - 1])
            out[k] = _cls_at(shift, sqrt_qa)
        return out

    hi = np.broadcast_to(
        (c.n + 5.0 * np.sqrt(c.n + c.b + c.sigma**2) + 5.0) / c.s, (6, *c.n.shape)
    ).copy()
    for _ in range(40):
        above = curves(hi) > level
        if not np.any(above):
            break
        hi = np.where(above, 2.0 * hi, hi)
    lo = np.zeros_like(hi)
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        above = curves(mid) > level
        lo = np.where(above, mid, lo)
        hi = np.where(above, hi, mid)
    limit = 0.5 * (lo + hi)
    return CountingLimits(observed=limit[0], expected=limit[1:])
