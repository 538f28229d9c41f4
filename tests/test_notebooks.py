"""The notebooks in notebooks/ run top to bottom without error, on CPU, in a temp directory.

Each notebook asserts its own numbers (gradients against a hand-written surrogate, sampler
weights against closed forms, ...), so a clean run is the check. The kernel is started with
this interpreter, not whatever ``python3`` kernel spec happens to be installed.
"""

import json
import os
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
KERNEL_NAME = "wpauc-test-python"


def this_interpreter_kernel(spec_root: Path) -> AsyncKernelManager:
    """A kernel manager whose kernel runs ``sys.executable`` (the venv's python)."""
    spec_dir = spec_root / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "wpauc tests",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    specs = KernelSpecManager(kernel_dirs=[str(spec_root)])
    return AsyncKernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=specs)


def test_there_are_notebooks():
    assert [path.name for path in NOTEBOOKS] == [
        "01_grpo_equals_auc.ipynb",
        "02_negative_samplers_reshape_the_objective.ipynb",
        "03_wpauc_vs_topk_metrics.ipynb",
        "04_reading_tensorboard_logs.ipynb",
        "05_objective_consistency.ipynb",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_is_committed_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            assert not cell.outputs, f"{path.name} cell {index} has outputs: strip them"
            assert cell.execution_count is None, f"{path.name} cell {index} has a count"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    # The kernel inherits this environment: no display, and the test suite's thread budget.
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("WPAUC_TEST_THREADS", "1"))
    work_dir = tmp_path / "work"
    work_dir.mkdir()
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=120,
        km=this_interpreter_kernel(tmp_path / "kernels"),
        resources={"metadata": {"path": str(work_dir)}},
    )
    client.execute()  # raises CellExecutionError, naming the cell, on any error
