"""Float32 kinematics of the fast simulator: Box-Muller normals and two-body decays."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from theory.kinematics import standard_normal32, to_cartesian, two_body


def test_box_muller_draws_are_standard_normal() -> None:
    z = standard_normal32(np.random.default_rng(3), 400_001)
    assert z.dtype == np.float32 and z.shape == (400_001,)
    assert stats.kstest(z, "norm").pvalue > 1e-3
    assert abs(z.mean()) < 5 / np.sqrt(len(z))
    assert z.astype(np.float64).var() == pytest.approx(1.0, abs=5 * np.sqrt(2 / len(z)))
    tail = np.mean(np.abs(z) > 3)
    assert tail == pytest.approx(2 * stats.norm.sf(3), rel=0.15)
    assert np.abs(z).max() < 5.8


@settings(max_examples=25, deadline=None)
@given(n=st.integers(0, 50), seed=st.integers(0, 2**31))
def test_box_muller_is_seeded_and_sized(n: int, seed: int) -> None:
    a = standard_normal32(np.random.default_rng(seed), n)
    b = standard_normal32(np.random.default_rng(seed), n)
    assert a.shape == (n,)
    np.testing.assert_array_equal(a, b)


def test_float32_two_body_conserves_four_momentum() -> None:
    """Daughters of boosted parents add back up to the parent (float32 rounding only)."""
    rng = np.random.default_rng(5)
    n = 20_000
    pt = rng.uniform(1.0, 2000.0, n)
    eta = rng.uniform(-4.0, 4.0, n)
    phi = rng.uniform(-np.pi, np.pi, n)
    mass = rng.uniform(20.0, 1500.0, n)
    first, second = two_body(rng, pt, eta, phi, mass, 0.10566, 0.10566)
    a = np.array(to_cartesian(*(np.asarray(v, dtype=np.float64) for v in first)))
    b = np.array(to_cartesian(*(np.asarray(v, dtype=np.float64) for v in second)))
    parent = np.array(to_cartesian(pt, eta, phi, mass))
    total = a + b
    np.testing.assert_allclose(total[:3], parent[:3], rtol=0, atol=2e-5 * parent[3].max())
    m = np.sqrt(np.maximum(total[3] ** 2 - (total[:3] ** 2).sum(axis=0), 0.0))
    assert np.median(np.abs(m / mass - 1)) < 1e-4
    assert first[0].dtype == np.float32
