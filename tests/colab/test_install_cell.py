"""Every notebook starts with the same install cell (so a fresh Colab runtime gets jaxlab, and the
repository URL is set in one line of one cell, the same in all of them)."""

import nbformat
import pytest

from tests.installed import ROOT

NOTEBOOKS = sorted(p.name for p in (ROOT / "colab").glob("*.ipynb"))


def _code_cells(name):
    return [c for c in nbformat.read(ROOT / "colab" / name, as_version=4).cells if c.cell_type == "code"]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_first_code_cell_is_the_shared_install_cell(name):
    first, *rest = _code_cells(name)
    assert "install" in first.metadata.get("tags", []), f"{name}: the first code cell must be the install cell"
    assert first.source == _code_cells(NOTEBOOKS[0])[0].source, f"{name}: install cell differs from {NOTEBOOKS[0]}'s"
    assert "JAXLAB_SOURCE" in first.source and "JAXLAB_REPO" in first.source
    # Installed, the configs are jaxlab.configs: a bare ``configs`` import works only inside a checkout.
    for cell in rest:
        assert "from configs" not in cell.source and "import configs" not in cell.source, name
