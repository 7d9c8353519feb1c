import numpy as np
import pyhf
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from searches.stats import inference
from searches.stats.batched import evaluate_patches
from searches.stats.robust import use_fit_settings
from searches.stats.workspace import (
    MCSTAT_FLOOR,
    build_workspace,
    current_signal,
    validate,
    with_signal,
)
from searches.testing import falling_workspace, stiff_workspace, without_mc_statistics

OBSERVED = [12.0, 8.0, 3.0, 0.0]
EXPECTED = [10.0, 7.0, 2.5, 0.0]
SUMW2 = [1.0, 0.5, 0.2, 0.0]


def workspace(**kwargs):
    return build_workspace(observed=OBSERVED, expected=EXPECTED, sumw2=SUMW2, syst=0.1, **kwargs)


@settings(max_examples=30, deadline=None)
@given(
    bins=st.integers(1, 12),
    syst=st.floats(0.0, 0.9),
    seed=st.integers(0, 10_000),
    with_template=st.booleans(),
)
def test_every_exported_workspace_validates(bins, syst, seed, with_template):
    rng = np.random.default_rng(seed)
    expected = rng.uniform(0.0, 100.0, bins) * (rng.uniform(size=bins) > 0.2)
    spec = build_workspace(
        observed=rng.poisson(expected + 1.0),
        expected=expected,
        sumw2=rng.uniform(0.0, 2.0, bins),
        syst=syst,
        signal=rng.uniform(0.0, 5.0, bins) if with_template else None,
        channel="any_class__minv",
    )
    pyhf.schema.validate(spec, "workspace.json")
    model = pyhf.Workspace(spec).model()
    assert model.config.poi_name == "mu"
    assert model.config.nmaindata == bins


def test_placeholder_and_patch():
    spec = workspace()
    assert np.all(current_signal(spec) == 0.0)
    patched = with_signal(spec, [1.0, 2.0, 3.0, 0.5])
    assert np.allclose(current_signal(patched), [1.0, 2.0, 3.0, 0.5])
    assert np.all(current_signal(spec) == 0.0)
    validate(patched)
    with pytest.raises(ValueError, match="'signal_yields' has 2 bins; expected 4"):
        with_signal(spec, [1.0, 2.0])
    with pytest.raises(ValueError, match="zero placeholder"):
        inference.cls(spec)


def test_signal_mc_statistics_are_a_poisson_constraint_where_the_signal_dominates():
    """Signal-dominated bins: Barlow–Beeston aux count τ = (s/σ)², Poisson in γ·τ; other bins:
    the signal's σ² joins the background's staterror (pyhf: σ_rel = √Σσ² / Σ nominal)."""
    unweighted = with_signal(workspace(), [1.0] * 4)["channels"][0]["samples"][0]
    assert all(m["type"] != "staterror" for m in unweighted["modifiers"])
    yields, sumw2 = [4.0, 9.0, 0.0, 2.0], [4.0, 1.0, 0.0, 0.0]
    model = validate(with_signal(workspace(), yields, signal_sumw2=sumw2)).model()
    own = model.config.param_set("mcstat_signal_search")
    assert own.suggested_fixed == [True, False, True, True], "only bin 1 dominates with MC stat"
    slices = model.config.par_slice("mcstat_signal_search")
    auxdata = np.asarray(model.config.auxdata)
    nominal = np.asarray(model.config.suggested_init(), dtype=float)
    shifted = nominal.copy()
    shifted[slices.start + 1] = 0.5
    change = model.constraint_logpdf(auxdata, shifted) - model.constraint_logpdf(auxdata, nominal)
    reference = stats.poisson.logpmf(81, 0.5 * 81) - stats.poisson.logpmf(81, 81)
    assert float(change) == pytest.approx(reference, rel=1e-10)
    sigmas = model.config.param_set("staterror_search").sigmas
    assert sigmas[0] == pytest.approx(np.sqrt(SUMW2[0] + 4.0) / EXPECTED[0])
    assert sigmas[1] == pytest.approx(np.sqrt(SUMW2[1]) / EXPECTED[1]), "bin 1 has its own term"


def test_a_huge_poorly_simulated_signal_cannot_be_scaled_away():
    """One MC event of weight 60 in a quiet bin: excluded, not CLs = 0.5 via γ → 0."""
    spec = build_workspace(observed=[1.0, 20.0], expected=[1.0, 20.0], sumw2=[0.01, 1.0], syst=0.0)
    patched = with_signal(spec, [60.0, 0.0], signal_sumw2=[3600.0, 0.0])
    cls_obs = inference.cls(patched).observed
    assert cls_obs < 0.05


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="'sumw2' has 3 bins"):
        build_workspace(observed=[1, 2], expected=[1, 2], sumw2=[1, 1, 1], syst=0.1)
    with pytest.raises(ValueError, match="'syst'"):
        build_workspace(observed=[1], expected=[1], sumw2=[1], syst=1.5)
    with pytest.raises(ValueError, match="'observed' must be finite"):
        build_workspace(observed=[-1], expected=[1], sumw2=[1], syst=0.1)


def direct(spec):
    ws = pyhf.Workspace(spec)
    model = ws.model()
    return model, ws.data(model)


@pytest.fixture
def pyhf_default_optimizer(pyhf_restored):
    """pyhf's default SLSQP as the global optimizer for the test."""
    pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer())
    return pyhf.get_backend()[1]


@pytest.mark.slow
def test_inference_equals_direct_pyhf_calls(pyhf_default_optimizer):
    """The same numbers as pyhf's own calls on the optimizer inference fits with (MINUIT)."""
    spec = with_signal(workspace(), [0.5, 2.0, 3.0, 0.1])
    model, data = direct(spec)
    use_fit_settings(inference.FITS)

    p0, p0_exp = pyhf.infer.hypotest(0.0, data, model, test_stat="q0", return_expected=True)
    found = inference.discovery_p0(spec)
    assert found.p0 == pytest.approx(float(p0), rel=1e-9)
    assert found.p0_expected == pytest.approx(float(p0_exp), rel=1e-9)

    obs, band = pyhf.infer.hypotest(1.0, data, model, test_stat="qtilde", return_expected_set=True)
    cls = inference.cls(spec)
    assert cls.observed == pytest.approx(float(obs), rel=1e-9)
    assert np.allclose(cls.expected, np.asarray(band, dtype=float), rtol=1e-9)
    assert list(cls.expected) == sorted(cls.expected)

    up_obs, up_exp = pyhf.infer.intervals.upper_limits.upper_limit(
        data, model, level=0.05, test_stat="qtilde"
    )
    limit = inference.upper_limit(spec)
    assert limit.observed == pytest.approx(float(up_obs), rel=1e-9)
    assert np.allclose(limit.expected, np.asarray(up_exp, dtype=float), rtol=1e-9)


STIFF_BACKGROUND = np.array([1000.0, 31.6, 1.0])


@pytest.mark.parametrize(
    ("signal", "observed"),
    [([10.0, 3.0, 1.5], [1000.0, 35.0, 2.0]), ([10.0, 3.0, 5.0], [1000.0, 35.0, 1.0])],
    ids=["signal-below-background", "signal-dominates-a-bin"],
)
@pytest.mark.parametrize("relative", [1e-6, 0.0])
def test_near_exact_mc_statistics_give_the_infinite_mc_answer(
    pyhf_default_optimizer, signal, observed, relative
):
    """A tiny MC-statistics uncertainty must give (almost) the CLs of none at all. Before the
    floor, and with pyhf's default SLSQP, this gave CLs ≈ 1: silently "allowed"."""
    b, s = STIFF_BACKGROUND, np.array(signal)
    spec = with_signal(
        build_workspace(observed=observed, expected=b, sumw2=(relative * b) ** 2, syst=0.1),
        s,
        signal_sumw2=(relative * s) ** 2,
    )
    stat = next(
        m["data"]
        for sample in spec["channels"][0]["samples"]
        for m in sample["modifiers"]
        if m["type"] == "staterror"
    )
    assert np.all(np.asarray(stat) >= MCSTAT_FLOOR * b * (1 - 1e-12))
    model, data = direct(without_mc_statistics(spec))
    reference = float(pyhf.infer.hypotest(1.0, data, model, test_stat="qtilde"))
    assert inference.cls(spec).observed == pytest.approx(reference, rel=1e-4)
    assert pyhf.get_backend()[1] is pyhf_default_optimizer, "the caller's optimizer is restored"
    (batched,) = evaluate_patches(spec, [("x", [])], check_bounds=False, pyhf_attempts=0)
    assert batched.status == "ok"
    assert batched.cls_obs == pytest.approx(reference, rel=1e-4)


def test_inference_fits_stiff_workspaces_on_minuit_or_fails_loudly(pyhf_default_optimizer):
    """A workspace built elsewhere, without the floor, whose signal dominates one bin: with
    relative MC statistics of 1e-4 to 1e-7 pyhf's default SLSQP answers NaN, 0.9999, 0.93 and
    1.0 without complaint, where the answer is 0.076. Inference's MINUIT gets 0.076 at 1e-4
    and below that reports the invalid minimum instead of a number."""
    model, data = direct(without_mc_statistics(stiff_workspace(1e-4)))
    reference = float(pyhf.infer.hypotest(1.0, data, model, test_stat="qtilde"))
    model, data = direct(stiff_workspace(1e-5))
    plain = float(pyhf.infer.hypotest(1.0, data, model, test_stat="qtilde"))
    assert plain > 0.99, "pyhf's default optimizer no longer fails here; re-measure the docs"
    assert inference.cls(stiff_workspace(1e-4)).observed == pytest.approx(reference, rel=1e-4)
    for relative in (1e-5, 1e-7):
        with pytest.raises(pyhf.exceptions.FailedMinimization):
            inference.cls(stiff_workspace(relative))
    assert pyhf.get_backend()[1] is pyhf_default_optimizer


@pytest.mark.slow
def test_toys_are_seeded_and_close_to_asymptotics():
    spec = with_signal(
        build_workspace(observed=[60.0], expected=[50.0], sumw2=[4.0], syst=0.05), [15.0]
    )
    first = inference.cls(spec, calctype="toys", ntoys=100, seed=3)
    again = inference.cls(spec, calctype="toys", ntoys=100, seed=3)
    asymptotic = inference.cls(spec)
    assert first == again
    assert first.observed == pytest.approx(asymptotic.observed, abs=0.12)
    with pytest.raises(ValueError, match="'calctype'"):
        inference.cls(spec, calctype="bayes")


@pytest.mark.parametrize("level", [0.05, 0.1, 0.32])
def test_upper_limit_is_where_pyhf_cls_equals_the_level(level):
    """pyhf 0.7.6's own ``upper_limit`` ignores ``level``; the limit returned here must sit
    where pyhf's hypotest gives CLs = level, for the observed limit and each band."""
    spec = with_signal(
        build_workspace(observed=[12.0], expected=[10.0], sumw2=[1.0], syst=0.1), [5.0]
    )
    model, data = direct(spec)
    limit = inference.upper_limit(spec, level=level)
    assert limit.level == level
    observed = pyhf.infer.hypotest(limit.observed, data, model, test_stat="qtilde")
    assert float(observed) == pytest.approx(level, rel=1e-4)
    for k, mu in enumerate(limit.expected):
        band = pyhf.infer.hypotest(mu, data, model, test_stat="qtilde", return_expected_set=True)
        assert float(band[1][k]) == pytest.approx(level, rel=1e-4)
    with pytest.raises(ValueError, match="'level'"):
        inference.upper_limit(spec, level=1.5)


def test_toy_discovery_beyond_the_toys_resolution_is_a_bound():
    """No background toy reaches the data: p0 is reported as 1/ntoys (an upper bound), not 0
    (which would read as Z = 37), and the asymptotic Z lies above the bound."""
    spec = with_signal(
        build_workspace(observed=[30.0], expected=[5.0], sumw2=[0.25], syst=0.05), [10.0]
    )
    toys = inference.discovery_p0(spec, calctype="toys", ntoys=50, seed=1)
    assert toys.resolution_limited
    assert toys.p0 == pytest.approx(1 / 50)
    assert toys.z == pytest.approx(stats.norm.isf(1 / 50))
    asymptotic = inference.discovery_p0(spec)
    assert not asymptotic.resolution_limited
    assert asymptotic.z > toys.z


def test_toy_limit_is_read_at_the_first_crossing():
    scan = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    wiggly = np.array([0.4, 0.1, 0.03, 0.06, 0.01])
    assert inference._first_crossing(scan, wiggly, 0.05) == pytest.approx(2.0 + 0.05 / 0.07)
    with pytest.raises(ValueError, match="above level"):
        inference._first_crossing(scan, wiggly + 0.5, 0.05)
    with pytest.raises(ValueError, match="first point"):
        inference._first_crossing(scan, wiggly - 0.39, 0.05)


@pytest.mark.slow
def test_limit_search_reads_an_undefined_cls_without_sensitivity_as_one(pyhf_default_optimizer):
    """Far below the limit the fits cannot resolve the tiny test statistics: pyhf returns a NaN
    observed CLs with an expected band of exactly 1 (q_A = 0). Its own ``toms748_scan`` stops
    there ("function value at x=0 is NaN" on SLSQP); the limit search reads it as CLs = 1,
    and the limit still sits where pyhf's CLs equals the level."""
    spec = falling_workspace(20, 0.05, seed=0)
    model, data = direct(spec)
    use_fit_settings(inference.FITS)
    with np.errstate(divide="ignore", invalid="ignore"):
        raw = [pyhf.infer.hypotest(mu, data, model, test_stat="qtilde") for mu in (1e-6, 1e-3)]
    undefined = [float(r) for r in raw if np.isnan(float(r))]
    assert undefined, "pyhf resolves these points now; find another workspace"
    for mu in (1e-6, 1e-3):
        assert inference._cls_point(model, data, mu)[0] == 1.0
    limit = inference.upper_limit(spec)
    observed = pyhf.infer.hypotest(limit.observed, data, model, test_stat="qtilde")
    assert float(observed) == pytest.approx(0.05, rel=1e-3)
