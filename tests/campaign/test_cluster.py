"""A multi-node Ray cluster on one machine (head + two worker nodes, separate ``ray start``
process trees, token authentication, loopback only).

A worker node is SIGKILLed mid-campaign: Ray retries its tasks on the other node and the
campaign ends with the results of an undisturbed run. Then the driver is SIGKILLed and
``lamppost resume`` finishes the campaign without running any finished task again.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from campaign.store import Store
from campaign.testing import (
    LocalCluster,
    kill_tree,
    lamppost,
    search_results,
    small_campaign,
    start_lamppost,
    wait_for_tasks,
    write_campaign,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    local = LocalCluster(tmp_path)
    try:
        local.start(workers=2)
        yield local
    finally:
        local.stop()


def on_cluster(store: Path, address: str) -> dict[str, Any]:
    document = small_campaign(store)
    document["execution"] = {"address": address, "retries": 3, "min_task_seconds": 0}
    return document


def test_worker_loss_then_driver_loss(
    tmp_path: Path, cluster: LocalCluster, reference_run: Path
) -> None:
    reference = search_results(reference_run)

    store = tmp_path / "after-node-loss"
    file = write_campaign(tmp_path / "a.yaml", on_cluster(store, cluster.address))
    log = (tmp_path / "driver.log").open("wb")
    driver = start_lamppost("run", str(file), env=cluster.env, stderr=log)
    wait_for_tasks(store, kind="search", count=1, process=driver)
    cluster.kill("worker0")
    assert driver.wait(timeout=900) == 0, (tmp_path / "driver.log").read_text()[-3000:]
    assert search_results(store) == reference

    store = tmp_path / "after-driver-loss"
    file = write_campaign(tmp_path / "b.yaml", on_cluster(store, cluster.address))
    driver = start_lamppost("run", str(file), env=cluster.env)
    try:
        wait_for_tasks(store, kind="search", count=2, process=driver)
    finally:
        kill_tree(driver)
    before = {r.key: r for r in Store(store).records()}
    resumed = lamppost("resume", str(store), env=cluster.env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = {r.key: r for r in Store(store).records()}
    assert all(after[key] == record for key, record in before.items())
    assert search_results(store) == reference
