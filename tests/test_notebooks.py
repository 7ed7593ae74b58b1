"""Every notebook in ``notebooks/`` runs from top to bottom without a cell error.

Each notebook is executed in memory (the file on disk, with its full-size outputs, is
never written) by a fresh ``python3`` kernel from this environment, with
``NETTRIM_NOTEBOOK_SIZE=small`` and the notebooks folder as working directory. A notebook
reads that variable in its first code cell and at ``small`` runs in seconds.
"""
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT = 300  # seconds per cell; the small size needs a few


def test_the_notebooks_are_there():
    names = {path.name for path in NOTEBOOKS}
    assert {"01_quickstart.ipynb", "02_error_bounds.ipynb", "03_sample_complexity.ipynb",
            "04_structured.ipynb"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_first_code_cell_reads_the_size(path):
    notebook = nbformat.read(path, as_version=4)
    first = next(cell for cell in notebook.cells if cell.cell_type == "code")
    assert "NETTRIM_NOTEBOOK_SIZE" in first.source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_runs_at_small_size(path, monkeypatch):
    monkeypatch.setenv("NETTRIM_NOTEBOOK_SIZE", "small")  # inherited by the kernel process
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=CELL_TIMEOUT, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
                            extra_arguments=["--IPKernelApp.log_level=ERROR"])
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on any error
    errors = [output for cell in notebook.cells if cell.cell_type == "code"
              for output in cell.get("outputs", []) if output.get("output_type") == "error"]
    assert not errors
