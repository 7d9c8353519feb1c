"""Upper limits on the signal strength from pseudo-experiments: a scan of toy CLs in μ.

Where a search's signal meets a few background events its CLs at μ = 1 comes from toys
(:mod:`searches.stats.toys`), and its limit on μ has to come from the same calculator: the
asymptotic limit (:mod:`searches.stats.limits`) is as unreliable there as the asymptotic CLs.
:func:`searches.stats.inference.upper_limit` with ``calctype="toys"`` runs pyhf's
``ToyCalculator`` (MINUIT, one toy after another) on a fixed grid of 15 μ, minutes per limit
even on a few-bin workspace. Here every toy is fitted by the batched engine, and:

- the scan is placed by the engine's asymptotic limits (:func:`scan_around`), from half the
  smallest of the six to twice the largest, and grown where a curve does not cross ``level``
  inside it;
- every μ draws its toys from the same seed, so a scan is reproducible; the toys are not
  matched draw by draw across μ (numpy's Poisson sampler uses a variable number of random
  numbers per draw), so the CLs curve carries the toys' noise, and a limit is the curve's
  first crossing, not a root of a smooth function;
- each limit is the first fall of its curve below ``level`` between trusted points, log-linear
  between them as in :func:`~searches.stats.limits.log_linear_root` (linear where a curve
  reaches 0, below the toys' resolution), and the observed and median limits get up to
  :data:`REFINEMENTS` more points at their current estimates;
- the observed limit's error is the toy CLs error at the crossing over the curve's slope there.

A μ whose toys cannot answer (the data's ``qtilde`` beyond every background-like toy, more
than :data:`~searches.stats.toys.MAX_DROPPED` of a toy ensemble dropped, failed fits to the
data) is not trusted: it neither brackets a limit nor is tried again.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from searches.stats.inference import UpperLimit
from searches.stats.limits import LIMIT_NAMES, first_crossing, log_linear_root, upper_limit
from searches.stats.toys import (
    MAX_DROPPED,
    ToyCLs,
    ToyFitError,
    check_options,
    stack_toy_cls,
    toy_stack,
)

POINTS = 8
"""Points of the first scan (:func:`scan_around`)."""
SPAN = (0.5, 2.0)
"""The first scan runs from ``SPAN[0]`` × the smallest asymptotic limit to ``SPAN[1]`` × the
largest: toy limits of few-event searches lie above the asymptotic ones (those overstate the
exclusion), and the margin below catches a band edge the other way."""
MAX_EXTENSIONS = 3
"""Times the scan grows (×2 and ×4 beyond its top, or ÷2 and ÷4 below its bottom) before a
curve that does not cross ``level`` counts as unbracketed: a factor 64 either way."""
REFINEMENTS = 2
"""Passes that add the observed and median limits' current estimates to the scan."""
SLOPE_WINDOW = 1.6
"""Points within this factor of the observed limit give the slope of its error."""
CLOSE = 0.01
"""A refinement point closer than this (relative) to a scanned μ is not evaluated."""
SPAN_SIGMAS = 2.0
"""A scanned μ whose observed toy CLs lies within this many of its errors of ``level`` could
hold the observed limit too (:attr:`ToyUpperLimit.observed_span`)."""


@dataclass(frozen=True)
class ToyUpperLimit:
    """Observed and expected upper limits on μ from toy CLs, with the scan they rest on.

    Attributes:
        level: CLs level of the limits (0.05: 95 % CL).
        observed: Observed limit; ``None`` where its curve had no bracket.
        observed_error: Standard error of ``observed`` from the toys (the CLs error at the
            crossing over the curve's slope there); ``None`` where that slope is not negative.
        observed_span: Where the observed curve runs along ``level``, the range of μ that
            could hold the observed limit at these toys: ``observed`` and every scanned μ whose
            observed toy CLs is within :data:`SPAN_SIGMAS` errors of ``level`` (the first
            crossing there moves with a toy or two). ``None`` where that range lies within
            :data:`SPAN_SIGMAS` × ``observed_error`` of ``observed`` (the error covers it), or
            without an observed limit.
        expected: Expected limits at −2σ … +2σ; each ``None`` where not found.
        points: Toy CLs at each μ whose toys ran, ascending (those not trusted included).
        untrusted: Why a μ was not used, as ``(mu, reason)``: the whole point where its toys
            failed or too many were dropped, its observed CLs alone where that is
            resolution-limited (its expected band still counts).
        ntoys: Toys per ensemble at each μ; seed: their seed, the same at every μ.
        reason: Which limits are missing and why (empty when all six were found).
    """

    level: float
    observed: float | None
    observed_error: float | None
    observed_span: tuple[float, float] | None
    expected: tuple[float | None, float | None, float | None, float | None, float | None]
    points: tuple[ToyCLs, ...]
    untrusted: tuple[tuple[float, str], ...]
    ntoys: int
    seed: int
    reason: str = ""

    @property
    def complete(self) -> bool:
        """All six limits were found."""
        return self.observed is not None and all(e is not None for e in self.expected)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the limits, and each scanned μ's toy CLs (:meth:`ToyCLs.to_dict`)."""
        return {
            "level": self.level,
            "observed": self.observed,
            "observed_error": self.observed_error,
            "observed_span": None if self.observed_span is None else list(self.observed_span),
            "expected": list(self.expected),
            "scan": [point.to_dict() for point in self.points],
            "untrusted": [{"mu": mu, "reason": why} for mu, why in self.untrusted],
            "ntoys": self.ntoys,
            "seed": self.seed,
            "reason": self.reason,
        }


def scan_around(limit: UpperLimit, *, points: int = POINTS) -> np.ndarray:
    """``points`` μ, log-spaced from ``SPAN[0]`` × the smallest of the six limits of ``limit``
    to ``SPAN[1]`` × the largest."""
    values = [limit.observed, *limit.expected]
    return np.geomspace(SPAN[0] * min(values), SPAN[1] * max(values), points)


class _ToyCurves:
    """Toy CLs (observed, then the expected band) of one workspace at any μ, memoised."""

    def __init__(
        self,
        workspace: Mapping[str, Any],
        *,
        ntoys: int,
        seed: int,
        device: torch.device | str | None,
        batch: int | None,
        progress: Callable[[int], None] | None,
        known: Sequence[ToyCLs] = (),
    ) -> None:
        self.stack = toy_stack(workspace, device=device)
        self.known = {point.mu: point for point in known}
        self.toy_cls = functools.partial(
            stack_toy_cls, ntoys=ntoys, seed=seed, batch=batch, progress=progress
        )
        self.points: dict[float, ToyCLs] = {}
        self.values: dict[float, np.ndarray] = {}
        self.error: dict[float, float] = {}
        self.untrusted: dict[float, str] = {}

    def evaluate(self, mus: Sequence[float]) -> None:
        for mu in sorted({float(m) for m in mus} - set(self.values)):
            stack = self.stack
            if 2 * mu > float(stack.upper[stack.poi]):
                bounds = stack.upper.clone()
                bounds[stack.poi] = 2 * mu
                stack = dataclasses.replace(stack, upper=bounds)
            self.values[mu] = np.full(6, np.nan)
            try:
                reuse = stack is self.stack and mu in self.known
                out = self.known[mu] if reuse else self.toy_cls(stack, mu=mu)
            except torch.cuda.OutOfMemoryError:
                raise
            except (ToyFitError, RuntimeError, FloatingPointError) as err:
                self.untrusted[mu] = f"{type(err).__name__}: {err}"
                continue
            self.points[mu] = out
            worst = max(out.dropped) / out.ntoys
            if worst > MAX_DROPPED:
                self.untrusted[mu] = (
                    f"{max(out.dropped)} of {out.ntoys} toys of an ensemble dropped"
                )
                continue
            self.values[mu][1:] = out.expected
            if out.resolution_limited:
                self.untrusted[mu] = (
                    f"observed CLs: no background-like toy reached the data's qtilde "
                    f"({out.q_observed:.3g})"
                )
            else:
                self.values[mu][0] = out.observed
                self.error[mu] = out.observed_error

    def bracket(self, k: int, level: float) -> tuple[float, float] | Literal["down", "up"]:
        mus = np.array(sorted(self.values))
        return first_crossing(mus, np.array([self.values[m][k] for m in mus]), level)

    def trusted(self, k: int) -> bool:
        """Curve ``k`` has a trusted point (scanning further cannot help one without)."""
        return any(np.isfinite(v[k]) for v in self.values.values())

    def root(self, k: int, a: float, b: float, level: float) -> float:
        cls_a, cls_b = self.values[a][k], self.values[b][k]
        if cls_b > 0:
            return log_linear_root(a, cls_a, b, cls_b, level)
        return float(a + (b - a) * (cls_a - level) / (cls_a - cls_b))

    def span(self, root: float, error: float | None, level: float) -> tuple[float, float] | None:
        """The smallest and largest of ``root`` and the trusted μ whose observed CLs is within
        :data:`SPAN_SIGMAS` of its errors of ``level``; ``None`` where ``error`` covers them."""
        near = [
            mu
            for mu, point_error in self.error.items()
            if abs(self.values[mu][0] - level) <= SPAN_SIGMAS * point_error
        ]
        low, high = min([root, *near]), max([root, *near])
        reach = SPAN_SIGMAS * (error or 0.0)
        return None if root - reach <= low and high <= root + reach else (low, high)

    def root_error(self, a: float, b: float, root: float, level: float) -> float:
        """Standard error of the observed limit: the toy CLs error at the crossing (linear
        between the bracket's ends) over the slope of the CLs curve there.

        The slope is the least-squares slope of log CLs (each point weighted by its
        CLs / error) over the trusted points within a factor :data:`SLOPE_WINDOW` of the
        limit, not the bracket's own: refinement leaves the bracket a few per cent wide, and
        across it the toys' tail counts move in steps (10 tail toys at 1,000 toys and
        CLs+b = 0.01), which made that slope 3× too steep and the error 2.4× too small
        against the spread of repeated limits. The slope's own uncertainty and the
        interpolation's are not included."""
        t = (root - a) / (b - a)
        error = (1 - t) * self.error[a] + t * self.error[b]
        window = [
            (mu, self.values[mu][0])
            for mu in sorted(self.values)
            if root / SLOPE_WINDOW <= mu <= root * SLOPE_WINDOW and self.values[mu][0] > 0
        ]
        if len(window) >= 2 and window[0][0] <= a and window[-1][0] >= b:
            mus, values = np.array(window).T
            weights = values / np.array([self.error[mu] for mu in mus])
            slope = -level * float(np.polyfit(mus, np.log(values), 1, w=weights)[0])
        else:
            cls_a, cls_b = self.values[a][0], self.values[b][0]
            slope = float((cls_a - cls_b) / (b - a))
        return float(error / slope) if slope > 0 else math.nan


def toy_upper_limit(
    workspace: Mapping[str, Any],
    *,
    ntoys: int = 1000,
    seed: int,
    level: float = 0.05,
    scan: Sequence[float] | None = None,
    device: torch.device | str | None = None,
    batch: int | None = None,
    progress: Callable[[int], None] | None = None,
    known: Sequence[ToyCLs] = (),
) -> ToyUpperLimit:
    """Observed and expected upper limits at CL ``1 − level`` from toy CLs.

    Args:
        workspace: Signal+background pyhf workspace, as for
            :func:`~searches.stats.toys.toy_cls`.
        ntoys: Toys per ensemble at each μ.
        seed: Seed of the toys, the same at every μ.
        level: CLs level (0.05 for 95 % CL).
        scan: The first μ to test (positive); default :func:`scan_around` the asymptotic
            limits of :func:`searches.stats.limits.upper_limit`. Grown where a curve does
            not cross ``level`` inside it.
        device, batch, progress: As for :func:`~searches.stats.toys.toy_cls` (``progress``
            counts toys over all μ).
        known: Toy CLs of this workspace already drawn with these ``ntoys`` and ``seed``
            (:func:`~searches.stats.toys.toy_cls`), used where the scan reaches their μ
            instead of drawing the same toys again; not points of the scan by themselves.

    A missing limit is ``None`` with the reason in :attr:`ToyUpperLimit.reason`, not an error:
    a band edge can stay unbracketed where the observed limit is found.

    Raises:
        ValueError: Bad ``ntoys``/``batch``/``level``/``scan``, or a workspace the engine
            cannot stack.
        searches.stats.limits.LimitNotFound: No ``scan`` was given and the asymptotic
            limits that place it were not found.
    """
    check_options(ntoys=ntoys, batch=batch)
    if not 0.0 < level < 1.0:
        raise ValueError(f"'level' must be in (0, 1), got {level}")
    if scan is not None:
        given = np.asarray(scan, dtype=np.float64)
        if given.ndim != 1 or given.size < 2 or not np.all(np.isfinite(given) & (given > 0)):
            raise ValueError(f"'scan' must hold at least two finite μ > 0, got {given.tolist()}")
    for point in known:
        if (point.ntoys, point.seed) != (ntoys, seed):
            raise ValueError(
                f"'known' toy CLs at μ = {point.mu} drew ntoys={point.ntoys}, seed={point.seed}; "
                f"the scan draws ntoys={ntoys}, seed={seed}"
            )
    curves = _ToyCurves(
        workspace,
        ntoys=ntoys,
        seed=seed,
        device=device,
        batch=batch,
        progress=progress,
        known=known,
    )
    if scan is None:
        scan = scan_around(upper_limit(workspace, level=level, device=device))
    curves.evaluate(scan)
    for _ in range(MAX_EXTENSIONS):
        growing = [k for k in range(6) if curves.trusted(k)]
        sides = {curves.bracket(k, level) for k in growing} & {"down", "up"}
        if not sides:
            break
        scanned = np.array(sorted(curves.values))
        if "down" in sides:
            curves.evaluate(scanned[0] * 0.5 ** np.arange(1, 3))
        if "up" in sides:
            curves.evaluate(scanned[-1] * 2.0 ** np.arange(1, 3))
    for _ in range(REFINEMENTS):
        scanned = np.array(sorted(curves.values))
        trial = []
        for k in (0, 3):
            bracket = curves.bracket(k, level)
            if isinstance(bracket, tuple):
                guess = curves.root(k, *bracket, level)
                if np.min(np.abs(scanned - guess)) > CLOSE * guess:
                    trial.append(guess)
        if not trial:
            break
        curves.evaluate(trial)
    return _limits(curves, level=level, ntoys=ntoys, seed=seed)


def _limits(curves: _ToyCurves, *, level: float, ntoys: int, seed: int) -> ToyUpperLimit:
    brackets = [curves.bracket(k, level) for k in range(6)]
    found: list[float | None] = [
        curves.root(k, *b, level) if isinstance(b, tuple) else None for k, b in enumerate(brackets)
    ]
    error = None
    if isinstance(brackets[0], tuple):
        error = curves.root_error(*brackets[0], found[0], level)
        error = error if math.isfinite(error) else None
    known = sorted(curves.values)
    side = {"up": f"CLs ≥ {level} at every trusted μ", "down": f"CLs < {level} at the smallest"}
    missing = [
        f"{LIMIT_NAMES[k]} ({side[b] if curves.trusted(k) else 'no trusted μ'})"
        for k, b in enumerate(brackets)
        if isinstance(b, str)
    ]
    reason = ""
    if missing:
        reason = (
            f"no trusted bracket of CLs = {level} for {', '.join(missing)} on μ in "
            f"[{known[0]:.4g}, {known[-1]:.4g}] after {len(known)} points"
        )
        if curves.untrusted:
            reason += "; untrusted: " + "; ".join(
                f"μ = {mu:.4g}: {why}" for mu, why in list(curves.untrusted.items())[:3]
            )
    return ToyUpperLimit(
        level=level,
        observed=found[0],
        observed_error=error,
        observed_span=None if found[0] is None else curves.span(found[0], error, level),
        expected=tuple(found[1:]),  # type: ignore[arg-type]
        points=tuple(curves.points[m] for m in sorted(curves.points)),
        untrusted=tuple(sorted(curves.untrusted.items())),
        ntoys=ntoys,
        seed=seed,
        reason=reason,
    )
