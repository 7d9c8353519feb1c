"""Batched CLs engine: exact pyhf likelihood, the published reference CLs, agreement with pyhf."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from searches.likelihoods import load_likelihoods
from searches.stats.batched import (
    _derivatives,
    compile_stack,
    evaluate_patches,
    patched_spec,
    twice_nll,
)
from searches.stats.robust import CLsResult, FitSettings, build_model, pyhf_cls
from searches.testing import SBOTTOM_REFERENCE, SBOTTOM_TARBALL

TARBALL = SBOTTOM_TARBALL
REFERENCE = SBOTTOM_REFERENCE


@pytest.fixture(scope="module")
def regions(shared_data: Path):
    return {r.name: r for r in load_likelihoods(shared_data / TARBALL)}


def _pyhf_order(stack, model, pars: np.ndarray) -> torch.Tensor:
    theta = np.zeros(len(stack.par_names))
    for i, name in enumerate(stack.par_names):
        base, _, rest = name.partition("[")
        values = pars[model.config.par_slice(base)]
        theta[i] = values[int(rest[:-1])] if rest else values[0]
    return torch.tensor(theta)


@pytest.mark.parametrize(
    "region,patch", [("RegionA", "sbottom_1300_205_60"), ("RegionC", "sbottom_1600_850_60")]
)
def test_likelihood_equals_pyhf_logpdf(regions, region, patch):
    spec = regions[region].workspace(patch)
    stack = compile_stack([spec], [patch], device="cpu")
    model, data = build_model(spec)
    rng = np.random.default_rng(7)
    bounds = np.asarray(model.config.suggested_bounds())
    for _ in range(3):
        pars = np.asarray(model.config.suggested_init(), dtype=float)
        pars += rng.normal(0, 0.05, pars.size)
        pars = np.clip(pars, bounds[:, 0], bounds[:, 1])
        theta = _pyhf_order(stack, model, pars)[None]
        mine = twice_nll(stack, theta, stack.observed[None], stack.aux_init[None], constants=True)
        assert float(mine) == pytest.approx(float(-2 * model.logpdf(pars, data)[0]), rel=1e-12)


def test_analytic_derivatives_match_autograd(regions):
    region = regions["RegionA"]
    patches = region.patches[:2]
    stack = compile_stack(
        [region.workspace(p) for p in patches], [p.name for p in patches], device="cpu"
    )
    gen = torch.Generator().manual_seed(3)
    theta = (
        stack.init.expand(2, -1)
        + 0.3
        * torch.randn(2, len(stack.par_names), generator=gen, dtype=torch.float64)
        * (stack.upper - stack.lower).clamp(max=2)
        / 2
    )
    theta = torch.minimum(torch.maximum(theta, stack.lower + 1e-3), stack.upper)
    theta[0, stack.poi] = 0.0  # the μ = 0 corner of the product rule
    data = stack.observed.expand(2, -1) + 0.5
    aux = stack.aux_init.expand(2, -1)
    _, grad, hess, _ = _derivatives(stack, theta, data, aux)
    auto_grad = torch.func.grad(lambda t: twice_nll(stack, t, data, aux).sum())(theta)
    assert torch.allclose(grad, auto_grad, rtol=1e-9, atol=1e-9)
    for i in range(2):
        one = stack.take(torch.tensor([i]))
        auto_hess = torch.func.hessian(
            lambda t, one=one, i=i: twice_nll(one, t[None], data[i : i + 1], aux[i : i + 1]).sum()
        )(theta[i])
        assert torch.allclose(hess[i], auto_hess, rtol=1e-8, atol=1e-8)


@pytest.mark.slow
def test_reference_values_batched_and_plain(regions):
    by_region: dict[str, list[str]] = {}
    for region, patch in REFERENCE:
        by_region.setdefault(region, []).append(patch)
    for region, names in by_region.items():
        results = evaluate_patches(
            regions[region].background,
            [regions[region].patch(n) for n in names],
            region=region,
            device="cpu",
        )
        for result in results:
            cls_obs, cls_exp = REFERENCE[(region, result.name)]
            assert result.status == "ok" and result.backend == "batched-torch:cpu"
            assert result.cls_obs == pytest.approx(cls_obs, rel=1e-5)
            plain_obs, plain_exp, _ = pyhf_cls(regions[region].workspace(result.name))
            assert plain_obs == pytest.approx(cls_obs, rel=1e-5)
            if cls_exp is None:
                continue
            # The published bands carry scipy's default fit tolerance (~1e-5 relative on the
            # −2σ band, also between plain pyhf runs); against pyhf with tight fits the batched
            # band agrees to 1e-5.
            assert np.allclose(result.cls_exp, cls_exp, rtol=1e-4)
            assert np.allclose(plain_exp, cls_exp, rtol=1e-4)
            if result.name != "sbottom_1300_205_60":
                continue
            tight = pyhf_cls(
                regions[region].workspace(result.name), settings=FitSettings(tolerance=1e-12)
            )
            assert np.allclose(result.cls_exp, tight[1], rtol=1e-5)
            assert result.cls_obs == pytest.approx(tight[0], rel=1e-5)


@pytest.mark.slow
def test_batched_agrees_with_plain_pyhf_across_regions(regions):
    picks = {
        "RegionA": ["sbottom_1000_131_1", "sbottom_1200_730_600"],
        "RegionB": ["sbottom_400_280_150", "sbottom_800_550_60", "sbottom_1000_900_60"],
        "RegionC": ["sbottom_1000_350_60", "sbottom_700_650_60"],
    }
    for region, names in picks.items():
        names = [n for n in names if any(p.name == n for p in regions[region].patches)]
        assert len(names) >= 2
        results = evaluate_patches(
            regions[region].background,
            [regions[region].patch(n) for n in names],
            region=region,
            device="cpu",
        )
        for result in results:
            plain_obs, plain_exp, _ = pyhf_cls(regions[region].workspace(result.name))
            assert result.status in ("ok", "recovered")
            assert result.cls_obs == pytest.approx(plain_obs, rel=1e-3)
            assert np.allclose(result.cls_exp, plain_exp, rtol=1e-3)
            assert result.excluded is (plain_obs < 0.05)


@pytest.mark.slow
def test_weak_and_empty_signals_are_never_silently_allowed(regions):
    region = regions["RegionB"]
    names = ["sbottom_1000_131_1", "sbottom_1500_1495_60", "sbottom_1400_550_60"]
    weak, empty, normal = evaluate_patches(
        region.background, [region.patch(n) for n in names], region="RegionB", device="cpu"
    )
    # Plain pyhf returns NaN here: q_A ≈ 7e-8 is clipped to 0 and the asymptotic formula divides by it.
    assert math.isnan(pyhf_cls(region.workspace("sbottom_1000_131_1"))[0])
    assert weak.status == "recovered" and "q_A" in weak.reason and "profile scan" in weak.reason
    assert 0.99 < weak.cls_obs <= 1.0 and weak.excluded is False
    assert empty.status == "failed" and empty.excluded is None and "mu_SIG" in empty.reason
    assert normal.status == "ok"
    payload = json.loads(json.dumps([r.to_dict() for r in (weak, empty, normal)]))
    assert [CLsResult.from_dict(d) for d in payload] == [weak, empty, normal]


def test_patched_spec_leaves_background_untouched(regions):
    region = regions["RegionB"]
    before = json.dumps(dict(region.background), sort_keys=True)
    spec = patched_spec(region.background, region.patch("sbottom_1400_550_60").operations)
    assert json.dumps(dict(region.background), sort_keys=True) == before
    assert spec == region.workspace("sbottom_1400_550_60")
    with pytest.raises(ValueError, match="does not apply"):
        patched_spec(region.background, [{"op": "remove", "path": "/channels/9"}])
    with pytest.raises(ValueError, match="backend must be one of"):
        evaluate_patches(region.background, [], backend="jax")  # type: ignore[arg-type]
