"""examples/quickstart.ipynb runs top to bottom (nbclient, a real Jupyter kernel, the embedded SmolLM2 on
the shipped example) with its plots inline, so it cannot rot."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[2] / "examples" / "quickstart.ipynb"


@pytest.mark.slow
def test_the_quickstart_notebook_executes_with_its_plots(tmp_path, monkeypatch):
    monkeypatch.setenv("TASKLING_QUICKSTART_DIR", str(tmp_path))
    monkeypatch.setenv("TASKLING_QUICKSTART_THREADS", "1")  # beside the rest of the suite: one thread, no contention
    # The kernel is started as `python -m ipykernel_launcher`: this interpreter's, with taskling installed.
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(nb, timeout=1800, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()  # raises CellExecutionError, with the cell and its traceback, when a cell fails
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3  # funnel, loss curve, results with their intervals: drawn inline
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "student" in text and "p=" in text and "DatasetDict" in text
    assert (tmp_path / "devdocs-router" / "runs" / "devdocs-router" / "export" / "merged" / "config.json").exists()
