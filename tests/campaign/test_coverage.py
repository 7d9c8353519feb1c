"""A model's coverage: the active learner's posterior kept as data, and its excluded volume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from campaign.coverage import ModelCoverage, load_coverages, save_coverage
from campaign.store import Store, StoreError
from theory.active import learn_box, learn_pool
from theory.toys import ellipse_2d


@pytest.fixture(scope="module")
def box_coverage() -> ModelCoverage:
    toy = ellipse_2d()
    history = learn_box(
        toy.space, toy.cls_pair, budget=20, seed=0, reference_size=400, n_candidates=400
    )
    return ModelCoverage.from_history(
        "ellipse", toy.space.names, history, to_unit=toy.space.to_unit
    )


def test_excluded_volume_brackets_the_true_one(box_coverage: ModelCoverage) -> None:
    toy = ellipse_2d()
    for output, expected in (("observed", False), ("expected", True)):
        truth = float(np.mean(toy.excluded(box_coverage.reference, expected=expected)))
        volume = box_coverage.excluded_volume(output)
        assert volume.low <= volume.fraction <= volume.high
        assert volume.low - 0.01 <= truth <= volume.high + 0.01, (output, truth, volume)
        assert volume.fraction == pytest.approx(truth, abs=0.02)
        assert volume.posterior.low <= volume.posterior.median <= volume.posterior.high
        assert volume.posterior.mean == pytest.approx(truth, abs=0.02)


def test_box_coverage_keeps_the_evaluations(box_coverage: ModelCoverage) -> None:
    toy = ellipse_2d()
    assert box_coverage.points.shape == (20, 2)
    np.testing.assert_allclose(box_coverage.cls_observed, toy.cls(box_coverage.points))
    np.testing.assert_allclose(box_coverage.cls_expected, toy.cls_pair(box_coverage.points)[:, 1])


def test_expected_label_keeps_each_cls_in_its_own_column() -> None:
    """A learner labelled by expected CLs still stores (observed, expected) as the oracle
    returned them; the coverage must not swap the columns while it swaps the outputs."""
    toy = ellipse_2d()
    pool = toy.space.sample(150, seed=2)
    history = learn_pool(
        pool, lambda idx: toy.cls_pair(pool[idx]), budget=12, seed=1, label="expected"
    )
    coverage = ModelCoverage.from_history("ellipse", toy.space.names, history)
    pair = toy.cls_pair(coverage.points)
    np.testing.assert_allclose(coverage.cls_observed, pair[:, 0])
    np.testing.assert_allclose(coverage.cls_expected, pair[:, 1])
    np.testing.assert_array_equal(coverage.p_excluded_expected, history.final.p_excluded)
    np.testing.assert_array_equal(coverage.p_excluded_observed, history.final.p_excluded_other)


def test_pool_coverage_reports_on_the_candidates() -> None:
    toy = ellipse_2d()
    pool = toy.space.sample(150, seed=2)
    history = learn_pool(pool, lambda idx: toy.cls(pool[idx]), budget=12, seed=1)
    coverage = ModelCoverage.from_history("ellipse", toy.space.names, history)
    np.testing.assert_array_equal(coverage.reference, pool)
    assert coverage.cls_expected is None and coverage.p_excluded_expected is None
    assert coverage.excluded_volume("expected") is None
    evaluated = np.concatenate([s.indices for s in history.steps])
    np.testing.assert_array_equal(coverage.points, pool[evaluated])


def test_store_round_trip_and_bad_files(box_coverage: ModelCoverage, tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    assert load_coverages(store) == []
    relative = save_coverage(store, box_coverage)
    (loaded,) = load_coverages(store)
    assert loaded.model == "ellipse" and relative == "coverage/ellipse.json"
    for name in ("points", "reference", "p_excluded_observed", "cls_expected"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(box_coverage, name))
    broken = box_coverage.to_dict() | {"schema_version": "9"}
    (tmp_path / "store" / "coverage" / "broken.json").write_text(json.dumps(broken))
    with pytest.raises(StoreError, match=r"broken\.json.*schema_version='9'.*allowed: '1', '2'"):
        load_coverages(store)


def test_coverage_keeps_the_fraction_posterior_and_reads_version_1(
    box_coverage: ModelCoverage, tmp_path: Path
) -> None:
    store = Store(tmp_path / "store")
    save_coverage(store, box_coverage)
    (loaded,) = load_coverages(store)
    assert loaded.posterior_observed == box_coverage.posterior_observed is not None
    assert loaded.posterior_expected == box_coverage.posterior_expected is not None
    old = box_coverage.to_dict() | {"schema_version": "1"}
    for key in ("posterior_observed", "posterior_expected"):
        del old[key]
    (tmp_path / "store" / "coverage" / "ellipse.json").write_text(json.dumps(old))
    (loaded,) = load_coverages(store)
    assert loaded.posterior_observed is None and loaded.excluded_volume().posterior is None
    assert loaded.excluded_volume().fraction == box_coverage.excluded_volume().fraction


def test_a_box_coverage_needs_its_space() -> None:
    toy = ellipse_2d()
    history = learn_box(
        toy.space, toy.cls_pair, budget=12, seed=0, reference_size=200, n_candidates=200
    )
    with pytest.raises(ValueError, match=r"'ellipse': a box history needs to_unit"):
        ModelCoverage.from_history("ellipse", toy.space.names, history)
