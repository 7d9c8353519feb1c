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


@pytest.fixture
def pyhf_restored():
    """pyhf's backend and optimizer as the test found them, put back after it."""
    import pyhf

    backend, optimizer = pyhf.get_backend()
    yield
    pyhf.set_backend(backend, optimizer)


@pytest.fixture
def precise_pyhf(pyhf_restored):
    """pyhf on numpy with a tight scipy tolerance (1e-12), for comparisons at 1e-6."""
    import pyhf

    pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer(tolerance=1e-12))


@pytest.fixture
def pyhf_on_minuit(pyhf_restored):
    """pyhf fitting as :mod:`searches.stats.inference` does (MINUIT, tolerance 0.01)."""
    from searches.stats.inference import FITS
    from searches.stats.robust import use_fit_settings

    use_fit_settings(FITS)
