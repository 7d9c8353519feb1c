"""Discovery p0, CLs and upper limits on the signal strength, through pyhf.

All functions take a workspace from :mod:`searches.stats.workspace` with a real signal sample
(see :func:`~searches.stats.workspace.with_signal`) and run pyhf's own calculators: the
``qtilde`` test statistic for CLs and limits, ``q0`` for discovery, asymptotic formulae by
default and pseudo-experiments (``calctype="toys"``) for small counts, where the asymptotic
distributions are poor. Toys are seeded: pyhf draws them from numpy's global generator, which
is seeded for the call and restored afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyhf

from searches.stats.pvalues import significance
from searches.stats.workspace import current_signal, validate

CalcType = Literal["asymptotics", "toys"]
BAND = (-2, -1, 0, 1, 2)
"""Order of the expected bands: CLs (or limit) at −2σ … +2σ (pyhf's order)."""


@dataclass(frozen=True)
class Discovery:
    """Discovery test of ``mu = 0``: observed and median expected (at ``mu = 1``) p0."""

    p0: float
    z: float
    p0_expected: float
    z_expected: float


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


_NORMAL_PERCENTILES = (2.27501319, 15.86552539, 50.0, 84.13447461, 97.72498681)


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
    observed = float(calc.pvalues(teststat, sb_dist, b_dist)[column])
    per_toy = np.array([float(calc.pvalues(t, sb_dist, b_dist)[column]) for t in b_dist.samples])
    band = np.percentile(per_toy, _NORMAL_PERCENTILES, method="linear")
    return observed, tuple(float(v) for v in band)


def discovery_p0(
    workspace: Mapping[str, Any],
    *,
    calctype: CalcType = "asymptotics",
    ntoys: int = 2000,
    seed: int | None = 0,
) -> Discovery:
    """Discovery p-value (``q0``) of the workspace's data; expected at ``mu = 1``."""
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
    return Discovery(
        p0=p0,
        z=float(significance(p0)),
        p0_expected=expected,
        z_expected=float(significance(expected)),
    )


def cls(
    workspace: Mapping[str, Any],
    *,
    mu: float = 1.0,
    calctype: CalcType = "asymptotics",
    ntoys: int = 2000,
    seed: int | None = 0,
) -> CLs:
    """CLs of signal strength ``mu`` (``qtilde``), observed and expected band."""
    _check(calctype)
    model, data = model_and_data(workspace)
    with _seeded(seed):
        if calctype == "toys":
            observed, band = _toy_test(mu, data, model, test_stat="qtilde", ntoys=ntoys)
        else:
            observed, band = pyhf.infer.hypotest(
                mu, data, model, test_stat="qtilde", return_expected_set=True
            )
    return CLs(
        mu=float(mu),
        observed=float(observed),
        expected=tuple(float(v) for v in band),  # type: ignore[arg-type]
    )


def upper_limit(
    workspace: Mapping[str, Any],
    *,
    level: float = 0.05,
    calctype: CalcType = "asymptotics",
    ntoys: int = 2000,
    scan: np.ndarray | None = None,
    seed: int | None = 0,
) -> UpperLimit:
    """Upper limit on ``mu`` at CL ``1 − level`` (``qtilde``).

    Asymptotics: pyhf's root finding on CLs. Toys: CLs on the ``scan`` grid of ``mu``
    (default 16 points up to twice the asymptotic +2σ expected limit), linearly interpolated
    at ``level`` (pyhf's grid-scan method).
    """
    _check(calctype)
    model, data = model_and_data(workspace)
    if calctype == "asymptotics":
        observed, expected = pyhf.infer.intervals.upper_limits.upper_limit(
            data, model, level=level, test_stat="qtilde"
        )
        return UpperLimit(
            level=level,
            observed=float(observed),
            expected=tuple(float(v) for v in expected),  # type: ignore[arg-type]
        )
    if scan is None:
        scan = np.linspace(0.0, 2.0 * upper_limit(workspace, level=level).expected[-1], 16)[1:]
    curves = np.array(
        [
            [r.observed, *r.expected]
            for r in (
                cls(workspace, mu=float(m), calctype="toys", ntoys=ntoys, seed=seed) for m in scan
            )
        ]
    )
    limits = [float(np.interp(level, curves[::-1, k], np.asarray(scan)[::-1])) for k in range(6)]
    return UpperLimit(level=level, observed=limits[0], expected=tuple(limits[1:]))  # type: ignore[arg-type]
