"""The report's data: schema, signature grid, p̃ expectation, limits against pyhf."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import jsonschema
import numpy as np
import pyhf
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from campaign.report import build_summary, report_schema
from campaign.report.summary import (
    LIMIT_MU_MAX,
    expected_limits_fb,
    impact_entries,
    next_searches,
    p_tilde_distribution,
    search_impact,
    signature_grid,
)
from campaign.store import Store
from campaign.tasks import finished_results

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def summary(reviewed_store: Path) -> dict:
    return build_summary(Store(reviewed_store))


def _results(store_dir: Path) -> list:
    return finished_results(Store(store_dir))


def test_summary_validates_against_the_published_schema(summary: dict) -> None:
    schema = report_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    validator.validate(json.loads(json.dumps(summary, allow_nan=False)))
    broken = {**summary, "schema_version": "0"}
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(broken)


def test_summary_holds_every_section(summary: dict, reviewed_store: Path) -> None:
    spec = json.loads((reviewed_store / "spec.json").read_text())
    assert summary["campaign"]["name"] == spec["name"]
    assert summary["campaign"]["seed"] == spec["seed"]
    assert summary["campaign"]["packages"]["pyhf"] == pyhf.__version__
    n_results = len(_results(reviewed_store))
    assert summary["look_elsewhere"]["n_searches"] == n_results
    assert summary["p_tilde_distribution"]["n_searches"] == n_results
    assert len(summary["deviations"]) == min(10, n_results)
    smallest = summary["look_elsewhere"]["p_tilde_min"]
    assert summary["deviations"][0]["p_tilde"] == pytest.approx(smallest)
    dilepton_peaks = [
        d
        for d in summary["deviations"]
        if d["event_class"] in ("2mu", "2e") and d["observable"] == "minv"
    ]
    assert dilepton_peaks, "the injected Z' (1 TeV) shows among the top deviations"
    assert all(d["region"]["low"] <= 1000.0 <= d["region"]["high"] for d in dilepton_peaks)
    by_label = {r["label"]: r for r in summary["reinterpretations"]}
    assert by_label["zprime g=0.6, mass=1000.0"]["status"] == "excluded"
    assert summary["search_impact"][0]["benchmarks_excluded"] == 1
    coverage = summary["coverage"][0]
    assert coverage["n_evaluated"] == 20
    volume = coverage["excluded_observed"]
    assert volume["low"] <= volume["fraction"] <= volume["high"]
    posterior = volume["posterior"]
    assert 0.0 <= posterior["low"] <= posterior["high"] <= 1.0 and posterior["draws"] == 1000
    searched = {r["name"] for r in summary["classes"] if r["searched"]}
    assert searched == {r.event_class for r in _results(reviewed_store)}


def _counts(name: str) -> dict[str, int]:
    """Object counts read off a class name by hand (independent of the package's parser)."""
    base = name.removesuffix("+NJet").removesuffix("+X")
    counts = {"MET": int("MET" in base.split("_"))}
    for token in base.split("_"):
        match = re.fullmatch(r"(\d+)(e|mu|tau|gamma|j|b)\+?", token)
        if match:
            counts[match.group(2)] = int(match.group(1))
    return counts


def test_grid_cells_hold_exactly_the_classes_with_both_objects(reviewed_store: Path) -> None:
    results = _results(reviewed_store)
    grid = signature_grid(results, np.ones(len(results)))
    names = {r.event_class for r in results}
    gaps = 0
    for i, a in enumerate(grid["tokens"]):
        for j, b in enumerate(grid["tokens"]):
            need = {a: 1 if a == "MET" else 2} if a == b else {a: 1, b: 1}
            expected = sorted(
                n for n in names if all(_counts(n).get(k, 0) >= v for k, v in need.items())
            )
            cell = grid["cells"][i][j]
            if expected:
                assert cell is not None and cell["classes"] == expected, (a, b)
            else:
                assert cell is None, (a, b)
                gaps += 1
    assert gaps > 0, "the small campaign leaves object combinations unsearched"
    mu = grid["tokens"].index("mu")
    assert "2mu" in grid["cells"][mu][mu]["classes"]


def test_grid_cell_limit_is_the_best_of_its_searches(reviewed_store: Path) -> None:
    results = _results(reviewed_store)
    limits = np.linspace(1.0, 2.0, len(results))
    grid = signature_grid(results, limits)
    mu = grid["tokens"].index("mu")
    cell = grid["cells"][mu][mu]
    members = [
        lim for r, lim in zip(results, limits, strict=True) if r.event_class in cell["classes"]
    ]
    assert cell["best_limit_fb"] == pytest.approx(min(members))
    assert cell["n_searches"] == len(members)


def _one_bin(b: float, sigma: float, signal: float) -> pyhf.pdf.Model:
    sample = {"name": "signal", "data": [signal]}
    sample["modifiers"] = [{"name": "mu", "type": "normfactor", "data": None}]
    background = {"name": "background", "data": [b]}
    background["modifiers"] = [{"name": "unc", "type": "shapesys", "data": [sigma]}]
    spec = {
        "channels": [{"name": "bin", "samples": [sample, background]}],
        "parameters": [{"name": "mu", "bounds": [[0.0, LIMIT_MU_MAX]]}],
    }
    return pyhf.Model(spec, poi_name="mu")


def _median_expected_cls(b: float, sigma: float, signal_events: float) -> float:
    """Median expected CLs; a signal too small to move the Asimov statistic gives CLs = 1."""
    model = _one_bin(b, sigma, signal_events)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        _, band = pyhf.infer.hypotest(
            1.0, [b, *model.config.auxdata], model, test_stat="qtilde", return_expected_set=True
        )
    value = float(band[2])
    return value if np.isfinite(value) else 1.0


def test_expected_limit_of_a_search_matches_a_direct_pyhf_fit(reviewed_store: Path) -> None:
    """At the quoted limit pyhf's median expected CLs is 0.05 in the best bin, >= in others."""
    result = next(r for r in _results(reviewed_store) if r.event_class == "2mu")
    luminosity = 140.0
    events = expected_limits_fb([result], luminosity)[0] * luminosity
    b, sigma = np.asarray(result.expected), np.asarray(result.uncertainty)
    usable = np.flatnonzero((b > 0) & (sigma > 0))
    pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer(tolerance=1e-12))
    try:
        cls = np.array([_median_expected_cls(b[k], sigma[k], events) for k in usable])
    finally:
        pyhf.set_backend("numpy")
    assert cls.min() == pytest.approx(0.05, rel=2e-3)
    assert np.all(cls >= 0.05 * (1 - 2e-3))


@settings(max_examples=30, deadline=None)
@given(
    p=st.lists(st.floats(min_value=1e-4, max_value=1.0), min_size=1, max_size=300),
    rounds=st.integers(min_value=10, max_value=100_000),
)
def test_p_tilde_expectation_is_the_uniform_distribution(p: list[float], rounds: int) -> None:
    dist = p_tilde_distribution(p, n_rounds=rounds)
    assert sum(dist["observed"]) == len(p)
    assert sum(dist["expected"]) == pytest.approx(len(p))
    edges = np.asarray(dist["edges"])
    first = len(p) * (1.0 - 10.0 ** -edges[1])
    assert dist["expected"][0] == pytest.approx(first)


def test_p_tilde_of_uniform_pseudo_searches_follows_the_expectation() -> None:
    rng = np.random.default_rng(5)
    p = (rng.integers(0, 1000, size=20_000) + 1) / 1001
    dist = p_tilde_distribution(p, n_rounds=1000)
    observed, expected = np.asarray(dist["observed"]), np.asarray(dist["expected"])
    filled = expected > 20
    pulls = (observed[filled] - expected[filled]) / np.sqrt(expected[filled])
    assert np.all(np.abs(pulls) < 4), pulls


def test_search_impact_counts_exclusive_exclusions() -> None:
    def item(model: str, statuses: dict[str, str]) -> dict:
        return {
            "label": model,
            "searches": [{"search": s, "status": v} for s, v in statuses.items()],
        }

    reinterpretations = [
        item("a", {"x": "excluded", "y": "excluded"}),
        item("b", {"x": "excluded", "y": "allowed"}),
        item("c", {"x": "not covered", "y": "failed"}),
    ]
    points = [{"label": "zprime/mass=1000", "excluded_by": ["y"], "tested": ["x", "y"]}]
    rows = search_impact(impact_entries(reinterpretations, points))
    by = {r["search"]: r for r in rows}
    assert by["x"] == {
        "search": "x",
        "benchmarks_tested": 3,
        "benchmarks_excluded": 2,
        "excluded_only_here": 1,
    }
    assert by["y"] == {
        "search": "y",
        "benchmarks_tested": 3,
        "benchmarks_excluded": 2,
        "excluded_only_here": 1,
    }


def test_next_searches_lists_unsearched_populated_classes_then_gaps() -> None:
    classes = [
        {"name": "2tau", "observed": 50.0, "expected": 48.0, "mc_events": 3, "searched": False},
        {"name": "2mu", "observed": 900.0, "expected": 880.0, "mc_events": 900, "searched": True},
        {"name": "empty", "observed": 1e6, "expected": 1e6, "mc_events": 10, "searched": False},
    ]
    grid = {"objects": ["electron", "muon"], "cells": [[None, None], [None, {"classes": ["2mu"]}]]}
    items = next_searches(classes, grid)
    assert [i["what"] for i in items] == ["2tau", "2 × electron", "electron + muon"]
    assert items[0]["kind"] == "unsearched class"
