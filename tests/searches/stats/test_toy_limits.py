"""Upper limits from scans of toy CLs, against the Poisson closed form and repeated runs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from searches.stats import toy_limits
from searches.stats.limits import upper_limit
from searches.stats.toy_limits import scan_around, toy_upper_limit
from searches.stats.toys import ToyCLs, ToyFitError, toy_cls
from searches.testing import counting_limit, counting_workspace

QUANTILES = (0.02275, 0.15866, 0.5, 0.84134, 0.97725)


def _binomial_sigma(n: int, b: float, ntoys: int, level: float = 0.05) -> float:
    """Standard error of a toy limit at the closed form's crossing: the binomial errors of the
    two tail fractions there over the slope of log CLs (independent of the code under test)."""
    mu = counting_limit(n, b)
    clsb, clb = stats.poisson.cdf(n, mu + b), stats.poisson.cdf(n, b)
    relative = math.sqrt((1 - clsb) / (ntoys * clsb) + (1 - clb) / (ntoys * clb))
    slope = stats.poisson.pmf(n, mu + b) / clsb  # −d log P(N ≤ n | λ) / dλ
    return relative / slope


@pytest.mark.parametrize(("b", "n"), [(3.0, 0), (3.0, 1), (3.0, 4)])
def test_limits_equal_the_poissoncounting_limit(b, n):
    """Observed and expected limits of a counting experiment without nuisance parameters:
    observed from ``n``, the band from the Poisson quantiles of ``b`` (the background-like
    toys' counts); within 4 binomial errors plus 2 % for the interpolation. At b = 3 each
    band quantile lies at least 4.6 binomial errors (4,000 toys) inside its count's block of
    the Poisson CDF, so the toys' percentiles land on the same count as the closed form's."""
    ntoys = 4000
    found = toy_upper_limit(counting_workspace(1.0, b, n), ntoys=ntoys, seed=5, device="cpu")
    assert found.complete and found.reason == ""
    counts = [int(stats.poisson.ppf(q, b)) for q in QUANTILES]
    for value, count in zip([found.observed, *found.expected], [n, *counts], strict=True):
        reference = counting_limit(count, b)
        allowed = 4 * _binomial_sigma(count, b, ntoys) + 0.02 * reference
        assert value == pytest.approx(reference, abs=allowed), (count, value, reference)
    assert found.observed_error == pytest.approx(_binomial_sigma(n, b, ntoys), rel=0.4)
    scanned = [p.mu for p in found.points]
    assert scanned == sorted(scanned) and min(scanned) < found.observed < max(scanned)


def test_the_reported_error_is_the_spread_of_repeated_limits():
    """24 limits with different seeds: their standard deviation against the median reported
    error (a spread of 24 is known to about 15 %, so 0.6–1.6 is a wide margin)."""
    spec = counting_workspace(1.0, 3.0, 1)
    runs = [toy_upper_limit(spec, ntoys=500, seed=seed, device="cpu") for seed in range(24)]
    observed = np.array([r.observed for r in runs])
    reported = float(np.median([r.observed_error for r in runs]))
    assert 0.6 < observed.std(ddof=1) / reported < 1.6, (observed.std(ddof=1), reported)
    assert abs(observed.mean() - counting_limit(1, 3.0)) < 4 * observed.std(ddof=1) / np.sqrt(24)


def test_the_scan_is_placed_by_the_asymptotic_limits_and_seeded():
    spec = counting_workspace(1.0, 1.0, 1)
    default = toy_upper_limit(spec, ntoys=300, seed=2, device="cpu")
    placed = toy_upper_limit(
        spec, ntoys=300, seed=2, device="cpu", scan=scan_around(upper_limit(spec, device="cpu"))
    )
    assert placed == default
    assert toy_upper_limit(spec, ntoys=300, seed=3, device="cpu").observed != default.observed
    json.dumps(default.to_dict(), allow_nan=False)


@pytest.mark.parametrize("scan", [[0.2, 0.3], [30.0, 40.0]], ids=["below", "above"])
def test_a_scan_that_misses_the_limits_grows_to_them(scan):
    spec = counting_workspace(1.0, 1.0, 1)
    grown = toy_upper_limit(spec, ntoys=2000, seed=1, device="cpu", scan=scan)
    assert grown.complete, grown.reason
    assert grown.observed == pytest.approx(counting_limit(1, 1.0), rel=0.1)
    scanned = [p.mu for p in grown.points]
    assert len(scanned) > len(scan) and min(scanned) < grown.observed < max(scanned)


def test_an_unbracketed_limit_is_none_and_says_why(monkeypatch):
    monkeypatch.setattr(toy_limits, "MAX_EXTENSIONS", 0)
    found = toy_upper_limit(counting_workspace(1.0, 1.0, 1), ntoys=200, seed=1, scan=[0.1, 0.2])
    assert found.observed is None and found.expected == (None,) * 5 and not found.complete
    assert "no trusted bracket of CLs = 0.05 for observed (CLs ≥ 0.05 at every trusted μ)" in (
        found.reason
    )


def test_a_deficit_beyond_every_toy_leaves_the_observed_limit_out():
    """0 events on a background of 10: CLb = P(N = 0 | 10) = 4.5e-5, beyond 300 toys' reach at
    every μ, so no observed CLs is trusted and the scan does not grow for it; the expected
    band stays."""
    spec = counting_workspace(1.0, 10.0, 0)
    scan = scan_around(upper_limit(spec, device="cpu"))
    found = toy_upper_limit(spec, ntoys=300, seed=1, device="cpu", scan=scan)
    assert found.observed is None and found.observed_error is None
    assert all(e is not None for e in found.expected)
    assert "no trusted bracket of CLs = 0.05 for observed (no trusted μ)" in found.reason
    assert "no background-like toy reached the data's qtilde" in found.reason
    assert len(found.points) <= len(scan) + 2, "no extension for a curve without trusted points"


def test_a_point_whose_toys_fail_is_not_trusted(monkeypatch):
    real = toy_limits.stack_toy_cls
    broken = 4.0

    def failing(stack, *, mu, **options):
        if mu == broken:
            raise ToyFitError("the fits to the observed data did not converge: free")
        return real(stack, mu=mu, **options)

    monkeypatch.setattr(toy_limits, "stack_toy_cls", failing)
    found = toy_upper_limit(
        counting_workspace(1.0, 1.0, 1), ntoys=1000, seed=1, scan=[2.0, 3.0, broken, 5.0, 7.0]
    )
    assert found.untrusted[0] == (
        broken,
        "ToyFitError: the fits to the observed data did not converge: free",
    )
    assert found.complete and broken not in [p.mu for p in found.points]


def test_a_known_toy_cls_is_reused_where_the_scan_reaches_its_mu(monkeypatch):
    """A toy CLs drawn before (the verdict's, at μ = 1) stands in for drawing it again, and
    the limits are those of the scan without it; one drawn with other toys is refused, and
    one at a μ whose POI bound the scan raises is drawn again (its fits differ)."""
    spec = counting_workspace(1.0, 1.0, 1, bound=3.0)
    at_one = toy_cls(spec, mu=1.0, ntoys=300, seed=2, device="cpu")
    scan = [0.5, 1.0, 2.0, 4.0, 8.0]
    fresh = toy_upper_limit(spec, ntoys=300, seed=2, device="cpu", scan=scan)
    drawn = []
    real = toy_limits.stack_toy_cls

    def counted(stack, *, mu, **options):
        drawn.append(mu)
        return real(stack, mu=mu, **options)

    monkeypatch.setattr(toy_limits, "stack_toy_cls", counted)
    reused = toy_upper_limit(spec, ntoys=300, seed=2, device="cpu", scan=scan, known=[at_one])
    assert reused == fresh and 1.0 not in drawn and 2.0 in drawn
    assert next(p for p in reused.points if p.mu == 1.0) is at_one
    high = toy_cls(spec, mu=2.0, ntoys=300, seed=2, device="cpu")
    drawn.clear()
    toy_upper_limit(spec, ntoys=300, seed=2, device="cpu", scan=scan, known=[high])
    assert 2.0 in drawn, "the scan's μ = 2 runs with the POI bound raised to 4"
    with pytest.raises(ValueError, match=r"'known' toy CLs at μ = 1.0 drew ntoys=300, seed=2"):
        toy_upper_limit(spec, ntoys=300, seed=3, scan=scan, known=[at_one])


def _curve(table: dict[float, float]):
    """A stand-in for ``stack_toy_cls`` whose observed toy CLs at μ is ``table[μ]`` (± 0.007)."""

    def drawn(stack, *, mu, ntoys, seed, **options):
        band = tuple(float(np.exp(-mu * f)) for f in (2.0, 1.5, 1.0, 0.7, 0.5))
        return ToyCLs(
            mu=mu,
            observed=table[mu],
            observed_error=0.007,
            expected=band,
            clsb=table[mu] / 2,
            clb=0.5,
            q_observed=1.0,
            ntoys=ntoys,
            seed=seed,
            dropped=(0, 0),
            resolution_limited=False,
        )

    return drawn


def test_a_curve_that_runs_along_the_level_gives_the_span_of_the_observed_limit(monkeypatch):
    """The observed CLs falls below 0.05 between μ = 2 and 3, then stays within 2 errors of it
    up to μ = 5: the first crossing (2.87) is reported, and the span says the limit could lie
    anywhere up to 5 at these toys. A curve that falls steeply through 0.05 gives no span."""
    monkeypatch.setattr(toy_limits, "REFINEMENTS", 0)
    monkeypatch.setattr(toy_limits, "MAX_EXTENSIONS", 0)
    flat = {1.0: 0.2, 2.0: 0.1, 3.0: 0.045, 4.0: 0.06, 5.0: 0.052, 6.0: 0.02, 8.0: 0.005}
    monkeypatch.setattr(toy_limits, "stack_toy_cls", _curve(flat))
    spec = counting_workspace(1.0, 1.0, 1)
    found = toy_upper_limit(spec, ntoys=1000, seed=1, scan=list(flat))
    assert found.observed == pytest.approx(2 + math.log(2) / math.log(0.1 / 0.045))
    assert found.observed_span == (found.observed, 5.0)
    assert 5.0 - found.observed > toy_limits.SPAN_SIGMAS * found.observed_error
    assert found.to_dict()["observed_span"] == [found.observed, 5.0]
    steep = {1.0: 0.2, 2.0: 0.1, 3.0: 0.01, 4.0: 0.001}
    monkeypatch.setattr(toy_limits, "stack_toy_cls", _curve(steep))
    found = toy_upper_limit(spec, ntoys=1000, seed=1, scan=list(steep))
    assert found.observed is not None and found.observed_span is None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"ntoys": 0}, "ntoys and batch must be positive"),
        ({"level": 1.0}, r"'level' must be in \(0, 1\)"),
        ({"scan": [1.0]}, "at least two finite μ > 0"),
        ({"scan": [0.0, 1.0]}, "at least two finite μ > 0"),
    ],
)
def test_bad_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        toy_upper_limit(counting_workspace(1.0, 1.0, 1), **{"seed": 0, **options})
