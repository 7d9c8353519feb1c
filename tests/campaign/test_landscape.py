"""The landscape in a campaign: spec section, task, store, report (and a real Ray run)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from campaign import plan, tasks
from campaign.report import build_summary, render_html, report_schema, write_report
from campaign.spec import SpecError, parse_spec
from campaign.store import Store, TaskRecord
from campaign.testing import lamppost, small_campaign, write_campaign
from searches.landscape import Landscape

LANDSCAPE = {
    "objects": ["e", "mu", "j", "b", "V", "Zll"],
    "pseudo_experiments": 50,
    "min_events": 30,
}
LUMINOSITY_FB = 2e-4
"""Simulated events weigh ~2 data events, so the bump hunt's function can describe the
simulated spectra at the data's precision and cells are fitted (at the small campaign's 140 fb⁻¹
each simulated event stands for thousands and no cell is, :mod:`searches.landscape_fit`)."""


def _document(store: Path, **landscape: Any) -> dict[str, Any]:
    document = small_campaign(
        store,
        luminosity_fb=LUMINOSITY_FB,
        data={
            "background": {"simulator": "builtin", "events": 20000},
            "observed": {"pseudo": True},
        },
        searches=[
            {"method": "scan", "pseudo_rounds": 20, "bin_width_sigma": 2, "classes": ["2mu"]}
        ],
    )
    if landscape:
        document["landscape"] = landscape
    return document


def test_spec_section_is_optional_and_checked(tmp_path: Path) -> None:
    plain = parse_spec(_document(tmp_path / "s"), check_store=False)
    assert plain.landscape is None and "landscape" not in plain.model_dump(mode="json")
    spec = parse_spec(_document(tmp_path / "s", **LANDSCAPE, seed=5), check_store=False)
    assert spec.landscape is not None and spec.landscape.objects == (
        "e",
        "mu",
        "j",
        "b",
        "V",
        "Zll",
    )
    with pytest.raises(SpecError) as error:
        parse_spec(_document(tmp_path / "s", objects=["e", "W"], pseudo=3), check_store=False)
    assert error.value.problems == [
        ("landscape.objects", "'W' not allowed; allowed: e, mu, tau, gamma, j, b, V, H, top, Zll"),
        (
            "landscape.pseudo",
            "unknown key 'pseudo'; allowed: bin_width_sigma, classes, cpus, fit_bin_count, "
            "fit_bin_sigma, fit_exclude_p, fit_function, fit_max_chi2_ndf, fit_min_events, "
            "fit_window_bins, "
            "max_window_bins, min_events, min_expected, objects, pseudo_experiments, "
            "reference_mass, seed, sqrt_s, systematic, width, window_bins",
        ),
    ]
    files = _document(tmp_path / "s", **LANDSCAPE)
    files["data"] = {"background": None, "observed": {"files": [{"path": str(tmp_path)}]}}
    files["searches"] = [{"method": "bumphunt"}]
    with pytest.raises(SpecError, match="landscape: compares every pair mass with the simulated"):
        parse_spec(files, check_store=False)


def test_task_key_follows_options_and_seed(tmp_path: Path) -> None:
    spec = parse_spec(_document(tmp_path / "s", **LANDSCAPE), check_store=False)
    background, observed, _ = plan.data_tasks(spec)
    task = plan.landscape_task(spec, background, observed)
    assert task.kind == "landscape" and task.depends_on == (background.key, observed.key)
    assert task.payload["seed"] == plan.derive_seed(spec.seed, "landscape")
    assert "seed" not in task.payload["options"] and "cpus" not in task.payload["options"]
    same = plan.landscape_task(spec, background, observed)
    seeded = parse_spec(_document(tmp_path / "s", **LANDSCAPE, seed=3), check_store=False)
    wider = parse_spec(_document(tmp_path / "s", **{**LANDSCAPE, "width": 0.1}), check_store=False)
    assert same.key == task.key
    assert plan.landscape_task(seeded, background, observed).payload["seed"] == 3
    assert plan.landscape_task(wider, background, observed).key != task.key
    without = parse_spec(_document(tmp_path / "s"), check_store=False)
    with pytest.raises(ValueError, match="no 'landscape' section"):
        plan.landscape_task(without, background, observed)


def _run(store: Store, task: plan.Task, inputs: dict[str, Any]) -> TaskRecord:
    """What the driver does with one task, without Ray: run, commit, record."""
    staging = store.staging(f"test-{task.kind}")
    output = tasks.run_task(
        task.kind, {**task.payload, "inputs": inputs}, store_uri=store.uri, staging=staging
    )
    artifacts = store.commit_artifacts(output["artifacts"], kind=task.kind, key=task.key)
    record = TaskRecord(
        key=task.key,
        kind=task.kind,
        name=task.name,
        status="done",
        execution_id=f"test-{task.kind}",
        started_at=0.0,
        finished_at=1.0,
        artifacts=artifacts,
        error=None,
        traceback=None,
        worker="test",
    )
    store.record(record)
    return record


@pytest.mark.slow
def test_landscape_task_is_stored_and_reported(tmp_path: Path) -> None:
    spec = parse_spec(_document(tmp_path / "store", **LANDSCAPE), check_store=True)
    store = Store(spec.store)
    store.initialise(spec_text="", spec_json=spec.model_dump(mode="json"))
    background, observed, _ = plan.data_tasks(spec)
    made = _run(store, background, {})
    drawn = _run(store, observed, {"background": made.artifacts})
    landscape_task = plan.landscape_task(spec, background, observed)
    record = _run(
        store, landscape_task, {"background": made.artifacts, "observed": drawn.artifacts}
    )
    landscape = Landscape.from_json(store.read_text(record.artifacts["landscape"]))
    assert landscape.n_pseudo == 50 and landscape.n_cells > 10
    assert 0.0 < landscape.p_global <= 1.0

    summary = build_summary(store)
    jsonschema.Draft202012Validator(report_schema()).validate(
        json.loads(json.dumps(summary, allow_nan=False))
    )
    section = summary["landscape"]
    assert section["n_cells"] == landscape.n_cells and section["n_pairs"] == 21
    assert section["n_sensitive"] == landscape.n_sensitive > 0
    assert section["p_global"] == landscape.p_global
    assert len(section["cells"]) == landscape.n_cells
    assert all(len(c["curve"]["mass"]) <= 24 for c in section["cells"])
    assert section["fit_function"] == "dijet"
    assert section["n_fitted"] == sum(c.fitted for c in landscape.cells) > 0
    assert section["searches"]["fit"]["p_global"] == landscape.fit.p_global
    assert section["searches"]["scan"]["p_local_min"] == landscape.scan.p_local_min
    fitted = [c for c in section["cells"] if c["fit_status"] == "fitted"]
    assert all(c["fit_chi2_ndf"] is not None for c in fitted)
    html = render_html(summary)
    assert (
        'id="landscape-table"' in html and f"{landscape.n_cells} cells (pair × event class)" in html
    )
    assert 'id="landscape-searches"' in html and "bump hunt (smooth fit)" in html
    assert f"({section['n_fitted']} cells fitted)" in html


def test_report_without_landscape_says_so(tmp_path: Path) -> None:
    spec = parse_spec(_document(tmp_path / "store"), check_store=True)
    store = Store(spec.store)
    store.initialise(spec_text="", spec_json=spec.model_dump(mode="json"))
    files = write_report(store, pdf=False)
    summary = json.loads(files.summary.read_text())
    assert summary["landscape"] is None
    jsonschema.Draft202012Validator(report_schema()).validate(summary)
    assert "No landscape in this campaign" in files.html.read_text()


@pytest.mark.slow
def test_campaign_runs_the_landscape_on_ray(tmp_path: Path) -> None:
    file = write_campaign(tmp_path / "c.yaml", _document(tmp_path / "store", **LANDSCAPE))
    done = lamppost("run", str(file))
    assert done.returncode == 0, done.stderr[-3000:]
    store = Store(tmp_path / "store")
    records = [r for r in store.records() if r.kind == "landscape"]
    assert [r.status for r in records] == ["done"]
    stored = Landscape.from_json(store.read_text(records[0].artifacts["landscape"]))
    summary = json.loads(write_report(store, pdf=False).summary.read_text())
    assert summary["landscape"]["n_cells"] == stored.n_cells > 10
    assert summary["landscape"]["p_global"] == stored.p_global
