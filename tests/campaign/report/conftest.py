from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from campaign.benchmark import signal_events
from campaign.coverage import ModelCoverage, save_coverage
from campaign.reinterpret import campaign_results, reinterpret, save
from campaign.store import Store
from campaign.testing import BuildOnce
from theory.active import learn_box
from theory.toys import ellipse_2d

HOSTILE_CAMPAIGN = '<script>window.hostile=1</script> & "dimuon" <b>bold</b>'
HOSTILE_MODEL = "<img src=x onerror=\"console.error('escaped?')\">"


@pytest.fixture(scope="session")
def reviewed_store(reference_run: Path, built_once: BuildOnce) -> Path:
    """The small campaign plus what a review adds: a reinterpretation and a model's coverage.

    The campaign and model names carry markup, so every test on the report also checks that
    user text is escaped.
    """

    def build(directory: Path) -> None:
        target = directory / "store"
        shutil.copytree(reference_run, target)
        spec_file = target / "spec.json"
        spec = json.loads(spec_file.read_text())
        spec["name"] = HOSTILE_CAMPAIGN
        spec_file.write_text(json.dumps(spec))
        store = Store(target)
        signal, benchmark = signal_events(
            store, model="zprime", point={"mass": 1000.0, "g": 0.6}, n_events=5000, seed=3
        )
        save(store, reinterpret(campaign_results(store), signal, benchmark=benchmark, max_fits=2))
        toy = ellipse_2d()
        history = learn_box(
            toy.space, toy.cls_pair, budget=20, seed=0, reference_size=400, n_candidates=400
        )
        coverage = ModelCoverage.from_history(
            HOSTILE_MODEL, toy.space.names, history, to_unit=toy.space.to_unit
        )
        save_coverage(store, coverage)

    return built_once("reviewed", build) / "store"
