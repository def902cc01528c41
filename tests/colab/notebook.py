"""Executing the colab/ notebooks as a user does, as a test: on CPU, from a directory outside the
checkout, in a fresh environment without jaxlab (tests/installed.py). Each notebook's own install
cell must install jaxlab: the test points it at the wheel built from this checkout
(``JAXLAB_SOURCE``) and at a file:// copy of the repository's files (``JAXLAB_REPO``)."""

import json
import pathlib
import shutil
import tempfile

import nbformat
from nbclient import NotebookClient

from tests.installed import ROOT, shared_environment

KERNEL = "jaxlab-installed"


def execute_notebook(name: str, monkeypatch, parameters: dict[str, object] | None = None, timeout: int = 180,
                     fresh_install: bool = False):
    """Runs ``colab/<name>`` top to bottom and returns ``(notebook, all code-cell outputs)``.

    ``parameters`` replace assignments ``NAME = ...`` in the notebook's cell tagged
    ``parameters`` (papermill's convention), e.g. fewer training steps for CI.

    ``fresh_install``: start from an environment without jaxlab, so the notebook's install cell
    must install it (test_dit_notebook.py does). Otherwise jaxlab is already installed from the
    same wheel and the install cell takes its "already installed" branch: every notebook's install
    cell is the same cell (test_install_cell.py), so its install branch is run once per session
    instead of a pip uninstall + install per notebook.
    """
    installed_env = shared_environment()
    tmp_path = pathlib.Path(tempfile.mkdtemp(prefix=name.removesuffix(".ipynb") + "-", dir=installed_env.workdir))
    if fresh_install and installed_env.has_jaxlab():
        installed_env.uninstall()  # the notebook must install jaxlab itself
    elif not fresh_install and not installed_env.has_jaxlab():
        installed_env.install()
    jupyter = installed_env.workdir.parent / "jupyter"
    spec = jupyter / "kernels" / KERNEL / "kernel.json"
    spec.parent.mkdir(parents=True, exist_ok=True)
    argv = [str(installed_env.python), "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    spec.write_text(json.dumps({"argv": argv, "display_name": KERNEL, "language": "python"}))
    # The kernel inherits these (and XLA_FLAGS: fast compiles, tests/conftest.py). The dependencies are
    # already in the environment: pip's own PIP_NO_DEPS / PIP_NO_INDEX spare a resolution (20 s) and the network;
    # PIP_FORCE_REINSTALL: the test interpreter's own jaxlab (an editable install, not active there) does not count.
    env = installed_env.env(JUPYTER_PATH=str(jupyter), JAX_PLATFORMS="cpu", JAXLAB_SOURCE=str(installed_env.wheel),
                            JAXLAB_REPO=_repository_copy(tmp_path / "repository"), PIP_NO_DEPS="1", PIP_NO_INDEX="1",
                            PIP_FORCE_REINSTALL="1")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    nb = nbformat.read(ROOT / "colab" / name, as_version=4)
    if parameters:
        _set_parameters(nb, parameters)
    NotebookClient(nb, kernel_name=KERNEL, timeout=timeout, resources={"metadata": {"path": str(run_dir)}}).execute()
    assert installed_env.has_jaxlab(), f"{name} ran without jaxlab installed"
    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    return nb, outputs


def _repository_copy(root) -> str:
    """A ``file://`` URL laid out as the repository's download URLs (``<repo>/raw/main/<path>``)."""
    golden = root / "raw" / "main" / "tests" / "golden"
    shutil.copytree(ROOT / "tests" / "golden" / "udit", golden / "udit")
    return root.as_uri()


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
