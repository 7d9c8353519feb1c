import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from searches.stats import regions
from searches.stats.pvalues import local_pvalue, significance


def falling(bins: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    expected = scale * np.exp(-np.linspace(0.0, 8.0, bins))
    return expected, 0.05 * expected


@settings(max_examples=40, deadline=None)
@given(
    bins=st.integers(1, 25),
    min_bins=st.integers(1, 4),
    syst=st.floats(0.0, 0.5),
    seed=st.integers(0, 1000),
)
def test_enumeration_is_every_contiguous_range(bins, min_bins, syst, seed):
    rng = np.random.default_rng(seed)
    expected = rng.uniform(0.0, 50.0, bins)
    sumw2 = rng.uniform(0.0, 5.0, bins)
    found = regions.enumerate_regions(
        expected, sumw2, systematic=syst, min_bins=min_bins, min_expected=1.0
    )
    wanted = {
        (i, j)
        for i in range(bins)
        for j in range(i + min_bins, bins + 1)
        if expected[i:j].sum() >= 1.0
    }
    assert set(zip(found.first.tolist(), found.stop.tolist(), strict=True)) == wanted
    for first, stop, b, sigma in zip(
        found.first, found.stop, found.expected, found.uncertainty, strict=True
    ):
        assert b == pytest.approx(expected[first:stop].sum())
        assert sigma == pytest.approx(np.sqrt(sumw2[first:stop].sum() + (syst * b) ** 2))


@pytest.mark.parametrize(("bins", "scale"), [(10, 50.0), (25, 5000.0), (40, 2e5), (20, 3.0)])
def test_fast_minimum_matches_exhaustive_scan(bins, scale):
    expected, sumw2 = falling(bins, scale)
    found = regions.enumerate_regions(expected, sumw2, systematic=0.1)
    counts = regions.pseudo_counts(
        expected, sumw2, systematic=0.1, rounds=150, rng=np.random.default_rng(bins)
    )
    fast = regions.minimum_pvalues(counts, found)
    exhaustive = regions.exhaustive_minimum_pvalues(counts, found)
    assert np.max(np.abs(significance(fast) - significance(exhaustive))) < 1e-2


def test_small_count_regions_are_exact():
    expected, sumw2 = falling(12, 4.0)
    found = regions.enumerate_regions(expected, sumw2, systematic=0.2, min_expected=0.05)
    counts = regions.pseudo_counts(
        expected, sumw2, systematic=0.2, rounds=200, rng=np.random.default_rng(3)
    )
    fast = regions.minimum_pvalues(counts, found)
    assert np.allclose(fast, regions.exhaustive_minimum_pvalues(counts, found), rtol=1e-9)


def test_torch_lookup_matches_numpy_on_the_same_counts():
    expected, sumw2 = falling(15, 800.0)
    found = regions.enumerate_regions(expected, sumw2, systematic=0.1)
    counts = regions.pseudo_counts(
        expected, sumw2, systematic=0.1, rounds=300, rng=np.random.default_rng(5)
    )
    via_torch = regions.torch_minimum_pvalues(torch.as_tensor(counts), found)
    assert np.allclose(via_torch, regions.minimum_pvalues(counts, found), rtol=1e-9)


def test_pseudo_minima_seeded_and_backends_agree_in_distribution():
    expected, sumw2 = falling(10, 200.0)
    found = regions.enumerate_regions(expected, sumw2, systematic=0.1)
    kwargs = {"systematic": 0.1, "rounds": 2000}
    first = regions.pseudo_minima(expected, sumw2, found, seed=1, **kwargs)
    again = regions.pseudo_minima(expected, sumw2, found, seed=1, **kwargs)
    other = regions.pseudo_minima(expected, sumw2, found, seed=2, **kwargs)
    on_torch = regions.pseudo_minima(
        expected, sumw2, found, seed=1, backend="torch", device="cpu", **kwargs
    )
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    from scipy.stats import ks_2samp

    assert ks_2samp(first, on_torch).pvalue > 1e-3


def test_pseudo_data_follow_the_uncertainty_model():
    expected = np.array([100.0, 50.0, 20.0])
    sumw2 = np.array([16.0, 9.0, 4.0])
    counts = regions.pseudo_counts(
        expected, sumw2, systematic=0.1, rounds=200_000, rng=np.random.default_rng(0)
    )
    total = counts.sum(axis=1)
    b = expected.sum()
    assert total.mean() == pytest.approx(b, rel=5e-3)
    assert total.var() == pytest.approx(b + sumw2.sum() + (0.1 * b) ** 2, rel=2e-2)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_sparse_bins_follow_the_truncated_gaussian_of_the_pvalues(backend):
    """Where the MC uncertainty is as large as the background, the p-values truncate the
    Gaussian at zero and renormalise; the pseudo-data must have that mean (b = 0.5 ± 0.5:
    0.644), not the clipped one (0.540), or pseudo-experiments under-produce excesses."""
    from scipy.stats import truncnorm

    expected = np.array([0.5, 0.05, 30.0])
    sumw2 = np.array([0.25, 0.01, 4.0])
    if backend == "numpy":
        rng = np.random.default_rng(1)
        counts = regions.pseudo_counts(expected, sumw2, systematic=0.0, rounds=400_000, rng=rng)
    else:
        counts = regions._torch_pseudo_counts(
            expected, sumw2, systematic=0.0, rounds=400_000, seed=1, device="cpu"
        ).numpy()
    sigma = np.sqrt(sumw2)
    # For b = 0.5 ± 0.5 the truncated mean is 0.644; clipping the mean at 0 gave 0.540.
    truth = truncnorm.mean(-expected / sigma, np.inf, loc=expected, scale=sigma)
    spread = np.sqrt(counts.var(axis=0) / len(counts))
    assert np.all(np.abs(counts.mean(axis=0) - truth) < 5 * spread)


def test_scan_histogram_finds_the_excess():
    expected, sumw2 = falling(20, 1000.0)
    observed = np.round(expected)
    observed[6:8] += 4 * np.sqrt(expected[6:8].sum() + (0.1 * expected[6:8].sum()) ** 2)
    found = regions.enumerate_regions(expected, sumw2, systematic=0.1, min_bins=1)
    outcome = regions.scan_histogram(observed, found)
    assert (found.first[outcome.index], found.stop[outcome.index]) == (6, 8)
    assert outcome.p_min == pytest.approx(
        local_pvalue(
            observed[6:8].sum(), found.expected[outcome.index], found.uncertainty[outcome.index]
        )
    )


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="'sumw2' has 2 bins; expected 3"):
        regions.enumerate_regions([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="'expected' must be finite"):
        regions.enumerate_regions([1.0, -2.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="'backend'"):
        found = regions.enumerate_regions([1.0, 2.0], [1.0, 1.0])
        regions.pseudo_minima(
            [1.0, 2.0], [1.0, 1.0], found, systematic=0.1, rounds=3, seed=0, backend="jax"
        )


def test_no_region_above_the_floor():
    found = regions.enumerate_regions([0.01, 0.02], [0.0, 0.0], min_expected=1.0)
    assert len(found) == 0
    assert regions.scan_histogram([1.0, 0.0], found) is None
    assert np.all(
        regions.pseudo_minima([0.01, 0.02], [0, 0], found, systematic=0.1, rounds=4, seed=0) == 1.0
    )
