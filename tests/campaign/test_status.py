"""Reading a store's task artifacts by their schema version."""

from __future__ import annotations

from pathlib import Path

import pytest

from campaign.status import read_classes, read_global
from campaign.store import Store, StoreError


def test_versioned_and_earlier_artifacts_read_alike(tmp_path: Path) -> None:
    store = Store(str(tmp_path))
    table = {"2mu": {"members": ["2mu"], "expected": 1.0, "observed": 2.0, "mc_events": 3}}
    store.write_json("classes.json", {"schema_version": "1", "classes": table})
    store.write_json("old_classes.json", table)
    assert read_classes(store, "classes.json") == read_classes(store, "old_classes.json") == table
    outcome = {"p_global": 0.2, "n_searches": 4}
    store.write_json("lee.json", {"schema_version": "1", **outcome})
    store.write_json("old_lee.json", outcome)
    assert read_global(store, "lee.json") == read_global(store, "old_lee.json") == outcome


def test_an_unknown_version_is_refused_naming_the_file(tmp_path: Path) -> None:
    store = Store(str(tmp_path))
    store.write_json("classes.json", {"schema_version": "9", "classes": {}})
    with pytest.raises(StoreError, match=r"classes\.json: schema_version='9'.*allowed: '1'"):
        read_classes(store, "classes.json")
    store.write_json("lee.json", {"schema_version": "2"})
    with pytest.raises(StoreError, match=r"lee\.json: schema_version='2'"):
        read_global(store, "lee.json")
