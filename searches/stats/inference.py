"""Discovery p0, CLs and upper limits on the signal strength, through pyhf.

All functions take a workspace from :mod:`searches.stats.workspace` with a real signal sample
(see :func:`~searches.stats.workspace.with_signal`) and run pyhf's own calculators: the
``qtilde`` test statistic for CLs and limits, ``q0`` for discovery, asymptotic formulae by
default and pseudo-experiments (``calctype="toys"``) for small counts, where the asymptotic
distributions are poor. Toys are seeded: pyhf draws them from numpy's global generator, which
is seeded for the call and restored afterwards. pyhf fits them one at a time (tens to
hundreds of ms per toy); :mod:`searches.stats.toys` runs the same procedure with all toys
fitted by the batched engine, which is what campaigns use.

Every fit runs on MINUIT (:data:`FITS`), whatever pyhf's global optimizer is; the caller's
backend and optimizer are put back afterwards. pyhf's default SLSQP stops near its starting
point on stiff likelihoods and still reports success: with relative MC-statistics uncertainties
of 1e-4 and below (about 1e8 effective simulated events in a bin) it returned CLs 0.93–1.0 or
NaN where the answer is 0.08–0.5, silently "allowed". On 48 workspaces (3 and 20 bins, relative
MC statistics 0.3 to 1e-6; ``benchmarks/bench_inference.py``) MINUIT agreed with the reference
to 3.9e-5, where SLSQP was off by more than 1e-3 or NaN on 23; where MINUIT cannot fit, it
reports an invalid minimum (pyhf raises ``FailedMinimization``) instead of a number. It costs
about a third more per asymptotic CLs, 35–40 % more per limit, 1.6–1.7× per toy CLs. Search workspaces built here floor the
MC statistics (:data:`~searches.stats.workspace.MCSTAT_FLOOR`), so they stay fittable.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Literal, ParamSpec, TypeVar

import numpy as np
import pyhf
from scipy.optimize import toms748

from searches.stats.pvalues import significance
from searches.stats.robust import FitSettings, restoring_backend, use_fit_settings
from searches.stats.toys import NORMAL_PERCENTILES
from searches.stats.workspace import current_signal, validate

CalcType = Literal["asymptotics", "toys"]
P = ParamSpec("P")
R = TypeVar("R")
FITS = FitSettings(optimizer="minuit", tolerance=0.01)
"""Fit settings of every inference call: MINUIT, strategy 1, EDM goal 2e-5 (see the module doc).
Tolerance 0.01 gives the benchmark's 3.9e-5; pyhf's default 0.1 left CLs off by up to 1.1e-4
relative in a one-off sweep over the same kind of workspaces (2026-12-07, not in the
benchmark)."""
BAND = (-2, -1, 0, 1, 2)
"""Order of the expected bands: CLs (or limit) at −2σ … +2σ (pyhf's order)."""


@dataclass(frozen=True)
class Discovery:
    """Discovery test of ``mu = 0``: observed and median expected (at ``mu = 1``) p0.

    Attributes:
        p0, z: observed p-value and its one-sided significance.
        p0_expected, z_expected: the same, median expected under ``mu = 1``.
        resolution_limited: with toys, no pseudo-experiment was as extreme as the data (or as
            the median signal-like toy): the p-value is then reported as ``1/ntoys``, an upper
            bound, and its significance is a lower bound. Always False for asymptotics.
    """

    p0: float
    z: float
    p0_expected: float
    z_expected: float
    resolution_limited: bool = False


@dataclass(frozen=True)
class CLs:
    """CLs of a signal strength: observed and the expected band (−2σ … +2σ)."""

    mu: float
    observed: float
    expected: tuple[float, float, float, float, float]


@dataclass(frozen=True)
class UpperLimit:
    """95 % CL (by default) upper limit on ``mu``: observed and expected band (−2σ … +2σ)."""

    level: float
    observed: float
    expected: tuple[float, float, float, float, float]


def _on_minuit(function: Callable[P, R]) -> Callable[P, R]:
    """Run ``function`` with :data:`FITS` as pyhf's optimizer, the caller's restored after."""

    @functools.wraps(function)
    @restoring_backend
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        use_fit_settings(FITS)
        return function(*args, **kwargs)

    return wrapper


def model_and_data(workspace: Mapping[str, Any]) -> tuple[pyhf.pdf.Model, np.ndarray]:
    """The pyhf model and data (observations + auxiliary) of a workspace."""
    ws = validate(workspace)
    if not np.any(current_signal(workspace) > 0):
        raise ValueError(
            "workspace signal sample is the zero placeholder; patch yields in with "
            "searches.stats.workspace.with_signal before inference"
        )
    model = ws.model()
    return model, np.asarray(ws.data(model), dtype=np.float64)


@contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    state = np.random.get_state()
    if seed is not None:
        np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _check(calctype: CalcType) -> None:
    if calctype not in ("asymptotics", "toys"):
        raise ValueError(f"'calctype' must be 'asymptotics' or 'toys', got {calctype!r}")


def _toy_test(
    mu: float, data: np.ndarray, model: pyhf.pdf.Model, *, test_stat: str, ntoys: int
) -> tuple[float, tuple[float, ...]]:
    """pyhf's toy-based hypothesis test, the expected band computed here.

    pyhf 0.7.6 computes the toy band with ``numpy.percentile(interpolation=...)``, which
    numpy 2 removed; this runs pyhf's ``ToyCalculator`` and takes the same percentiles (of
    CLs, or of CLs+b for ``q0``, over the background-like toys) with ``method="linear"``.
    For ``q0`` only CLs+b is read, so pyhf's CLs+b / CLb (0/0 when no toy is as extreme)
    is computed quietly.
    """
    calc = pyhf.infer.utils.create_calculator(
        "toybased",
        data,
        model,
        model.config.suggested_init(),
        model.config.suggested_bounds(),
        model.config.suggested_fixed(),
        ntoys=ntoys,
        test_stat=test_stat,
        track_progress=False,
    )
    teststat = calc.teststatistic(mu)
    sb_dist, b_dist = calc.distributions(mu)
    column = 0 if test_stat == "q0" else 2
    quiet = np.errstate(divide="ignore", invalid="ignore") if test_stat == "q0" else nullcontext()
    with quiet:
        observed = float(calc.pvalues(teststat, sb_dist, b_dist)[column])
        per_toy = np.array(
            [float(calc.pvalues(t, sb_dist, b_dist)[column]) for t in b_dist.samples]
        )
    band = np.percentile(per_toy, NORMAL_PERCENTILES, method="linear")
    return observed, tuple(float(v) for v in band)


@_on_minuit
def discovery_p0(
    workspace: Mapping[str, Any],
    *,
    calctype: CalcType = "asymptotics",
    ntoys: int = 2000,
    seed: int | None = 0,
) -> Discovery:
    """Discovery p-value (``q0``) of the workspace's data; expected at ``mu = 1``.

    With toys, pyhf's p-value is the fraction of ``ntoys`` toys at least as extreme, which is
    0 when none is; that would read as Z ≈ 37. A zero is reported as the resolution
    ``1/ntoys`` instead and flagged ``resolution_limited`` (an upper bound on p0).

    Raises:
        pyhf.exceptions.FailedMinimization: where MINUIT finds no valid minimum.
    """
    _check(calctype)
    model, data = model_and_data(workspace)
    with _seeded(seed):
        if calctype == "toys":
            p0, band = _toy_test(0.0, data, model, test_stat="q0", ntoys=ntoys)
            expected = band[2]
        else:
            p0, expected = pyhf.infer.hypotest(
                0.0, data, model, test_stat="q0", return_expected=True
            )
    p0, expected = float(p0), float(expected)
    limited = calctype == "toys" and min(p0, expected) <= 0.0
    if calctype == "toys":
        p0, expected = max(p0, 1.0 / ntoys), max(expected, 1.0 / ntoys)
    return Discovery(
        p0=p0,
        z=float(significance(p0)),
        p0_expected=expected,
        z_expected=float(significance(expected)),
        resolution_limited=limited,
    )


@_on_minuit
def cls(
    workspace: Mapping[str, Any],
    *,
    mu: float = 1.0,
    calctype: CalcType = "asymptotics",
    ntoys: int = 2000,
    seed: int | None = 0,
) -> CLs:
    """CLs of signal strength ``mu`` (``qtilde``), observed and expected band.

    Raises:
        pyhf.exceptions.FailedMinimization: where MINUIT finds no valid minimum.
        ValueError: where the asymptotic CLs is not defined (see :func:`_cls_point`).
    """
    _check(calctype)
    model, data = model_and_data(workspace)
    with _seeded(seed):
        if calctype == "toys":
            observed, band = _toy_test(mu, data, model, test_stat="qtilde", ntoys=ntoys)
        else:
            observed, *band = _cls_point(model, data, mu)
    return CLs(
        mu=float(mu),
        observed=float(observed),
        expected=tuple(float(v) for v in band),  # type: ignore[arg-type]
    )


def _cls_point(model: pyhf.pdf.Model, data: np.ndarray, mu: float) -> np.ndarray:
    """(6,) asymptotic CLs at ``mu``: observed, then the expected band (−2σ … +2σ).

    Where the Asimov test statistic is zero (no expected sensitivity at this ``mu``: pyhf's
    band is exactly 1) and the data's is not, pyhf's observed CLs is 0/0 = NaN. That happens
    at ``mu`` far below any limit, where the fits cannot resolve the tiny statistics (MINUIT at
    ``mu`` = 1e-6 and 1e-3 on a 20-bin search, SLSQP at ``mu`` = 0); it is read as CLs = 1 so
    that a root search passing there goes on. Any other non-finite value is an error.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        observed, band = pyhf.infer.hypotest(
            mu, data, model, test_stat="qtilde", return_expected_set=True
        )
    values = np.array([float(observed), *(float(v) for v in band)])
    if np.isnan(values[0]) and np.all(values[1:] == 1.0):
        values[0] = 1.0
    if not np.all(np.isfinite(values)):
        raise ValueError(f"CLs is not defined at mu={mu:.6g} ({values.tolist()})")
    return values


def _asymptotic_limits(
    model: pyhf.pdf.Model, data: np.ndarray, *, level: float, rtol: float = 1e-4
) -> list[float]:
    """Observed and expected limits: pyhf 0.7.6's ``toms748_scan`` algorithm, step for step,
    over :func:`_cls_point` (pyhf's own scan stops at the first NaN CLs and, in 0.7.6's
    ``upper_limit``, ignores ``level``).

    Starts from the POI's suggested bounds, widened until they bracket ``level`` for the
    observed CLs and every band; the observed limit is searched in those bounds, each band in
    the tightest bracket among the points already computed.
    """
    cache: dict[float, np.ndarray] = {}

    def curve(mu: float) -> np.ndarray:
        if mu not in cache:
            cache[mu] = _cls_point(model, data, mu)
        return cache[mu]

    low, high = (float(v) for v in model.config.suggested_bounds()[model.config.poi_index])
    while np.any(curve(low) < level):
        low /= 2
    while np.any(curve(high) > level):
        high *= 2

    def bracket(k: int) -> tuple[float, float]:
        points = np.array(list(cache))
        excess = np.array([values[k] for values in cache.values()]) - level
        above, below = excess >= 0, excess < 0
        return (
            float(points[above][np.argmin(excess[above])]),
            float(points[below][np.argmax(excess[below])]),
        )

    limits = []
    for k in range(6):
        a, b = (low, high) if k == 0 else bracket(k)
        limits.append(
            float(toms748(lambda mu, k=k: curve(mu)[k] - level, a, b, k=2, xtol=2e-12, rtol=rtol))
        )
    return limits


def _first_crossing(scan: np.ndarray, curve: np.ndarray, level: float) -> float:
    """``mu`` where ``curve`` (CLs on the increasing ``scan``) first falls to ``level``."""
    below = np.flatnonzero(curve <= level)
    span = f"[{scan[0]:.4g}, {scan[-1]:.4g}]; choose a scan that brackets the limit"
    if not len(below):
        raise ValueError(
            f"upper_limit: the toy CLs is above level={level} on the whole scan {span}"
        )
    k = int(below[0])
    if k == 0:
        raise ValueError(
            f"upper_limit: the toy CLs is at or below level={level} at the first point of the "
            f"scan {span}"
        )
    x0, x1, y0, y1 = scan[k - 1], scan[k], curve[k - 1], curve[k]
    return float(x0 + (x1 - x0) * (y0 - level) / (y0 - y1))


@_on_minuit
def upper_limit(
    workspace: Mapping[str, Any],
    *,
    level: float = 0.05,
    calctype: CalcType = "asymptotics",
    ntoys: int = 2000,
    scan: np.ndarray | None = None,
    seed: int | None = 0,
    rtol: float = 1e-4,
) -> UpperLimit:
    """Upper limit on ``mu`` at CL ``1 − level`` (``qtilde``).

    Asymptotics: pyhf's root finding on CLs (its ``toms748_scan`` algorithm over the POI's
    suggested bounds, :func:`_asymptotic_limits`: pyhf 0.7.6's ``upper_limit`` does not pass
    ``level`` on and always returns the 95 % limit, and its scan stops at a NaN CLs). Toys:
    CLs on the ``scan`` grid of ``mu`` (default 15 points up to twice the asymptotic +2σ
    expected limit), linearly interpolated at its first crossing of ``level`` (a toy curve may
    wiggle; interpolating over a non-monotonic curve would give an arbitrary limit).
    :func:`searches.stats.limits.upper_limit` gives the asymptotic limits from the batched
    engine in a fraction of the time, with this function as its fallback. ``rtol`` is the
    asymptotic root search's relative tolerance on ``mu`` (pyhf's default, 1e-4).

    Raises:
        ValueError: for ``level`` outside (0, 1), when a toy CLs curve does not cross
            ``level`` inside ``scan`` (the limit lies outside the grid), or when the asymptotic
            CLs is not defined at a point of the root search.
        pyhf.exceptions.FailedMinimization: where MINUIT finds no valid minimum.
    """
    _check(calctype)
    if not 0.0 < level < 1.0:
        raise ValueError(f"'level' must be in (0, 1), got {level}")
    model, data = model_and_data(workspace)
    if calctype == "asymptotics":
        observed, *expected = _asymptotic_limits(model, data, level=level, rtol=rtol)
        return UpperLimit(level=level, observed=observed, expected=tuple(expected))  # type: ignore[arg-type]
    if scan is None:
        scan = np.linspace(0.0, 2.0 * _asymptotic_limits(model, data, level=level)[5], 16)[1:]

    def toy_curve(mu: float) -> list[float]:
        with _seeded(seed):
            observed, band = _toy_test(mu, data, model, test_stat="qtilde", ntoys=ntoys)
        return [observed, *band]

    curves = np.array([toy_curve(float(m)) for m in scan])
    limits = [_first_crossing(np.asarray(scan, dtype=float), curves[:, k], level) for k in range(6)]
    return UpperLimit(level=level, observed=limits[0], expected=tuple(limits[1:]))  # type: ignore[arg-type]
