"""The notebooks run top to bottom (on the real sample when it is there, else synthetic data)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_there_are_an_exploratory_and_a_model_design_notebook() -> None:
    names = [path.stem for path in NOTEBOOKS]
    assert any("exploratory" in name for name in names)
    assert any("model_design" in name for name in names)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": path.parent}}
    )
    client.execute()  # raises CellExecutionError, with the failing cell, on any error
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert outputs, "the notebook should show its results"
    assert not [o for o in outputs if o.get("output_type") == "error"]
