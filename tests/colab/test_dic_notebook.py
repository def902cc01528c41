"""colab/dic.ipynb runs top to bottom on CPU and shows the sample grid."""

from tests.colab.notebook import execute_notebook, output_text, shows_image


def test_dic_notebook_executes_and_displays_the_grid(monkeypatch):
    _, outputs = execute_notebook("dic.ipynb", monkeypatch, timeout=120)
    text = output_text(outputs)
    assert "DiC-H" in text and "1034.5M" in text and "32.8M" in text
    assert "latents (8, 8, 8, 4) float32" in text
    assert shows_image(outputs), "the sample grid was not displayed"
