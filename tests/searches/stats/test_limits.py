import dataclasses
import logging

import numpy as np
import pyhf
import pytest
import torch

from searches.stats import inference, limits
from searches.stats.robust import build_model, use_fit_settings
from searches.stats.workspace import current_signal, with_signal
from searches.testing import falling_workspace


@pytest.fixture
def pyhf_on_minuit():
    """pyhf fitting as inference does (MINUIT, tolerance 0.01), the caller's backend put back."""
    backend, optimizer = pyhf.get_backend()
    use_fit_settings(inference.FITS)
    yield
    pyhf.set_backend(backend, optimizer)


def pyhf_cls_at(spec: dict, mu: float, *, top: float) -> np.ndarray:
    """(6,) pyhf CLs at ``mu`` (observed, expected band), the POI's upper bound raised to
    ``top`` as the limit search raises it."""
    model, data = build_model(spec)
    bounds = model.config.suggested_bounds()
    bounds[model.config.poi_index] = (0.0, max(top, bounds[model.config.poi_index][1]))
    observed, band = pyhf.infer.hypotest(
        mu, data, model, test_stat="qtilde", return_expected_set=True, par_bounds=bounds
    )
    return np.array([float(observed), *(float(v) for v in band)])


@pytest.mark.parametrize(("bins", "seed", "level"), [(3, 0, 0.05), (3, 1, 0.05), (20, 2, 0.1)])
def test_limits_sit_where_pyhf_cls_equals_the_level(pyhf_on_minuit, bins, seed, level):
    """The independent reference is pyhf's own hypotest at each limit (observed and each band)."""
    spec = falling_workspace(bins, 0.05, seed)
    limit = limits.batched_upper_limit(spec, level=level)
    assert limit.level == level
    values = [limit.observed, *limit.expected]
    assert values[1:] == sorted(values[1:])
    for k, mu in enumerate(values):
        assert pyhf_cls_at(spec, mu, top=mu)[k] == pytest.approx(level, rel=1e-3)


@pytest.mark.slow
def test_limits_agree_with_the_pyhf_root_search():
    spec = falling_workspace(3, 0.01, seed=1)
    batched = limits.batched_upper_limit(spec)
    reference = inference.upper_limit(spec)
    assert batched.observed == pytest.approx(reference.observed, rel=5e-4)
    assert batched.expected == pytest.approx(reference.expected, rel=5e-4)


@pytest.mark.parametrize("scale", [1e-2, 1e3])
def test_an_exact_signal_scaled_by_k_has_limits_divided_by_k(scale):
    """Closed form: with no MC statistics on the signal the model depends on μ·s only, so
    scaling s by k divides every limit by k. At k = 1e-2 the limits lie above the POI's upper
    bound (10), where pyhf's own ``upper_limit`` raises; at k = 1e3 three decades below it."""
    spec = falling_workspace(20, 0.05, seed=3)
    base = limits.batched_upper_limit(spec)
    scaled = limits.batched_upper_limit(with_signal(spec, scale * current_signal(spec)))
    assert scaled.observed * scale == pytest.approx(base.observed, rel=5e-4)
    assert np.array(scaled.expected) * scale == pytest.approx(base.expected, rel=5e-4)
    assert (max(scaled.expected) > 10) == (scale < 1)


def test_limits_above_the_poi_bound_sit_where_pyhf_cls_equals_the_level(pyhf_on_minuit):
    spec = falling_workspace(3, 0.05, seed=0)
    spec = with_signal(spec, 0.05 * current_signal(spec))
    limit = limits.batched_upper_limit(spec)
    values = [limit.observed, *limit.expected]
    assert min(values) > 10
    for k, mu in enumerate(values):
        assert pyhf_cls_at(spec, mu, top=mu)[k] == pytest.approx(0.05, rel=1e-3)


def test_a_workspace_the_engine_cannot_fit_goes_to_pyhf(pyhf_on_minuit, caplog):
    """At relative MC statistics 1e-6 the engine's Newton fits do not converge; the limit
    comes from pyhf on MINUIT, and the log says why."""
    spec = falling_workspace(3, 1e-6, seed=0)
    with pytest.raises(limits.LimitNotBracketed, match="did not converge"):
        limits.batched_upper_limit(spec)
    with caplog.at_level(logging.INFO, logger="searches.stats.limits"):
        limit = limits.upper_limit(spec)
    assert "upper limit on pyhf (MINUIT)" in caplog.text
    assert pyhf_cls_at(spec, limit.observed, top=10.0)[0] == pytest.approx(0.05, rel=1e-3)


def test_an_engine_error_sends_the_limit_to_pyhf(pyhf_on_minuit, monkeypatch):
    """An exception inside the engine (here injected: a singular Hessian) rejects the points
    of its batch; the limit then comes from pyhf on MINUIT."""

    def singular(*args, **kwargs):
        raise torch.linalg.LinAlgError("linalg.eigvalsh: The algorithm failed to converge")

    spec = falling_workspace(3, 0.05, seed=1)
    monkeypatch.setattr(limits, "stack_cls", singular)
    with pytest.raises(limits.LimitNotBracketed, match=r"the engine raised _?LinAlgError"):
        limits.batched_upper_limit(spec)
    limit = limits.upper_limit(spec)
    assert pyhf_cls_at(spec, limit.observed, top=10.0)[0] == pytest.approx(0.05, rel=1e-3)


def test_a_bracket_the_engine_cannot_shrink_is_reported_as_such(monkeypatch):
    """Every μ within 20 % of the observed limit rejected (injected as a NaN CLs, which the
    engine's checks refuse): that bracket stays wide, the search stops as soon as it has
    nothing new to try, and says which bracket was left."""
    spec = falling_workspace(3, 0.05, seed=1)
    limit = limits.batched_upper_limit(spec).observed
    engine = limits.stack_cls

    def rejecting_near_the_limit(stack, *, mu):
        out = engine(stack, mu=mu)
        near = np.abs(np.asarray(mu) / limit - 1) < 0.2
        return dataclasses.replace(out, cls_obs=np.where(near, np.nan, out.cls_obs))

    monkeypatch.setattr(limits, "stack_cls", rejecting_near_the_limit)
    with pytest.raises(limits.LimitNotBracketed, match=r"not shrunk to rtol.*non-finite CLs"):
        limits.batched_upper_limit(spec)


def test_bad_options_and_placeholder_signal_are_refused():
    spec = falling_workspace(3, 0.05, seed=0)
    with pytest.raises(ValueError, match="'level'"):
        limits.batched_upper_limit(spec, level=1.0)
    with pytest.raises(ValueError, match="'rtol'"):
        limits.batched_upper_limit(spec, rtol=0.0)
    with pytest.raises(ValueError, match="zero placeholder"):
        limits.batched_upper_limit(with_signal(spec, np.zeros(3)))


def test_no_limit_from_either_path_names_both_reasons():
    """1e-5 signal events: the limits (1.9e6–9.1e6, the full signal's times 1e6) lie beyond
    the engine's grid (it ends at 10 × 16⁴ ≈ 6.6e5) and beyond the POI's bound, where pyhf
    refuses to fit."""
    spec = falling_workspace(3, 0.05, seed=0)
    spec = with_signal(spec, 1e-6 * current_signal(spec))
    with pytest.raises(limits.LimitNotFound, match=r"batched engine: no trusted bracket.*MINUIT"):
        limits.upper_limit(spec)
