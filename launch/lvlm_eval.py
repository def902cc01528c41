"""Held-out accuracy (per question type) and PTD of trained shapes-VQA LVLMs; prints a table.

  python -m launch.lvlm_eval --workdir=/tmp/lvlm_1d --workdir=/tmp/lvlm_circle [--json=out.json]

One row per workdir (its scheme and ``config.seed``); when a scheme has runs of several seeds, a
second table gives mean ± std over the seeds (``jaxlab.lvlm.seeds``) and marks which schemes
differ from Circle-RoPE by more than seed noise.

Each workdir is a ``configs/lvlm.py:shapes-<scheme>`` run; accuracy is exact match of the two
answer tokens (greedy) on the first ``--num_examples`` examples of the held-out ``eval`` stream.
PTD (``jaxlab.lvlm.ptd``) is measured on the same layout (one example's prompt), per position
scheme the model's layers use, averaged over the layers.
"""

import json
import pathlib

import numpy as np
from absl import app, flags

from jaxlab import cli
from jaxlab.data import shapes_vqa
from jaxlab.lvlm.positions import rope_index
from jaxlab.lvlm.ptd import ptd
from jaxlab.lvlm.seeds import exceeds_seed_noise, seed_summary
from jaxlab.lvlm.task import VQATask
from jaxlab.train.params_io import load_model

_WORKDIRS = flags.DEFINE_multi_string("workdir", None, "training workdirs (repeat the flag)", required=True)
_NUM = flags.DEFINE_integer("num_examples", 1000, "held-out examples")
_JSON = flags.DEFINE_string("json", None, "also write the results here (must not exist)")


def layout_ptd(config, task: VQATask) -> float:
    """PTD of the model's layers on the shapes layout (mean over layers of its scheme's PTD)."""
    ex = task.data.example(shapes_vqa.SPLIT_SEEDS["eval"], 0)
    ids, mask = ex["input_ids"][None], ex["attention_mask"][None]
    grid = task.data.image_grid_thw
    per_scheme = {}
    for s in config.position_sets:
        pos, _ = rope_index(ids, grid, mask, s, config.rope_options())
        per_scheme[s] = ptd(pos, ids, mask, grid, config.image_token_id, config.spatial_merge_size)["ptd_mean_over_images"]
    return float(np.mean([per_scheme[s] for s in config.layer_schemes]))


def main(argv):
    del argv
    if _JSON.value and pathlib.Path(_JSON.value).exists():
        raise app.UsageError(f"--json {_JSON.value} exists; pick a new path")
    rows = []
    for workdir in _WORKDIRS.value:
        module, params = load_model(workdir)
        seed = json.loads((pathlib.Path(workdir) / "config.json").read_text()).get("seed")
        task = VQATask(module)
        acc = task.evaluate(params, "eval", _NUM.value)
        if not np.isfinite(acc["all"]):
            raise FloatingPointError(f"{workdir}: non-finite accuracy")
        rows.append(dict(acc, scheme=str(module.config.position_scheme), seed=seed,
                         ptd=layout_ptd(module.config, task), workdir=workdir))
    cols = ["all", *shapes_vqa.QUESTION_TYPES, "ptd"]
    print("| scheme | seed | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 2) + "|")
    for r in rows:
        print(f"| {r['scheme']} | {r['seed']} | " + " | ".join(f"{r[c]:.3f}" for c in cols) + " |")
    summary = seed_summary(rows, cols)
    if any(s["n"] > 1 for s in summary.values()):
        print("\nmean ± std over seeds (ddof=1); * = 'all' differs from circle by > 2 standard errors")
        print("| scheme | seeds | " + " | ".join(cols) + " |")
        print("|---" * (len(cols) + 2) + "|")
        base = summary.get("circle")
        for name, s in summary.items():
            mark = ""
            if base is not None and name != "circle" and min(s["n"], base["n"]) > 1:
                mark = " *" if exceeds_seed_noise(s["all"], base["all"], s["n"], base["n"]) else ""
            cells = [f"{s[c][0]:.3f} ± {s[c][1]:.3f}" for c in cols]
            print(f"| {name}{mark} | {','.join(map(str, s['seeds']))} | " + " | ".join(cells) + " |")
    if _JSON.value:
        pathlib.Path(_JSON.value).write_text(json.dumps({"runs": rows, "summary": summary}, indent=1))

if __name__ == "__main__":
    cli.run(main)
