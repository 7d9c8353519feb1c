from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from filelock import FileLock

from campaign.testing import BuildOnce, lamppost, small_campaign, write_campaign


@pytest.fixture(scope="session")
def built_once(tmp_path_factory: pytest.TempPathFactory) -> BuildOnce:
    """``built_once(name, build)``: a private copy of a directory that ``build`` fills once.

    A campaign store for a test takes minutes to make. Under pytest-xdist the first worker that
    asks builds it in the directory all workers share, holding a file lock, and the others wait
    for it instead of building their own. Every worker then gets its own copy, so that nothing
    one worker does to a store can reach a test on another.
    """
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base

    def get(name: str, build: Callable[[Path], None]) -> Path:
        built = shared / f"built-{name}"
        with FileLock(shared / f"built-{name}.lock"):
            if not (built / ".complete").exists():
                shutil.rmtree(built, ignore_errors=True)
                built.mkdir()
                build(built)
                (built / ".complete").touch()
        copy = tmp_path_factory.mktemp(name)
        shutil.copytree(built, copy, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".complete"))
        return copy

    return get


def _run_small_campaign(directory: Path) -> None:
    file = write_campaign(directory / "c.yaml", small_campaign(directory / "store"))
    done = lamppost("run", str(file))
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="session")
def reference_run(built_once: BuildOnce) -> Path:
    """An uninterrupted run of the small campaign on a local Ray (num_cpus=2).

    Shared by every test of a worker, so it is read-only: a test that writes into a store (a
    saved reinterpretation) copies it first, or the reviewed store built from it would depend
    on which tests ran before.
    """
    return built_once("reference", _run_small_campaign) / "store"
