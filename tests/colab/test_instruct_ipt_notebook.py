"""colab/instruct_ipt.ipynb runs top to bottom on CPU: training, restoring by instruction, refusals, a picture."""

import re

from tests.colab.notebook import execute_notebook, output_text, shows_image


def test_instruct_ipt_notebook_executes(monkeypatch):
    _, outputs = execute_notebook("instruct_ipt.ipynb", monkeypatch,
                                  {"STEPS": 2, "GROUPS_PER_STEP": 1, "N_FEATS": 4, "PATCH": 12, "IMAGE_SIZE": 20})
    text = output_text(outputs)
    assert "'please remove the rain streaks' -> derain" in text
    assert re.search(r"PSNR rainy [0-9.]+ dB -> restored [0-9.]+ dB", text)
    assert "'remove the rain and the noise' -> refused" in text and "which task" in text
    assert "'the photo is so foggy, clear it' -> dehaze" in text
    assert shows_image(outputs)
