"""The excluded fraction's posterior against its two closed-form limits, and on real learners."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from theory.active import learn_box, learn_pool
from theory.active.volume import excluded_fraction_posterior, fraction_draws
from theory.toys import ellipse_2d

means = st.lists(st.floats(-3.0, 3.0), min_size=3, max_size=40).map(np.array)


@settings(max_examples=100, deadline=None)
@given(mean=means, sd=st.floats(0.2, 2.0), seed=st.integers(0, 2**31 - 1))
def test_fully_correlated_errors_give_the_band(mean: np.ndarray, sd: float, seed: int) -> None:
    """One shared latent shift: F = share of p_i > U with U uniform, so F's 16 % and 84 %
    quantiles are exactly the shares with P(excluded) > 0.84 and > 0.16 (closed form)."""
    p = norm.cdf(-mean / sd)
    assume(np.abs(p - 0.84).min() > 0.03 and np.abs(p - 0.16).min() > 0.03)
    fractions = fraction_draws(
        mean, sd**2 * np.ones((mean.size, mean.size)), threshold=0.0, draws=4000, seed=seed
    )
    low, high = np.quantile(fractions, (0.16, 0.84))
    assert low == pytest.approx(np.mean(p > 0.84))
    assert high == pytest.approx(np.mean(p > 0.16))


@settings(max_examples=100, deadline=None)
@given(
    mean=means,
    sd=st.lists(st.floats(0.2, 2.0), min_size=40, max_size=40).map(np.array),
    seed=st.integers(0, 2**31 - 1),
)
def test_independent_errors_give_the_poisson_binomial(
    mean: np.ndarray, sd: np.ndarray, seed: int
) -> None:
    """Independent labels: F is a Poisson-binomial share, mean Σp / r, variance Σp(1-p) / r²."""
    sd = sd[: mean.size]
    p = norm.cdf(-mean / sd)
    draws = 20_000
    fractions = fraction_draws(mean, np.diag(sd**2), threshold=0.0, draws=draws, seed=seed)
    r = mean.size
    variance = float(np.sum(p * (1 - p))) / r**2
    assume(variance > 1e-4)
    assert abs(fractions.mean() - p.mean()) < 5 * np.sqrt(variance / draws)
    # the sample variance scatters by √((m4 − σ⁴) / n), large when one rare label dominates the
    # spread; m4 is estimated from the same draws
    m4 = float(np.mean((fractions - fractions.mean()) ** 4))
    spread = np.sqrt(max(m4 - fractions.var() ** 2, 0.0) / draws)
    assert abs(fractions.var() - variance) < 5 * spread + 1e-12


def test_known_labels_are_the_same_in_every_draw() -> None:
    mean = np.zeros(4)
    fractions = fraction_draws(
        mean,
        np.eye(4),
        threshold=0.0,
        draws=2000,
        seed=1,
        fixed=(np.array([0, 1, 2]), np.array([True, True, False])),
    )
    assert set(np.unique(fractions)) == {0.5, 0.75}
    assert fractions.mean() == pytest.approx(0.625, abs=0.02)


def test_singular_and_slightly_indefinite_covariances_are_drawn() -> None:
    """Points on top of each other give a rank-deficient covariance, and rounding can make it
    slightly indefinite (Cholesky fails at any jitter; the clipped eigendecomposition draws)."""
    singular = np.ones((3, 3))
    singular[2, 2] = 1.0 - 1e-3
    indefinite = np.array([[1.0, 1.0 + 1e-3], [1.0 + 1e-3, 1.0]])
    with pytest.raises(np.linalg.LinAlgError):
        np.linalg.cholesky(indefinite + 1e-6 * np.eye(2))
    for cov in (singular, indefinite):
        fractions = fraction_draws(np.zeros(len(cov)), cov, threshold=0.0, draws=500, seed=0)
        assert 0.4 < fractions.mean() < 0.6
    assert set(np.unique(fractions)) == {0.0, 1.0}, "the two points move together"


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match=r"mean must be \(r,\) and cov \(r, r\)"):
        fraction_draws(np.zeros(3), np.eye(2), threshold=0.0, draws=10, seed=0)
    with pytest.raises(ValueError, match="draws must be ≥ 1"):
        fraction_draws(np.zeros(2), np.eye(2), threshold=0.0, draws=0, seed=0)


def test_pool_posterior_sits_on_the_learners_own_surrogate() -> None:
    toy = ellipse_2d()
    pool = toy.space.sample(150, seed=2)
    history = learn_pool(pool, lambda idx: toy.cls_pair(pool[idx]), budget=12, seed=1)
    observed, expected = excluded_fraction_posterior(history)
    assert observed is not None and expected is not None
    for post, p in (
        (observed, history.final.p_excluded),
        (expected, history.final.p_excluded_other),
    ):
        assert post.mean == pytest.approx(float(np.mean(p)))
        assert 0.0 <= post.low <= post.median <= post.high <= 1.0
        assert post.draws == 1000
        # every evaluated candidate carries its measured label, so no draw drops below the
        # measured excluded share
        measured = toy.cls_pair(pool[history.evaluated_indices])
        column = 0 if p is history.final.p_excluded else 1
        assert post.low >= np.sum(measured[:, column] < 0.05) / len(pool)
    assert excluded_fraction_posterior(history) == (observed, expected)


def test_box_posterior_needs_the_learners_space() -> None:
    toy = ellipse_2d()
    history = learn_box(
        toy.space, toy.cls_pair, budget=14, seed=0, reference_size=300, n_candidates=300
    )
    observed, _ = excluded_fraction_posterior(history, to_unit=toy.space.to_unit)
    assert observed is not None
    assert observed.mean == pytest.approx(float(np.mean(history.final.p_excluded)))
    with pytest.raises(ValueError, match="needs to_unit"):
        excluded_fraction_posterior(history)
    with pytest.raises(ValueError, match="does not reproduce the history's last P"):
        excluded_fraction_posterior(history, to_unit=lambda x: toy.space.to_unit(x) ** 2)
