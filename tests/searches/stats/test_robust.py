"""Fit robustness: CLs formulas against pyhf, log-space tails, detection of a bad fit, retries."""

from __future__ import annotations

import math

import numpy as np
import pyhf
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from searches.stats.robust import (
    CLsResult,
    FitSettings,
    cls_from_statistics,
    diagnose,
    diagnose_fits,
    plain_hypotest,
    restoring_backend,
    robust_hypotest,
)


def _simple_spec(
    signal: float = 5.0, background: float = 50.0, observed: float = 52.0, signal2: float = 2.0
) -> dict:
    model = pyhf.simplemodels.uncorrelated_background(
        [signal, signal2], [background, 20.0], [5.0, 3.0]
    )
    return {
        "channels": model.spec["channels"],
        "observations": [{"name": "singlechannel", "data": [observed, 21.0]}],
        "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": []}}],
        "version": "1.0.0",
    }


@settings(max_examples=25, deadline=None)
@given(q=st.floats(0.0, 30.0), qa=st.floats(1e-3, 30.0))
def test_cls_formula_matches_pyhf_asymptotics(q, qa):
    pyhf.set_backend("numpy")
    sb = pyhf.infer.calculators.AsymptoticTestStatDistribution(-math.sqrt(qa))
    b = pyhf.infer.calculators.AsymptoticTestStatDistribution(0.0)
    sq, sqa = math.sqrt(q), math.sqrt(qa)
    t = sq - sqa if sq <= sqa else (q - qa) / (2 * sqa)
    with np.errstate(all="ignore"):
        expected = float(sb.pvalue(t) / b.pvalue(t))
    band = [float(sb.pvalue(n) / b.pvalue(n)) for n in (2, 1, 0, -1, -2)]
    obs, exp = cls_from_statistics(q, qa)
    if math.isfinite(expected):
        assert obs == pytest.approx(expected, rel=1e-9, abs=1e-300)
    assert np.allclose(exp, band, rtol=1e-9)


@pytest.mark.filterwarnings("ignore:Creating a tensor from a list of numpy.ndarrays:UserWarning")
def test_restoring_backend_puts_pyhf_back_after_a_failure():
    """A retry switches pyhf's global optimizer; the caller's backend must survive an error.
    So must torch's default dtype, which pyhf's pytorch backend sets to float64 for the whole
    process (every torch network built afterwards would train in double precision). The
    switch re-converts every pyhf model still alive in the process (an earlier test's model
    with a ``shapesys``, say), and torch warns that pyhf builds one of those tensors slowly."""
    import logging

    import torch

    from searches.ml.device import default_dtype

    pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer(tolerance=1e-7))
    before_backend, before_optimizer = pyhf.get_backend()
    fit_log = logging.getLogger("pyhf.optimize.mixins")
    level = fit_log.level

    @restoring_backend
    def switch_and_fail() -> None:
        pyhf.set_backend("pytorch", precision="64b")
        assert torch.get_default_dtype() == torch.float64
        pyhf.set_backend("numpy", "minuit")
        assert fit_log.level == logging.CRITICAL
        raise RuntimeError("fit failed")

    with default_dtype(torch.float32):
        with pytest.raises(RuntimeError, match="fit failed"):
            switch_and_fail()
        assert torch.get_default_dtype() == torch.float32
    backend, optimizer = pyhf.get_backend()
    assert optimizer is before_optimizer and optimizer.name == "scipy"
    assert optimizer.tolerance == 1e-7
    assert backend.name == before_backend.name
    assert fit_log.level == level


def test_tiny_asimov_statistic_stays_finite():
    # Linear-space tails underflow to 0/0 here, which is how pyhf produces NaN CLs.
    obs, _ = cls_from_statistics(4.0, 1e-8)
    assert math.isfinite(float(obs)) and 0.0 < float(obs) <= 1.0
    sqa = 1e-4
    t = (4.0 - 1e-8) / (2 * sqa)
    with np.errstate(all="ignore"):
        linear = pyhf.tensorlib.normal_cdf(-(t + sqa)) / pyhf.tensorlib.normal_cdf(-t)
    assert not math.isfinite(float(linear))
    # For t → ∞ the Mills ratio gives CLs → exp(−t·√q_A) = exp(−(q − q_A)/2).
    assert float(obs) == pytest.approx(math.exp(-(4.0 - 1e-8) / 2 - 1e-8 / 2), rel=1e-3)


def test_plain_hypotest_reproduces_pyhf():
    spec = _simple_spec()
    workspace = pyhf.Workspace(spec)
    model = workspace.model()
    data = workspace.data(model)
    fits = plain_hypotest(model, data)
    pyhf.set_backend("numpy", "scipy")
    cls_obs, cls_exp = pyhf.infer.hypotest(
        1.0, data, model, test_stat="qtilde", return_expected_set=True
    )
    assert fits.cls_obs == pytest.approx(float(cls_obs), rel=1e-6)
    assert np.allclose(fits.cls_exp, [float(v) for v in cls_exp], rtol=1e-6)
    assert diagnose_fits(model, fits) == []


def test_stalled_fit_is_detected_and_recovered():
    spec = _simple_spec(signal=8.0, observed=45.0)
    workspace = pyhf.Workspace(spec)
    model = workspace.model()
    data = workspace.data(model)
    good = plain_hypotest(model, data)
    # A tolerance of 1e3 makes SLSQP stop at its start: μ̂ stays at the initial 1.0 and the
    # profile-likelihood ratio collapses, the "fit never moved → CLs ≈ 1" pattern.
    stalled = plain_hypotest(model, data, settings=FitSettings(tolerance=1e3))
    problems = diagnose_fits(model, stalled)
    assert any("never moved" in p for p in problems)
    assert stalled.cls_obs == pytest.approx(1.0, abs=0.05) or not math.isfinite(stalled.cls_obs)
    result = robust_hypotest(
        spec, name="toy", earlier_problems=problems, earlier_backend="pyhf-numpy:scipy,tol=1e3"
    )
    assert result.status == "recovered"
    assert "never moved" in result.reason and "profile scan" in result.reason
    assert result.cls_obs == pytest.approx(good.cls_obs, rel=1e-3)
    assert result.excluded is (good.cls_obs < 0.05)


def test_capped_attempts_leave_an_unchecked_fit_failed():
    """A loop over many points caps the pyhf fallback: with no attempt the earlier problems
    decide (failed, never a CLs); with one, the plain fit is tried but not the retries."""
    spec = _simple_spec(signal=8.0, observed=45.0)
    problems = ["fit never moved from its start"]
    none = robust_hypotest(spec, name="toy", earlier_problems=problems, attempts=0)
    assert none.status == "failed" and none.cls_obs is None
    assert "after 0 pyhf attempts" in none.reason and len(none.diagnostics["attempts"]) == 1
    one = robust_hypotest(spec, name="toy", earlier_problems=problems, attempts=1)
    assert [a["backend"] for a in one.diagnostics["attempts"][1:]] == ["pyhf-numpy:scipy"]
    assert one.status == "recovered"


def test_unresolved_is_failed_never_allowed():
    spec = _simple_spec(signal=0.0, signal2=0.0)
    result = robust_hypotest(spec, name="empty")
    assert result.status == "failed"
    assert result.cls_obs is None and result.excluded is None
    assert "no signal" in result.reason
    again = CLsResult.from_dict(result.to_dict())
    assert again == result


def test_diagnose_flags_each_pattern():
    base = dict(cls_obs=0.3, cls_exp=(0.1, 0.2, 0.3, 0.4, 0.5), q_obs_raw=1.0, q_asimov_raw=2.0)
    assert diagnose(**base, converged={"free": True}) == []
    assert "non-finite CLs" in diagnose(**{**base, "cls_obs": math.nan}, converged={})
    assert any("did not converge" in p for p in diagnose(**base, converged={"free": False}))
    assert any("q_obs" in p for p in diagnose(**{**base, "q_obs_raw": -0.5}, converged={}))
    assert any("≈ 0" in p for p in diagnose(**{**base, "q_asimov_raw": 0.0}, converged={}))
    assert any("bounds" in p for p in diagnose(**base, converged={}, at_bounds=["alpha_x"]))
    assert any("never moved" in p for p in diagnose(**base, converged={}, mu_hat=1.0, mu_start=1.0))
