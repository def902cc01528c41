"""Executing the colab/ notebooks on CPU, as a test."""

import os
import pathlib

import nbformat
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).resolve().parents[2]


def execute_notebook(name: str, monkeypatch, parameters: dict[str, object] | None = None, timeout: int = 180):
    """Runs ``colab/<name>`` top to bottom and returns ``(notebook, all code-cell outputs)``.

    ``parameters`` replace assignments ``NAME = ...`` in the notebook's cell tagged
    ``parameters`` (papermill's convention), e.g. fewer training steps for CI.
    """
    # The kernel ("python3" = this interpreter) must import jaxlab and configs from this checkout;
    # it inherits the test session's XLA_FLAGS (fast compiles, see tests/conftest.py).
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    nb = nbformat.read(ROOT / "colab" / name, as_version=4)
    if parameters:
        _set_parameters(nb, parameters)
    NotebookClient(nb, kernel_name="python3", timeout=timeout, resources={"metadata": {"path": str(ROOT)}}).execute()
    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    return nb, outputs


def _set_parameters(nb, parameters: dict[str, object]) -> None:
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ValueError("the notebook needs exactly one cell tagged 'parameters'")
    lines = cells[0].source.splitlines()
    for name, value in parameters.items():
        matches = [i for i, line in enumerate(lines) if line.split("=")[0].strip() == name]
        if not matches:
            raise KeyError(f"parameter {name} is not assigned in the parameters cell")
        lines[matches[0]] = f"{name} = {value!r}"
    cells[0].source = "\n".join(lines)


def output_text(outputs) -> str:
    return "".join(out.get("text", "") for out in outputs)


def shows_image(outputs) -> bool:
    return any("image/png" in out.get("data", {}) for out in outputs)
