"""How much of a theory model's parameter space a campaign excludes, from the active learner.

The learners of :mod:`theory.active` leave a posterior P(excluded) on a set of reference points
(the candidate pool, or a quasi-random cover of the parameter box). A :class:`ModelCoverage`
keeps exactly that — the evaluated points with their CLs and the posterior for observed and
expected CLs — as data in the campaign store (``coverage/<model>.json``), so that the report
can draw exclusion maps and quote excluded volumes without refitting any GP.

The excluded volume is the fraction of reference points with P(excluded) > 1/2; its band is the
fraction with P(excluded) > 0.84 and > 0.16, i.e. the region the surrogate is sure about and the
region it cannot rule out. Beside them the coverage keeps the posterior of the excluded fraction
itself (:mod:`theory.active.volume`): its mean, the mean of P(excluded), and a central 68 %
interval from joint draws of the surrogate. The band is the limit of that interval if every
label's error moved together; the posterior interval counts how the errors are correlated and
is usually about half as wide. Neither is calibrated early: over 20 seeds on six problems with
known truth (``benchmarks/bench_active_volume.py``) the posterior interval held the true
fraction in 25–55 % of runs after 15–20 evaluations and the band in 65–90 %; after 30–45
evaluations 60–100 % and 50–100 % (RESULTS.md). Both are the surrogate's uncertainty on the
boundary, not a statistical uncertainty on CLs (CLs itself is already a confidence statement).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from campaign.store import Store, StoreError
from theory.active.box import BoxHistory
from theory.active.pool import PoolHistory
from theory.active.volume import FractionPosterior, excluded_fraction_posterior

COVERAGE_SCHEMA_VERSION = "2"
READABLE_COVERAGE_VERSIONS = ("1", "2")
"""Version 1 files (before the fraction posterior was kept) still load, without it."""
NEXT_SEARCHES_SCHEMA_VERSION = "1"
COVERAGE_FOLDER = "coverage"
SURE = 0.84
"""P(excluded) above which a reference point counts as surely excluded (one-sided 1σ)."""

Output = Literal["observed", "expected"]


@dataclass(frozen=True)
class ExcludedVolume:
    """Fraction of the reference set excluded: the map's share, its band and its posterior.

    Attributes:
        fraction: share of reference points with P(excluded) > 1/2 (the map).
        low, high: shares with P(excluded) > 0.84 and > 0.16 (the band).
        posterior: mean and central 68 % interval of the excluded fraction over joint draws of
            the surrogate; None when the coverage was made without them.
    """

    fraction: float
    low: float
    high: float
    posterior: FractionPosterior | None = None


@dataclass(frozen=True)
class ModelCoverage:
    """The active learner's answer for one model.

    Attributes:
        model: model name as in :data:`theory.models.MODELS` (or a user label).
        parameters: parameter names, one per column of ``points`` and ``reference``.
        points: (N, d) evaluated parameter points (physical units).
        cls_observed, cls_expected: (N,) their CLs; NaN marks a failed evaluation;
            ``cls_expected`` is None when only one CLs was modelled.
        reference: (r, d) points the posterior is reported on.
        p_excluded_observed, p_excluded_expected: (r,) posterior P(CLs < threshold).
        threshold: the CLs level of the exclusion (0.05 for 95 % CL).
        stop_reason: why the learner stopped (budget, tolerance, ...).
        posterior_observed, posterior_expected: posterior of the excluded fraction
            (:mod:`theory.active.volume`); None for a version-1 file or an output that was
            not modelled.
    """

    model: str
    parameters: tuple[str, ...]
    points: np.ndarray
    cls_observed: np.ndarray
    cls_expected: np.ndarray | None
    reference: np.ndarray
    p_excluded_observed: np.ndarray
    p_excluded_expected: np.ndarray | None
    threshold: float
    stop_reason: str
    posterior_observed: FractionPosterior | None = None
    posterior_expected: FractionPosterior | None = None

    def __post_init__(self) -> None:
        d = len(self.parameters)
        if self.points.ndim != 2 or self.points.shape[1] != d:
            raise ValueError(f"coverage of {self.model!r}: points must be (N, {d})")
        if self.reference.ndim != 2 or self.reference.shape[1] != d:
            raise ValueError(f"coverage of {self.model!r}: reference must be (r, {d})")
        if len(self.p_excluded_observed) != len(self.reference):
            raise ValueError(f"coverage of {self.model!r}: one P(excluded) per reference point")

    @classmethod
    def from_history(
        cls,
        model: str,
        parameters: tuple[str, ...],
        history: PoolHistory | BoxHistory,
        *,
        to_unit: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> ModelCoverage:
        """Read the final posterior of a pool or box learner (label output first), and draw
        the excluded fraction's posterior from the learner's last surrogate.

        Args:
            model: model name.
            parameters: parameter names, one per column.
            history: the learner's history.
            to_unit: for a box history, the space's map to the unit cube (``space.to_unit``
                of the space the learner ran on); a pool normalises by its own range.

        Raises:
            ValueError: for a box history without ``to_unit``, or one that is not the
                learner's (:func:`theory.active.volume.excluded_fraction_posterior`).
        """
        final = history.final
        if isinstance(history, PoolHistory):
            reference = history.candidates
            points = history.candidates[history.evaluated_indices]
        else:
            reference = history.reference
            points = history.evaluated_points
        values = history.evaluated_values
        label_first = history.options.label == "observed"
        columns = [values[:, k] for k in range(values.shape[1])]
        p_label, p_other = final.p_excluded, final.p_excluded_other
        p_obs, p_exp = (p_label, p_other) if label_first else (p_other, p_label)
        if p_obs is None:
            raise ValueError(f"coverage of {model!r}: the learner did not model observed CLs")
        if not isinstance(history, PoolHistory) and to_unit is None:
            raise ValueError(
                f"coverage of {model!r}: a box history needs to_unit=space.to_unit of the "
                "space the learner ran on"
            )
        post_label, post_other = excluded_fraction_posterior(history, to_unit=to_unit)
        post_obs, post_exp = (post_label, post_other) if label_first else (post_other, post_label)
        return cls(
            model=model,
            parameters=tuple(parameters),
            points=np.asarray(points, dtype=float),
            cls_observed=columns[0],
            cls_expected=columns[1] if len(columns) > 1 else None,
            reference=np.asarray(reference, dtype=float),
            p_excluded_observed=np.asarray(p_obs, dtype=float),
            p_excluded_expected=None if p_exp is None else np.asarray(p_exp, dtype=float),
            threshold=history.options.threshold,
            stop_reason=history.stop_reason,
            posterior_observed=post_obs,
            posterior_expected=post_exp,
        )

    def p_excluded(self, output: Output = "observed") -> np.ndarray | None:
        return self.p_excluded_observed if output == "observed" else self.p_excluded_expected

    def excluded_volume(self, output: Output = "observed") -> ExcludedVolume | None:
        """Excluded fraction of the reference set with its boundary band (module docstring)."""
        p = self.p_excluded(output)
        if p is None:
            return None
        return ExcludedVolume(
            fraction=float(np.mean(p > 0.5)),
            low=float(np.mean(p > SURE)),
            high=float(np.mean(p > 1.0 - SURE)),
            posterior=self.posterior_observed if output == "observed" else self.posterior_expected,
        )

    def to_dict(self) -> dict[str, Any]:
        def listed(a: np.ndarray | None) -> Any:
            return None if a is None else [None if not np.isfinite(v) else v for v in a.tolist()]

        return {
            "schema_version": COVERAGE_SCHEMA_VERSION,
            "model": self.model,
            "parameters": list(self.parameters),
            "points": self.points.tolist(),
            "cls_observed": listed(self.cls_observed),
            "cls_expected": listed(self.cls_expected),
            "reference": self.reference.tolist(),
            "p_excluded_observed": self.p_excluded_observed.tolist(),
            "p_excluded_expected": None
            if self.p_excluded_expected is None
            else self.p_excluded_expected.tolist(),
            "threshold": self.threshold,
            "stop_reason": self.stop_reason,
            "posterior_observed": None
            if self.posterior_observed is None
            else asdict(self.posterior_observed),
            "posterior_expected": None
            if self.posterior_expected is None
            else asdict(self.posterior_expected),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "coverage") -> ModelCoverage:
        if data.get("schema_version") not in READABLE_COVERAGE_VERSIONS:
            raise ValueError(
                f"{source}: schema_version={data.get('schema_version')!r}; "
                f"allowed: {', '.join(repr(v) for v in READABLE_COVERAGE_VERSIONS)}"
            )

        def array(key: str) -> np.ndarray | None:
            value = data.get(key)
            return None if value is None else np.array(value, dtype=float)

        def posterior(key: str) -> FractionPosterior | None:
            value = data.get(key)
            return None if value is None else FractionPosterior(**value)

        d = len(data["parameters"])
        return cls(
            model=data["model"],
            parameters=tuple(data["parameters"]),
            points=np.array(data["points"], dtype=float).reshape(-1, d),
            cls_observed=np.array(data["cls_observed"], dtype=float),
            cls_expected=array("cls_expected"),
            reference=np.array(data["reference"], dtype=float).reshape(-1, d),
            p_excluded_observed=np.array(data["p_excluded_observed"], dtype=float),
            p_excluded_expected=array("p_excluded_expected"),
            threshold=float(data["threshold"]),
            stop_reason=str(data["stop_reason"]),
            posterior_observed=posterior("posterior_observed"),
            posterior_expected=posterior("posterior_expected"),
        )


def _file_name(model: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", model) + ".json"


def save_coverage(store: Store, coverage: ModelCoverage) -> str:
    """Write ``coverage/<model>.json`` (atomic, replaces the model's previous answer)."""
    relative = f"{COVERAGE_FOLDER}/{_file_name(coverage.model)}"
    store.write_text(relative, json.dumps(coverage.to_dict(), sort_keys=True))
    return relative


def load_coverages(store: Store) -> list[ModelCoverage]:
    """Every model's coverage in the store, by model name; none when the loop never ran."""
    if not store.exists(COVERAGE_FOLDER):
        return []
    folder = store.local_path(COVERAGE_FOLDER)
    out = []
    for path in sorted(folder.glob("*.json")):
        try:
            out.append(ModelCoverage.from_dict(json.loads(path.read_text()), source=str(path)))
        except (KeyError, TypeError, ValueError) as err:
            raise StoreError(f"{path}: not a coverage file ({err})") from err
    return sorted(out, key=lambda c: c.model)


NEXT_SEARCHES_FILE = "next_searches.json"


@dataclass(frozen=True)
class NextSearch:
    """An event class where still-allowed theory points put signal that no search looks at.

    Attributes:
        event_class: exclusive event class.
        signal_events: expected signal events in the class, averaged over the still-allowed
            points of each model (prior-weighted: the points are uniform in each model's
            normalised box) and summed over models.
        share: that class's part of all untested signal of those points.
        models: the models that contribute, largest first.
    """

    event_class: str
    signal_events: float
    share: float
    models: tuple[str, ...]


def rank_next_searches(
    deposits: dict[str, dict[str, list[float]]], tested: set[str], *, limit: int = 10
) -> list[NextSearch]:
    """Untested classes ranked by the signal still-allowed theory points deposit there.

    Args:
        deposits: per model, per exclusive class, the expected signal events at each sampled
            still-allowed point (every list of one model has the same length).
        tested: exclusive classes some search of the campaign covers.
        limit: longest list returned.
    """
    per_class: dict[str, dict[str, float]] = {}
    for model, classes in deposits.items():
        for name, yields in classes.items():
            if name in tested or not yields:
                continue
            mean = float(np.mean(yields))
            if mean > 0:
                per_class.setdefault(name, {})[model] = mean
    total = sum(sum(models.values()) for models in per_class.values())
    ranked = sorted(per_class.items(), key=lambda item: (-sum(item[1].values()), item[0]))
    return [
        NextSearch(
            event_class=name,
            signal_events=sum(models.values()),
            share=sum(models.values()) / total,
            models=tuple(sorted(models, key=lambda m: (-models[m], m))),
        )
        for name, models in ranked[:limit]
    ]


def save_next_searches(store: Store, items: list[NextSearch], *, points: dict[str, int]) -> str:
    """Write ``next_searches.json`` (schema version 1)."""
    document = {
        "schema_version": NEXT_SEARCHES_SCHEMA_VERSION,
        "allowed_points_sampled": points,
        "next_searches": [
            {
                "event_class": item.event_class,
                "signal_events": item.signal_events,
                "share": item.share,
                "models": list(item.models),
            }
            for item in items
        ],
    }
    store.write_text(NEXT_SEARCHES_FILE, json.dumps(document, sort_keys=True))
    return NEXT_SEARCHES_FILE


def load_next_searches(store: Store) -> list[NextSearch]:
    """The theory-driven next-search list, empty when the loop never ran."""
    if not store.exists(NEXT_SEARCHES_FILE):
        return []
    data = store.read_json(NEXT_SEARCHES_FILE)
    if data.get("schema_version") != NEXT_SEARCHES_SCHEMA_VERSION:
        raise StoreError(
            f"{NEXT_SEARCHES_FILE}: schema_version={data.get('schema_version')!r}; "
            f"allowed: {NEXT_SEARCHES_SCHEMA_VERSION!r}"
        )
    return [
        NextSearch(
            event_class=row["event_class"],
            signal_events=float(row["signal_events"]),
            share=float(row["share"]),
            models=tuple(row["models"]),
        )
        for row in data["next_searches"]
    ]
