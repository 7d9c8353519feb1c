import dataclasses
import json
import logging

import numpy as np
import pyhf
import pytest
import torch

from searches.stats import inference, limits
from searches.stats.batched import evaluate_patches
from searches.stats.robust import build_model
from searches.stats.workspace import SIGNAL, current_signal, with_signal
from searches.testing import falling_workspace


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


def _published(spec: dict, scales: list[float]) -> tuple[dict, list[dict]]:
    """``spec`` split as a HEPData likelihood is: the background-only workspace, and one patch
    per signal scale that adds the signal sample (its yields × scale)."""
    background = {
        **spec,
        "channels": [
            {**channel, "samples": [s for s in channel["samples"] if s["name"] != SIGNAL]}
            for channel in spec["channels"]
        ],
    }
    (channel,) = spec["channels"]
    (signal,) = (s for s in channel["samples"] if s["name"] == SIGNAL)
    patches = [
        {
            "name": f"scale_{scale:g}",
            "parameters": {"scale": scale},
            "operations": [
                {
                    "op": "add",
                    "path": "/channels/0/samples/0",
                    "value": {**signal, "data": [scale * v for v in signal["data"]]},
                }
            ],
        }
        for scale in scales
    ]
    return background, patches


def test_patch_limits_are_excluded_exactly_where_cls_at_one_is_below_the_level():
    """Closed form and an independent path: the signal is exact, so a patch scaling it by k has
    limits 1/k times the unscaled workspace's; and μ95 < 1 exactly where the CLs at μ = 1 (the
    engine's hypothesis test, as a published evaluation reports it) is below 0.05."""
    spec = falling_workspace(3, 0.05, seed=1)
    base = limits.batched_upper_limit(spec)
    scales = [base.observed * f for f in (0.5, 0.9, 1.1, 2.0)]
    background, patches = _published(spec, scales)
    done = []
    found = limits.patch_upper_limits(background, patches, region="SR", progress=done.append)
    assert done == [1] * len(scales)
    cls = evaluate_patches(background, patches)
    for limit, scale, tested in zip(found, scales, cls, strict=True):
        assert (limit.name, limit.region, limit.parameters) == (tested.name, "SR", {"scale": scale})
        assert limit.reason == "" and limit.level == 0.05
        assert limit.observed * scale == pytest.approx(base.observed, rel=5e-4)
        assert np.array(limit.expected) * scale == pytest.approx(base.expected, rel=5e-4)
        assert (limit.observed < 1) == (tested.cls_obs < 0.05)
        assert (limit.expected[2] < 1) == (tested.cls_exp[2] < 0.05)
    assert [limit.observed < 1 for limit in found] == [False, False, True, True]
    assert json.loads(json.dumps(found[0].to_dict()))["expected"] == list(found[0].expected)


def test_patches_without_a_limit_say_why_and_bad_patches_are_refused():
    spec = falling_workspace(3, 0.05, seed=1)
    background, (empty,) = _published(spec, [0.0])
    (limit,) = limits.patch_upper_limits(background, [empty])
    assert limit.observed is None and limit.expected == (None,) * 5
    assert "multiplies no events" in limit.reason
    broken = {"name": "broken", "operations": [{"op": "remove", "path": "/channels/7"}]}
    with pytest.raises(ValueError, match=r"^SR/broken: patch does not apply"):
        limits.patch_upper_limits(background, [broken], region="SR")
    with pytest.raises(ValueError, match="'level' must be in"):
        limits.patch_upper_limits(background, [empty], level=1.5)


def test_a_patch_keeps_the_limits_that_were_found(monkeypatch):
    """Every μ within 5 % of the observed limit rejected (as above; the nearest expected limit
    is 18 % away): the patch has no observed limit, says so, and keeps its five expected limits,
    which equal the unpatched search's."""
    spec = falling_workspace(3, 0.05, seed=1)
    reference = limits.batched_upper_limit(spec)
    engine = limits.stack_cls

    def rejecting_near_the_limit(stack, *, mu):
        out = engine(stack, mu=mu)
        near = np.abs(np.asarray(mu) / reference.observed - 1) < 0.05
        return dataclasses.replace(out, cls_obs=np.where(near, np.nan, out.cls_obs))

    monkeypatch.setattr(limits, "stack_cls", rejecting_near_the_limit)
    background, patches = _published(spec, [1.0])
    (limit,) = limits.patch_upper_limits(background, patches)
    assert limit.observed is None
    assert limit.expected == pytest.approx(reference.expected, rel=5e-4)
    assert limit.reason.startswith(
        "brackets of CLs = 0.05 not shrunk to rtol = 0.0001 for observed ("
    )
    assert "expected" not in limit.reason.partition(" on μ in")[0]


def test_a_curve_without_a_bracket_leaves_the_other_limits_of_a_patch(monkeypatch):
    """The +2σ expected CLs held at 1 for every μ (injected): it never falls below the level,
    so that limit is missing and named; the other five are the unpatched search's. The
    single-workspace search wants all six, so it raises instead (and upper_limit goes to pyhf)."""
    spec = falling_workspace(3, 0.05, seed=1)
    reference = limits.batched_upper_limit(spec)
    engine = limits.stack_cls

    def flat_upper_band(stack, *, mu):
        out = engine(stack, mu=mu)
        band = np.array(out.cls_exp, copy=True)
        band[:, 4] = 1.0
        return dataclasses.replace(out, cls_exp=band)

    monkeypatch.setattr(limits, "stack_cls", flat_upper_band)
    background, patches = _published(spec, [1.0])
    (limit,) = limits.patch_upper_limits(background, patches)
    assert limit.observed == pytest.approx(reference.observed, rel=5e-4)
    assert limit.expected[:4] == pytest.approx(reference.expected[:4], rel=5e-4)
    assert limit.expected[4] is None
    assert limit.reason.startswith(
        "no trusted bracket of CLs = 0.05 for expected +2σ (CLs ≥ 0.05 at every trusted μ) on μ"
    )
    with pytest.raises(limits.LimitNotBracketed, match=r"^no trusted bracket .* expected \+2σ"):
        limits.batched_upper_limit(spec)


def test_a_nearly_step_like_band_edge_is_still_bracketed(shared_data):
    """Region B's sbottom_850_845_60 of ATLAS SUSY-2018-31: its +2σ expected CLs falls almost
    as a step near μ ≈ 604, where the log-linear steps alone left the bracket 2e-3 wide after
    every pass; the midpoint added when a pass does not halve a bracket finds it."""
    from searches.likelihoods import load_likelihoods
    from searches.testing import SBOTTOM_TARBALL

    (region,) = (r for r in load_likelihoods(shared_data / SBOTTOM_TARBALL) if r.name == "RegionB")
    (limit,) = limits.patch_upper_limits(
        region.background, [region.patch("sbottom_850_845_60")], region="RegionB"
    )
    assert limit.reason == ""
    assert limit.expected == tuple(sorted(limit.expected))
    assert 500 < limit.expected[4] < 700 and limit.observed == pytest.approx(15.19, rel=1e-3)
