"""The one small protocol every analysis method implements.

A method gets the events of one event class (observed data and simulated background, both in
the schema of :mod:`searches.events`), its options and a seed, and returns one
:class:`~searches.result.SearchResult` per observable it searched. Methods are plain functions
of their inputs, so the campaign can run them anywhere (a test, a Ray worker, a GPU node).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import awkward as ak
from pydantic import BaseModel, ConfigDict

from searches.result import SearchResult


class MethodOptions(BaseModel):
    """Base of every method's options (campaign file ``searches: [{method: ..., ...}]``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class ClassSlice:
    """The events of one event class, as the method sees them.

    Attributes:
        event_class: the class name (see :mod:`searches.signatures`).
        signatures: the signature configuration that defined the class, as a plain dict
            (``SignatureConfig.model_dump()``), so a ``Selection`` can be written from it.
        observed: observed (or pseudo-) data events in the class.
        background: simulated background events in the class (weights normalised to the
            campaign luminosity).
        observables: the observables to search (names from :mod:`searches.observables`).
    """

    event_class: str
    signatures: dict[str, Any]
    observed: ak.Array
    background: ak.Array
    observables: tuple[str, ...]


class SearchMethod(Protocol):
    """An analysis method: ``run(slice, options=..., seed=...) -> [SearchResult, ...]``."""

    name: str
    options_model: type[MethodOptions]

    def run(self, data: ClassSlice, *, options: MethodOptions, seed: int) -> list[SearchResult]: ...
