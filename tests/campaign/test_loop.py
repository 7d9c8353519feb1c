"""The theory loop: active learning of a model's exclusion through the campaign's executor."""

from __future__ import annotations

import json
from pathlib import Path

import awkward as ak
import numpy as np
import pytest

from campaign import plan
from campaign.benchmark import BenchmarkError, signal_events
from campaign.coverage import load_coverages, load_next_searches, rank_next_searches
from campaign.loop import campaign_space, evaluation_task, model_label
from campaign.spec import CampaignSpec, ModelSpace, SpecError, load_spec
from campaign.store import Store
from campaign.testing import lamppost, small_campaign, write_campaign

THEORY = {
    "models": [{"name": "zprime", "space": {"mass": [500, 3000], "g": [0.02, 1.0]}}],
    "budget": 8,
    "batch": 4,
    "events": 1000,
    "max_fits": 1,
}


def test_campaign_space_keeps_the_models_priors_and_checks(monkeypatch) -> None:
    """The excluded volume is quoted under the declared prior: narrowing a model's space must
    not drop a prior or a check the model declares (no shipped model declares one yet)."""
    from types import SimpleNamespace

    import campaign.spec as spec
    from theory.models import get_model
    from theory.space import Parameter, ParameterSpace

    mass, g = get_model("zprime").space.parameters
    declared = ParameterSpace(
        parameters=(
            mass.model_copy(update={"prior": "log-uniform"}),
            Parameter(name="g", low=g.low, high=g.high, log=True, prior="uniform"),
        ),
        checks=(lambda columns: columns["mass"] > 600.0,),
    )
    monkeypatch.setattr(spec, "get_model", lambda name, **options: SimpleNamespace(space=declared))
    space = campaign_space(ModelSpace(name="zprime", space={"mass": [500, 3000]}))
    assert [p.prior for p in space.parameters] == ["log-uniform", "uniform"]
    assert space.checks == declared.checks
    rescaled = campaign_space(ModelSpace(name="zprime", space={"g": [0.02, 1.0, "linear"]}))
    assert rescaled.parameters[1].prior == "uniform" and not rescaled.parameters[1].log
    relogged = campaign_space(ModelSpace(name="zprime", space={"mass": [500, 3000, "linear"]}))
    assert relogged.parameters[0].prior == "uniform"


def test_campaign_space_narrows_the_model_and_refuses_unknown_parameters() -> None:
    space = campaign_space(ModelSpace(name="zprime", space={"mass": [500, 3000, "linear"]}))
    mass, g = space.parameters
    assert (mass.low, mass.high, mass.log) == (500.0, 3000.0, False)
    assert g.log and (g.low, g.high) == (0.01, 1.0), "g keeps the model's own range"
    with pytest.raises(ValueError, match=r"unknown parameters \['width'\]; allowed: mass, g"):
        campaign_space(ModelSpace(name="zprime", space={"width": [0.0, 0.1]}))
    assert model_label(ModelSpace(name="zprime", options={"channels": ["mumu"]})) == (
        "zprime[channels=mumu]"
    )


def test_evaluation_tasks_are_content_keyed(tmp_path: Path) -> None:
    document = small_campaign(tmp_path / "store", theory=THEORY)
    spec = CampaignSpec.model_validate(document)
    searches = plan.Task(key="abc", kind="lee", name="look-elsewhere", payload={})
    point = {"mass": 1000.0, "g": 0.1}
    first = evaluation_task(spec, spec.theory.models[0], point, searches)
    again = evaluation_task(spec, spec.theory.models[0], dict(point), searches)
    assert first.key == again.key and first.payload["seed"] == again.payload["seed"]
    other = evaluation_task(spec, spec.theory.models[0], {"mass": 1000.0, "g": 0.2}, searches)
    assert other.key != first.key and other.payload["seed"] != first.payload["seed"]
    moved = plan.Task(key="abd", kind="lee", name="look-elsewhere", payload={})
    assert evaluation_task(spec, spec.theory.models[0], point, moved).key != first.key
    assert first.payload["pyhf_attempts"] == 0
    retried = CampaignSpec.model_validate(
        small_campaign(tmp_path / "store", theory={**THEORY, "pyhf_attempts": 1})
    )
    task = evaluation_task(retried, retried.theory.models[0], point, searches)
    assert task.payload["pyhf_attempts"] == 1 and task.key != first.key


def test_unknown_model_is_refused_with_the_allowed_names(tmp_path: Path) -> None:
    theory = {**THEORY, "models": [{"name": "axion", "space": {}}]}
    file = write_campaign(tmp_path / "c.yaml", small_campaign(tmp_path / "s", theory=theory))
    with pytest.raises(SpecError, match=r"unknown model 'axion'; allowed: .*zprime"):
        load_spec(file)


@pytest.mark.slow
def test_loop_learns_a_model_and_resumes_without_recomputing(tmp_path: Path) -> None:
    file = write_campaign(tmp_path / "c.yaml", small_campaign(tmp_path / "store", theory=THEORY))
    done = lamppost("run", str(file))
    assert done.returncode == 0, done.stderr[-3000:]
    store = Store(tmp_path / "store")
    evaluations = [r for r in store.records() if r.kind == "evaluate"]
    assert len(evaluations) == THEORY["budget"]
    assert all(r.status == "done" for r in evaluations)
    (coverage,) = load_coverages(store)
    assert coverage.model == "zprime" and coverage.parameters == ("mass", "g")
    assert coverage.points.shape == (8, 2)
    assert np.all((coverage.points[:, 0] >= 500) & (coverage.points[:, 0] <= 3000))
    verdicts = [store.read_json(r.artifacts["verdict"]) for r in evaluations]
    by_point = {(v["point"]["mass"], v["point"]["g"]): v for v in verdicts}
    for point, cls in zip(coverage.points, coverage.cls_observed, strict=True):
        stored = by_point[(float(f"{point[0]:.10g}"), float(f"{point[1]:.10g}"))]["cls_observed"]
        assert (stored is None and np.isnan(cls)) or cls == pytest.approx(stored)
    volume = coverage.excluded_volume()
    assert 0.0 <= volume.low <= volume.fraction <= volume.high <= 1.0
    assert volume.posterior.mean == pytest.approx(np.mean(coverage.p_excluded_observed))
    assert 0.0 <= volume.posterior.low <= volume.posterior.high <= 1.0
    excluded = [v for v in verdicts if v["status"] == "excluded"]
    assert all(v["cls_observed"] < 0.05 and v["excluded_by"] for v in excluded)

    again = lamppost("run", str(file), "--resume", "--json")
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout)["done"] == 0, "the resumed loop proposes the same points"
    (resumed,) = load_coverages(store)
    np.testing.assert_array_equal(resumed.points, coverage.points)
    np.testing.assert_array_equal(resumed.p_excluded_observed, coverage.p_excluded_observed)
    assert resumed.posterior_observed == coverage.posterior_observed


def test_several_models_share_one_budget_by_cost_and_resume(tmp_path: Path) -> None:
    theory = {
        "models": [
            {"name": "zprime", "options": {"channels": ["mumu"]}, "cost": 1.0},
            {"name": "zprime", "options": {"channels": ["ee"]}, "cost": 2.0},
        ],
        "budget": 8,
        "batch": 2,
        "initial": 2,
        "events": 1000,
        "max_fits": 1,
    }
    file = write_campaign(tmp_path / "c.yaml", small_campaign(tmp_path / "store", theory=theory))
    done = lamppost("run", str(file))
    assert done.returncode == 0, done.stderr[-3000:]
    store = Store(tmp_path / "store")
    evaluations = [r for r in store.records() if r.kind == "evaluate"]
    per_model = {
        label: sum(f"/{label}/" in r.name for r in evaluations)
        for label in ("zprime[channels=mumu]", "zprime[channels=ee]")
    }
    spent = per_model["zprime[channels=mumu]"] * 1.0 + per_model["zprime[channels=ee]"] * 2.0
    assert 8 - 2 < spent <= 8, per_model
    assert min(per_model.values()) >= 2, "each model gets its initial design"
    coverages = {c.model: c for c in load_coverages(store)}
    assert set(coverages) == set(per_model)
    for label, coverage in coverages.items():
        assert len(coverage.points) == per_model[label]
        assert coverage.p_excluded_observed.shape == (1000,)

    again = lamppost("run", str(file), "--resume", "--json")
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout)["done"] == 0, "the same choices, found in the ledger"
    for resumed in load_coverages(store):
        np.testing.assert_array_equal(resumed.points, coverages[resumed.model].points)


def test_next_searches_name_the_class_of_an_untested_signal(tmp_path: Path) -> None:
    """A Z' seen only in electrons, in a campaign that searches muon classes only."""
    theory = {
        "models": [{"name": "zprime", "options": {"channels": ["ee"]}}],
        "budget": 3,
        "batch": 3,
        "initial": 3,
        "events": 500,
        "max_fits": 1,
    }
    searches = [
        {
            "method": "scan",
            "pseudo_rounds": 100,
            "bin_width_sigma": 2,
            "bin_min_expected": 1,
            "classes": ["2mu", "2mu+NJet"],
        }
    ]
    document = small_campaign(tmp_path / "store", theory=theory, searches=searches)
    file = write_campaign(tmp_path / "c.yaml", document)
    done = lamppost("run", str(file))
    assert done.returncode == 0, done.stderr[-3000:]
    store = Store(tmp_path / "store")
    verdicts = [
        store.read_json(r.artifacts["verdict"]) for r in store.records() if r.kind == "evaluate"
    ]
    assert {v["reason"] for v in verdicts} == {"no search receives signal"}
    ranked = load_next_searches(store)
    assert ranked, "still-allowed points deposit signal somewhere"
    assert ranked[0].event_class == "2e", [(n.event_class, n.signal_events) for n in ranked]
    assert ranked[0].models == ("zprime[channels=ee]",)
    assert sum(n.share for n in ranked) <= 1.0 + 1e-9
    assert not any(n.event_class.startswith("2mu") for n in ranked), "muon classes are tested"

    report = lamppost("report", str(tmp_path / "store"), "--no-pdf", "--json")
    assert report.returncode == 0, report.stderr[-2000:]
    summary = json.loads(Path(json.loads(report.stdout)["summary"]).read_text())
    first = summary["next_searches"][0]
    assert (first["what"], first["kind"]) == ("2e", "allowed theory signal")


def test_next_searches_rank_untested_signal_by_allowed_yield() -> None:
    deposits = {
        "a": {"2e": [4.0, 2.0], "2mu": [10.0, 10.0], "1e_1j": [0.5, 0.5]},
        "b": {"1e_1j": [3.0, 1.0], "1gamma": [0.0, 0.0]},
    }
    ranked = rank_next_searches(deposits, {"2mu"})
    assert [(n.event_class, n.signal_events, n.models) for n in ranked] == [
        ("2e", 3.0, ("a",)),
        ("1e_1j", 2.5, ("b", "a")),
    ]
    assert sum(n.share for n in ranked) == pytest.approx(1.0)


def test_model_options_reach_the_simulation(reference_run: Path) -> None:
    signal, description = signal_events(
        Store(reference_run),
        model="zprime",
        options={"channels": ["mumu"]},
        point={"mass": 1000.0, "g": 0.3},
        n_events=400,
        seed=1,
    )
    muons, electrons = ak.sum(ak.num(signal.muon)), ak.sum(ak.num(signal.electron))
    assert muons > 500 and electrons <= 0.01 * muons, "Z' -> mumu only"
    assert description["options"] == {"channels": ["mumu"]}
    with pytest.raises(BenchmarkError, match=r"unknown options \['colour'\]; allowed: channels"):
        signal_events(
            Store(reference_run),
            model="zprime",
            options={"colour": 1},
            point={"mass": 1000.0, "g": 0.3},
            n_events=10,
        )
