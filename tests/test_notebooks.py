"""The example notebooks run from top to bottom with small settings and are committed clean.

Each notebook reads ``MOLA_TS_EXAMPLES_QUICK``: set to 1 here, it trains tiny models for a few
steps, so the whole notebook runs in seconds. A failing cell fails the test with its traceback.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbclient
import nbformat
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
# notebook -> figures it must show when run (each plotting call that ends a cell)
NOTEBOOKS = {
    "lora_moe_layers.ipynb": 6,
    "tep_fault_detection.ipynb": 5,
    "quickstart_forecasting.ipynb": 3,
}


def _code_cells(name: str) -> list[dict]:
    notebook = json.loads((EXAMPLES / name).read_text(encoding="utf-8"))
    return [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]


def test_notebooks_are_committed_without_outputs_and_read_the_quick_switch():
    assert sorted(p.name for p in EXAMPLES.glob("*.ipynb")) == sorted(NOTEBOOKS)
    for name in NOTEBOOKS:
        cells = _code_cells(name)
        assert all(cell["outputs"] == [] and cell["execution_count"] is None for cell in cells), \
            f"{name} holds outputs: clear them before committing"
        assert 'os.environ.get("MOLA_TS_EXAMPLES_QUICK") == "1"' in "".join(cells[0]["source"])


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_notebook_runs_with_small_settings(name, tmp_path, monkeypatch):
    monkeypatch.setenv("MOLA_TS_EXAMPLES_QUICK", "1")
    monkeypatch.setenv("MOLA_TS_NO_PROGRESS", "1")
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # one core per test worker
        monkeypatch.setenv(variable, "1")
    notebook = nbformat.read(EXAMPLES / name, as_version=4)
    client = nbclient.NotebookClient(notebook, kernel_name="python3", timeout=240,
                                     startup_timeout=180,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, with the failing cell, on any error
    outputs = [out for cell in notebook.cells if cell.cell_type == "code"
               for out in cell.outputs]
    figures = [out for out in outputs if "image/png" in out.get("data", {})]
    assert len(figures) == NOTEBOOKS[name]
    assert not list(tmp_path.iterdir())  # the notebooks write no files
