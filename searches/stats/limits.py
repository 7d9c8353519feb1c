"""Upper limits on the signal strength from the batched engine's CLs curve.

:func:`searches.stats.inference.upper_limit` root-finds with pyhf, one hypothesis test (four
MINUIT fits) per point and one point after another: about 20 s for a 20-bin search workspace,
which ``lamppost reinterpret --limits`` pays for the best-expected search and the combination of
every benchmark. The batched engine (:mod:`searches.stats.batched`) fits one workspace repeated
at many signal strengths in one pass, so here the curves are bracketed on a grid of μ and the
brackets of the observed curve and of the five expected ones are shrunk together, a few
batched passes in all.

Every CLs used here passes the engine's own checks (:func:`~searches.stats.batched.row_problems`).
Where a curve cannot be bracketed with such points, :func:`upper_limit` hands the workspace to
:func:`~searches.stats.inference.upper_limit` (pyhf on MINUIT) and says why in the log;
:func:`patch_upper_limits`, for the many signal patches of a published likelihood, records why
instead.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
from pyhf.exceptions import FailedMinimization, InvalidSpecification

from searches.stats import inference
from searches.stats.batched import (
    SCAN_POINTS,
    HistFactoryStack,
    compile_stack,
    confirmed_weak,
    default_device,
    patched_specs,
    row_problems,
    stack_cls,
)
from searches.stats.inference import UpperLimit
from searches.stats.workspace import validate

log = logging.getLogger(__name__)

GRID_POINTS = 13
"""Points of the first grid, log-spaced over three decades below the POI's upper bound."""
MAX_EXTENSIONS = 4
"""Grid extensions (three decades down, or ×16 up) before the curve counts as unbracketed."""
MAX_PASSES = 30
"""Batched refinement passes before a bracket that will not shrink counts as a failure."""
LIMIT_NAMES = (
    "observed",
    "expected −2σ",
    "expected −1σ",
    "expected median",
    "expected +1σ",
    "expected +2σ",
)
"""The six limits, in the order the engine returns their CLs."""


class LimitNotBracketed(ValueError):
    """The batched engine gave no limit: it cannot stack the workspace, it raised, or its CLs
    curves have no bracket of the level from trusted points that it could shrink."""


class LimitNotFound(ValueError):
    """Neither the batched engine nor pyhf on MINUIT gave the limit."""


class NoSignal(ValueError):
    """The POI multiplies no events, so μ has no upper limit."""


class _Curves:
    """CLs (observed, then the expected band) of one workspace at any set of μ, memoised.

    A μ whose hypothesis test fails the engine's checks, or whose batch made the engine raise,
    is remembered as NaN: it neither brackets a limit nor is tried again.
    """

    def __init__(self, stack: HistFactoryStack) -> None:
        self.stack = stack
        self.values: dict[float, np.ndarray] = {}
        self.rejected: dict[float, str] = {}

    def evaluate(self, mus: np.ndarray) -> None:
        new = sorted({float(m) for m in mus} - set(self.values))
        if not new:
            return
        upper = float(self.stack.upper[self.stack.poi])
        stack = self.stack
        highest = max(SCAN_POINTS) * max(new)
        if highest > upper:
            bounds = self.stack.upper.clone()
            bounds[self.stack.poi] = highest
            stack = dataclasses.replace(self.stack, upper=bounds)
        rows = torch.zeros(len(new), dtype=torch.long, device=stack.init.device)
        try:
            out = stack_cls(stack.take(rows), mu=new)
        except (RuntimeError, FloatingPointError) as err:
            for mu in new:
                self.values[mu] = np.full(6, np.nan)
                self.rejected[mu] = f"the engine raised {type(err).__name__}: {_first_line(err)}"
            return
        for row, mu in enumerate(new):
            problems = row_problems(out, row)
            if problems and not confirmed_weak(out, row, problems):
                self.values[mu] = np.full(6, np.nan)
                self.rejected[mu] = "; ".join(problems)
            else:
                self.values[mu] = np.concatenate([[out.cls_obs[row]], out.cls_exp[row]])

    def bracket(self, k: int, level: float) -> tuple[float, float] | Literal["down", "up"]:
        """:func:`first_crossing` of curve ``k``."""
        mus = np.array(sorted(self.values))
        return first_crossing(mus, np.array([self.values[m][k] for m in mus]), level)

    def root(self, k: int, a: float, b: float, level: float) -> float:
        """:func:`log_linear_root` of curve ``k`` in the bracket ``(a, b)``."""
        return log_linear_root(a, self.values[a][k], b, self.values[b][k], level)


def first_crossing(
    mus: np.ndarray, curve: np.ndarray, level: float
) -> tuple[float, float] | Literal["down", "up"]:
    """(a, b) around the first fall of a CLs curve below ``level``, or what is missing.

    ``mus`` are ascending and ``curve`` is NaN where a point is not trusted. ``a`` is the
    largest trusted μ with CLs ≥ level below ``b``, the smallest trusted μ with CLs < level;
    ``"down"`` or ``"up"`` names the side the scan must grow to.
    """
    trusted = np.isfinite(curve)
    mus, curve = mus[trusted], curve[trusted]
    below = np.flatnonzero(curve < level)
    if not len(below):
        return "up"
    if below[0] == 0:
        return "down"
    return float(mus[below[0] - 1]), float(mus[below[0]])


def log_linear_root(a: float, cls_a: float, b: float, cls_b: float, level: float) -> float:
    """Where log CLs, linear between ``(a, cls_a)`` and ``(b, cls_b)``, reaches log ``level``
    (``cls_a`` ≥ level > ``cls_b``, so the two logs differ)."""
    ga, gb = (np.log(max(c, 1e-300) / level) for c in (cls_a, cls_b))
    return float(a + (b - a) * ga / (ga - gb))


def _check_options(level: float, rtol: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"'level' must be in (0, 1), got {level}")
    if not 0.0 < rtol < 1.0:
        raise ValueError(f"'rtol' must be in (0, 1), got {rtol}")


def _first_line(err: BaseException) -> str:
    return str(err).partition("\n")[0] or type(err).__name__


def _stack(workspace: Mapping[str, Any], device: torch.device | str | None) -> HistFactoryStack:
    validate(workspace)
    dev = torch.device(device) if device is not None else default_device()
    try:
        stack = compile_stack([dict(workspace)], ["limit"], device=dev)
    except ValueError as err:
        raise LimitNotBracketed(f"the batched engine cannot stack this workspace: {err}") from None
    if not float(stack.signal_yield[0]) > 0:
        raise NoSignal(
            "workspace: the POI multiplies no events (a search workspace's signal is still the "
            "zero placeholder: patch yields in with searches.stats.workspace.with_signal)"
        )
    return stack


def batched_upper_limit(
    workspace: Mapping[str, Any],
    *,
    level: float = 0.05,
    rtol: float = 1e-4,
    device: torch.device | str | None = None,
) -> UpperLimit:
    """Observed and expected upper limits at CL ``1 − level`` from the batched engine.

    A grid of :data:`GRID_POINTS` μ over three decades below the POI's upper bound is grown
    until every curve falls below ``level`` between two trusted points; each bracket is then
    shrunk with its log-linear interpolation and two points a little either side of it (the
    estimate's last move), plus its midpoint where the last pass did not halve it (a curve
    that is nearly a step stalls the interpolation), all curves in one batch per pass, until
    it is narrower than ``rtol`` relative. Where a tested μ (or twice it, the top of the profile scan that confirms
    a weak signal) lies beyond the POI's upper bound, the bound is raised to it: the μ-fixed
    fits need it, and a μ̂ above the old bound then counts as qtilde wants (pyhf's own scan
    refuses such μ); for μ below the old bound the raise changes nothing, since a μ̂ capped at
    the bound already exceeds the tested μ.

    Raises:
        LimitNotBracketed: the engine cannot stack the workspace, or no bracket from trusted
            points could be found and shrunk (the reason names the curves, the grid and the
            engine's objections).
        ValueError: ``level`` or ``rtol`` outside (0, 1), or a workspace without a signal.
        pyhf.exceptions.InvalidSpecification: not a pyhf workspace.
    """
    _check_options(level, rtol)
    found, problem = _search(workspace, level=level, rtol=rtol, device=device)
    if problem:
        raise LimitNotBracketed(problem)
    return UpperLimit(level=level, observed=found[0], expected=tuple(found[1:]))  # type: ignore[arg-type]


def _search(
    workspace: Mapping[str, Any],
    *,
    level: float,
    rtol: float,
    device: torch.device | str | None,
    every_limit: bool = True,
) -> tuple[list[float | None], str]:
    """Each of the six limits (``None`` where there is none) and, if any is missing, why.

    With ``every_limit`` the search stops as soon as a curve has no bracket (its caller wants
    all six or none); without, the other curves are still refined.

    Raises:
        LimitNotBracketed: the engine cannot stack the workspace.
        NoSignal: the POI multiplies no events.
        pyhf.exceptions.InvalidSpecification: not a pyhf workspace.
    """
    curves = _Curves(_stack(workspace, device))
    top = float(curves.stack.upper[curves.stack.poi])
    curves.evaluate(np.geomspace(1e-3 * top, top, GRID_POINTS))
    for _ in range(MAX_EXTENSIONS):
        sides = {curves.bracket(k, level) for k in range(6)} & {"down", "up"}
        if not sides or len(curves.rejected) == len(curves.values):
            break
        known = np.array(sorted(curves.values))
        if "down" in sides:
            curves.evaluate(np.geomspace(1e-3 * known[0], known[0], 7)[:-1])
        if "up" in sides:
            curves.evaluate(known[-1] * 4.0 ** np.arange(1, 3))
    estimates = np.full(6, np.nan)
    widths = np.full(6, np.inf)
    for _ in range(MAX_PASSES):
        brackets = [curves.bracket(k, level) for k in range(6)]
        if every_limit and any(isinstance(b, str) for b in brackets):
            break
        trial = []
        for k, bracket in enumerate(brackets):
            if isinstance(bracket, str) or bracket[1] - bracket[0] <= rtol * bracket[0]:
                continue
            a, b = bracket
            stalled, widths[k] = b - a > 0.5 * widths[k], b - a
            guess = min(max(curves.root(k, a, b, level), a + 0.01 * (b - a)), b - 0.01 * (b - a))
            if guess in curves.values:
                guess = 0.5 * (a + b)
            step = max(
                abs(guess - estimates[k]) if np.isfinite(estimates[k]) else 0.0, rtol * a / 4
            )
            estimates[k] = guess
            trial += [m for m in (guess - step, guess, guess + step) if a < m < b]
            if stalled:
                trial.append(0.5 * (a + b))
        if not set(trial) - set(curves.values):
            break
        curves.evaluate(np.array(trial))
    brackets = [curves.bracket(k, level) for k in range(6)]
    found = [
        None if isinstance(b, str) or b[1] - b[0] > rtol * b[0] else curves.root(k, *b, level)
        for k, b in enumerate(brackets)
    ]
    if all(value is not None for value in found):
        return found, ""
    known = np.array(sorted(curves.values))
    side = {
        "up": f"CLs ≥ {level} at every trusted μ",
        "down": f"CLs < {level} already at the smallest trusted μ",
    }
    if len(curves.rejected) == len(curves.values):
        side["up"] = "no trusted μ"
    unbracketed = [
        f"{LIMIT_NAMES[k]} ({side[b]})" for k, b in enumerate(brackets) if isinstance(b, str)
    ]
    wide = [
        f"{LIMIT_NAMES[k]} ({b[0]:.6g}, {b[1]:.6g})"
        for k, b in enumerate(brackets)
        if not isinstance(b, str) and found[k] is None
    ]
    problems = []
    if unbracketed:
        problems.append(f"no trusted bracket of CLs = {level} for {', '.join(unbracketed)}")
    if wide:
        problems.append(
            f"brackets of CLs = {level} not shrunk to rtol = {rtol:g} for {', '.join(wide)}"
        )
    rejected = "; ".join(f"μ = {m:.4g}: {why}" for m, why in list(curves.rejected.items())[:3])
    return found, (
        f"{'; '.join(problems)} on μ in [{known[0]:.4g}, {known[-1]:.4g}] after {len(known)} "
        "points" + (f"; the engine rejected {rejected}" if rejected else "")
    )


@dataclasses.dataclass(frozen=True)
class PatchLimit:
    """Upper limits on μ for one signal patch of a published likelihood.

    Attributes:
        name: Patch (hypothesis) name.
        parameters: Model parameters of the hypothesis.
        region: Region (background workspace) the patch belongs to.
        level: CLs level of the limits (0.05: 95 % CL).
        observed: Observed limit on μ; ``None`` when none was found.
        expected: Expected limits at −2σ … +2σ (pyhf's order); each ``None`` when not found
            (an edge of the band can be unbounded where the median is not).
        reason: Why a limit is missing (empty when all six were found).
    """

    name: str
    parameters: Mapping[str, float]
    region: str
    level: float
    observed: float | None
    expected: tuple[float | None, float | None, float | None, float | None, float | None]
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["parameters"] = dict(self.parameters)
        out["expected"] = list(self.expected)
        return out


def patch_upper_limits(
    background: Mapping[str, Any],
    patches: Sequence[Any],
    *,
    level: float = 0.05,
    rtol: float = 1e-4,
    device: torch.device | str | None = None,
    region: str = "",
    progress: Callable[[int], None] | None = None,
) -> list[PatchLimit]:
    """Observed and expected upper limits on μ for every signal patch of one background.

    The limits are searched as :func:`batched_upper_limit` searches them, one patch at a time,
    except that a curve without a bracket does not stop the others: each of the six limits is
    kept where it was found, a missing one is ``None``, and the reason says which and why.
    Searching several patches' limits in one batch was slower on the CPU, because a batch
    iterates until its slowest member converges (one-off, 2026-12-07, 16 patches of region A of
    ATLAS SUSY-2018-31, one thread: 3.2 s a patch alone, 4.3 s four at a time, 7.4 s eight at a
    time). There is no fallback to pyhf: on published likelihoods its root search takes minutes
    per patch and fails outright where a limit lies above the POI's bound.

    Args:
        background: Background-only pyhf workspace specification.
        patches: As for :func:`~searches.stats.batched.evaluate_patches`.
        level, rtol, device: As for :func:`batched_upper_limit`.
        region: Copied into each result and used in error messages.
        progress: Called with the number of patches just finished.

    Raises:
        ValueError: ``level`` or ``rtol`` outside (0, 1), or a patch that does not apply (a
            patch whose workspace pyhf's schema refuses gets no limits and says why).
    """
    _check_options(level, rtol)
    items, specs = patched_specs(background, patches, region=region)
    results = []
    for (name, parameters, _), spec in zip(items, specs, strict=True):
        found: list[float | None] = [None] * 6
        try:
            found, reason = _search(spec, level=level, rtol=rtol, device=device, every_limit=False)
        except NoSignal:
            reason = "the patch adds no signal (the POI multiplies no events)"
        except (LimitNotBracketed, InvalidSpecification) as why:
            reason = _first_line(why)
        results.append(
            PatchLimit(
                name=name,
                parameters=parameters,
                region=region,
                level=level,
                observed=found[0],
                expected=tuple(found[1:]),  # type: ignore[arg-type]
                reason=reason,
            )
        )
        if progress is not None:
            progress(1)
    return results


def upper_limit(
    workspace: Mapping[str, Any],
    *,
    level: float = 0.05,
    rtol: float = 1e-4,
    device: torch.device | str | None = None,
) -> UpperLimit:
    """Upper limits from the batched engine (:func:`batched_upper_limit`), else from pyhf.

    The pyhf path (:func:`searches.stats.inference.upper_limit`, MINUIT) runs where the engine
    cannot stack the workspace or gives no trusted bracket.

    Raises:
        LimitNotFound: neither path gave a limit (the message has both reasons).
        ValueError: ``level`` or ``rtol`` outside (0, 1), or a workspace without a signal.
    """
    try:
        return batched_upper_limit(workspace, level=level, rtol=rtol, device=device)
    except LimitNotBracketed as why:
        log.info("upper limit on pyhf (MINUIT): %s", why)
        engine = str(why)
    try:
        return inference.upper_limit(workspace, level=level, rtol=rtol)
    except (FailedMinimization, ValueError, RuntimeError) as err:
        pyhf_reason = (
            "MINUIT found no valid minimum"
            if isinstance(err, FailedMinimization)
            else f"{type(err).__name__}: {_first_line(err)}"
        )
        raise LimitNotFound(f"batched engine: {engine}; pyhf on MINUIT: {pyhf_reason}") from None
