"""CLs from pseudo-experiments through the batched engine, against closed forms and pyhf."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pyhf
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from pyhf.infer.calculators import EmpiricalDistribution
from scipy import stats

from searches.stats import inference
from searches.stats import toys as toys_module
from searches.stats.batched import compile_stack, stack_cls, twice_nll
from searches.stats.robust import build_model
from searches.stats.toys import (
    NORMAL_PERCENTILES,
    ToyCLs,
    ToyFitError,
    cls_error,
    cls_from_toys,
    draw_toys,
    tail_fraction,
    toy_cls,
    toy_qtilde,
)
from searches.stats.workspace import build_workspace, with_signal
from searches.testing import counting_workspace, to_pyhf_data, to_pyhf_pars


def _search_workspace() -> dict[str, Any]:
    """A low-count search as campaigns write them: staterror, normsys, the signal's shapesys."""
    expected = np.array([4.0, 1.5, 0.6, 0.25])
    spec = build_workspace(
        observed=[5.0, 1.0, 0.0, 1.0], expected=expected, sumw2=expected * 0.04, syst=0.15
    )
    return with_signal(
        spec, np.array([0.3, 1.2, 1.6, 0.9]), signal_sumw2=np.array([0.01, 0.05, 0.3, 0.2])
    )


@pytest.mark.parametrize(("s", "b", "n"), [(5.0, 3.0, 2), (4.0, 6.0, 7)])
def test_counting_experiment_equals_the_poisson_closed_form(s, b, n):
    """Without nuisance parameters ``qtilde`` falls with ``n`` below ``s + b`` and is 0 above,
    so CLs+b = P(N <= n | s + b) and CLb = P(N <= n | b) exactly; the toys must agree within
    their binomial errors (4σ)."""
    out = toy_cls(counting_workspace(s, b, n), ntoys=20000, seed=11, device="cpu")
    assert out.dropped == (0, 0)
    for value, exact in (
        (out.clsb, stats.poisson.cdf(n, s + b)),
        (out.clb, stats.poisson.cdf(n, b)),
    ):
        sigma = math.sqrt(exact * (1 - exact) / out.ntoys)
        assert abs(value - exact) < 4 * sigma, (value, exact)
    exact_cls = stats.poisson.cdf(n, s + b) / stats.poisson.cdf(n, b)
    assert out.observed == pytest.approx(exact_cls, rel=0.15)
    median = int(stats.poisson.median(b))
    assert out.expected[2] == pytest.approx(
        stats.poisson.cdf(median, s + b) / stats.poisson.cdf(median, b), rel=0.15
    ), "the median expected CLs is that of the median background-only count"


def test_each_toys_statistic_equals_pyhf_qmu_tilde(pyhf_on_minuit):
    """Toy by toy, the engine's ``qtilde`` is pyhf's ``qmu_tilde`` (MINUIT) on the same data,
    for toys drawn at both generating points; the data layout is checked by the likelihood."""
    spec = _search_workspace()
    stack = compile_stack([spec], ["w"], device="cpu")
    model, _ = build_model(spec)
    fits = stack_cls(stack, mu=1.0)
    rng = np.random.default_rng(5)
    for drawn_at in (fits.theta[2, 0], fits.theta[0, 0]):
        at = torch.as_tensor(drawn_at)
        main, aux = draw_toys(stack, at, 12, rng)
        mine, converged = toy_qtilde(stack, main, aux, at, mu=1.0)
        assert converged.all()
        for k in range(main.shape[0]):
            data = to_pyhf_data(stack, model, main[k].numpy(), aux[k].numpy())
            theta = at.unsqueeze(0)
            engine = twice_nll(stack, theta, main[k : k + 1], aux[k : k + 1], constants=True)
            pars = to_pyhf_pars(stack, model, drawn_at)
            assert float(engine) == pytest.approx(float(-2 * model.logpdf(pars, data)[0]), 1e-10)
            reference = pyhf.infer.test_statistics.qmu_tilde(
                1.0,
                data,
                model,
                model.config.suggested_init(),
                model.config.suggested_bounds(),
                model.config.suggested_fixed(),
            )
            assert mine[k] == pytest.approx(float(reference), abs=2e-4), k


def test_toys_are_drawn_from_pyhfs_model():
    """Means and variances of the drawn main and auxiliary data are those of pyhf's own
    sampler at the same parameters (Poisson counts, Gaussian and Poisson constraints)."""
    spec = _search_workspace()
    stack = compile_stack([spec], ["w"], device="cpu")
    model, _ = build_model(spec)
    theta = stack_cls(stack, mu=1.0).theta[2, 0]
    main, aux = draw_toys(stack, torch.as_tensor(theta), 40000, np.random.default_rng(3))
    mine = np.stack(
        [to_pyhf_data(stack, model, m, a) for m, a in zip(main.numpy(), aux.numpy(), strict=True)]
    )
    state = np.random.get_state()
    np.random.seed(4)
    try:
        pdf = model.make_pdf(pyhf.tensorlib.astensor(to_pyhf_pars(stack, model, theta)))
        theirs = np.asarray(pdf.sample((40000,)))
    finally:
        np.random.set_state(state)
    spread = np.sqrt((mine.var(0) + theirs.var(0)) / len(theirs))
    assert np.all(np.abs(mine.mean(0) - theirs.mean(0)) <= 5 * spread)
    np.testing.assert_allclose(mine.var(0), theirs.var(0), rtol=0.06, atol=1e-12)


def test_cls_arithmetic_equals_pyhfs_toy_calculator():
    """CLs+b, CLb, CLs and the expected band from given test statistics, as pyhf's
    ``ToyCalculator.pvalues`` and ``expected_pvalues`` compute them (ties included)."""
    rng = np.random.default_rng(2)
    q_signal = np.round(rng.exponential(0.8, 700), 2)
    q_background = np.round(rng.gamma(2.0, 2.0, 650), 2)
    calculator = pyhf.infer.calculators.ToyCalculator(
        [0.0], pyhf.simplemodels.uncorrelated_background([1.0], [1.0], [0.1]), ntoys=1
    )
    signal, background = EmpiricalDistribution(q_signal), EmpiricalDistribution(q_background)
    for q_obs in (0.0, 0.37, 1.5, float(q_background[3]), 9.0):
        observed, clsb, clb, band = cls_from_toys(q_obs, q_signal, q_background)
        ref_clsb, ref_clb, ref_cls = calculator.pvalues(q_obs, signal, background)
        assert (clsb, clb) == (pytest.approx(float(ref_clsb)), pytest.approx(float(ref_clb)))
        assert observed == pytest.approx(float(ref_cls))
    per_toy = [float(calculator.pvalues(q, signal, background)[2]) for q in q_background]
    np.testing.assert_allclose(band, np.percentile(per_toy, NORMAL_PERCENTILES), rtol=1e-12)


def test_the_reported_error_is_the_spread_of_repeated_toy_runs():
    """``observed_error`` against pseudo-experiments: 60 runs of 400 toys each with their own
    seeds scatter by the error one run reports (within the 20 % a 60-run spread allows)."""
    spec = counting_workspace(4.0, 6.0, 4)
    runs = [toy_cls(spec, ntoys=400, seed=seed, device="cpu") for seed in range(60)]
    spread = np.std([r.observed for r in runs], ddof=1)
    reported = np.median([r.observed_error for r in runs])
    assert reported == pytest.approx(spread, rel=0.2)


@settings(max_examples=60, deadline=None)
@given(
    q_signal=hnp.arrays(
        np.float64, st.integers(1, 40), elements=st.sampled_from([0.0, 0.5, 1.0, 2.5, 4.0])
    ),
    q_background=hnp.arrays(np.float64, st.integers(1, 40), elements=st.floats(0.0, 9.0)),
    q_obs=st.floats(0.0, 10.0),
)
def test_cls_arithmetic_equals_pyhf_on_any_toys(q_signal, q_background, q_obs):
    """Property: for any test statistics, ties and zeros included, CLs+b, CLb, CLs and the
    band are pyhf's (``tie=0``: pyhf compares exactly), and CLs+b, CLb are tail fractions."""
    calculator = pyhf.infer.calculators.ToyCalculator(
        [0.0], pyhf.simplemodels.uncorrelated_background([1.0], [1.0], [0.1]), ntoys=1
    )
    signal, background = EmpiricalDistribution(q_signal), EmpiricalDistribution(q_background)
    observed, clsb, clb, band = cls_from_toys(q_obs, q_signal, q_background, tie=0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ref_clsb, ref_clb, _ = calculator.pvalues(q_obs, signal, background)
    assert (clsb, clb) == (float(ref_clsb), float(ref_clb))
    assert 0.0 <= clsb <= 1.0 and 0.0 <= clb <= 1.0
    if clb > 0:
        assert observed == pytest.approx(clsb / clb)
    else:
        assert math.isnan(observed)
    with np.errstate(divide="ignore", invalid="ignore"):
        per_toy = [float(calculator.pvalues(q, signal, background)[2]) for q in q_background]
    np.testing.assert_allclose(band, np.percentile(per_toy, NORMAL_PERCENTILES), rtol=1e-12)


def test_ties_within_fit_precision_count_as_at_least_as_extreme():
    toys = np.array([0.0, 2.0, 3.0 - 1e-9, 3.0, 4.0])
    assert float(tail_fraction(toys, 3.0)) == pytest.approx(3 / 5)
    assert float(tail_fraction(toys, 3.0 + 1e-4)) == pytest.approx(1 / 5)
    assert float(tail_fraction(toys, 3.0 + 1e-4, tie=1e-4)) == pytest.approx(3 / 5)
    assert float(tail_fraction(toys, 1e-5)) == pytest.approx(4 / 5), "0 is not a tie of 1e-5"


@pytest.mark.slow
def test_cls_agrees_with_pyhfs_toy_calculator_within_statistics():
    """End to end against pyhf's ``ToyCalculator`` (its own toys, fits and arithmetic): the
    two estimates differ by less than 4 of their combined binomial errors."""
    spec = _search_workspace()
    pyhf_toys = 300
    reference = inference.cls(spec, calctype="toys", ntoys=pyhf_toys, seed=1)
    mine = toy_cls(spec, ntoys=6000, seed=1, device="cpu")
    # pyhf's error, from the engine's fractions at pyhf's number of toys
    theirs_error = cls_error(
        clsb=mine.clsb, n_signal=pyhf_toys, clb=mine.clb, n_background=pyhf_toys
    )
    error = math.hypot(theirs_error, mine.observed_error)
    assert abs(mine.observed - reference.observed) < 3.5 * error, (mine, reference)
    for value, theirs in zip(mine.expected[1:4], reference.expected[1:4], strict=True):
        assert abs(value - theirs) < 3.5 * max(error, 0.2 * theirs * error / mine.observed)


def test_the_same_seed_gives_the_same_toys_in_any_batch():
    spec = _search_workspace()
    first = toy_cls(spec, ntoys=300, seed=9, device="cpu")
    assert toy_cls(spec, ntoys=300, seed=9, device="cpu", batch=7) == first
    assert toy_cls(spec, ntoys=300, seed=10, device="cpu") != first
    assert ToyCLs.from_dict(first.to_dict() | {"asymptotic": {}}) == first


def test_data_beyond_every_background_toy_is_resolution_limited():
    """A deficit far below the background: no background-like toy is as extreme, so CLb is 0
    at this resolution and the observed CLs is undefined rather than 0 or 1."""
    out = toy_cls(counting_workspace(10.0, 100.0, 50), ntoys=200, seed=1, device="cpu")
    assert out.resolution_limited and out.clb == 0.0 and math.isnan(out.observed)
    back = ToyCLs.from_dict(out.to_dict())
    assert math.isnan(back.observed) and math.isnan(back.observed_error)
    assert back.to_dict() == out.to_dict()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"ntoys": 0}, "ntoys and batch must be positive"),
        ({"batch": 0}, "ntoys and batch must be positive"),
        ({"mu": -1.0}, r"mu must be a finite value in the POI's bounds \[0, 10.0\], got -1.0"),
        ({"mu": 20.0}, r"mu must be a finite value in the POI's bounds \[0, 10.0\], got 20.0"),
    ],
)
def test_bad_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        toy_cls(counting_workspace(5.0, 3.0, 2), **{"seed": 0, "device": "cpu", **options})


def test_a_poi_that_can_go_negative_is_refused():
    spec = counting_workspace(5.0, 3.0, 2)
    spec["measurements"][0]["config"]["parameters"][0]["bounds"] = [[-5.0, 10.0]]
    with pytest.raises(ValueError, match="lower bound at 0"):
        toy_cls(spec, seed=0, device="cpu")


def test_a_toy_whose_fit_fails_is_fitted_again_then_dropped(monkeypatch):
    """A toy whose fit does not converge from where it was drawn is fitted again from the
    suggested init (and keeps that fit); one that fails from both starts is dropped and
    counted, not given a made-up ``qtilde``."""
    spec = _search_workspace()
    stack = compile_stack([spec], ["w"], device="cpu")
    at = torch.as_tensor(stack_cls(stack, mu=1.0).theta[2, 0])
    main, aux = draw_toys(stack, at, 6, np.random.default_rng(1))
    honest, _ = toy_qtilde(stack, main, aux, at, mu=1.0)
    real_fit, calls = toys_module.fit_stack, []

    def failing(stack, data, aux, init, fixed, **options):
        fit = real_fit(stack, data, aux, init, fixed, **options)
        calls.append(len(data))
        converged = fit.converged.clone()
        if len(calls) == 1 or always_fail:
            converged[0] = False  # the free fit of the first toy of the batch
        return dataclasses.replace(fit, converged=converged)

    always_fail = False
    monkeypatch.setattr(toys_module, "fit_stack", failing)
    q, converged = toy_qtilde(stack, main, aux, at, mu=1.0)
    assert calls == [12, 2], "one batch of 6 toys × 2 fits, then the first toy again"
    assert converged.all() and q == pytest.approx(honest, abs=1e-6)
    calls.clear()
    always_fail = True
    q, converged = toy_qtilde(stack, main, aux, at, mu=1.0)
    assert converged.tolist() == [False, True, True, True, True, True]
    out = toy_cls(spec, ntoys=50, seed=3, device="cpu", batch=10)
    assert out.dropped == (5, 5), "one toy in each batch of 10, in both ensembles"


def test_failed_fits_to_the_data_draw_no_toys(monkeypatch):
    real = toys_module.stack_cls

    def unconverged(stack, **options):
        out = real(stack, **options)
        return type(out)(**{**out.__dict__, "converged": np.zeros_like(out.converged)})

    monkeypatch.setattr(toys_module, "stack_cls", unconverged)
    with pytest.raises(ToyFitError, match="did not converge: background_only, free, fixed"):
        toy_cls(_search_workspace(), ntoys=10, seed=0, device="cpu")
