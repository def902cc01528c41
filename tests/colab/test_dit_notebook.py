"""colab/dit_quickstart.ipynb runs top to bottom on CPU, installing jaxlab: presets, a short training run, a sample grid."""

from tests.colab.notebook import execute_notebook, output_text, shows_image


def test_dit_quickstart_notebook_executes_and_shows_the_grid(monkeypatch):
    # Its install cell runs from an environment without jaxlab (the other notebooks' tests skip it).
    _, outputs = execute_notebook("dit_quickstart.ipynb", monkeypatch,
                                  {"TRAIN_STEPS": 2, "BATCH_SIZE": 8, "SAMPLING_STEPS": 2}, timeout=300,
                                  fresh_install=True)
    text = output_text(outputs)
    assert "DiT-XL/2    674,834,720 parameters" in text
    assert "step     0  loss" in text and "step     1  loss" in text  # every step printed, the last one too
    assert "samples (40, 16, 16, 1) float32" in text
    assert shows_image(outputs), "the sample grid was not displayed"
