"""The event schema: Parquet round trip and one clear error per kind of bad input."""

from __future__ import annotations

from pathlib import Path

import awkward as ak
import numpy as np
import pyarrow.parquet as pq
import pytest

from searches.events import (
    COLLECTIONS,
    SCHEMA_METADATA_KEY,
    EventValidationError,
    concatenate,
    make_collection,
    make_events,
    read_parquet,
    validate_events,
    write_parquet,
)


def _columns(name: str, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    pt = np.sort(rng.uniform(5.0, 500.0, n).astype(np.float32))[::-1]
    columns = {
        "pt": pt,
        "eta": rng.uniform(-4.0, 4.0, n).astype(np.float32),
        "phi": rng.uniform(-np.pi, np.pi, n).astype(np.float32),
        "mass": rng.uniform(0.0, 20.0, n).astype(np.float32),
    }
    if name in ("electron", "muon", "tau"):
        columns["charge"] = rng.choice(np.array([-1, 1], dtype=np.int8), n)
    if name == "jet":
        columns["btag"] = rng.random(n) < 0.3
    if name == "fatjet":
        columns["tau21"] = rng.uniform(0, 1, n).astype(np.float32)
        columns["tau32"] = rng.uniform(0, 1, n).astype(np.float32)
    return columns


def good_events(n_events: int = 50, *, seed: int = 0, fatjet: bool = False) -> ak.Array:
    rng = np.random.default_rng(seed)
    names = [*COLLECTIONS, "fatjet"] if fatjet else list(COLLECTIONS)
    collections = {}
    for name in names:
        counts = rng.poisson(1.5, n_events)
        collections[name] = make_collection(counts, **_columns(name, int(counts.sum()), rng))
    return make_events(
        collections,
        met=rng.exponential(50.0, n_events),
        met_phi=rng.uniform(-np.pi, np.pi, n_events),
        weight=rng.normal(1.0, 0.5, n_events),
    )


def one_muon_event(**changes: np.ndarray) -> ak.Array:
    """One event with one muon; ``changes`` replace muon columns or event-level fields."""
    muon = {
        "pt": np.array([50.0], dtype=np.float32),
        "eta": np.array([0.5], dtype=np.float32),
        "phi": np.array([1.0], dtype=np.float32),
        "mass": np.array([0.1], dtype=np.float32),
        "charge": np.array([-1], dtype=np.int8),
    }
    event = {"met": np.array([20.0]), "met_phi": np.array([0.0]), "weight": np.array([1.0])}
    for key, value in changes.items():
        (muon if key in muon else event)[key] = value
    return make_events({"muon": make_collection(np.array([1]), **muon)}, **event)


def one_jet_event(**changes: np.ndarray) -> ak.Array:
    jet = {
        "pt": np.array([80.0], dtype=np.float32),
        "eta": np.array([1.0], dtype=np.float32),
        "phi": np.array([-1.0], dtype=np.float32),
        "mass": np.array([10.0], dtype=np.float32),
        "btag": np.array([True]),
        **changes,
    }
    return make_events(
        {"jet": make_collection(np.array([1]), **jet)},
        met=np.array([5.0]),
        met_phi=np.array([0.0]),
        weight=np.array([1.0]),
    )


def assert_identical(a: ak.Array, b: ak.Array) -> None:
    assert str(a.type) == str(b.type)
    assert a.fields == b.fields
    for field in a.fields:
        assert ak.array_equal(a[field], b[field], equal_nan=False, dtype_exact=True), field
    assert ak.to_list(a) == ak.to_list(b)


@pytest.mark.parametrize("fatjet", [False, True])
def test_parquet_round_trip_is_exact(tmp_path: Path, fatjet: bool) -> None:
    events = good_events(200, seed=3, fatjet=fatjet)
    path = write_parquet(events, tmp_path / "sub" / "events.parquet")
    back = read_parquet(path)
    assert_identical(events, back)
    metadata = pq.read_schema(path).metadata
    assert metadata[SCHEMA_METADATA_KEY] == b"1"


def test_round_trip_keeps_empty_collections_and_negative_weights(tmp_path: Path) -> None:
    events = one_muon_event(weight=np.array([-0.5]))
    back = read_parquet(write_parquet(events, tmp_path / "one.parquet"))
    assert_identical(events, back)
    assert ak.num(back.electron, axis=1).tolist() == [0]
    assert back.weight.tolist() == [-0.5]


def test_round_trip_of_concatenated_and_sliced_events(tmp_path: Path) -> None:
    events = concatenate([good_events(30, seed=1), good_events(20, seed=2)])[::3]
    back = read_parquet(write_parquet(events, tmp_path / "cat.parquet"))
    assert_identical(events, back)


def test_good_events_validate_unchanged() -> None:
    events = good_events(100, seed=9)
    assert validate_events(events) is events


def _drop(events: ak.Array, field: str) -> ak.Array:
    return events[[f for f in events.fields if f != field]]


def _drop_muon_field(field: str) -> ak.Array:
    events = one_muon_event()
    muon = events.muon
    kept = {f: muon[f] for f in muon.fields if f != field}
    return ak.with_field(events, ak.zip(kept), "muon")


BAD_EVENTS = {
    "missing collection": (lambda: _drop(one_muon_event(), "muon"), "muon"),
    "missing object field": (lambda: _drop_muon_field("eta"), "muon.eta"),
    "missing event field": (lambda: _drop(one_muon_event(), "met"), "met"),
    "integer pt": (lambda: one_muon_event(pt=np.array([50], dtype=np.int64)), "muon.pt"),
    "string pt": (lambda: one_muon_event(pt=np.array(["50"])), "muon.pt"),
    "NaN pt": (lambda: one_muon_event(pt=np.array([np.nan], dtype=np.float32)), "muon.pt"),
    "inf eta": (lambda: one_muon_event(eta=np.array([np.inf], dtype=np.float32)), "muon.eta"),
    "negative pt": (lambda: one_muon_event(pt=np.array([-1.0], dtype=np.float32)), "muon.pt"),
    "eta out of range": (
        lambda: one_muon_event(eta=np.array([11.0], dtype=np.float32)),
        "muon.eta",
    ),
    "phi out of range": (lambda: one_muon_event(phi=np.array([4.0], dtype=np.float32)), "muon.phi"),
    "charge 2": (lambda: one_muon_event(charge=np.array([2], dtype=np.int8)), "muon.charge"),
    "float charge": (lambda: one_muon_event(charge=np.array([1.0])), "muon.charge"),
    "negative mass": (lambda: one_muon_event(mass=np.array([-5.0], dtype=np.float32)), "muon.mass"),
    "btag not bool": (lambda: one_jet_event(btag=np.array([1], dtype=np.int64)), "jet.btag"),
    "negative MET": (lambda: one_muon_event(met=np.array([-3.0])), "met"),
    "NaN weight": (lambda: one_muon_event(weight=np.array([np.nan])), "weight"),
    "inf MET": (lambda: one_muon_event(met=np.array([np.inf])), "met"),
    "met_phi out of range": (lambda: one_muon_event(met_phi=np.array([7.0])), "met_phi"),
    "empty array": (lambda: one_muon_event()[:0], "<root>"),
    "numpy input": (lambda: np.zeros(3), "<root>"),
    "list input": (lambda: [{"met": 1.0}], "<root>"),
    "flat collection": (
        lambda: ak.with_field(one_muon_event(), np.array([1.0]), "muon"),
        "muon",
    ),
}


@pytest.mark.parametrize("kind", sorted(BAD_EVENTS))
def test_validator_names_the_field(kind: str) -> None:
    build, field = BAD_EVENTS[kind]
    with pytest.raises(EventValidationError) as caught:
        validate_events(build(), source="input.parquet")
    assert caught.value.field == field
    assert f"'{field}'" in str(caught.value)
    assert str(caught.value).startswith("input.parquet:")


def test_write_refuses_bad_events(tmp_path: Path) -> None:
    path = tmp_path / "bad.parquet"
    with pytest.raises(EventValidationError, match=r"muon\.pt"):
        write_parquet(one_muon_event(pt=np.array([np.nan], dtype=np.float32)), path)
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_unreadable_parquet_file(tmp_path: Path) -> None:
    path = tmp_path / "garbage.parquet"
    path.write_bytes(b"this is not parquet at all")
    with pytest.raises(EventValidationError) as caught:
        read_parquet(path)
    assert caught.value.field == "<file>"
    assert str(path) in str(caught.value)


def test_missing_parquet_file(tmp_path: Path) -> None:
    with pytest.raises(EventValidationError, match="does not exist") as caught:
        read_parquet(tmp_path / "nowhere.parquet")
    assert caught.value.field == "<file>"


def test_parquet_of_another_schema_version(tmp_path: Path) -> None:
    path = write_parquet(good_events(10), tmp_path / "v1.parquet")
    table = pq.read_table(path)
    table = table.replace_schema_metadata({**table.schema.metadata, SCHEMA_METADATA_KEY: b"99"})
    other = tmp_path / "v99.parquet"
    pq.write_table(table, other)
    with pytest.raises(EventValidationError) as caught:
        read_parquet(other)
    assert caught.value.field == "<schema_version>"
    assert "99" in str(caught.value) and "allowed: 1" in str(caught.value)


def test_parquet_of_another_layout_names_the_missing_field(tmp_path: Path) -> None:
    path = tmp_path / "other.parquet"
    ak.to_parquet(ak.Array({"met": [1.0, 2.0], "met_phi": [0.0, 0.1]}), path)
    with pytest.raises(EventValidationError) as caught:
        read_parquet(path)
    assert caught.value.field == "weight"
    assert str(path) in str(caught.value)
