"""colab/dlm_dcd.ipynb runs top to bottom on CPU: loads the shipped Sudoku DLM, decodes with block
and DCD, shows the commit order and the likelihood comparison."""

import os
import pathlib
import re

import nbformat
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "colab" / "dlm_dcd.ipynb"

# Test-only: cheaper XLA:CPU code generation (the decoders compile several times faster; numerics
# are unchanged). Users run the notebook with default flags.
FAST_COMPILE_FLAGS = (
    "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true --xla_cpu_use_fusion_emitters=false"
)


def test_dlm_notebook_executes_and_shows_commit_order(monkeypatch):
    # The kernel is a subprocess of this interpreter ("python3" resolves to sys.executable); it must
    # import jaxlab and configs from this checkout whether or not jaxlab is installed.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("XLA_FLAGS", " ".join(filter(None, [os.environ.get("XLA_FLAGS"), FAST_COMPILE_FLAGS])))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, kernel_name="python3", timeout=120, resources={"metadata": {"path": str(ROOT)}}).execute()

    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    text = "".join(out.get("text", "") for out in outputs)
    assert "checker on the true answers: [ True  True  True  True]" in text
    accuracies = {name: float(acc) for name, acc in re.findall(r"(block|DCD)\s*: accuracy ([0-9.]+)", text)}
    assert set(accuracies) == {"block", "DCD"} and min(accuracies.values()) > 0.5, accuracies
    html = [out["data"]["text/html"] for out in outputs if "text/html" in out.get("data", {})]
    assert html and "<table" in html[0] and "block" in html[0] and "DCD" in html[0]
    assert re.search(r"step  0  window \[ 0,  4\)  ####\.{12}", text)
    lls = [float(v) for v in re.findall(r"log-likelihood >= +(-?[0-9.]+) nats", text)]
    assert len(lls) == 2 and lls[0] > lls[1], lls
