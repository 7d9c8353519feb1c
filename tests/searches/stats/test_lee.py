import dataclasses
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from searches.result import SearchResult, Selection
from searches.stats import lee, regions


def result_with(
    p_tilde: float, minima: np.ndarray, name: str = "c", p_local: float | None = None
) -> SearchResult:
    """A search result; ``p_local`` defaults to ``p_tilde`` (right for uniform minima)."""
    return SearchResult(
        event_class=name,
        method="scan",
        observable="st",
        edges=(0.0, 1.0),
        observed=(1.0,),
        expected=(1.0,),
        uncertainty=(0.1,),
        region=None,
        p_local=p_tilde if p_local is None else p_local,
        p_tilde=p_tilde,
        workspace={},
        selection=Selection(event_class=name, signatures={}, observable="st", edges=(0.0, 1.0)),
        n_pseudo=len(minima),
        pseudo_p_min=tuple(np.sort(minima)),
    )


def test_p_tilde_counts_ties_and_the_data():
    pseudo = np.array([0.01, 0.02, 0.02, 0.5])
    assert lee.p_tilde(0.02, pseudo) == pytest.approx(4 / 5)
    assert lee.p_tilde(0.001, pseudo) == pytest.approx(1 / 5)


def test_ties_between_the_data_and_rounds_count():
    """With small counts many rounds land on exactly the data's region. The data's minimum is
    an exact p-value; a round's passes through its significance and is stored to 6 digits,
    which can move it up. p̃ must still count every tie: it equals the count over the exact
    (exhaustive) minima of the same pseudo-data, with the minima as computed and as stored."""
    expected = np.array([0.4, 0.3, 0.5])
    sumw2 = 0.01 * expected
    region_set = regions.enumerate_regions(expected, sumw2, systematic=0.1)
    rounds = 20_000
    fast = regions.pseudo_minima(expected, sumw2, region_set, systematic=0.1, rounds=rounds, seed=3)
    counts = regions.pseudo_counts(
        expected, sumw2, systematic=0.1, rounds=rounds, rng=np.random.default_rng(3)
    )
    exact = regions.exhaustive_minimum_pvalues(counts, region_set)
    stored = np.array([float(f"{v:.6g}") for v in fast])
    ties = 0
    for observed in itertools.product(range(3), repeat=3):
        p_obs = regions.scan_histogram(np.array(observed, dtype=float), region_set).p_min
        ties += np.count_nonzero(np.isclose(exact, p_obs, rtol=1e-9, atol=0.0))
        reference = (np.count_nonzero(exact <= p_obs * (1 + 1e-9)) + 1) / (rounds + 1)
        assert lee.p_tilde(p_obs, fast) == reference, observed
        assert lee.p_tilde(p_obs, stored) == reference, observed
        assert lee.pseudo_p_tilde(stored, observed_min=p_obs).min() >= 1 / (rounds + 1)
    assert ties > 1000


def test_pseudo_p_tilde_is_uniform_grid_without_ties():
    values = np.random.default_rng(0).uniform(size=99)
    assert np.allclose(np.sort(lee.pseudo_p_tilde(values)), np.arange(1, 100) / 99)


@pytest.mark.slow
def test_p_tilde_is_uniform_under_background_only():
    """200 seeded pseudo-campaigns of one small scan: p̃ ~ U(0, 1) (KS p > 0.01)."""
    expected = np.array([60.0, 45.0, 33.0, 25.0, 18.0, 13.0, 10.0, 7.0])
    sumw2 = 0.1 * expected
    found = regions.enumerate_regions(expected, sumw2, systematic=0.1)
    values = []
    for campaign in range(200):
        rng = np.random.default_rng(10_000 + campaign)
        observed = regions.pseudo_counts(expected, sumw2, systematic=0.1, rounds=1, rng=rng)[0]
        p_min = regions.scan_histogram(observed, found).p_min
        minima = regions.pseudo_minima(
            expected, sumw2, found, systematic=0.1, rounds=400, seed=campaign
        )
        values.append(lee.p_tilde(p_min, minima))
    assert stats.kstest(values, "uniform").pvalue > 0.01


def test_global_matches_sidak_for_independent_searches():
    rng = np.random.default_rng(4)
    n_searches, rounds = 20, 5000
    results = [result_with(0.5, rng.uniform(size=rounds), f"c{i}") for i in range(n_searches)]
    results[7] = result_with(0.004, rng.uniform(size=rounds), "best")
    outcome = lee.global_significance(results, seed=1)
    assert outcome.search == 7
    assert outcome.p_tilde_min == 0.004
    sidak = 1 - (1 - 0.004) ** n_searches
    assert outcome.p_sidak == pytest.approx(sidak)
    error = np.sqrt(sidak * (1 - sidak) / rounds)
    assert abs(outcome.p_global - sidak) < 4 * error + 1 / rounds
    assert outcome.z_global == pytest.approx(stats.norm.isf(outcome.p_global))


def test_global_significance_is_uniform_under_background_only():
    """Global p of many campaigns of independent searches is uniform."""
    rng = np.random.default_rng(9)
    globals_ = []
    for campaign in range(200):
        results = []
        for i in range(5):
            minima = rng.uniform(size=300)
            observed = rng.uniform()
            results.append(result_with(lee.p_tilde(observed, minima), minima, f"c{i}", observed))
        globals_.append(lee.global_significance(results, seed=campaign).p_global)
    assert stats.kstest(globals_, "uniform").pvalue > 0.01


def test_pseudo_p_tilde_with_the_data_has_the_data_grid():
    pseudo = np.array([0.3, 0.1, 0.2, 0.1])
    values = lee.pseudo_p_tilde(pseudo, observed_min=0.15)
    np.testing.assert_allclose(values, np.array([5, 2, 4, 2]) / 5)
    distinct = np.array([0.3, 0.1, 0.2])
    floor = lee.pseudo_p_tilde(distinct, observed_min=0.5)
    np.testing.assert_allclose(floor, np.array([3, 1, 2]) / 4)
    assert floor.min() == lee.p_tilde(0.05, distinct), "a round's floor is the data's floor"


def test_global_stays_valid_with_many_searches_and_few_rounds():
    """100 searches of 100 rounds: most campaigns have some p̃ at the 1/101 floor. The global p
    must stay a valid p-value, P(p ≤ α) ≤ α, instead of sticking to the floor (which would call
    almost every background-only campaign significant)."""
    rng = np.random.default_rng(21)
    n_searches, rounds, campaigns = 100, 100, 150
    globals_ = []
    at_floor = 0
    for campaign in range(campaigns):
        results = []
        for i in range(n_searches):
            minima = rng.uniform(size=rounds)
            observed = rng.uniform()
            results.append(result_with(lee.p_tilde(observed, minima), minima, f"c{i}", observed))
        outcome = lee.global_significance(results, seed=campaign)
        at_floor += outcome.p_tilde_min == pytest.approx(1 / (rounds + 1))
        globals_.append(outcome.p_global)
    assert at_floor > campaigns / 2, "the regime this test is about"
    globals_ = np.asarray(globals_)
    for alpha in (0.05, 0.1, 0.3, 0.5):
        error = np.sqrt(alpha * (1 - alpha) / campaigns)
        assert np.mean(globals_ <= alpha) <= alpha + 3 * error, alpha
    assert np.mean(globals_ <= 1 / (rounds + 1)) < 0.05


def test_global_needs_a_p_tilde():
    unusable = dataclasses.replace(result_with(0.1, np.empty(0)), p_tilde=None)
    with pytest.raises(ValueError, match="p_tilde"):
        lee.global_significance([unusable], seed=0)


def test_searches_without_rounds_enter_as_calibrated_p_values():
    """Machine-learning searches report a (Šidák-bounded) p̃ but no pseudo-rounds: they
    enter as uniform draws, so a campaign of only such searches gets Šidák's closed form."""
    n_searches = 12
    results = [result_with(0.3, np.empty(0), f"ml{i}") for i in range(n_searches)]
    results[4] = result_with(0.002, np.empty(0), "best")
    outcome = lee.global_significance(results, seed=3)
    sidak = 1 - (1 - 0.002) ** n_searches
    assert outcome.n_rounds == lee.DEFAULT_ROUNDS and outcome.search == 4
    error = np.sqrt(sidak * (1 - sidak) / lee.DEFAULT_ROUNDS)
    assert abs(outcome.p_global - sidak) < 4 * error + 1 / lee.DEFAULT_ROUNDS
    rng = np.random.default_rng(8)
    mixed = [result_with(0.3, rng.uniform(size=2000), f"scan{i}") for i in range(6)]
    outcome = lee.global_significance(mixed + results, seed=3)
    sidak = 1 - (1 - 0.002) ** (n_searches + 6)
    assert outcome.n_searches == n_searches + 6 and outcome.n_rounds == 2000
    assert abs(outcome.p_global - sidak) < 4 * np.sqrt(sidak * (1 - sidak) / 2000) + 1 / 2000


def test_global_z_stays_finite_when_every_round_beats_the_data():
    rng = np.random.default_rng(2)
    rounds = 200
    results = [result_with(1.0, rng.uniform(size=rounds), f"c{i}") for i in range(3)]
    outcome = lee.global_significance(results, seed=0)
    assert outcome.p_global == 1.0
    assert outcome.z_global == pytest.approx(stats.norm.isf(rounds / (rounds + 1)))


def test_a_search_beating_every_round_makes_the_global_numbers_bounds():
    rng = np.random.default_rng(5)
    minima = rng.uniform(size=99)
    beaten = result_with(lee.p_tilde(1e-9, minima), minima, "beaten", 1e-9)
    ordinary = result_with(0.5, rng.uniform(size=99), "other", 0.5)
    outcome = lee.global_significance([beaten, ordinary], seed=0)
    assert outcome.p_tilde_min == pytest.approx(1 / 100)
    assert outcome.resolution_limited
    assert not lee.global_significance([ordinary], seed=0).resolution_limited


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    rounds=st.integers(5, 60),
    correlation=st.floats(0.0, 1.0),
    ties=st.booleans(),
)
def test_joint_p_global_is_valid_for_correlated_searches(seed, rounds, correlation, ties):
    """Each of ``R + 1`` exchangeable datasets taken in turn as the data: at most ``k`` of them
    get a joint global p ``<= k/(R + 1)`` — exact validity, whatever the correlation of the
    searches and however tied their statistics."""
    rng = np.random.default_rng(seed)
    shared = rng.normal(size=rounds + 1)
    statistics = [
        stats.norm.sf(
            correlation * shared + np.sqrt(1 - correlation**2) * rng.normal(size=rounds + 1)
        )
        for _ in range(2)
    ]
    if ties:
        statistics[1] = np.round(statistics[1], 1)
    p = []
    for data in range(rounds + 1):
        others = np.arange(rounds + 1) != data
        p.append(
            lee.joint_p_global([s[data] for s in statistics], [s[others] for s in statistics])[1]
        )
    p = np.asarray(p)
    grid = np.arange(1, rounds + 2) / (rounds + 1)
    assert np.all(
        np.count_nonzero(p[None, :] <= grid[:, None] + 1e-12, axis=1) <= np.arange(1, rounds + 2)
    )


def test_joint_p_global_ignores_a_degenerate_search():
    """A search whose local p is 0 in the data and every round (a fit that can never describe
    the background) has p̃ = 1 everywhere: the joint p is the other search's own p̃."""
    rng = np.random.default_rng(1)
    scan = rng.uniform(size=199)
    for observed in (1e-4, 0.02, 0.3):
        best, p = lee.joint_p_global([observed, 0.0], [scan, np.zeros(199)])
        assert best == 0 and p == pytest.approx(lee.p_tilde(observed, scan))


def test_joint_p_global_pays_for_two_independent_searches():
    """Two independent searches: the joint p of the smaller p̃ is Šidák's ``1 − (1 − p̃)²`` up
    to the rounds' resolution."""
    rng = np.random.default_rng(2)
    a, b = rng.uniform(size=(2, 20_000))
    best, p = lee.joint_p_global([0.01, 0.5], [a, b])
    assert best == 0 and p == pytest.approx(lee.sidak(0.01, 2), abs=0.003)


def test_joint_p_global_needs_one_array_per_search():
    with pytest.raises(ValueError, match="one array of pseudo minima per search"):
        lee.joint_p_global([0.1, 0.2], [np.ones(3)])
