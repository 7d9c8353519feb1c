import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

from searches.stats.pvalues import local_pvalue, significance


def reference(n: float, b: float, sigma: float) -> float:
    """Direct numerical convolution with scipy.integrate.quad."""
    tail = (lambda m: stats.poisson.sf(n - 1, m)) if n >= b else (lambda m: stats.poisson.cdf(n, m))
    lo, hi = max(0.0, b - 12 * sigma), b + 12 * sigma
    points = [n] if lo < n < hi else None
    value, _ = integrate.quad(
        lambda m: tail(m) * stats.norm.pdf(m, b, sigma),
        lo,
        hi,
        points=points,
        limit=500,
        epsabs=0,
        epsrel=1e-11,
    )
    return value / stats.norm.cdf(b / sigma)


CASES = [
    (5, 1.0, 0.3),
    (0, 3.0, 1.0),
    (40, 10.0, 1.0),
    (1, 0.1, 0.05),
    (12000, 10000.0, 1000.0),
    (7000, 10000.0, 1000.0),
    (3, 50.0, 20.0),
    (60, 50.0, 20.0),
    (200, 50.0, 20.0),
    (1, 2.0, 3.0),
    (0, 0.5, 2.0),
    (30, 5.0, 10.0),
    (1, 6.75, 1.13),
]


@pytest.mark.parametrize(("n", "b", "sigma"), CASES)
def test_matches_numerical_convolution(n, b, sigma):
    assert local_pvalue(n, b, sigma) == pytest.approx(reference(n, b, sigma), rel=1e-4)


@settings(max_examples=60, deadline=None)
@given(
    log_b=st.floats(-1.0, 4.0),
    rel=st.floats(0.01, 0.6),
    pull=st.floats(-4.0, 6.0),
)
def test_matches_convolution_property(log_b, rel, pull):
    b = 10**log_b
    sigma = rel * b + 0.1
    n = max(0, round(b + pull * np.sqrt(b + sigma**2)))
    expected = reference(n, b, sigma)
    if expected < 1e-25:
        return
    assert local_pvalue(n, b, sigma) == pytest.approx(expected, rel=1e-4)


def test_sigma_to_zero_is_the_poisson_tail():
    n = np.array([0, 3, 10, 25, 2, 7])
    b = np.array([2.0, 1.5, 4.0, 12.0, 6.0, 7.0])
    poisson = np.where(n >= b, stats.poisson.sf(n - 1, b), stats.poisson.cdf(n, b))
    assert np.allclose(local_pvalue(n, b, 0.0), poisson, rtol=1e-12)
    assert np.allclose(local_pvalue(n, b, 1e-6 * b), poisson, rtol=1e-5)


def test_matches_pseudo_experiments():
    rng = np.random.default_rng(11)
    b, sigma, draws = 20.0, 6.0, 400_000
    mean = rng.normal(b, sigma, size=4 * draws)
    mean = mean[mean > 0][:draws]
    counts = rng.poisson(mean)
    for n in (35, 40, 8, 5):
        frequency = np.mean(counts >= n) if n >= b else np.mean(counts <= n)
        error = np.sqrt(frequency * (1 - frequency) / draws)
        assert abs(local_pvalue(n, b, sigma) - frequency) < 4 * error


def test_broadcasts_and_orders():
    p = local_pvalue(np.arange(30)[:, None], np.array([5.0, 10.0]), np.array([0.5, 2.0]))
    assert p.shape == (30, 2)
    excess = np.arange(30) >= 10
    assert np.all(np.diff(p[excess, 1]) < 0)
    assert np.all(np.diff(p[~excess, 1]) > 0)


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="'b'"):
        local_pvalue(3, -1.0, 1.0)
    with pytest.raises(ValueError, match="'sigma'"):
        local_pvalue(3, 1.0, np.nan)


def test_significance():
    assert significance(0.5) == pytest.approx(0.0)
    assert significance(stats.norm.sf(5.0)) == pytest.approx(5.0)
