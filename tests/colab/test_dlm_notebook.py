"""colab/dlm_dcd.ipynb runs top to bottom on CPU: loads the shipped Sudoku DLM, decodes with block
and DCD, shows the commit order and the likelihood comparison."""

import re

from tests.colab.notebook import execute_notebook, output_text


def test_dlm_notebook_executes_and_shows_commit_order(monkeypatch):
    _, outputs = execute_notebook("dlm_dcd.ipynb", monkeypatch, {"TRAIN_STEPS": 0, "NUM_PUZZLES": 64})
    text = output_text(outputs)
    assert "checker on the true answers: [ True  True  True  True]" in text
    assert "(214,592 params); trained: {'train_steps': 2000" in text
    accuracies = {name: float(acc) for name, acc in re.findall(r"(block|DCD)\s*: accuracy ([0-9.]+)", text)}
    assert set(accuracies) == {"block", "DCD"} and min(accuracies.values()) > 0.5, accuracies
    html = [out["data"]["text/html"] for out in outputs if "text/html" in out.get("data", {})]
    assert html and "<table" in html[0] and "<b>block</b>" in html[0] and "<b>DCD</b>" in html[0]
    assert re.search(r"step  0  window \[ 0,  4\)  ####\.{12}", text)
    lls = [float(v) for v in re.findall(r"log-likelihood >= +(-?[0-9.]+) nats", text)]
    assert len(lls) == 2 and lls[0] > lls[1], lls
