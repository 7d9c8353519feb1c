"""Tests of the batch selection: correlation damping of label-uncertainty scores."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from theory.active import fit_surrogate, latent_threshold
from theory.active.batch import correlation_damping, select_batch


def random_cov(n: int, seed: int) -> np.ndarray:
    a = np.random.default_rng(seed).standard_normal((n, n + 2))
    return a @ a.T + 1e-3 * np.eye(n)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 12), seed=st.integers(0, 10_000), data=st.data())
def test_damping_is_the_noise_free_variance_ratio(n, seed, data):
    cov = random_cov(n, seed)
    pick = data.draw(st.integers(0, n - 1))
    damping = correlation_damping(cov, pick)
    # Independent reference: condition the Gaussian on an exact observation of the pick.
    others = [i for i in range(n) if i != pick]
    schur = (
        cov[np.ix_(others, others)]
        - np.outer(cov[others, pick], cov[pick, others]) / cov[pick, pick]
    )
    assert damping[pick] == pytest.approx(0.0, abs=1e-9)
    assert damping[others] == pytest.approx(np.diag(schur) / np.diag(cov)[others], rel=1e-8)
    assert ((damping >= 0) & (damping <= 1)).all()


def test_damping_leaves_uncorrelated_points_alone():
    cov = np.zeros((4, 4))
    cov[:2, :2] = [[1.0, 0.6], [0.6, 1.0]]
    cov[2:, 2:] = [[2.0, -1.0], [-1.0, 2.0]]
    assert correlation_damping(cov, 0) == pytest.approx([0.0, 1 - 0.36, 1.0, 1.0])


@pytest.fixture(scope="module")
def contour_along_axis():
    """A GP whose mean crosses the threshold on the line x0 = 0.5, for every x1.

    Every candidate on that line has P(excluded) = 1/2 whatever its variance, so a kriging
    believer alone cannot tell them apart: the test case for correlation damping.
    """
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(40, 2))
    threshold = latent_threshold(0.05)
    y = threshold + 3.0 * (x[:, 0] - 0.5)
    surrogate = fit_surrogate(x, y, seed=0)
    axis = np.linspace(0.0, 1.0, 41)
    candidates = np.stack(np.meshgrid(axis, axis, indexing="ij"), axis=-1).reshape(-1, 2)
    return surrogate, candidates, threshold


@pytest.mark.parametrize("acquisition", ["misclassification", "entropy"])
def test_batch_spreads_along_the_contour(contour_along_axis, acquisition):
    surrogate, candidates, threshold = contour_along_axis
    available = np.ones(len(candidates), dtype=bool)
    single = select_batch(
        surrogate,
        candidates,
        q=1,
        acquisition=acquisition,
        threshold=threshold,
        available=available,
    )
    batch = select_batch(
        surrogate,
        candidates,
        q=6,
        acquisition=acquisition,
        threshold=threshold,
        available=available,
    )
    assert batch[0] == single[0]
    assert len(set(batch.tolist())) == 6
    picked = candidates[batch]
    assert np.abs(picked[:, 0] - 0.5).max() <= 0.1
    gaps = np.diff(np.sort(picked[:, 1]))
    assert gaps.min() >= 0.1


@pytest.mark.parametrize("acquisition", ["straddle", "misclassification", "information_gain"])
def test_a_batch_larger_than_the_joint_screen_has_no_repeats(contour_along_axis, acquisition):
    """``max_joint`` below the batch size keeps ``q`` candidates, so no point is picked twice."""
    surrogate, candidates, threshold = contour_along_axis
    batch = select_batch(
        surrogate,
        candidates,
        q=4,
        acquisition=acquisition,
        threshold=threshold,
        available=np.ones(len(candidates), dtype=bool),
        reference=candidates[::7],
        max_joint=2,
    )
    assert len(batch) == 4
    assert len(set(batch.tolist())) == 4
