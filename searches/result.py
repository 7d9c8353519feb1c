"""What a search leaves behind: its numbers, its likelihood and the selection that made them.

A :class:`SearchResult` is plain data (JSON with a schema version). Its :class:`Selection` maps
*any* new events into the search's bins, which is what makes every search reinterpretable
against benchmarks that did not exist when it ran.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import awkward as ak
import numpy as np

SCHEMA_VERSION = "1"

ModelScorer = Callable[["ModelCut", ak.Array], np.ndarray]
_MODEL_SCORERS: dict[str, ModelScorer] = {}


def register_model_scorer(kind: str, scorer: ModelScorer) -> None:
    """Let a method (e.g. ``supervised``) say how its serialised model scores events."""
    _MODEL_SCORERS[kind] = scorer


@dataclass(frozen=True)
class ModelCut:
    """A trained selection: events whose model score passes ``threshold`` are kept.

    ``weights`` is the path of a torch state dict (loaded with ``weights_only=True``). In a
    campaign store's ``results.json`` it is the file name, relative to the folder of that
    file, which ``campaign.tasks.load_results`` resolves wherever the store is read from;
    ``architecture`` holds what rebuilds the network.
    """

    kind: str
    weights: str
    features: tuple[str, ...]
    threshold: float
    architecture: Mapping[str, Any] = field(default_factory=dict)

    def passes(self, events: ak.Array) -> np.ndarray:
        if self.kind not in _MODEL_SCORERS:
            raise KeyError(
                f"model selection kind '{self.kind}' is not registered; "
                f"allowed: {', '.join(sorted(_MODEL_SCORERS)) or '(none imported)'}"
            )
        return _MODEL_SCORERS[self.kind](self, events) >= self.threshold


@dataclass(frozen=True)
class Selection:
    """Maps events to a search's bins: event class, then observable histogrammed in ``edges``.

    Attributes:
        event_class: class name in the notation of :mod:`searches.signatures`
            (``1e_1mu_2j``, ``1e_1mu+X``, ``1mu_2j+NJet``).
        signatures: the signature configuration (``SignatureConfig.model_dump()``).
        observable: a name known to :mod:`searches.observables`.
        edges: bin edges of the observable, GeV.
        model: optional trained cut applied before histogramming.
    """

    event_class: str
    signatures: Mapping[str, Any]
    observable: str
    edges: tuple[float, ...]
    model: ModelCut | None = None

    def histogram(self, events: ak.Array) -> tuple[np.ndarray, np.ndarray]:
        """Weighted counts and sums of squared weights of ``events`` in the search's bins."""
        from searches import observables, signatures

        config = signatures.SignatureConfig.model_validate(dict(self.signatures))
        mask = signatures.class_mask(events, self.event_class, config=config)
        selected = events[mask]
        if self.model is not None and len(selected):
            selected = selected[self.model.passes(selected)]
        values = observables.compute(selected, self.observable, config=config)
        weights = ak.to_numpy(selected["weight"]).astype(np.float64)
        edges = np.asarray(self.edges)
        sumw, _ = np.histogram(values, bins=edges, weights=weights)
        sumw2, _ = np.histogram(values, bins=edges, weights=weights**2)
        return sumw, sumw2

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["edges"] = list(self.edges)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Selection:
        model = data.get("model")
        return cls(
            event_class=data["event_class"],
            signatures=dict(data["signatures"]),
            observable=data["observable"],
            edges=tuple(float(e) for e in data["edges"]),
            model=None
            if model is None
            else ModelCut(**{**model, "features": tuple(model["features"])}),
        )


@dataclass(frozen=True)
class Region:
    """A contiguous bin range ``[first_bin, stop_bin)`` of a distribution and its counts."""

    first_bin: int
    stop_bin: int
    low: float
    high: float
    observed: float
    expected: float
    uncertainty: float
    p_local: float


@dataclass(frozen=True)
class SearchResult:
    """One search on one event class and observable.

    ``p_local`` is the smallest local p-value over the scanned regions (the region of
    interest); ``p_tilde`` is the fraction of background-only pseudo-experiments, scanned the
    same way, with a smaller or equal minimum (``None`` where no pseudo-experiments ran).
    ``pseudo_p_min`` keeps those pseudo-experiment minima (or a quantile summary of them) so
    that the look-elsewhere correction across searches can be computed afterwards.
    """

    event_class: str
    method: str
    observable: str
    edges: tuple[float, ...]
    observed: tuple[float, ...]
    expected: tuple[float, ...]
    uncertainty: tuple[float, ...]
    region: Region | None
    p_local: float
    p_tilde: float | None
    workspace: Mapping[str, Any]
    selection: Selection
    n_pseudo: int = 0
    pseudo_p_min: tuple[float, ...] = ()
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def z_local(self) -> float:
        """Local significance (one-sided Gaussian equivalent of ``p_local``)."""
        return _z(self.p_local)

    @property
    def z_tilde(self) -> float | None:
        return None if self.p_tilde is None else _z(self.p_tilde)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "event_class": self.event_class,
            "method": self.method,
            "observable": self.observable,
            "edges": list(self.edges),
            "observed": list(self.observed),
            "expected": list(self.expected),
            "uncertainty": list(self.uncertainty),
            "region": None if self.region is None else asdict(self.region),
            "p_local": self.p_local,
            "p_tilde": self.p_tilde,
            "n_pseudo": self.n_pseudo,
            "pseudo_p_min": list(self.pseudo_p_min),
            "workspace": dict(self.workspace),
            "selection": self.selection.to_dict(),
            "details": dict(self.details),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, allow_nan=False, default=_jsonable)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchResult:
        version = str(data.get("schema_version"))
        if version != SCHEMA_VERSION:
            raise ValueError(
                f"SearchResult field 'schema_version': {version!r} not supported; "
                f"allowed: {SCHEMA_VERSION!r}"
            )
        region = data.get("region")
        return cls(
            event_class=data["event_class"],
            method=data["method"],
            observable=data["observable"],
            edges=tuple(data["edges"]),
            observed=tuple(data["observed"]),
            expected=tuple(data["expected"]),
            uncertainty=tuple(data["uncertainty"]),
            region=None if region is None else Region(**region),
            p_local=float(data["p_local"]),
            p_tilde=None if data.get("p_tilde") is None else float(data["p_tilde"]),
            workspace=data["workspace"],
            selection=Selection.from_dict(data["selection"]),
            n_pseudo=int(data.get("n_pseudo", 0)),
            pseudo_p_min=tuple(data.get("pseudo_p_min", ())),
            details=data.get("details", {}),
        )

    @classmethod
    def from_json(cls, text: str) -> SearchResult:
        return cls.from_dict(json.loads(text))


def _z(p: float) -> float:
    from scipy.stats import norm

    return float(norm.isf(min(max(p, 1e-300), 1.0))) if math.isfinite(p) else math.nan


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
