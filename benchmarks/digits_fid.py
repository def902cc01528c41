"""Digits FID over the saved checkpoints of a digits training run (does the metric rank models?).

  python -m launch.train --config=configs/dit.py:digits --workdir=/tmp/fid_digits \
      --config.checkpoint.every_steps=500 --config.checkpoint.keep_last=10
  python -m benchmarks.digits_fid --workdir=/tmp/fid_digits --num_samples=500 --seeds=0,1

For every checkpoint in ``--workdir`` (EMA params), draws ``--num_samples`` samples with the run's
own sampling config (``config.json``: sampler, steps, guidance scale; labels cycle through the 10
classes), and prints digits FID / IS / precision / recall against all 1,797 real digits
(``jaxlab.eval.digits_features``), plus "label acc": how often the digits classifier reads the
class the sample was conditioned on. The first row is the floor: the 500 real test-split digits
against the real train split (disjoint images). FID falls with the sample count, so compare rows
at one ``--num_samples``.

``--seeds=0,1`` samples every checkpoint once per sampling seed (different noise, the same
weights), and a second table gives, per checkpoint, the FID of each seed, their mean and their
spread (max - min): a change between checkpoints no larger than the spread is within sampling noise.
``--json`` appends every row as soon as it is measured (one JSON object per line), so a long run
that is stopped keeps what it measured; ``--from_json=rows.jsonl`` prints the tables of such a
file (several runs of the script appended to one file) without sampling anything.
"""

import argparse
import functools
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


@functools.lru_cache(maxsize=None)
def run_sampler(workdir: pathlib.Path, cfg_scale: float | None = None):
    """``(jitted class sampler, sample config, num_classes)`` of a run (``cfg_scale`` overrides the run's guidance).

    Built once per run, so every checkpoint and seed reuses one compile.
    """
    config = json.loads((workdir / "config.json").read_text())
    module, _ = load_model(workdir)
    s = dict(config["sample"], **({} if cfg_scale is None else {"cfg_scale": cfg_scale}))
    diffusion = sampling_diffusion(s["sampler"], s["num_steps"], module.config.learn_sigma, **config["diffusion"])
    sample = make_class_sampler(
        module, diffusion, sampler=s["sampler"], cfg_scale=s["cfg_scale"], eta=s["eta"], clip_denoised=s["clip_denoised"]
    )
    return sample, s, module.config.num_classes


def sample_checkpoint(workdir: pathlib.Path, step: int, num_samples: int, batch_size: int, seed: int,
                      cfg_scale: float | None = None):
    """``(samples [N, S, S, C] in [-1, 1], labels [N], sample config)`` from checkpoint ``step``'s EMA params.

    Batch ``i`` uses the noise ``fold_in(key(seed), i * batch_size)``: the first ``M`` samples of a
    larger ``num_samples`` are the samples of ``num_samples=M`` (same ``batch_size``).
    """
    sample, s, num_classes = run_sampler(workdir, cfg_scale)
    _, params = load_model(workdir, step=step)
    labels = np.arange(num_samples, dtype=np.int32) % num_classes
    key = jax.random.key(seed)
    chunks = [
        np.asarray(sample(params, jnp.asarray(labels[i : i + batch_size]), jax.random.fold_in(key, i)))
        for i in range(0, num_samples, batch_size)
    ]
    return np.concatenate(chunks), labels, s


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", help="a digits training workdir (launch.train)")
    parser.add_argument("--from_json", default=None, help="only print the tables of a --json file written before")
    parser.add_argument("--num_samples", type=int, default=500)
    parser.add_argument("--batch_size", type=int, default=250)
    parser.add_argument("--seeds", default="0", help="comma-separated sampling seeds; each checkpoint is sampled once per seed")
    parser.add_argument("--cfg_scale", type=float, default=None,
                        help="guidance scale (default: the run's sample.cfg_scale; 1.0 = no guidance)")
    parser.add_argument("--steps", default="", help="comma-separated checkpoint steps (default: all)")
    parser.add_argument("--json", default=None, help="also append every row to this JSON-lines file as it is measured")
    args = parser.parse_args()
    if args.from_json:
        rows = [json.loads(line) for line in pathlib.Path(args.from_json).read_text().splitlines() if line.strip()]
        rows.sort(key=lambda r: (r["step"], r["seed"]))
        print_tables(rows, sorted({r["seed"] for r in rows}))
        return
    if not args.workdir:
        parser.error("--workdir is required (or --from_json to print saved rows)")

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
    rows = [dict(model=f"real test ({len(test_idx)}) vs real train ({len(train_idx)})", step="-", seed="-",
                 fid=floor["digits_fid"], IS=floor["digits_is"], precision=floor["digits_precision"],
                 recall=floor["digits_recall"], label_acc="-", num_samples=len(test_idx), sample_s="-")]
    seeds = [int(x) for x in args.seeds.split(",") if x]
    if not seeds:
        raise SystemExit("--seeds is empty; give at least one sampling seed, e.g. --seeds=0,1")
    for step in sorted(steps):
        for seed in seeds:
            start = time.perf_counter()
            samples, labels, s = sample_checkpoint(workdir, step, args.num_samples, args.batch_size, seed, args.cfg_scale)
            seconds = time.perf_counter() - start
            feats = features(samples)
            scores = df.digits_scores(feats, ref)
            row = dict(
                model=f"{workdir.name} {s['sampler']}-{s['num_steps']} cfg {s['cfg_scale']}", step=step, seed=seed,
                fid=scores["digits_fid"], IS=scores["digits_is"], precision=scores["digits_precision"],
                recall=scores["digits_recall"], label_acc=float((feats["probs"].argmax(-1) == labels).mean()),
                num_samples=args.num_samples, sample_s=round(seconds, 1),
            )
            rows.append(row)
            print(f"step {step} seed {seed}: digits FID {scores['digits_fid']:.3f} ({seconds:.0f} s)", flush=True)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps(row) + "\n")
    print(f"digits metric, N={args.num_samples} samples per row vs {len(real)} real digits at {size}x{size}")
    print_tables(rows, seeds)


def print_tables(rows: list[dict], seeds: list[int]) -> None:
    """Every row, then the per-checkpoint seed summary (of the rows that have a checkpoint step)."""
    fmt = lambda r: {k: (f"{v:.3f}" if isinstance(v, float) else v) for k, v in r.items()}
    print_table([fmt(r) for r in rows], list(rows[0]))
    print()
    print_table(seed_summary([r for r in rows if r["step"] != "-"], seeds),
                ["step", *[f"FID seed {x}" for x in seeds], "mean", "spread", "label acc"])


def seed_summary(rows: list[dict], seeds: list[int]) -> list[dict]:
    """Per checkpoint: the FID of every sampling seed, their mean and spread (max - min), mean label accuracy."""
    out = []
    for step in sorted({r["step"] for r in rows}):
        fid = {r["seed"]: r["fid"] for r in rows if r["step"] == step}
        acc = [r["label_acc"] for r in rows if r["step"] == step]
        vals = list(fid.values())
        out.append({"step": step, **{f"FID seed {x}": f"{fid[x]:.1f}" if x in fid else "-" for x in seeds},
                    "mean": f"{np.mean(vals):.1f}", "spread": f"{max(vals) - min(vals):.1f}" if len(vals) > 1 else "-", "label acc": f"{np.mean(acc):.3f}"})
    return out


if __name__ == "__main__":
    main()
