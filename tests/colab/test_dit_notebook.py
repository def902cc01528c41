"""colab/dit_quickstart.ipynb runs top to bottom on CPU: presets, a short training run, a sample grid."""

from tests.colab.notebook import execute_notebook, output_text, shows_image


def test_dit_quickstart_notebook_executes_and_shows_the_grid(monkeypatch):
    _, outputs = execute_notebook("dit_quickstart.ipynb", monkeypatch, {"TRAIN_STEPS": 30, "SAMPLING_STEPS": 10},
                                  timeout=300)
    text = output_text(outputs)
    assert "DiT-XL/2    674,834,720 parameters" in text
    assert "step    29  loss" in text
    assert "samples (40, 16, 16, 1) float32" in text
    assert shows_image(outputs), "the sample grid was not displayed"
