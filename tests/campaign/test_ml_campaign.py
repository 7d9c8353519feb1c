"""Machine-learning searches in a campaign: their selections are stored and reinterpreted."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import pytest

from campaign.benchmark import signal_events
from campaign.coverage import load_coverages
from campaign.reinterpret import campaign_results
from campaign.store import Store
from campaign.tasks import _run_storing_models, load_results, role_events
from campaign.testing import lamppost, search_results, small_campaign, write_campaign
from searches.events import write_parquet
from searches.methods.autoencoder import AutoencoderMethod, AutoencoderOptions
from searches.methods.base import ClassSlice
from searches.signatures import SignatureConfig
from theory.models import get_model
from theory.simulate import FastSimulator

pytestmark = pytest.mark.slow

TRAINING = {"epochs": 10, "batch_size": 128, "device": "cpu", "n_threads": 1}
ZPRIME = {"mass": 1000.0, "g": 0.3}


def _ml_campaign(tmp: Path) -> dict:
    signal = FastSimulator().signal(
        get_model("zprime"), ZPRIME, n_events=4000, luminosity_fb=140.0, seed=5
    )
    signal_path = write_parquet(signal, tmp / "zprime.parquet")
    return small_campaign(
        tmp / "store",
        data={
            "background": {"simulator": "builtin", "events": 30000},
            "observed": {
                "pseudo": True,
                "inject": {"model": "zprime", "point": ZPRIME, "events": 5000},
            },
        },
        class_selection={"min_expected": 1.0, "min_mc_events": 50},
        searches=[
            # The campaign's look-elsewhere task needs one search with pseudo-experiments.
            {"method": "scan", "classes": ["2mu"], "pseudo_rounds": 100, "bin_min_expected": 1},
            {
                "method": "supervised",
                "classes": ["2mu"],
                "benchmark": "zprime(mass=1000, g=0.3)",
                "signal_path": str(signal_path),
                "observable": "minv",
                "n_trials": 2,
                "n_folds": 2,
                "training": TRAINING,
            },
            {
                "method": "cwola",
                "classes": ["2mu"],
                "observable": "minv",
                "features": "objects",
                "complete_only": False,
                "n_folds": 2,
                "max_iter": 20,
                "min_window_events": 20,
                "min_selected": 10,
                "efficiencies": [0.2],
                "sculpting_check": False,
            },
        ],
    )


@pytest.fixture(scope="module")
def moved_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished ML campaign whose store was then moved elsewhere (the original is gone)."""
    tmp = tmp_path_factory.mktemp("ml")
    file = write_campaign(tmp / "c.yaml", _ml_campaign(tmp))
    done = lamppost("run", str(file))
    assert done.returncode == 0, done.stderr[-3000:]
    moved = tmp_path_factory.mktemp("elsewhere") / "store"
    shutil.move(tmp / "store", moved)
    return moved


def test_ml_selections_are_stored_in_the_campaign_store(moved_store: Path) -> None:
    store = Store(moved_store)
    records = [r for r in store.records() if r.kind == "search" and "scan" not in r.name]
    assert {r.name for r in records if r.status == "done"} == {
        "search/2mu/supervised",
        "search/2mu/cwola",
    }
    for record in records:
        (name,) = [key.removeprefix("model:") for key in record.artifacts if key != "results"]
        folder = Path(record.artifacts["results"]).parent
        assert record.artifacts[f"model:{name}"] == f"{folder}/{name}"
        assert (moved_store / folder / name).is_file()
        (raw,) = json.loads((moved_store / record.artifacts["results"]).read_text())
        assert raw["selection"]["model"]["weights"] == name
        (result,) = load_results(store, record.artifacts["results"])
        assert result.selection.model.weights == str(moved_store / folder / name)


def test_reinterpretation_applies_the_stored_selections(moved_store: Path) -> None:
    """From another working directory, after the move: the CLI's signal yields are those of
    the reloaded ML selections, whose trained cuts remove most of the class's background.

    ``--max-fits 0`` leaves out the pyhf fits (tested in ``test_reinterpret.py``): every
    search that the signal reaches is "not evaluated", with its signal yield.
    """
    args = ["--model", "zprime", "--point", "mass=1000", "--point", "g=0.2", "--n-events", "4000"]
    run = lamppost(
        "reinterpret", str(moved_store), *args, "--seed", "2", "--max-fits", "0", "--json"
    )
    assert run.returncode == 0, run.stderr[-3000:]
    verdicts = {v["method"]: v for v in json.loads(run.stdout)["searches"] if v["method"] != "scan"}
    assert set(verdicts) == {"supervised", "cwola"}

    store = Store(moved_store)
    signal, _ = signal_events(
        store, model="zprime", point={"mass": 1000.0, "g": 0.2}, n_events=4000, seed=2
    )
    (record,) = [r for r in store.records() if r.kind == "background"]
    background = role_events(store, record.artifacts)
    for result in campaign_results(store):
        if result.method == "scan":
            continue
        assert result.selection.model is not None
        yields, _ = result.selection.histogram(signal)
        assert verdicts[result.method]["signal_events"] == pytest.approx(yields.sum(), rel=1e-9)
        assert yields.sum() > 1.0, f"{result.method}: no signal passes the stored selection"
        uncut = replace(result.selection, model=None)
        assert yields.sum() <= uncut.histogram(signal)[0].sum()
        kept = result.selection.histogram(background)[0].sum()
        assert kept < 0.8 * uncut.histogram(background)[0].sum(), f"{result.method}: no cut"
        assert verdicts[result.method]["status"] == "not evaluated"


def test_remote_store_models_are_fetched_to_a_local_copy(moved_store: Path) -> None:
    """A store on a non-local filesystem: the model file is copied locally and loads."""
    local = Store(moved_store)
    remote = Store(moved_store)
    remote.fs = pafs.SubTreeFileSystem("/", pafs.LocalFileSystem())
    remote.root = str(moved_store).lstrip("/")
    record = next(r for r in local.records() if r.name == "search/2mu/supervised")
    (here,) = load_results(local, record.artifacts["results"])
    (there,) = load_results(remote, record.artifacts["results"])
    assert not there.selection.model.weights.startswith(str(moved_store))
    assert (
        Path(there.selection.model.weights).read_bytes()
        == Path(here.selection.model.weights).read_bytes()
    )
    signal = FastSimulator().signal(
        get_model("zprime"), ZPRIME, n_events=1000, luminosity_fb=140.0, seed=9
    )
    np.testing.assert_array_equal(
        there.selection.histogram(signal)[0], here.selection.histogram(signal)[0]
    )


@pytest.mark.parametrize("explicit", [False, True])
def test_an_artifacts_dir_from_the_campaign_file_is_kept(tmp_path: Path, explicit: bool) -> None:
    """Unset, the model goes into the task's staging folder; set by the user, it stays theirs."""
    events = FastSimulator().background(n_events=3000, luminosity_fb=140.0, seed=3)
    data = ClassSlice(
        event_class="1j+X",
        signatures=SignatureConfig().model_dump(),
        observed=events,
        background=events[:0],
        observables=("st",),
    )
    given = {"artifacts_dir": str(tmp_path / "mine")} if explicit else {}
    options = AutoencoderOptions(
        observable="st",
        n_folds=2,
        efficiencies=(0.2,),
        min_selected=10,
        training={"epochs": 1, "device": "cpu", "n_threads": 1},
        **given,
    )
    store = Store(tmp_path / "store")
    (result,), artifacts = _run_storing_models(
        AutoencoderMethod(), data, options, seed=1, store=store, staging="staging/x"
    )
    weights = result.selection.model.weights
    if explicit:
        assert artifacts == {} and Path(weights).parent == tmp_path / "mine"
        assert Path(weights).is_file() and not store.exists("staging")
    else:
        assert artifacts == {f"model:{weights}": f"staging/x/{weights}"}
        assert "/" not in weights and store.exists(f"staging/x/{weights}")


def _dropout_campaign(tmp: Path, *, num_cpus: int) -> Path:
    """The ML campaign with two networks trained with dropout (the supervised search, which
    tunes dropout, and CWoLa with an MLP, so that on one CPU both train in the same worker),
    and a theory loop whose points are reinterpreted against the trained selections."""
    document = _ml_campaign(tmp)
    (cwola,) = [search for search in document["searches"] if search["method"] == "cwola"]
    cwola.update(classifier="mlp", training={**TRAINING, "dropout": 0.2})
    document["execution"] = {**document["execution"], "num_cpus": num_cpus}
    document["theory"] = {
        "models": [{"name": "zprime", "space": {"mass": [600, 2000], "g": [0.05, 1.0]}}],
        "budget": 4,
        "batch": 2,
        "initial": 2,
        "events": 1000,
        "max_fits": 1,
    }
    return write_campaign(tmp / "c.yaml", document)


def _trained_weights(store: Path) -> dict[str, bytes]:
    records = [r for r in Store(store).records() if r.kind == "search" and r.status == "done"]
    return {
        key: (store / path).read_bytes()
        for record in records
        for key, path in record.artifacts.items()
        if key.startswith("model:")
    }


def test_the_same_campaign_gives_the_same_numbers_on_one_or_two_workers(tmp_path: Path) -> None:
    """Which tasks share a Ray worker, and in which order, must not reach a result.

    On one CPU the tasks run one after another and share a worker process; on two, the ML
    searches train in different processes and the theory loop's points are evaluated two at a
    time. Dropout masks come from torch's global generator: had training not seeded it, the
    second network trained in a process would depend on the first.
    """
    stores = {}
    for num_cpus in (1, 2):
        tmp = tmp_path / f"cpus{num_cpus}"
        tmp.mkdir()
        done = lamppost("run", str(_dropout_campaign(tmp, num_cpus=num_cpus)))
        assert done.returncode == 0, done.stderr[-3000:]
        stores[num_cpus] = tmp / "store"
    one, two = (search_results(stores[n]) for n in (1, 2))
    assert {"search/2mu/supervised", "search/2mu/cwola"} <= set(one)
    assert one == two
    weights = _trained_weights(stores[1])
    assert len(weights) == 2
    assert weights == _trained_weights(stores[2])
    (first,), (second,) = (load_coverages(Store(stores[n])) for n in (1, 2))
    assert first.points.shape == (4, 2)
    np.testing.assert_array_equal(first.points, second.points)
    np.testing.assert_array_equal(first.cls_observed, second.cls_observed)
    np.testing.assert_array_equal(first.p_excluded_observed, second.p_excluded_observed)
