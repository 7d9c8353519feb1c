from __future__ import annotations

from pathlib import Path

import pytest

from searches.datapath import missing_reason, shared_data_dir


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real-data folder; tests that need it skip with the reason when absent."""
    path = shared_data_dir()
    if path is None:
        pytest.skip(f"shared data not available: {missing_reason()}")
    return path
