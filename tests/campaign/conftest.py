from __future__ import annotations

from pathlib import Path

import pytest

from campaign.testing import lamppost, small_campaign, write_campaign


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run of the small campaign on a local Ray (num_cpus=2)."""
    tmp = tmp_path_factory.mktemp("reference")
    file = write_campaign(tmp / "c.yaml", small_campaign(tmp / "store"))
    done = lamppost("run", str(file))
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp / "store"
