import mpmath
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy import integrate, special, stats

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


def mp_reference(n: float, b: float, sigma: float, dps: int = 30) -> float:
    """Independent reference: mpmath.quad of the convolution over the mean, split at its peak.

    The integrand ``exp(-(mu - b)²/2σ²) P(N ≷ n | mu)`` is log-concave in ``mu``: its peak is
    found by golden-section search, the distances where it has fallen by a factor ``e`` on
    either side set the splits (1, 2, 8, 64 times them), and tanh-sinh quadrature runs on
    ``[0, inf)`` at ``dps`` digits.
    """
    with mpmath.workdps(dps):
        n, b, s = mpmath.mpf(n), mpmath.mpf(b), mpmath.mpf(sigma)
        excess = n >= b
        if excess and n <= 0:
            return 1.0
        a = n if excess else n + 1

        def tail(mu):  # P(N >= n | mu) = P(a, mu), P(N <= n | mu) = Q(a, mu)
            if mu <= 0:
                return mpmath.mpf(0 if excess else 1)
            if mu > a + 1 + 4 * mpmath.sqrt(a):
                upper = mpmath.gammainc(a, mu, mpmath.inf, regularized=True)
                return 1 - upper if excess else upper
            lower = mpmath.gammainc(a, 0, mu, regularized=True)
            return lower if excess else 1 - lower

        if s == 0:
            return float(tail(b))

        def log_h(mu):
            t = tail(mu)
            return -(((mu - b) / s) ** 2) / 2 + mpmath.log(t) if t > 0 else mpmath.ninf

        lo, hi = mpmath.mpf(0), b + 40 * s + 2 * n + 100
        golden = (mpmath.sqrt(5) - 1) / 2
        x1, x2 = hi - golden * (hi - lo), lo + golden * (hi - lo)
        f1, f2 = log_h(x1), log_h(x2)
        for _ in range(90):
            if f1 >= f2:
                hi, x2, f2 = x2, x1, f1
                x1 = hi - golden * (hi - lo)
                f1 = log_h(x1)
            else:
                lo, x1, f1 = x1, x2, f2
                x2 = lo + golden * (hi - lo)
                f2 = log_h(x2)
        peak = (lo + hi) / 2
        top = log_h(peak)

        def fall(direction):  # distance from the peak where log_h is one below, within 1.5x
            inside, outside = mpmath.mpf(0), peak if peak > 0 else mpmath.mpf(1)
            while peak + direction * outside > 0 and log_h(peak + direction * outside) >= top - 1:
                inside, outside = outside, 2 * outside
            for _ in range(80):
                if inside and outside < 1.5 * inside:
                    break
                mid = (inside + outside) / 2 if inside else outside / 2
                x = peak + direction * mid
                if x > 0 and log_h(x) >= top - 1:
                    inside = mid
                else:
                    outside = mid
            return outside

        points = {mpmath.mpf(0), peak}
        for direction in (-1, 1):
            width = fall(direction)
            points.update(x for k in (1, 2, 8, 64) if (x := peak + direction * k * width) > 0)
        value = mpmath.quad(lambda mu: mpmath.exp(log_h(mu) - top), [*sorted(points), mpmath.inf])
        norm = mpmath.sqrt(2 * mpmath.pi) * s * mpmath.ncdf(b / s)
        return float(value * mpmath.exp(top) / norm)


MPMATH_CASES = {
    # bulk, both forms (Gaussian: sigma <= sqrt(n), Gamma otherwise), both sides
    "bulk-excess": (5, 1.0, 0.3),
    "bulk-deficit": (0, 3.0, 1.0),
    "bulk-excess-gauss": (12, 10.0, 2.0),
    "bulk-deficit-gauss": (8, 10.0, 2.0),
    "bulk-excess-gamma": (60, 50.0, 20.0),
    "bulk-deficit-gamma": (45, 50.0, 20.0),
    # moderate
    "moderate-excess-gauss": (40, 10.0, 1.0),
    "moderate-excess-gamma": (200, 50.0, 20.0),
    "moderate-deficit-gamma": (3, 50.0, 20.0),
    "sigma-above-b": (30, 5.0, 10.0),
    # the review's cases: the peak is far out in the tail of the Gaussian
    "review-400": (400, 100.0, 30.0),
    "review-600": (600, 100.0, 45.0),
    "review-900": (900, 100.0, 60.0),
    "review-deficit-n0": (0, 70.0, 3.0),
    "review-deficit-100": (100, 400.0, 20.0),
    # extreme
    "extreme-excess-1e-170": (2000, 1000.0, 1.0),
    "extreme-excess-1e-90": (1500, 100.0, 60.0),
    "extreme-deficit-1e-239": (0, 1000.0, 30.0),
    "deficit-large-b": (20, 2000.0, 300.0),
    "large-counts-gauss": (10300, 10000.0, 50.0),
    "large-counts-gamma": (12000, 10000.0, 1000.0),
    # n = 0, fractional n, b = 0, sigma = 0, sigma large relative to b
    "n0-sigma-above-b": (0, 0.5, 2.0),
    "n-half-b0": (0.5, 0.0, 3.0),
    "n-half-deficit": (0.5, 2.0, 3.0),
    "n-half-tiny-sigma": (0.5, 0.3, 1e-3),
    "n-small-sigma-huge": (0.3, 0.1, 30.0),
    "n-1e-8": (1e-8, 0.0, 1.0),
    "n-0.01-sigma-1000": (0.01, 0.0, 1000.0),
    "weighted-excess": (57.3, 40.2, 4.1),
    "weighted-deficit": (3.7, 9.6, 0.8),
    "b0": (5, 0.0, 2.0),
    "sigma0-excess": (3, 2.0, 0.0),
    "sigma0-deficit": (0, 5.0, 0.0),
    "sigma-100b": (2, 1.0, 100.0),
    "deficit-sigma-above-b": (0.4, 7.5, 30.0),
}


@pytest.mark.parametrize(("n", "b", "sigma"), MPMATH_CASES.values(), ids=MPMATH_CASES.keys())
def test_matches_mpmath_reference(n, b, sigma):
    expected = mp_reference(n, b, sigma)
    assert expected > 1e-300
    assert local_pvalue(n, b, sigma) == pytest.approx(expected, rel=1e-6)


@settings(max_examples=12, deadline=None)
@given(
    log_b=st.floats(-1.5, 3.0),
    log_rel=st.floats(-3.0, 1.5),
    pull=st.floats(-10.0, 40.0),
    integer=st.booleans(),
)
def test_matches_mpmath_reference_property(log_b, log_rel, pull, integer):
    b = 10**log_b
    sigma = 10**log_rel * b
    n = max(0.0, b + pull * np.sqrt(b + sigma**2))
    if integer:
        n = float(round(n))
    assume(n <= 3000)
    expected = mp_reference(n, b, sigma)
    assert local_pvalue(n, b, sigma) == pytest.approx(expected, rel=1e-6, abs=1e-300)


def test_deficit_of_nothing_matches_closed_form():
    # P(N = 0) = E[exp(-mu)] = exp(sigma²/2 - b) Phi(z) / Phi(b/sigma), z = b/sigma - sigma;
    # for z < 0 through erfcx, Phi(z) = erfcx(-z/√2) exp(-z²/2) / 2, to avoid cancellation.
    b = np.geomspace(0.01, 2e4, 40)[:, None]
    sigma = b * np.geomspace(1e-3, 30.0, 25)
    z = b / sigma - sigma
    with np.errstate(over="ignore", invalid="ignore"):
        log_p = np.where(
            z < 0,
            np.log(0.5 * special.erfcx(-z / np.sqrt(2))) - 0.5 * (b / sigma) ** 2,
            0.5 * sigma**2 - b + special.log_ndtr(z),
        )
    expected = np.exp(log_p - special.log_ndtr(b / sigma))
    keep = expected > 1e-300
    assert keep.sum() > 500
    assert np.allclose(local_pvalue(0, b, sigma)[keep], expected[keep], rtol=1e-6, atol=0)


def test_no_observation_on_no_background_is_certain():
    assert local_pvalue(0, 0, 3) == 1.0
    p = local_pvalue(0.0, 0.0, np.array([0.0, 1e-3, 3.0, 1e6]))
    assert np.all(p == 1.0)


def test_large_arrays_are_finite():
    rng = np.random.default_rng(5)
    b = 10 ** rng.uniform(-3, 5, 20_000)
    sigma = b * 10 ** rng.uniform(-4, 1, b.size)
    n = np.maximum(0.0, b + rng.normal(0, 20, b.size) * np.sqrt(b + sigma**2))
    p = local_pvalue(n, b, sigma)
    assert np.all(np.isfinite(p)) and np.all((p >= 0) & (p <= 1))


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
    assert significance(1.0) == -np.inf
    assert significance(0.0) == significance(1e-300) == pytest.approx(stats.norm.isf(1e-300))
