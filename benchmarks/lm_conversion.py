"""DiJiang's claim in miniature: held-out perplexity of a softmax LM, its DiJiang conversion, and DiJiang from scratch.

  python -m benchmarks.lm_conversion --root=/tmp/lm_claim      # trains what is missing, then evaluates

Runs (each ``python -m launch.train``, skipped when its workdir is already finished):

1. ``configs/lm.py:tiny-softmax`` in ``ROOT/softmax``;
2. ``configs/lm.py:tiny-dijiang`` in ``ROOT/dijiang_converted``, initialised from run 1 by
   ``jaxlab.lm.convert_to_dijiang`` and fine-tuned on 1/16 of run 1's tokens;
3. ``configs/lm.py:tiny-dijiang-scratch`` in ``ROOT/dijiang_scratch``: the same steps from scratch.

It prints the held-out perplexity (the eval documents of ``jaxlab.lm.data``, document-masked
64-token windows) of each, plus the converted model before any fine-tuning.
"""

import argparse
import pathlib
import subprocess
import sys

import jax

from benchmarks.common import print_table
from configs.lm import TINY_DATA, get_config
from jaxlab.lm.conversion import convert_to_dijiang
from jaxlab.lm.data import PackedCorpus, parse_spec
from jaxlab.lm.task import perplexity
from jaxlab.models.lm import CausalLM
from jaxlab.train.params_io import load_model

RUNS = (("softmax", "tiny-softmax", None), ("dijiang_converted", "tiny-dijiang", "softmax"),
        ("dijiang_scratch", "tiny-dijiang-scratch", None))


def _train(root: pathlib.Path, name: str, variant: str, source: str | None) -> None:
    workdir = root / name
    steps = get_config(variant).training.num_steps
    if (workdir / "checkpoints" / str(steps)).exists():
        return
    cmd = [sys.executable, "-m", "launch.train", f"--config=configs/lm.py:{variant}", f"--workdir={workdir}"]
    if source:
        cmd.append(f"--config.init.from_workdir={root / source}")
    subprocess.run(cmd, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="/tmp/lm_claim")
    args = parser.parse_args()
    root = pathlib.Path(args.root).absolute()
    for run in RUNS:
        _train(root, *run)
    windows = PackedCorpus(**parse_spec(TINY_DATA), split="eval").windows()
    rows = []
    softmax_tokens = get_config("tiny-softmax").training
    for name, variant, _ in RUNS:
        module, params = load_model(root / name)
        cfg = get_config(variant).training
        rows.append({"model": name, "train steps": cfg.num_steps,
                     "train tokens": cfg.num_steps * cfg.global_batch_size * windows["tokens"].shape[1],
                     "held-out ppl": f"{perplexity(module, params, windows):.2f}"})
        if name == "softmax":
            dcfg, dparams = convert_to_dijiang(params, module.config, jax.random.key(0))
            converted = {"model": "dijiang_converted (no fine-tune)", "train steps": 0, "train tokens": 0,
                         "held-out ppl": f"{perplexity(CausalLM(dcfg), dparams, windows):.2f}"}
    rows.insert(1, converted)
    print(f"held-out: {windows['tokens'].size} tokens in {len(windows['tokens'])} windows; softmax run: "
          f"{softmax_tokens.num_steps} steps x {softmax_tokens.global_batch_size} windows")
    print_table(rows, ["model", "train steps", "train tokens", "held-out ppl"])


if __name__ == "__main__":
    main()
