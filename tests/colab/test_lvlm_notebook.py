"""colab/lvlm_circle_rope.ipynb runs top to bottom on CPU: the scene, ids per scheme, PTD, a short training, answers."""

import re

from tests.colab.notebook import execute_notebook, output_text, shows_image


def test_lvlm_notebook_executes(monkeypatch):
    _, outputs = execute_notebook("lvlm_circle_rope.ipynb", monkeypatch,
                                  {"TRAIN_STEPS": 4, "BATCH": 8, "POOL": 16, "EVAL_EXAMPLES": 8})
    text = output_text(outputs)
    assert re.search(r"prompt: <vs>( <img>){16} <ve> \w", text), text[:500]
    # M-RoPE: image token (row 0, col 0) of the first image sits at (1, 1, 1) after the <vs> token at 0.
    assert "mrope  image tokens 0-3 (t, h, w): [[1.0, 1.0, 1.0], [1.0, 1.0, 2.0], [1.0, 1.0, 3.0], [1.0, 1.0, 4.0]]" in text
    spread = {s: (float(lo), float(hi), float(p)) for s, lo, hi, p in
              re.findall(r"(1d|mrope|circle)\s+distance to the image tokens: min\s+([0-9.]+) max\s+([0-9.]+)\s+PTD ([0-9.]+)", text)}
    assert set(spread) == {"1d", "mrope", "circle"}, text
    lo, hi, circle_ptd = spread["circle"]
    assert hi - lo < 1e-3 and circle_ptd < 1e-3  # Circle-RoPE: every image token equally far from the text
    assert spread["mrope"][1] - spread["mrope"][0] > 1 and spread["mrope"][2] > 0.1
    assert spread["1d"][2] > spread["mrope"][2]
    age = float(re.search(r"AGE strategy_4 layers .*: PTD ([0-9.]+)", text).group(1))
    assert abs(age - (spread["mrope"][2] + circle_ptd) / 2) < 1e-3
    assert "circle: 213,984 parameters" in text and re.search(r"step\s+3\s+loss [0-9.]+", text)
    assert re.search(r"held-out accuracy \(8 examples\): all [0-9.]+", text)
    assert len(re.findall(r"Q: .* model: .* truth: ", text)) == 4
    assert shows_image(outputs)
