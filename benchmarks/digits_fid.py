"""Digits FID over the saved checkpoints of a digits training run (does the metric rank models?).

  python -m launch.train --config=configs/dit.py:digits --workdir=/tmp/fid_digits \
      --config.checkpoint.every_steps=500 --config.checkpoint.keep_last=10
  python -m benchmarks.digits_fid --workdir=/tmp/fid_digits --num_samples=500

For every checkpoint in ``--workdir`` (EMA params), draws ``--num_samples`` samples with the run's
own sampling config (``config.json``: sampler, steps, guidance scale; labels cycle through the 10
classes), and prints digits FID / IS / precision / recall against all 1,797 real digits
(``jaxlab.eval.digits_features``), plus "label acc": how often the digits classifier reads the
class the sample was conditioned on. The first row is the floor: the 500 real test-split digits
against the real train split (the same sample count, disjoint images). FID falls with the sample
count, so compare rows at one ``--num_samples``.
"""

import argparse
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import print_table
from jaxlab.data.digits import load_digits
from jaxlab.diffusion.pipeline import make_class_sampler, sampling_diffusion
from jaxlab.eval import digits_features as df
from jaxlab.train.checkpoint import Checkpointer
from jaxlab.train.params_io import load_model


def sample_checkpoint(workdir: pathlib.Path, step: int, num_samples: int, batch_size: int, seed: int):
    """``(samples [N, S, S, C] in [-1, 1], labels [N])`` from checkpoint ``step``'s EMA params."""
    config = json.loads((workdir / "config.json").read_text())
    module, params = load_model(workdir, step=step)
    s = config["sample"]
    diffusion = sampling_diffusion(s["sampler"], s["num_steps"], module.config.learn_sigma, **config["diffusion"])
    sample = make_class_sampler(
        module, diffusion, sampler=s["sampler"], cfg_scale=s["cfg_scale"], eta=s["eta"], clip_denoised=s["clip_denoised"]
    )
    labels = np.arange(num_samples, dtype=np.int32) % module.config.num_classes
    key = jax.random.key(seed)
    chunks = [
        np.asarray(sample(params, jnp.asarray(labels[i : i + batch_size]), jax.random.fold_in(key, i)))
        for i in range(0, num_samples, batch_size)
    ]
    return np.concatenate(chunks), labels, s


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="a digits training workdir (launch.train)")
    parser.add_argument("--num_samples", type=int, default=500)
    parser.add_argument("--batch_size", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", default="", help="comma-separated checkpoint steps (default: all)")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args()

    workdir = pathlib.Path(args.workdir).absolute()
    steps = [int(s) for s in args.steps.split(",") if s] or Checkpointer(workdir / "checkpoints").all_steps()
    if not steps:
        raise SystemExit(f"{workdir} has no checkpoints")
    features = df.DigitsFeatures()
    size = json.loads((workdir / "config.json").read_text())["model"]["input_size"]
    real = load_digits(size)[0]
    ref = features(real)
    train_idx, test_idx = df.split_indices(len(real))
    floor = df.digits_scores(features(real[test_idx]), features(real[train_idx]), force=True)
    rows = [dict(model="real test vs real train", step="-", fid=floor["digits_fid"], IS=floor["digits_is"],
                 precision=floor["digits_precision"], recall=floor["digits_recall"], label_acc="-", sample_s="-")]
    for step in sorted(steps):
        start = time.perf_counter()
        samples, labels, s = sample_checkpoint(workdir, step, args.num_samples, args.batch_size, args.seed)
        seconds = time.perf_counter() - start
        feats = features(samples)
        scores = df.digits_scores(feats, ref)
        rows.append(dict(
            model=f"{workdir.name} {s['sampler']}-{s['num_steps']} cfg {s['cfg_scale']}", step=step,
            fid=scores["digits_fid"], IS=scores["digits_is"], precision=scores["digits_precision"],
            recall=scores["digits_recall"], label_acc=float((feats["probs"].argmax(-1) == labels).mean()),
            sample_s=round(seconds, 1),
        ))
        print(f"step {step}: digits FID {scores['digits_fid']:.3f}", flush=True)
    shown = [{k: (f"{v:.3f}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows]
    print(f"digits metric, N={args.num_samples} samples per row vs {len(real)} real digits at {size}x{size}")
    print_table(shown, list(shown[0]))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
