"""The notebooks run top to bottom (their own assertions check the physics they show)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.slow
NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def execute(name: str, workdir: Path) -> nbformat.NotebookNode:
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": workdir}}
    ).execute()
    return notebook


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("quickstart")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LAMPPOST_NOTEBOOK_DIR", str(workdir))
        patch.delenv("LAMPPOST_STORE", raising=False)
        execute("01_quickstart.ipynb", workdir)
    return workdir / "store"


def test_quickstart_runs_a_campaign(quickstart: Path) -> None:
    assert (quickstart / "spec.json").is_file()


@pytest.mark.parametrize("name", ["02_reinterpret.ipynb", "03_coverage_report.ipynb"])
def test_notebook_on_the_quickstart_campaign(
    name: str, quickstart: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAMPPOST_STORE", str(quickstart))
    notebook = execute(name, tmp_path)
    errors = [
        o for cell in notebook.cells for o in cell.get("outputs", []) if o.output_type == "error"
    ]
    assert not errors


def test_notebooks_are_committed_without_outputs() -> None:
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")
