"""colab/dijiang.ipynb runs top to bottom on CPU: conversion, the three forms agree, generation, length plot."""

import re

from tests.colab.notebook import execute_notebook, output_text, shows_image


def test_dijiang_notebook_executes(monkeypatch):
    _, outputs = execute_notebook("dijiang.ipynb", monkeypatch,
                                  {"HIDDEN": 32, "LAYERS": 1, "CONTEXTS": [32, 128], "NEW_TOKENS": 4})
    text = output_text(outputs)
    diffs = [float(v) for v in re.findall(r"max \|\w+ - parallel\|\s+= ([0-9.e-]+)", text)]
    assert len(diffs) == 2 and max(diffs) < 1e-5, diffs
    assert re.search(r"softmax  greedy \[", text) and re.search(r"dijiang  greedy \[", text)
    mib = {(m, int(c)): float(v) for m, c, v in re.findall(r"(\w+)\s+context\s+(\d+): .* cache\s+([0-9.]+) MiB", text)}
    assert mib[("dijiang", 32)] == mib[("dijiang", 128)] and mib[("softmax", 128)] > mib[("softmax", 32)]
    assert shows_image(outputs)
