"""colab/udit.ipynb runs top to bottom on CPU: presets, token groups, a converted checkpoint, a sample grid."""

import re

from tests.colab.notebook import execute_notebook, output_text, shows_image


def test_udit_notebook_executes_and_shows_the_grid(monkeypatch):
    _, outputs = execute_notebook("udit.ipynb", monkeypatch, timeout=120)
    text = output_text(outputs)
    assert "U-DiT-B  width=192 heads= 8  params 231.25M, fused 204.43M, 22.18 GMACs" in text
    assert "[[ 0  2  8 10]" in text  # group 0 of the 4x4 index map: pixels (2r, 2c)
    assert "latents (8, 16, 16, 4) float32" in text
    assert shows_image(outputs), "the sample grid was not displayed"
    errors = [float(e) for e in re.findall(r"max \|jaxlab - official\| = ([0-9.e+-]+)", text)]
    assert len(errors) == 2 and max(errors) < 2e-3, errors  # the case's atol
