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
:func:`~searches.stats.inference.upper_limit` (pyhf on MINUIT) and says why in the log.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import torch
from pyhf.exceptions import FailedMinimization

from searches.stats import inference
from searches.stats.batched import (
    SCAN_POINTS,
    HistFactoryStack,
    compile_stack,
    confirmed_weak,
    default_device,
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


class LimitNotBracketed(ValueError):
    """The batched engine gave no limit: it cannot stack the workspace, it raised, or its CLs
    curves have no bracket of the level from trusted points that it could shrink."""


class LimitNotFound(ValueError):
    """Neither the batched engine nor pyhf on MINUIT gave the limit."""


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
        """(a, b) around the first fall of curve ``k`` below ``level``, or what is missing.

        ``a`` is the largest trusted μ with CLs ≥ level below ``b``, the smallest trusted μ with
        CLs < level; ``"down"`` or ``"up"`` names the side the grid must grow to.
        """
        mus = np.array(sorted(self.values))
        curve = np.array([self.values[m][k] for m in mus])
        trusted = np.isfinite(curve)
        mus, curve = mus[trusted], curve[trusted]
        below = np.flatnonzero(curve < level)
        if not len(below):
            return "up"
        if below[0] == 0:
            return "down"
        return float(mus[below[0] - 1]), float(mus[below[0]])

    def root(self, k: int, a: float, b: float, level: float) -> float:
        """Where log CLs, linear between the bracket's ends, reaches log ``level`` (``a`` has
        CLs ≥ level, ``b`` below it, so the two logs differ)."""
        ga, gb = (np.log(max(self.values[m][k], 1e-300) / level) for m in (a, b))
        return float(a + (b - a) * ga / (ga - gb))


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
        raise ValueError(
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
    estimate's last move), all curves in one batch per pass, until it is narrower than
    ``rtol`` relative. Where a tested μ (or twice it, the top of the profile scan that confirms
    a weak signal) lies beyond the POI's upper bound, the bound is raised to it: the μ-fixed
    fits need it, and a μ̂ above the old bound then counts as qtilde wants (pyhf's own scan
    refuses such μ); for μ below the old bound the raise changes nothing, since a μ̂ capped at
    the bound already exceeds the tested μ.

    Raises:
        LimitNotBracketed: the engine cannot stack the workspace, or no bracket from trusted
            points could be found and shrunk (the reason names the sides, the grid and the
            engine's objections).
        ValueError: ``level`` or ``rtol`` outside (0, 1), or a workspace without a signal.
        pyhf.exceptions.InvalidSpecification: not a pyhf workspace.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"'level' must be in (0, 1), got {level}")
    if not 0.0 < rtol < 1.0:
        raise ValueError(f"'rtol' must be in (0, 1), got {rtol}")
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
    for _ in range(MAX_PASSES):
        brackets = [curves.bracket(k, level) for k in range(6)]
        if any(isinstance(b, str) for b in brackets):
            break
        wide = [k for k, (a, b) in enumerate(brackets) if b - a > rtol * a]
        if not wide:
            limits = [curves.root(k, *brackets[k], level) for k in range(6)]
            return UpperLimit(level=level, observed=limits[0], expected=tuple(limits[1:]))  # type: ignore[arg-type]
        trial = []
        for k in wide:
            a, b = brackets[k]
            guess = min(max(curves.root(k, a, b, level), a + 0.01 * (b - a)), b - 0.01 * (b - a))
            if guess in curves.values:
                guess = 0.5 * (a + b)
            step = max(
                abs(guess - estimates[k]) if np.isfinite(estimates[k]) else 0.0, rtol * a / 4
            )
            estimates[k] = guess
            trial += [m for m in (guess - step, guess, guess + step) if a < m < b]
        if not set(trial) - set(curves.values):
            break
        curves.evaluate(np.array(trial))
    brackets = [curves.bracket(k, level) for k in range(6)]
    known = np.array(sorted(curves.values))
    rejected = "; ".join(f"μ = {m:.4g}: {why}" for m, why in list(curves.rejected.items())[:3])
    found = [b for b in brackets if not isinstance(b, str)]
    problem = (
        f"no trusted bracket of CLs = {level} (curves {brackets})"
        if len(found) < len(brackets)
        else f"brackets of CLs = {level} not shrunk to rtol = {rtol:g} ({found})"
    )
    raise LimitNotBracketed(
        f"{problem} on μ in [{known[0]:.4g}, {known[-1]:.4g}] after {len(known)} points"
        + (f"; the engine rejected {rejected}" if rejected else "")
    )


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
