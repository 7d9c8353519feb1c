"""Event classes: every event in exactly one exclusive class, keyed by its object multiplicities.

A general search (ATLAS 1807.07447, CMS MUSiC 2010.02984) slices the data by final state: how
many electrons (``e``), muons (``mu``), hadronic taus (``tau``), photons (``gamma``), light jets
(``j``) and b-tagged jets (``b``) pass their thresholds, and whether the missing transverse
momentum passes ``met_min`` (``MET``). The class name lists the non-zero counts in that fixed
order, e.g. ``1e_1mu_2j_1b_MET``; an event with nothing selected and no MET flag is ``empty``.

Jet cap. Jet multiplicities are resolved up to ``max_jets`` jets in total (b-jets included).
b-jets are kept first (``b = min(n_b, max_jets)``), light jets fill the remaining slots
(``j = min(n_j, max_jets - b)``). When an event has ``n_j + n_b >= max_jets`` it goes to the
capped class whose jets add up to ``max_jets``, and the name marks it with ``+`` on the token
that absorbed the overflow: on ``j`` when the event keeps light jets (``4j+_2b``: exactly two
b-jets, at least four light jets), otherwise on ``b`` (``6b+``: at least six b-jets). So with
the default cap of 6, ``6j+`` means "six or more jets, none b-tagged" and there is no separate
class with exactly ``max_jets`` jets.

Views. Besides the exclusive partition there are two views, both defined on the capped
multiplicities so that every view class is a union of exclusive classes (and its yield follows
exactly from the table of exclusive classes):

* inclusive ``<exclusive>+X``: at least those objects, anything extra (including the MET flag);
* jet-inclusive ``<exclusive>+NJet``: exactly those leptons, photons and MET flag, at least
  those light and b-jets.

Overlap handling. Sources are expected to deliver resolved objects (the built-in simulator and
Delphes-like presets do), so by default nothing is removed (``overlap_dr = 0``). With
``overlap_dr > 0`` a jet within ΔR < ``overlap_dr`` of a *selected* electron, muon, tau or photon
is dropped before jets are counted (vectorised over all events at once).

Classification is vectorised: multiplicities are packed into one integer key per event, the
few distinct keys are named once, and names are handed out by table look-up.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import awkward as ak
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

TOKENS: tuple[str, ...] = ("e", "mu", "tau", "gamma", "j", "b", "MET")
"""Multiplicity keys in class-name order (``MET`` is the 0/1 missing-momentum flag)."""

OBJECT_TOKENS: tuple[str, ...] = TOKENS[:-1]
COLLECTION_OF_TOKEN: dict[str, str] = {
    "e": "electron",
    "mu": "muon",
    "tau": "tau",
    "gamma": "photon",
    "j": "jet",
    "b": "bjet",
}
EMPTY_CLASS = "empty"
VIEW_SUFFIX: dict[str, str] = {"exclusive": "", "inclusive": "+X", "jet_inclusive": "+NJet"}
OVERFLOW_KEY = "jet_overflow"

View = Literal["exclusive", "inclusive", "jet_inclusive"]

_TOKEN_RE = re.compile(r"^(?P<count>[1-9][0-9]*)(?P<kind>e|mu|tau|gamma|j|b)(?P<plus>\+?)$")
_J, _B, _MET = TOKENS.index("j"), TOKENS.index("b"), TOKENS.index("MET")
_NON_JET_COLUMNS = [TOKENS.index(t) for t in ("e", "mu", "tau", "gamma")]
_DENSE_KEY_LIMIT = 1 << 21
_PARENT_CHUNK = 256


class ObjectCut(BaseModel):
    """Acceptance of one object type: ``pt >= pt`` and ``|eta| <= abs_eta`` (both inclusive)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pt: float = Field(ge=0, description="minimum transverse momentum, GeV")
    abs_eta: float = Field(gt=0, le=10, description="maximum |pseudorapidity|")


class SignatureConfig(BaseModel):
    """Object thresholds, MET flag, jet cap and views that define the event classes.

    ``model_dump()`` of this model is what a :class:`~searches.result.Selection` stores, so a
    class name plus this configuration selects the same events anywhere, later.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    electron: ObjectCut = ObjectCut(pt=25.0, abs_eta=2.47)
    muon: ObjectCut = ObjectCut(pt=25.0, abs_eta=2.5)
    tau: ObjectCut = ObjectCut(pt=40.0, abs_eta=2.5)
    photon: ObjectCut = ObjectCut(pt=25.0, abs_eta=2.37)
    jet: ObjectCut = ObjectCut(pt=50.0, abs_eta=2.8)
    bjet: ObjectCut = ObjectCut(pt=50.0, abs_eta=2.5)
    met_min: float = Field(default=100.0, ge=0, description="MET flag when met >= met_min, GeV")
    max_jets: int = Field(default=6, ge=1, le=63, description="jet cap, b-jets included")
    views: tuple[View, ...] = ("exclusive", "inclusive", "jet_inclusive")
    overlap_dr: float = Field(
        default=0.0, ge=0, description="drop jets within this ΔR of a selected lepton/photon"
    )

    @model_validator(mode="before")
    @classmethod
    def _known_fields(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            unknown = sorted(set(data) - set(cls.model_fields))
            if unknown:
                raise ValueError(
                    f"unknown field(s) {', '.join(map(repr, unknown))}; "
                    f"allowed: {', '.join(cls.model_fields)}"
                )
            views = data.get("views")
            if views is not None and not isinstance(views, str):
                bad = [v for v in views if v not in VIEW_SUFFIX]
                if bad:
                    raise ValueError(
                        f"field 'views': {', '.join(map(repr, bad))} not allowed; "
                        f"allowed: {', '.join(VIEW_SUFFIX)}"
                    )
                if len(set(views)) != len(list(views)):
                    raise ValueError("field 'views': duplicate entries; list each view once")
        return data

    def cut(self, token: str) -> ObjectCut:
        """The cut of an object token (``e``, ``mu``, ``tau``, ``gamma``, ``j``, ``b``)."""
        return getattr(self, COLLECTION_OF_TOKEN[token])


@dataclass(frozen=True)
class Classification:
    """Exclusive classes of a set of events, in compact form.

    Attributes:
        names: the distinct class names present, sorted, shape ``(n_classes,)``.
        codes: per event, the index of its class in ``names``, shape ``(n_events,)``, int32.
        counts: capped multiplicities of each class, shape ``(n_classes, 7)`` in
            :data:`TOKENS` order.
    """

    names: tuple[str, ...]
    codes: np.ndarray
    counts: np.ndarray

    def event_names(self) -> np.ndarray:
        """One class name per event, shape ``(n_events,)``, dtype object."""
        return np.asarray(self.names, dtype=object)[self.codes]


@dataclass(frozen=True)
class ObjectColumns:
    """One collection as flat numpy columns, with the objects that pass the selection.

    Attributes:
        offsets: start of each event's objects, shape ``(n_events + 1,)``, from 0.
        columns: field name -> values, shape ``(n_objects,)`` (objects of an event contiguous).
        selected: objects passing the cuts (and overlap removal), bool, ``(n_objects,)``.
    """

    offsets: np.ndarray
    columns: dict[str, np.ndarray]
    selected: np.ndarray

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    def per_event(self) -> np.ndarray:
        """Selected objects per event, shape ``(n_events,)``."""
        cumulative = np.zeros(self.selected.size + 1, dtype=np.int32)
        np.cumsum(self.selected, out=cumulative[1:])
        return cumulative[self.offsets[1:]] - cumulative[self.offsets[:-1]]


def _flat_columns(
    events: ak.Array, name: str, fields: tuple[str, ...]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Offsets (from 0) and flat columns of a collection, read from the layout buffers.

    Handles the layouts events come in (plain lists, and lists behind an index after slicing
    or shuffling) with numpy only: contiguous lists are sliced without copies, indexed ones
    gathered once. Anything else goes through ``ak.flatten``.
    """
    collection = events[name]
    parts = _list_buffers(ak.to_layout(collection), fields)
    if parts is None:
        counts = ak.to_numpy(ak.num(collection, axis=1)).astype(np.int64, copy=False)
        offsets = np.zeros(counts.size + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        return offsets, {f: ak.to_numpy(ak.flatten(collection[f], axis=1)) for f in fields}
    starts, stops, index, data = parts
    if index is not None:
        starts, stops = starts[index], stops[index]
    counts = stops - starts
    offsets = np.zeros(counts.size + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    if counts.size == 0 or np.array_equal(starts[1:], stops[:-1]):
        first, last = (int(starts[0]), int(stops[-1])) if counts.size else (0, 0)
        return offsets, {f: column[first:last] for f, column in data.items()}
    gather = np.repeat(starts - offsets[:-1], counts) + np.arange(int(offsets[-1]))
    return offsets, {f: column[gather] for f, column in data.items()}


def _list_buffers(
    layout: ak.contents.Content, fields: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict[str, np.ndarray]] | None:
    """Buffers of a list-of-records layout, or None for layouts it does not know.

    Returns:
        ``(starts, stops, index, {field: content buffer})``: list ``index[i]`` (or ``i`` when
        ``index`` is None) holds the objects of event ``i`` at ``starts``..``stops``.
    """
    index = None
    while isinstance(layout, ak.contents.IndexedArray):
        outer = np.asarray(layout.index.data, dtype=np.int64)
        index = outer if index is None else outer[index]
        layout = layout.content
    if not isinstance(layout, ak.contents.ListOffsetArray | ak.contents.ListArray):
        return None
    record = layout.content
    if not isinstance(record, ak.contents.RecordArray):
        return None
    data = {}
    for field in fields:
        content = record.content(field)
        if not isinstance(content, ak.contents.NumpyArray) or content.data.ndim != 1:
            return None
        data[field] = np.asarray(content.data)[: record.length]
    starts = np.asarray(layout.starts.data, dtype=np.int64)[: layout.length]
    stops = np.asarray(layout.stops.data, dtype=np.int64)[: layout.length]
    return starts, stops, index, data


def _at_least(values: np.ndarray, threshold: float) -> np.ndarray:
    """``values >= threshold`` as if compared in float64, without converting ``values``."""
    if values.dtype == np.float32:
        cast = np.float32(threshold)
        if float(cast) < threshold:
            cast = np.nextafter(cast, np.float32(np.inf))
        return values >= cast
    return values.astype(np.float64, copy=False) >= threshold


def _passes(columns: dict[str, np.ndarray], cut: ObjectCut) -> np.ndarray:
    eta = np.abs(columns["eta"])
    if eta.dtype == np.float32:
        limit = np.float32(cut.abs_eta)
        if float(limit) > cut.abs_eta:
            limit = np.nextafter(limit, np.float32(-np.inf))
        inside = eta <= limit
    else:
        inside = eta.astype(np.float64, copy=False) <= cut.abs_eta
    return _at_least(columns["pt"], cut.pt) & inside


def _overlapping_jets(jets: ObjectColumns, others: list[ObjectColumns], dr: float) -> np.ndarray:
    """Flat mask of jets within ΔR < ``dr`` of any selected object in ``others``.

    Builds every (jet, selected object) pair of the same event as flat index arrays, so the
    cost is linear in the number of pairs and there is no loop over events.
    """
    n_events = jets.offsets.size - 1
    n_jets = int(jets.offsets[-1])
    event_ids = np.arange(n_events)
    other_event = np.concatenate([np.repeat(event_ids, o.counts)[o.selected] for o in others])
    order = np.argsort(other_event, kind="stable")
    other_eta = np.concatenate([o.columns["eta"][o.selected] for o in others])[order]
    other_phi = np.concatenate([o.columns["phi"][o.selected] for o in others])[order]
    other_counts = np.bincount(other_event, minlength=n_events)
    other_starts = np.cumsum(other_counts) - other_counts

    candidates = np.flatnonzero(jets.selected)
    jet_event = np.repeat(event_ids, jets.counts)[candidates]
    partners = other_counts[jet_event]
    n_pairs = int(partners.sum())
    overlapping = np.zeros(n_jets, dtype=bool)
    if n_pairs == 0:
        return overlapping
    pair_jet = np.repeat(candidates, partners)
    first_pair = np.cumsum(partners) - partners
    pair_other = np.repeat(other_starts[jet_event] - first_pair, partners) + np.arange(n_pairs)
    deta = jets.columns["eta"][pair_jet].astype(np.float64) - other_eta[pair_other]
    dphi = jets.columns["phi"][pair_jet].astype(np.float64) - other_phi[pair_other]
    dphi = np.mod(dphi + np.pi, 2 * np.pi) - np.pi
    overlapping[pair_jet[deta**2 + dphi**2 < dr**2]] = True
    return overlapping


def object_columns(
    events: ak.Array, config: SignatureConfig, *, fields: tuple[str, ...] = ("pt", "eta", "phi")
) -> dict[str, ObjectColumns]:
    """Per object token (``e``, ``mu``, ``tau``, ``gamma``, ``j``, ``b``) its collection as flat
    columns with the mask of selected objects; ``j`` and ``b`` share the jet columns.

    This is the one place where cuts and overlap removal are applied, so multiplicities,
    classes, :func:`select_objects` and :mod:`searches.observables` always agree.
    """
    kinematics = tuple(dict.fromkeys(("pt", "eta", "phi", *fields)))
    objects: dict[str, ObjectColumns] = {}
    for token in ("e", "mu", "tau", "gamma"):
        offsets, columns = _flat_columns(events, COLLECTION_OF_TOKEN[token], kinematics)
        objects[token] = ObjectColumns(offsets, columns, _passes(columns, config.cut(token)))
    offsets, columns = _flat_columns(events, "jet", (*kinematics, "btag"))
    btag = columns["btag"].astype(bool, copy=False)
    light = ~btag & _passes(columns, config.jet)
    tagged = btag & _passes(columns, config.bjet)
    if config.overlap_dr > 0:
        jets = ObjectColumns(offsets, columns, light | tagged)
        overlap = _overlapping_jets(jets, list(objects.values()), config.overlap_dr)
        light &= ~overlap
        tagged &= ~overlap
    objects["j"] = ObjectColumns(offsets, columns, light)
    objects["b"] = ObjectColumns(offsets, columns, tagged)
    return objects


def _met_flag(events: ak.Array, config: SignatureConfig) -> np.ndarray:
    return _at_least(ak.to_numpy(events["met"]), config.met_min)


def multiplicities(events: ak.Array, config: SignatureConfig) -> dict[str, np.ndarray]:
    """Selected objects per event, before the jet cap.

    Returns:
        ``{"e", "mu", "tau", "gamma", "j", "b": int32 counts, "MET": bool flag}``, each of
        shape ``(n_events,)``.
    """
    result = _counts_from_buffers(events, config) if config.overlap_dr == 0 else None
    if result is None:
        result = {token: obj.per_event() for token, obj in object_columns(events, config).items()}
    result["MET"] = _met_flag(events, config)
    return result


def _counts_from_buffers(events: ak.Array, config: SignatureConfig) -> dict[str, np.ndarray] | None:
    """Multiplicities without gathering objects: cuts run over each collection's content
    buffer in storage order, counts per stored list are then looked up per event. Much faster
    than :func:`object_columns` on sliced or shuffled events; None where the layout is unknown.
    """
    result: dict[str, np.ndarray] = {}
    for collection, tokens in (
        ("electron", ("e",)),
        ("muon", ("mu",)),
        ("tau", ("tau",)),
        ("photon", ("gamma",)),
        ("jet", ("j", "b")),
    ):
        fields = ("pt", "eta", "btag") if collection == "jet" else ("pt", "eta")
        parts = _list_buffers(ak.to_layout(events[collection]), fields)
        if parts is None:
            return None
        starts, stops, index, data = parts
        if collection == "jet":
            btag = data["btag"].astype(bool, copy=False)
            masks = [~btag & _passes(data, config.jet), btag & _passes(data, config.bjet)]
        else:
            masks = [_passes(data, config.cut(tokens[0]))]
        for token, mask in zip(tokens, masks, strict=True):
            cumulative = np.zeros(mask.size + 1, dtype=np.int32)
            np.cumsum(mask, out=cumulative[1:])
            counts = cumulative[stops] - cumulative[starts]
            result[token] = counts if index is None else counts[index]
    return result


def capped_multiplicities(events: ak.Array, config: SignatureConfig) -> np.ndarray:
    """Multiplicities after the jet cap, the coordinates of the exclusive classes.

    Returns:
        int32 array of shape ``(n_events, 7)`` (Fortran order: one contiguous column per
        token), columns in :data:`TOKENS` order.
    """
    raw = multiplicities(events, config)
    out = np.empty((len(events), len(TOKENS)), dtype=np.int32, order="F")
    for column, token in enumerate(TOKENS):
        out[:, column] = raw[token]
    np.minimum(out[:, _B], config.max_jets, out=out[:, _B])
    np.minimum(out[:, _J], config.max_jets - out[:, _B], out=out[:, _J])
    return out


def class_name_from_counts(counts: Mapping[str, int] | np.ndarray, *, max_jets: int) -> str:
    """The exclusive class name of capped multiplicities (a mapping or a row in TOKENS order)."""
    values = (
        [int(counts.get(t, 0)) for t in TOKENS]
        if isinstance(counts, Mapping)
        else [int(v) for v in counts]
    )
    overflow = values[_J] + values[_B] >= max_jets
    parts = []
    for token, value in zip(OBJECT_TOKENS, values, strict=False):
        if value:
            plus = overflow and (token == "j" or (token == "b" and values[_J] == 0))
            parts.append(f"{value}{token}{'+' if plus else ''}")
    if values[_MET]:
        parts.append("MET")
    return "_".join(parts) or EMPTY_CLASS


def parse_class_name(
    name: str, *, config: SignatureConfig | None = None
) -> tuple[dict[str, int], View]:
    """Multiplicities and view of a class name (the inverse of the names this module writes).

    Args:
        name: e.g. ``1e_1mu_2j_1b_MET``, ``2mu+X``, ``1e_4j+_2b_MET+NJet`` or ``empty``.
        config: when given, also check the jet tokens against ``config.max_jets`` (a class at
            the cap must carry the ``+`` mark, one below it must not).

    Returns:
        ``(counts, view)``: counts for every key in :data:`TOKENS` (``MET`` as 0/1) plus
        ``"jet_overflow"`` (1 when the name carries the jet-cap mark); view one of
        ``exclusive``, ``inclusive``, ``jet_inclusive``.

    Raises:
        ValueError: naming the class and what is allowed.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"event class name must be a non-empty string; got {name!r}")
    view: View = "exclusive"
    base = name
    for candidate in ("inclusive", "jet_inclusive"):
        suffix = VIEW_SUFFIX[candidate]
        if name.endswith(suffix):
            view, base = candidate, name[: -len(suffix)]  # type: ignore[assignment]
    counts = dict.fromkeys(TOKENS, 0)
    counts[OVERFLOW_KEY] = 0
    if base != EMPTY_CLASS:
        _parse_tokens(name, base, counts)
    if config is not None:
        total = counts["j"] + counts["b"]
        if counts[OVERFLOW_KEY] and total != config.max_jets:
            raise ValueError(
                f"event class {name!r}: the jet-cap mark '+' needs j + b == max_jets "
                f"({config.max_jets}); got {total}"
            )
        if not counts[OVERFLOW_KEY] and total >= config.max_jets:
            b = min(counts["b"], config.max_jets)
            capped = {**counts, "b": b, "j": min(counts["j"], config.max_jets - b)}
            suggestion = class_name_from_counts(capped, max_jets=config.max_jets)
            raise ValueError(
                f"event class {name!r}: with max_jets={config.max_jets} events with "
                f"{total} jets fall in the capped class {suggestion + VIEW_SUFFIX[view]!r}"
            )
    return counts, view


def _parse_tokens(name: str, base: str, counts: dict[str, int]) -> None:
    allowed = (
        "tokens '<n>e', '<n>mu', '<n>tau', '<n>gamma', '<n>j', '<n>b' (n >= 1, a '+' after the "
        "last jet token marks the jet cap), then 'MET', joined by '_' in that order, optionally "
        "followed by '+X' or '+NJet'; or 'empty'"
    )
    tokens = base.split("_")
    last = -1
    for position, token in enumerate(tokens):
        if token == "MET":
            if position != len(tokens) - 1:
                raise ValueError(f"event class {name!r}: 'MET' must be the last token; {allowed}")
            counts["MET"] = 1
            continue
        match = _TOKEN_RE.match(token)
        if match is None:
            raise ValueError(f"event class {name!r}: malformed token {token!r}; allowed: {allowed}")
        kind = match["kind"]
        order = TOKENS.index(kind)
        if order <= last:
            raise ValueError(
                f"event class {name!r}: token {token!r} out of order or repeated; "
                f"order: {', '.join(TOKENS)}"
            )
        last = order
        counts[kind] = int(match["count"])
        if match["plus"]:
            if kind not in ("j", "b"):
                raise ValueError(
                    f"event class {name!r}: the jet-cap mark '+' is allowed on 'j' or 'b' only"
                )
            counts[OVERFLOW_KEY] = 1
    if counts[OVERFLOW_KEY]:
        marked_b = bool(re.search(r"(^|_)\d+b\+", base))
        if marked_b and counts["j"]:
            raise ValueError(
                f"event class {name!r}: with light jets present the jet-cap mark '+' goes on "
                f"the 'j' token (e.g. '{counts['j']}j+_{counts['b']}b')"
            )


def classify(events: ak.Array, config: SignatureConfig) -> Classification:
    """Assign every event to exactly one exclusive class (vectorised).

    The capped multiplicities are packed into one mixed-radix integer per event (radix = largest
    value present + 1); keys are counted with ``bincount`` when the key space is small (the
    usual case) or ``unique`` otherwise, so only the distinct keys are turned into names.
    """
    capped = capped_multiplicities(events, config)
    n = len(capped)
    radices = capped.max(axis=0).astype(np.int64) + 1 if n else np.ones(len(TOKENS), np.int64)
    space = int(np.prod(radices.astype(object)))
    if space >= (1 << 62):
        rows, inverse = np.unique(capped, axis=0, return_inverse=True)
        return _named(rows, inverse.reshape(-1), config)
    keys = np.zeros(n, dtype=np.int64)
    for column in range(len(TOKENS)):
        keys *= radices[column]
        keys += capped[:, column]
    if space <= _DENSE_KEY_LIMIT:
        present = np.flatnonzero(np.bincount(keys, minlength=space))
    else:
        present = np.unique(keys)
    rows = np.empty((present.size, len(TOKENS)), dtype=np.int64)
    rest = present.copy()
    for column in reversed(range(len(TOKENS))):
        rest, rows[:, column] = np.divmod(rest, radices[column])
    classes = _named(rows, np.arange(present.size), config)
    rank = classes.codes
    if space <= _DENSE_KEY_LIMIT:
        lookup = np.zeros(space, dtype=np.int32)
        lookup[present] = rank
        codes = lookup[keys]
    else:
        codes = rank[np.searchsorted(present, keys)]
    return Classification(names=classes.names, codes=codes, counts=classes.counts)


def _named(rows: np.ndarray, inverse: np.ndarray, config: SignatureConfig) -> Classification:
    """Name the distinct multiplicity ``rows`` and sort classes by name."""
    names = [class_name_from_counts(row, max_jets=config.max_jets) for row in rows]
    order = np.argsort(np.asarray(names, dtype=object), kind="stable")
    rank = np.empty(order.size, dtype=np.int32)
    rank[order] = np.arange(order.size)
    return Classification(
        names=tuple(names[i] for i in order),
        codes=rank[inverse].astype(np.int32, copy=False),
        counts=rows[order].astype(np.int32),
    )


def exclusive_class_names(events: ak.Array, config: SignatureConfig) -> np.ndarray:
    """One exclusive class name per event, shape ``(n_events,)``, dtype object."""
    return classify(events, config).event_names()


def _view_contains(counts: np.ndarray, parents: np.ndarray, view: View) -> np.ndarray:
    """Membership of rows of ``counts`` ``(m, 7)`` in the ``view`` of each of ``parents``
    ``(p, 7)``; returns bool ``(p, m)``."""
    rows, classes = counts[None, :, :], parents[:, None, :]
    if view == "exclusive":
        return np.all(rows == classes, axis=2)
    if view == "inclusive":
        return np.all(rows >= classes, axis=2)
    exact = [*_NON_JET_COLUMNS, _MET]
    same = np.all(rows[..., exact] == classes[..., exact], axis=2)
    return same & (rows[..., _J] >= classes[..., _J]) & (rows[..., _B] >= classes[..., _B])


def view_members(
    exclusive: list[str] | tuple[str, ...], *, config: SignatureConfig
) -> dict[str, list[str]]:
    """The view classes (``+X``, ``+NJet`` per ``config.views``) of the given exclusive
    classes, each with the exclusive classes it unites.

    Class names carry their capped multiplicities, so membership follows from the names alone.

    Returns:
        view class name -> its exclusive member classes (in the order given).
    """
    counts = np.array(
        [[parse_class_name(name, config=config)[0][t] for t in TOKENS] for name in exclusive],
        dtype=np.int32,
    ).reshape(len(exclusive), len(TOKENS))
    views: dict[str, list[str]] = {}
    for view in config.views:
        if view == "exclusive":
            continue
        members = _view_contains(counts, counts, view)
        for parent, row in zip(exclusive, members, strict=True):
            views[parent + VIEW_SUFFIX[view]] = [exclusive[j] for j in np.flatnonzero(row)]
    return views


def class_mask(events: ak.Array, name: str, *, config: SignatureConfig) -> np.ndarray:
    """Boolean mask of the events in class ``name`` (exclusive, ``+X`` or ``+NJet``).

    Returns:
        bool array of shape ``(n_events,)``.
    """
    counts, view = parse_class_name(name, config=config)
    parent = np.array([[counts[t] for t in TOKENS]], dtype=np.int32)
    return _view_contains(capped_multiplicities(events, config), parent, view)[0]


def populated_classes(
    events: ak.Array, config: SignatureConfig, *, weighted: bool = False
) -> dict[str, int | float]:
    """Yields of the populated classes in the configured views.

    Every exclusive class present defines one class per requested view (``<name>``,
    ``<name>+X``, ``<name>+NJet``), so the number of classes stays bounded by three times the
    number of exclusive classes present; view yields are sums over exclusive classes.

    Args:
        weighted: sum event weights instead of counting events.

    Returns:
        class name -> number of events (int) or sum of weights (float), exclusive classes first
        (sorted by name), then ``+X``, then ``+NJet``.
    """
    classes = classify(events, config)
    if weighted:
        weights = ak.to_numpy(events["weight"]).astype(np.float64, copy=False)
        yields = np.bincount(classes.codes, weights=weights, minlength=len(classes.names))
        convert: type = float
    else:
        yields = np.bincount(classes.codes, minlength=len(classes.names))
        convert = int
    result: dict[str, int | float] = {}
    for view in ("exclusive", "inclusive", "jet_inclusive"):
        if view not in config.views:
            continue
        for start in range(0, len(classes.names), _PARENT_CHUNK):
            parents = classes.counts[start : start + _PARENT_CHUNK]
            members = _view_contains(classes.counts, parents, view)  # type: ignore[arg-type]
            totals = members.astype(yields.dtype) @ yields
            for name, total in zip(classes.names[start:], totals, strict=False):
                result[name + VIEW_SUFFIX[view]] = convert(total)
    return result


def select_objects(events: ak.Array, config: SignatureConfig) -> ak.Array:
    """The events with only the selected objects kept.

    Returns:
        An event array with collections ``electron``, ``muon``, ``tau``, ``photon`` (objects
        passing their cuts), ``jet`` (light jets: not b-tagged, passing the jet cut),
        ``bjet`` (b-tagged jets passing the b-jet cut), the optional ``fatjet`` unchanged, and
        ``met``, ``met_phi``, ``weight``, plus ``met_flag`` (bool). No jet cap is applied here:
        the cap only decides which class an event goes to.
    """
    masks = object_columns(events, config)
    fields: dict[str, Any] = {}
    for token, objects in masks.items():
        source = events[COLLECTION_OF_TOKEN[token] if token != "b" else "jet"]
        fields[COLLECTION_OF_TOKEN[token]] = source[ak.unflatten(objects.selected, objects.counts)]
    if "fatjet" in events.fields:
        fields["fatjet"] = events["fatjet"]
    for field in ("met", "met_phi", "weight"):
        fields[field] = events[field]
    fields["met_flag"] = _met_flag(events, config)
    return ak.zip(fields, depth_limit=1)
