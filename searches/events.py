"""The columnar event model shared by every source of events.

Every reader (built-in simulator, ROOT presets, Parquet) produces the same Awkward record
array, so that classification, observables and searches never care where events came from:

* jagged collections ``electron``, ``muon``, ``tau`` (``pt, eta, phi, mass, charge``),
  ``photon`` (``pt, eta, phi, mass``) and ``jet`` (``pt, eta, phi, mass, btag``), each sorted
  by descending ``pt``;
* an optional ``fatjet`` collection (``pt, eta, phi, mass, tau21, tau32``) for substructure;
* event-level ``met``, ``met_phi`` and ``weight`` (events per unit of the campaign's
  luminosity; negative weights from NLO generators are allowed).

Energies and momenta are in GeV. On disk the same array is Parquet with the schema version in
the file metadata.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Collection, Mapping
from pathlib import Path

import awkward as ak
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA_VERSION = "1"
SCHEMA_METADATA_KEY = b"lamppost.events.schema_version"

LEPTON_FIELDS = ("pt", "eta", "phi", "mass", "charge")
COLLECTIONS: dict[str, tuple[str, ...]] = {
    "electron": LEPTON_FIELDS,
    "muon": LEPTON_FIELDS,
    "tau": LEPTON_FIELDS,
    "photon": ("pt", "eta", "phi", "mass"),
    "jet": ("pt", "eta", "phi", "mass", "btag"),
}
OPTIONAL_COLLECTIONS: dict[str, tuple[str, ...]] = {
    "fatjet": ("pt", "eta", "phi", "mass", "tau21", "tau32"),
}
EVENT_FIELDS = ("met", "met_phi", "weight")

_INTEGER_FIELDS = {"charge"}
_BOOLEAN_FIELDS = {"btag"}
_ALLOWED_CHARGES = (-1, 0, 1)
_MAX_ABS_ETA = 10.0
_PHI_TOLERANCE = 1e-4


class EventValidationError(ValueError):
    """Events that break the schema: names the source, the field and what is allowed."""

    def __init__(self, source: str, field: str, problem: str) -> None:
        self.source = source
        self.field = field
        self.problem = problem
        super().__init__(f"{source}: field '{field}': {problem}")


def make_collection(counts: np.ndarray, **columns: np.ndarray) -> ak.Array:
    """Build one jagged collection from flat per-object columns and per-event counts.

    Args:
        counts: objects per event, shape ``(n_events,)``.
        **columns: flat arrays of length ``counts.sum()``, objects of one event contiguous.
    """
    counts = np.asarray(counts, dtype=np.int64)
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    contents = [ak.to_layout(np.ascontiguousarray(v)) for v in columns.values()]
    record = ak.contents.RecordArray(contents, list(columns), length=int(offsets[-1]))
    return ak.Array(ak.contents.ListOffsetArray(ak.index.Index64(offsets), record))


def make_events(
    collections: Mapping[str, ak.Array],
    *,
    met: np.ndarray,
    met_phi: np.ndarray,
    weight: np.ndarray,
) -> ak.Array:
    """Assemble collections and event-level columns into one event array."""
    n = len(met)
    fields: dict[str, ak.Array | np.ndarray] = {}
    for name in (*COLLECTIONS, *OPTIONAL_COLLECTIONS):
        if name in collections:
            fields[name] = collections[name]
        elif name in COLLECTIONS:
            empty = {f: _empty_column(f) for f in COLLECTIONS[name]}
            fields[name] = make_collection(np.zeros(n, dtype=np.int64), **empty)
    fields["met"] = np.asarray(met, dtype=np.float64)
    fields["met_phi"] = np.asarray(met_phi, dtype=np.float64)
    fields["weight"] = np.asarray(weight, dtype=np.float64)
    return ak.zip(fields, depth_limit=1)


def empty_events() -> ak.Array:
    """A valid event array with no events (useful as a neutral element for concatenation)."""
    zeros = np.zeros(0)
    return make_events({}, met=zeros, met_phi=zeros, weight=zeros)


def concatenate(arrays: list[ak.Array]) -> ak.Array:
    """Concatenate event arrays of the schema, dropping optional collections not in all."""
    arrays = [a for a in arrays if len(a) > 0] or [empty_events()]
    common = set(arrays[0].fields).intersection(*(a.fields for a in arrays[1:]))
    keep = [f for f in arrays[0].fields if f in common]
    return ak.concatenate([a[keep] for a in arrays])


def _empty_column(field: str) -> np.ndarray:
    if field in _INTEGER_FIELDS:
        return np.zeros(0, dtype=np.int8)
    if field in _BOOLEAN_FIELDS:
        return np.zeros(0, dtype=bool)
    return np.zeros(0, dtype=np.float32)


def require_fields(present: Collection[str], *, source: str) -> None:
    """Raise for the first event-level field or required collection missing from ``present``."""
    for name in EVENT_FIELDS:
        if name not in present:
            raise EventValidationError(
                source, name, f"missing event-level field; required: {', '.join(EVENT_FIELDS)}"
            )
    for name in COLLECTIONS:
        if name not in present:
            raise EventValidationError(
                source, name, f"missing collection; required: {', '.join(COLLECTIONS)}"
            )


def validate_events(events: object, *, source: str = "<events>") -> ak.Array:
    """Check that ``events`` follow the schema; return them unchanged or raise one clear error.

    Raises:
        EventValidationError: naming ``source``, the first offending field and what is allowed.
    """
    if not isinstance(events, ak.Array) or not events.fields:
        raise EventValidationError(source, "<root>", "expected an Awkward record array of events")
    if len(events) == 0:
        raise EventValidationError(source, "<root>", "contains no events (empty input)")
    require_fields(events.fields, source=source)
    for field in EVENT_FIELDS:
        _check_numeric(events[field], source, field, floating=True)
    _check_finite(events["met"], source, "met")
    _check_finite(events["met_phi"], source, "met_phi")
    _check_finite(events["weight"], source, "weight")
    if ak.any(events["met"] < 0):
        raise EventValidationError(source, "met", "negative values; allowed: met >= 0")
    _check_phi(events["met_phi"], source, "met_phi")

    for name, fields in {**COLLECTIONS, **OPTIONAL_COLLECTIONS}.items():
        if name not in events.fields:
            continue
        collection = events[name]
        if collection.ndim != 2 or not collection.fields:
            raise EventValidationError(
                source, name, "must be a jagged list of records per event (var * {pt, ...})"
            )
        for field in fields:
            path = f"{name}.{field}"
            if field not in collection.fields:
                raise EventValidationError(
                    source, path, f"missing; required fields of {name}: {', '.join(fields)}"
                )
            flat = ak.flatten(collection[field], axis=None)
            if field in _BOOLEAN_FIELDS:
                _check_kind(flat, source, path, "b", "boolean")
            elif field in _INTEGER_FIELDS:
                _check_kind(flat, source, path, "iu", "integer")
                values = ak.to_numpy(flat)
                if values.size and not np.isin(values, _ALLOWED_CHARGES).all():
                    bad = values[~np.isin(values, _ALLOWED_CHARGES)][0]
                    raise EventValidationError(
                        source, path, f"value {bad} not allowed; allowed: -1, 0, 1"
                    )
            else:
                _check_numeric(flat, source, path, floating=True)
                _check_finite(flat, source, path)
        _check_kinematics(collection, source, name)
    return events


def _check_kind(values: ak.Array, source: str, path: str, kinds: str, label: str) -> None:
    try:
        dtype = ak.to_numpy(values).dtype
    except (ValueError, TypeError) as err:
        raise EventValidationError(source, path, f"must be {label}; got {ak.type(values)}") from err
    if dtype.kind not in kinds:
        raise EventValidationError(source, path, f"must be {label}; got {dtype}")


def _check_numeric(values: ak.Array, source: str, path: str, *, floating: bool) -> None:
    flat = ak.flatten(values, axis=None) if values.ndim > 1 else values
    _check_kind(flat, source, path, "f" if floating else "fiu", "floating point")


def _check_finite(values: ak.Array, source: str, path: str) -> None:
    array = ak.to_numpy(ak.flatten(values, axis=None) if values.ndim > 1 else values)
    if not np.isfinite(array).all():
        kind = "NaN" if np.isnan(array).any() else "infinite"
        raise EventValidationError(source, path, f"contains {kind} values; allowed: finite numbers")


def _check_phi(values: ak.Array, source: str, path: str) -> None:
    array = ak.to_numpy(ak.flatten(values, axis=None) if values.ndim > 1 else values)
    if array.size and np.abs(array).max() > np.pi + _PHI_TOLERANCE:
        raise EventValidationError(source, path, "outside [-pi, pi]; allowed: -pi <= phi <= pi")


def _check_kinematics(collection: ak.Array, source: str, name: str) -> None:
    pt = ak.to_numpy(ak.flatten(collection["pt"]))
    if pt.size and pt.min() < 0:
        raise EventValidationError(source, f"{name}.pt", "negative values; allowed: pt >= 0")
    eta = ak.to_numpy(ak.flatten(collection["eta"]))
    if eta.size and np.abs(eta).max() > _MAX_ABS_ETA:
        raise EventValidationError(
            source, f"{name}.eta", f"|eta| above {_MAX_ABS_ETA}; allowed: |eta| <= {_MAX_ABS_ETA}"
        )
    _check_phi(collection["phi"], source, f"{name}.phi")
    mass = ak.to_numpy(ak.flatten(collection["mass"]))
    if mass.size and mass.min() < -1e-3:
        raise EventValidationError(source, f"{name}.mass", "negative values; allowed: mass >= 0")


def to_table(events: ak.Array) -> pa.Table:
    """Events as an Arrow table carrying the schema version in its metadata."""
    table = ak.to_arrow_table(events, extensionarray=False)
    metadata = {**(table.schema.metadata or {}), SCHEMA_METADATA_KEY: SCHEMA_VERSION.encode()}
    return table.replace_schema_metadata(metadata)


def write_parquet(events: ak.Array, path: str | os.PathLike[str]) -> Path:
    """Write validated events to Parquet atomically (temporary file, then rename)."""
    path = Path(path)
    validate_events(events, source=str(path))
    table = to_table(events)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_parquet(path: str | os.PathLike[str]) -> ak.Array:
    """Read events written by :func:`write_parquet` (or any Parquet file of the schema)."""
    path = Path(path)
    if not path.is_file():
        raise EventValidationError(str(path), "<file>", "does not exist or is not a file")
    try:
        table = pq.read_table(path)
    except Exception as err:
        raise EventValidationError(
            str(path), "<file>", f"not a readable Parquet file ({err})"
        ) from err
    version = (table.schema.metadata or {}).get(SCHEMA_METADATA_KEY)
    if version is not None and version.decode() != SCHEMA_VERSION:
        raise EventValidationError(
            str(path),
            "<schema_version>",
            f"version {version.decode()} not supported; allowed: {SCHEMA_VERSION}",
        )
    return validate_events(ak.from_arrow(table), source=str(path))
