"""Test a new benchmark against every search of a finished campaign.

For each search its :class:`~searches.result.Selection` maps the benchmark's signal events into
the search's bins; the yields are patched into the search's background-only pyhf workspace,
whose CLs (observed, expected band) comes from the batched engine of
:mod:`searches.stats.batched` (the exact pyhf likelihood, falling back to plain pyhf where a
check fails) and whose 95 % CL upper limit on the signal strength comes from the engine's CLs
curve (:mod:`searches.stats.limits`, pyhf where it gives none). CLs is
asymptotic by default; with :class:`ToyOptions` the searches whose signal lands on a few
background events get it from pseudo-experiments instead (:mod:`searches.stats.toys`), and
so do their limits (:mod:`searches.stats.toy_limits`).
Searches that receive no signal say "not covered" rather than "allowed": a model nobody looked
for is not a model that was tested. Two combined answers follow: the search with the best
expected sensitivity, and the combination of the statistically independent exclusive classes
(one observable each, chosen by expected CLs, never by data) as one multi-channel workspace.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import awkward as ak
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from numpy.typing import ArrayLike
from rich.progress import Progress

from campaign.store import Store, StoreError
from campaign.tasks import finished_results
from searches import events as ev
from searches.methods.registry import get_method
from searches.progress import progress_bar
from searches.result import SearchResult
from searches.stats.batched import evaluate_patches
from searches.stats.combine import combine
from searches.stats.inference import UpperLimit
from searches.stats.limits import LimitNotFound, upper_limit
from searches.stats.robust import Q_TOLERANCE
from searches.stats.toy_limits import SPAN_SIGMAS, ToyUpperLimit, scan_around, toy_upper_limit
from searches.stats.toys import MAX_DROPPED, ToyCLs, toy_cls
from searches.stats.workspace import with_signal

SCHEMA_VERSION = "3"
MIN_SIGNAL_EVENTS = 1e-3
"""Total signal yield below which a search counts as not covering the benchmark."""

Status = Literal["excluded", "allowed", "not covered", "not evaluated", "failed"]
Calculator = Literal["asymptotics", "toys"]
MAX_FITS = 10
"""Searches fitted per benchmark, the most sensitive first (see :func:`reinterpret`)."""
NO_SENSITIVITY_Z = 0.05
"""Expected significance below which a signal is negligible (CLs = 1 without a fit)."""
NO_SENSITIVITY = "no expected sensitivity"
"""The reason that starts such a verdict."""
MAX_COMBINED = 5
"""Exclusive classes in the combination, the most sensitive first."""
TOYS_BELOW = 10.0
"""Sensitivity-weighted background (events, :func:`sensitive_background`) below which
:class:`ToyOptions` replaces the asymptotic CLs by pseudo-experiments. On one bin with a
campaign search's modifiers (10 % normalisation, 5 % MC statistics) and the signal at the
median expected exclusion, the asymptotic CLs is 22–26 % low at 1–2.5 events, 8 % at 5, and
4–5 % from 10 to 50 events (0.050 against 0.052), less than a 1,000-toy CLs resolves (±0.01);
on the small test campaign a Z′ at 3 TeV meets 1–2 events in its most sensitive searches,
where the asymptotic CLs is 0.024–0.036 and 1,000 toys give 0.055–0.058 ± 0.01 (RESULTS,
"Toy CLs" and "Where asymptotic CLs is good enough"). A pure Poisson count is 30–45 % low at
1–5 events and still 7–23 % low from 10 to 100: raise the threshold for workspaces without a
normalisation uncertainty."""
COMBINED_LIMITS = (
    "limits of a combination stay asymptotic (a toy scan of all its parameters would take "
    "many times its toy CLs)"
)
"""The reason a combination whose CLs came from toys gives for its asymptotic limits."""
TOY_NOTE_SIGMAS = 2.0
"""A toy CLs closer to 0.05 than this many of its errors gets a note: more toys decide it."""


@dataclass(frozen=True)
class ToyOptions:
    """CLs from pseudo-experiments for the searches with few background events.

    Attributes:
        ntoys: Toys per ensemble (signal-like and background-like each).
        seed: Seed of the toys; each search draws its own, derived from this and its name.
        below: Sensitivity-weighted background (events) under which a search gets toys
            (:data:`TOYS_BELOW`); ``math.inf`` for every fitted search.
    """

    ntoys: int
    seed: int = 0
    below: float = TOYS_BELOW

    def __post_init__(self) -> None:
        if self.ntoys < 1:
            raise ValueError(f"toys: ntoys must be at least 1, got {self.ntoys}")
        if not self.below > 0:
            raise ValueError(f"toys: 'below' must be > 0 events, got {self.below}")

    def seed_for(self, search: str) -> int:
        """A seed of its own for each search, the same in every run."""
        digest = hashlib.sha256(f"{self.seed}:{search}".encode()).digest()
        return int.from_bytes(digest[:8], "little")


@dataclass(frozen=True)
class SearchVerdict:
    """One search's answer for the benchmark (CLs at ``mu = 1``, limits on ``mu``).

    ``calculator`` says where the CLs came from: ``"asymptotics"`` or ``"toys"``. Where toys
    ran, ``toys`` holds what they found (:meth:`~searches.stats.toys.ToyCLs.to_dict`: CLs and
    its error, CLs+b, CLb, the observed ``qtilde``, seed, dropped toys) and the asymptotic CLs
    beside it, also when the toys could not decide and the asymptotic CLs stayed.
    ``limit_calculator`` says where the limits came from (``None`` where none were computed):
    from toys where the CLs did and the toy scan found all six (a search, not a combination)
    (``toys["limits"]``: :meth:`~searches.stats.toy_limits.ToyUpperLimit.to_dict`, with the
    asymptotic limits beside them), else asymptotic.
    """

    event_class: str
    method: str
    observable: str
    signal_events: float
    status: Status
    cls_observed: float | None = None
    cls_expected: tuple[float, ...] | None = None
    mu_limit_observed: float | None = None
    mu_limit_expected: tuple[float, ...] | None = None
    reason: str = ""
    calculator: Calculator = "asymptotics"
    toys: Mapping[str, Any] | None = None
    limit_calculator: Calculator | None = None

    @property
    def search(self) -> str:
        return f"{self.event_class}/{self.method}/{self.observable}"


@dataclass(frozen=True)
class Reinterpretation:
    """A benchmark against a whole campaign (``toys``: the :class:`ToyOptions` used, if any)."""

    benchmark: Mapping[str, Any]
    searches: tuple[SearchVerdict, ...]
    best_expected: SearchVerdict | None
    combined: SearchVerdict | None
    combined_classes: tuple[str, ...]
    status: Status
    toys: ToyOptions | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["schema_version"] = SCHEMA_VERSION
        return data


def _verdict(status_of_cls: float | None) -> Status:
    if status_of_cls is None or not np.isfinite(status_of_cls):
        return "failed"
    return "excluded" if status_of_cls < 0.05 else "allowed"


def evaluate_search(
    result: SearchResult,
    signal: ak.Array,
    *,
    limits: bool = True,
    pyhf_attempts: int | None = None,
    toys: ToyOptions | None = None,
    on_toys: Callable[[int], None] | None = None,
) -> SearchVerdict:
    """CLs and limits of one search for the signal events (``qtilde``).

    The upper limit on ``mu`` costs a root search (a few batched passes of the engine, tens of
    pyhf fits where it falls back: :func:`searches.stats.limits.upper_limit`), so campaigns
    compute it for the best-expected search and the combination, and CLs for every search.
    ``pyhf_attempts`` caps the plain-pyhf fallback (:func:`_test`). With ``toys`` the CLs
    comes from pseudo-experiments where :func:`sensitive_background` is below ``toys.below``;
    ``on_toys`` is called with the number of toys fitted as they are.
    """
    yields, sumw2 = result.selection.histogram(signal)
    total = float(yields.sum())
    common = {
        "event_class": result.event_class,
        "method": result.method,
        "observable": result.observable,
        "signal_events": total,
    }
    if total < MIN_SIGNAL_EVENTS:
        return SearchVerdict(**common, status="not covered", reason="no signal in the search")
    try:
        workspace = with_signal(result.workspace, yields, signal_sumw2=sumw2)
        wanted = toys is not None and sensitive_background(result, yields) < toys.below
        outcome = _test(
            workspace,
            name=result.event_class,
            limits=limits,
            expected_z=sensitivity(result, yields),
            pyhf_attempts=pyhf_attempts,
            toys=toys if wanted else None,
            search=f"{result.event_class}/{result.method}/{result.observable}",
            on_toys=on_toys,
        )
        return SearchVerdict(**common, **outcome)
    except Exception as err:
        return SearchVerdict(**common, status="failed", reason=f"{type(err).__name__}: {err}")


def _test(
    workspace: Mapping[str, Any],
    *,
    name: str,
    limits: bool,
    expected_z: float,
    pyhf_attempts: int | None = None,
    toys: ToyOptions | None = None,
    search: str = "",
    combined: bool = False,
    on_toys: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """CLs with its fits checked and retried: FAILED rather than a silent CLs = 1 or NaN.

    The batched engine (:func:`~searches.stats.batched.evaluate_patches`: analytic Newton fits
    of the exact pyhf likelihood, tested against pyhf) with plain pyhf as its fallback —
    :func:`~searches.stats.robust.robust_hypotest` with nuisance parameters on their bounds
    accepted (``check_bounds=False``, see :func:`~searches.stats.robust.diagnose_fits`). A test
    that stays unresolved only because every attempt, the engine's included, finds no expected
    sensitivity (Asimov statistic ≈ 0) is "allowed" with CLs = 1 when the independent estimate
    ``expected_z`` (:func:`sensitivity`) agrees that the signal is negligible; counting the
    engine's attempt keeps that verdict when the pyhf fallback is capped at no attempts.
    ``pyhf_attempts`` caps the fallback's pyhf attempts (default all: each can cost a minute on
    a campaign workspace).

    With ``toys`` a test that the engine resolved by itself (its fits passed every check)
    gets its CLs from pseudo-experiments (:func:`_toy_outcome`, seeded per ``search``); one
    that needed plain pyhf keeps the asymptotic CLs and says so. Where the CLs came from toys,
    so do the limits (:func:`_toy_limits`), except for a ``combined`` workspace: its toys fit
    every combined search's parameters at once (the small test campaign's default
    combination, 175 parameters: about 80 s per 1,000-toy CLs, so about 16 minutes for a
    scan; RESULTS, "What a combination's toys cost"), so its limits stay asymptotic and the
    reason says so.
    """
    (tested,) = evaluate_patches(
        workspace, [(name, [])], check_bounds=False, pyhf_attempts=pyhf_attempts
    )
    if tested.status == "failed" or tested.cls_obs is None or tested.cls_exp is None:
        attempts = tested.diagnostics.get("attempts", [])
        insensitive = bool(attempts) and all(
            abs(a.get("q_asimov_raw", math.inf)) <= Q_TOLERANCE for a in attempts
        )
        if insensitive and expected_z < NO_SENSITIVITY_Z:
            return {
                "status": "allowed",
                "cls_observed": 1.0,
                "cls_expected": (1.0,) * 5,
                "reason": f"{NO_SENSITIVITY} (Z ≈ {expected_z:.2g})",
            }
        return {"status": "failed", "reason": f"{name}: {tested.reason}"}
    outcome: dict[str, Any] = {
        "status": _verdict(tested.cls_obs),
        "cls_observed": tested.cls_obs,
        "cls_expected": tuple(tested.cls_exp),
        "reason": tested.reason,
    }
    if toys is not None and tested.backend.startswith("batched-torch"):
        outcome.update(
            _toy_outcome(
                workspace, toys, search=search or name, asymptotic=outcome, on_toys=on_toys
            )
        )
    elif toys is not None:
        outcome["reason"] = _joined(
            outcome["reason"], "toys not run: the engine's fits needed plain pyhf; asymptotic CLs"
        )
    if limits:
        outcome |= _limits(
            workspace,
            outcome,
            toys=toys,
            search=search or name,
            combined=combined,
            on_toys=on_toys,
        )
    return outcome


def _limits(
    workspace: Mapping[str, Any],
    outcome: Mapping[str, Any],
    *,
    toys: ToyOptions | None,
    search: str,
    combined: bool = False,
    on_toys: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """The limit fields (and reason) for a tested workspace whose CLs fields are ``outcome``:
    asymptotic (:func:`~searches.stats.limits.upper_limit`), from a toy scan
    (:func:`_toy_limits`) where the CLs came from toys, and asymptotic with a reason for a
    ``combined`` workspace (see :func:`_test`)."""
    try:
        limit = upper_limit(workspace)
    except LimitNotFound as err:
        return {
            "mu_limit_observed": None,
            "mu_limit_expected": None,
            "reason": _joined(outcome["reason"], f"no 95 % CL upper limit: {err}"),
        }
    found: dict[str, Any] = {
        "mu_limit_observed": limit.observed,
        "mu_limit_expected": limit.expected,
        "limit_calculator": "asymptotics",
    }
    if toys is None or outcome.get("calculator") != "toys":
        return found
    if combined:
        return found | {"reason": _joined(outcome["reason"], COMBINED_LIMITS)}
    return found | _toy_limits(
        workspace, toys, search=search, outcome=outcome, asymptotic=limit, on_toys=on_toys
    )


def add_limits(
    result: SearchResult,
    signal: ak.Array,
    verdict: SearchVerdict,
    *,
    toys: ToyOptions | None = None,
    on_toys: Callable[[int], None] | None = None,
) -> SearchVerdict:
    """``verdict`` (from :func:`evaluate_search` without limits) with its limits added, as
    :func:`evaluate_search` with ``limits=True`` would give them, without testing μ = 1 again:
    the fits and toys behind its CLs are deterministic, and its toy CLs is reused by the
    toy scan (:func:`_toy_limits`). A verdict without a fitted CLs (not covered, failed,
    negligible signal) is returned as it is, and one whose limits fail unexpectedly keeps its
    CLs and status with the error in its reason. Unlike a second :func:`evaluate_search`, the
    CLs is the one computed under the caller's ``pyhf_attempts``."""
    if verdict.status not in ("excluded", "allowed") or verdict.reason.startswith(NO_SENSITIVITY):
        return verdict
    yields, sumw2 = result.selection.histogram(signal)
    try:
        workspace = with_signal(result.workspace, yields, signal_sumw2=sumw2)
        found = _limits(
            workspace, asdict(verdict), toys=toys, search=verdict.search, on_toys=on_toys
        )
    except Exception as err:
        why = f"no limits: {type(err).__name__}: {err}"
        return replace(verdict, reason=_joined(verdict.reason, why))
    return replace(verdict, **found)


def _toy_limits(
    workspace: Mapping[str, Any],
    toys: ToyOptions,
    *,
    search: str,
    outcome: Mapping[str, Any],
    asymptotic: UpperLimit,
    on_toys: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """The verdict's limit fields from a toy CLs scan
    (:func:`~searches.stats.toy_limits.toy_upper_limit`) placed around the ``asymptotic``
    limits, with the seed of the toy CLs already in ``outcome``. The scan includes μ = 1, where
    it repeats that toy CLs exactly (same seed, same fits), so the limit's curve passes
    through the verdict's own CLs.

    Where the scan does not find all six limits the asymptotic ones stay and the reason says
    why; ``toys["limits"]`` records the scan either way, with the asymptotic limits beside it.
    """
    scan = scan_around(asymptotic)
    if scan[0] < 1.0 < scan[-1]:
        scan = np.append(scan, 1.0)
    at_one = ToyCLs.from_dict(outcome["toys"])
    try:
        found = toy_upper_limit(
            workspace,
            ntoys=toys.ntoys,
            seed=toys.seed_for(search),
            scan=scan,
            known=[at_one],
            progress=on_toys,
        )
    except (RuntimeError, ValueError) as err:
        why = f"toy limits not run ({err}); asymptotic limits"
        return {"reason": _joined(outcome["reason"], why)}
    kept = {"observed": asymptotic.observed, "expected": list(asymptotic.expected)}
    details = dict(outcome["toys"]) | {"limits": found.to_dict() | {"asymptotic": kept}}
    if not found.complete:
        why = f"toy limits: {found.reason}; asymptotic limits"
        return {"reason": _joined(outcome["reason"], why), "toys": details}
    return {
        "mu_limit_observed": found.observed,
        "mu_limit_expected": found.expected,
        "limit_calculator": "toys",
        "toys": details,
        "reason": _joined(outcome["reason"], _span_note(found)),
    }


def _span_note(found: ToyUpperLimit) -> str:
    """A note where the observed limit could lie further away than its error says
    (:attr:`~searches.stats.toy_limits.ToyUpperLimit.observed_span`)."""
    if found.observed_span is None:
        return ""
    low, high = found.observed_span
    return (
        f"observed toy CLs within {SPAN_SIGMAS:g}σ of 0.05 from μ = {low:.3g} to {high:.3g}: "
        "the observed limit could lie anywhere there at these toys; more toys would pin it"
    )


def _toy_outcome(
    workspace: Mapping[str, Any],
    toys: ToyOptions,
    *,
    search: str,
    asymptotic: Mapping[str, Any],
    on_toys: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """The verdict's fields from :func:`~searches.stats.toys.toy_cls`.

    Where the toys cannot answer (the data's ``qtilde`` beyond every background-like toy,
    failed fits, more than :data:`MAX_DROPPED` of the toys dropped), the asymptotic CLs stays
    and the reason says why. A toy CLs within :data:`TOY_NOTE_SIGMAS` errors of 0.05 is used,
    with a note that more toys would settle the verdict.
    """
    kept = {"cls_obs": asymptotic["cls_observed"], "cls_exp": list(asymptotic["cls_expected"])}
    earlier = asymptotic["reason"]
    try:
        out = toy_cls(workspace, ntoys=toys.ntoys, seed=toys.seed_for(search), progress=on_toys)
    except (RuntimeError, ValueError) as err:
        return {"reason": _joined(earlier, f"toys not run ({err}); asymptotic CLs")}
    details = out.to_dict() | {"asymptotic": kept}
    worst = max(out.dropped) / toys.ntoys
    if out.resolution_limited or worst > MAX_DROPPED:
        why = (
            f"no background-like toy of {toys.ntoys} reached the data's qtilde "
            f"({out.q_observed:.3g}), CLs undefined at this resolution"
            if out.resolution_limited
            else f"{max(out.dropped)} of {toys.ntoys} toys of an ensemble dropped (fits failed)"
        )
        return {"reason": _joined(earlier, f"toys: {why}; asymptotic CLs"), "toys": details}
    notes = [earlier]
    if sum(out.dropped):
        notes.append(f"{sum(out.dropped)} toys dropped (fits did not converge)")
    if abs(out.observed - 0.05) < TOY_NOTE_SIGMAS * out.observed_error:
        notes.append(
            f"toy CLs {out.observed:.3g} ± {out.observed_error:.2g} is within "
            f"{TOY_NOTE_SIGMAS:g}σ of 0.05: more toys would settle the verdict"
        )
    return {
        "status": _verdict(out.observed),
        "cls_observed": out.observed,
        "cls_expected": out.expected,
        "calculator": "toys",
        "toys": details,
        "reason": _joined(*notes),
    }


def _joined(*notes: str) -> str:
    return "; ".join(note for note in notes if note)


def _ranking_cls(verdict: SearchVerdict) -> float:
    """The median expected CLs that picks the best-expected search and the classes combined:
    the asymptotic one, also where toys ran, so the choice does not move with the toys' seed
    (toys put a very sensitive search at exactly 0)."""
    if verdict.toys is not None and "asymptotic" in verdict.toys:
        return float(verdict.toys["asymptotic"]["cls_exp"][2])
    return float(verdict.cls_expected[2])  # type: ignore[index]


def combine_exclusive(
    results: Sequence[SearchResult],
    verdicts: Sequence[SearchVerdict],
    signal: ak.Array,
    *,
    limits: bool = False,
    toys: ToyOptions | None = None,
    on_toys: Callable[[int], None] | None = None,
) -> tuple[SearchVerdict | None, tuple[str, ...]]:
    """CLs of the combination of independent exclusive classes, one observable per class.

    With ``toys`` it gets toy CLs where the :func:`sensitive_background` of all its bins
    together is below ``toys.below``."""
    best: dict[str, tuple[SearchResult, SearchVerdict]] = {}
    for result, verdict in zip(results, verdicts, strict=True):
        if "+" in result.event_class or verdict.cls_expected is None:
            continue
        current = best.get(result.event_class)
        if current is None or _ranking_cls(verdict) < _ranking_cls(current[1]):
            best[result.event_class] = (result, verdict)
    if not best:
        return None, ()
    classes = tuple(sorted(best))
    histograms = {c: best[c][0].selection.histogram(signal) for c in classes}
    workspaces = [
        with_signal(best[c][0].workspace, histograms[c][0], signal_sumw2=histograms[c][1])
        for c in classes
    ]
    names = [f"{c}_{best[c][0].observable}" for c in classes]
    common = {
        "event_class": "+".join(classes) if len(classes) < 6 else f"{len(classes)} classes",
        "method": "combination",
        "observable": "best-expected per class",
        "signal_events": float(sum(best[c][1].signal_events for c in classes)),
    }
    try:
        workspace = combine(workspaces, names)
        z = math.sqrt(sum(sensitivity(best[c][0], histograms[c][0]) ** 2 for c in classes))
        background = _weighted_background(
            np.concatenate([histograms[c][0] for c in classes]),
            np.concatenate([best[c][0].expected for c in classes]),
            np.concatenate([best[c][0].uncertainty for c in classes]),
        )
        outcome = _test(
            workspace,
            name=common["event_class"],
            limits=limits,
            expected_z=z,
            toys=toys if toys is not None and background < toys.below else None,
            search=f"combination/{'+'.join(names)}",
            combined=True,
            on_toys=on_toys,
        )
    except Exception as err:
        outcome = {"status": "failed", "reason": f"{type(err).__name__}: {err}"}
    return SearchVerdict(**common, **outcome), classes


def sensitivity(result: SearchResult, yields: np.ndarray) -> float:
    """Approximate expected significance ``sqrt(sum s^2 / (b + sigma_b^2))`` over bins.

    Only used to order searches before the likelihood fits (and its weights to choose toys,
    :func:`sensitive_background`); no reported number comes from it.
    """
    return float(np.sqrt(np.sum(_bin_weights(yields, result.expected, result.uncertainty))))


def _bin_weights(signal: ArrayLike, background: ArrayLike, sigma: ArrayLike) -> np.ndarray:
    """Each bin's ``s² / (b + σ_b²)``, its term of the approximate expected significance."""
    s, b, u = (np.asarray(x, dtype=np.float64) for x in (signal, background, sigma))
    return s**2 / np.maximum(b + u**2, 1e-9)


def sensitive_background(result: SearchResult, yields: np.ndarray) -> float:
    """The background the signal is tested against: the search's background per bin averaged
    with the weights of :func:`sensitivity` (each bin's share of ``s² / (b + σ_b²)``).

    A signal on the tail of a falling spectrum is tested against the few events of the tail
    bins, however many the search holds elsewhere; that number decides whether asymptotic
    formulae can be trusted (:data:`TOYS_BELOW`).
    """
    return _weighted_background(yields, result.expected, result.uncertainty)


def _weighted_background(signal: ArrayLike, background: ArrayLike, sigma: ArrayLike) -> float:
    weight = _bin_weights(signal, background, sigma)
    total = float(weight.sum())
    b = np.asarray(background, dtype=np.float64)
    return float((weight * b).sum() / total) if total > 0 else math.inf


class _Progress:
    """The bar of :func:`reinterpret`: one task over its steps (each fitted search, the
    best-expected search's limits, the combination), and one counting the toys fitted, since
    a single toy CLs or toy limit scan can take minutes."""

    def __init__(self, bar: Progress | None, *, steps: int, toys: bool) -> None:
        self.bar = bar
        self.task = None if bar is None else bar.add_task("fitting searches", total=steps)
        self.toy_task = None if bar is None or not toys else bar.add_task("toys fitted", total=None)

    def now(self, description: str) -> None:
        if self.bar is not None and self.task is not None:
            self.bar.update(self.task, description=description)

    def step(self) -> None:
        if self.bar is not None and self.task is not None:
            self.bar.advance(self.task)

    def toys(self, count: int) -> None:
        if self.bar is not None and self.toy_task is not None:
            self.bar.advance(self.toy_task, count)


def reinterpret(
    results: Sequence[SearchResult],
    signal: ak.Array,
    *,
    benchmark: Mapping[str, Any],
    max_fits: int = MAX_FITS,
    max_combined: int = MAX_COMBINED,
    limits: bool = False,
    pyhf_attempts: int | None = None,
    toys: ToyOptions | None = None,
    progress: bool = False,
) -> Reinterpretation:
    """The benchmark's verdict from the searches, the best-expected one and the combination.

    Every search maps the signal into its bins. Searches that receive no signal are "not
    covered". The ``max_fits`` most sensitive of the others (by :func:`sensitivity`) get
    CLs; the rest are reported as "not evaluated" with their signal yield, since the
    fits of every search of a large campaign per benchmark add up. With
    ``limits`` the best-expected search and the combination also get the 95 % CL upper limit
    on the signal strength (:func:`searches.stats.limits.upper_limit`). ``pyhf_attempts``
    caps the plain-pyhf fallback of each search's fit (:func:`_test`; default: every retry).
    With ``toys`` the fitted searches (and the combination) whose signal meets fewer than
    ``toys.below`` background events get their CLs from pseudo-experiments; which searches
    are fitted, the best-expected search and the classes combined are chosen as without toys
    (by :func:`sensitivity` and the asymptotic expected CLs, :func:`_ranking_cls`); the limits
    of a search whose CLs came from toys come from a toy scan (:func:`_toy_limits`).
    ``progress`` shows a bar over these steps and the toys fitted on a terminal (off by
    default: the theory loop calls this inside its own bar).
    """
    ev.validate_events(signal, source=str(benchmark.get("source", "signal events")))
    for method in {r.method for r in results if r.selection.model is not None}:
        get_method(method)
    yields = [result.selection.histogram(signal)[0] for result in results]
    order = sorted(
        (i for i, y in enumerate(yields) if y.sum() >= MIN_SIGNAL_EVENTS),
        key=lambda i: -sensitivity(results[i], yields[i]),
    )
    fitted = set(order[:max_fits])
    candidates = [i for i in order if "+" not in results[i].event_class and i in fitted]
    chosen: list[int] = []
    for i in candidates:
        if results[i].event_class not in {results[j].event_class for j in chosen}:
            chosen.append(i)
    chosen = chosen[:max_combined]
    verdicts = []
    combined: SearchVerdict | None = None
    classes: tuple[str, ...] = ()
    steps = len(fitted) + int(limits) + int(len(chosen) > 1)
    with progress_bar() if progress else nullcontext() as bar:
        shown = _Progress(bar, steps=steps, toys=toys is not None)
        for index, (result, signal_yields) in enumerate(zip(results, yields, strict=True)):
            if index not in fitted:
                verdicts.append(_unfitted(result, float(signal_yields.sum()), max_fits))
                continue
            verdicts.append(
                evaluate_search(
                    result,
                    signal,
                    limits=False,
                    pyhf_attempts=pyhf_attempts,
                    toys=toys,
                    on_toys=shown.toys,
                )
            )
            shown.step()
        tested = [i for i, v in enumerate(verdicts) if v.cls_expected is not None]
        chosen_best = min(tested, key=lambda i: _ranking_cls(verdicts[i])) if tested else None
        best = None if chosen_best is None else verdicts[chosen_best]
        if limits:
            shown.now("limits of the best-expected search")
            if chosen_best is not None:
                best = add_limits(
                    results[chosen_best],
                    signal,
                    verdicts[chosen_best],
                    toys=toys,
                    on_toys=shown.toys,
                )
            shown.step()
        if len(chosen) > 1:
            shown.now("combination")
            combined, classes = combine_exclusive(
                [results[i] for i in chosen],
                [verdicts[i] for i in chosen],
                signal,
                limits=limits,
                toys=toys,
                on_toys=shown.toys,
            )
            shown.step()
    if combined is not None and combined.status in ("excluded", "allowed"):
        status: Status = combined.status
    elif best is not None:
        status = best.status
    elif any(v.status == "failed" for v in verdicts):
        status = "failed"
    else:
        status = "not covered"
    return Reinterpretation(
        benchmark=dict(benchmark),
        searches=tuple(verdicts),
        best_expected=best,
        combined=combined,
        combined_classes=classes,
        status=status,
        toys=toys,
    )


def _unfitted(result: SearchResult, total: float, max_fits: int) -> SearchVerdict:
    covered = total >= MIN_SIGNAL_EVENTS
    return SearchVerdict(
        event_class=result.event_class,
        method=result.method,
        observable=result.observable,
        signal_events=total,
        status="not evaluated" if covered else "not covered",
        reason=f"not among the {max_fits} most sensitive searches"
        if covered
        else "no signal in the search",
    )


def campaign_results(store: Store) -> list[SearchResult]:
    """Every successful search result of a finished campaign."""
    store.require_campaign()
    results = finished_results(store)
    if not results:
        raise StoreError(f"{store.uri}: the campaign has no finished searches to reinterpret")
    return results


def save(store: Store, outcome: Reinterpretation) -> str:
    """Write the reinterpretation as JSON and a Parquet table under ``reinterpretations/``.

    The folder is named by the benchmark and the toy options, so a run with toys and one
    without are kept side by side; the same benchmark and options overwrite their folder."""
    text = json.dumps(outcome.to_dict(), sort_keys=True, default=str)
    identity: Any = outcome.benchmark
    if outcome.toys is not None:
        identity = {"benchmark": outcome.benchmark, "toys": asdict(outcome.toys)}
    label = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    folder = f"reinterpretations/{label[:16]}"
    store.write_text(f"{folder}/result.json", text)
    rows = [
        {
            "search": v.search,
            "signal_events": v.signal_events,
            "status": v.status,
            "cls_observed": v.cls_observed,
            "cls_expected_median": None if v.cls_expected is None else v.cls_expected[2],
            "mu_limit_observed": v.mu_limit_observed,
            "calculator": v.calculator,
        }
        for v in outcome.searches
    ]
    table = pa.Table.from_pylist(rows).replace_schema_metadata(
        {"lamppost.reinterpretation.schema_version": SCHEMA_VERSION}
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    store.write_bytes(f"{folder}/searches.parquet", buffer.getvalue())
    return folder
