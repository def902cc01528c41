"""RemeDi keep-top-K with a trained confidence head vs untrained heads and the token probability.

  python -m benchmarks.dlm_confidence_head                       # shipped Sudoku model, 3 head seeds
  python -m benchmarks.dlm_confidence_head --steps=300 --seeds=3 --num_examples=200 --budgets=2,4,8

For each seed a head (``jaxlab.dlm.confidence``: frozen backbone, ``--blocks`` extra blocks,
class-balanced BCE on "token is correct", ``--corrupt`` random corruption) is trained on the task's
training stream through the shared train loop (``configs/dlm.py:sudoku-confidence``; the seed is the
loop's ``config.seed``: head initialisation and the masking / corruption draws); then:

- ``AUROC``: on held-out decoding-like states (eval stream), how well the head and the token
  probability separate correct from wrong tokens, at still-masked positions (the proposal) and at
  committed positions (self-generated + ``--corrupt`` random errors);
- accuracy of ``remedi_generate`` (one block over the answer, F forwards, greedy proposals) ranked by
  the trained head, by an untrained head (random output layer, same seed), by a zero head (all ties:
  left to right), by the token probability and by the token logit (the last two are deterministic:
  no seed spread).

Every RemeDi row makes exactly F forwards, so rows at the same F are matched in compute (the head
adds ``--blocks`` blocks to each forward).
"""

import argparse
import time

import numpy as np

from benchmarks.common import device_name, print_table
from configs.dlm import get_config
from jaxlab.data.text_tasks import SPLIT_SEEDS
from jaxlab.dlm import remedi_generate
from jaxlab.dlm.confidence import add_confidence_head, evaluate_head, train_confidence_head
from jaxlab.dlm.pretrained import load_checkpoint


def _acc(task, module, params, prompts, steps: int, score: str) -> tuple[float, float]:
    g = task.answer_length
    r = remedi_generate(module, params, prompts, steps=steps, gen_length=g, block_length=g,
                        mask_id=module.config.mask_token_id, score=score)
    return float(task.check(r.tokens).mean()), float(r.num_remasked.sum() / len(prompts))


def _fmt(values) -> str:
    v = np.asarray(values, float)
    return f"{v.mean():.3f}" + (f" +- {v.std():.3f}" if len(v) > 1 else "")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", default="sudoku", help="shipped name or .npz (jaxlab.dlm.pretrained)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch_size", type=int, default=64)
    ap.add_argument("--learning_rate", type=float, default=3e-3)
    ap.add_argument("--blocks", type=int, default=1)
    ap.add_argument("--corrupt", type=float, default=0.3)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--num_examples", type=int, default=200)
    ap.add_argument("--budgets", default="2,4,8", help="forwards per example F")
    args = ap.parse_args(argv)
    module, params, task, meta = load_checkpoint(args.checkpoint)
    prompts = task.prompts(SPLIT_SEEDS["test"], 0, args.num_examples)
    budgets = [int(b) for b in args.budgets.split(",")]
    print(f"{args.checkpoint}: {task.name}, G={task.answer_length}, device {device_name()}", flush=True)
    acc = {}  # (name, F) -> [accuracy per seed]
    remasked = {}
    aurocs = {}
    for F in budgets:
        for score in ("prob", "logit"):
            a, rm = _acc(task, module, params, prompts, F, score)
            acc[(f"token {'probability' if score == 'prob' else 'logit'}", F)] = [a]
            remasked[(f"token {'probability' if score == 'prob' else 'logit'}", F)] = [rm]
    for seed in range(args.seeds):
        start = time.perf_counter()
        hm, hp, hist = train_confidence_head(get_config("sudoku-confidence"), module, params, meta["task"],
                                             steps=args.steps, batch_size=args.batch_size,
                                             learning_rate=args.learning_rate, blocks=args.blocks,
                                             corrupt=args.corrupt, seed=seed, log_every=max(1, args.steps // 3))
        print(f"seed {seed}: trained in {time.perf_counter() - start:.0f} s", flush=True)
        ev = evaluate_head(hm, hp, task, corrupt=args.corrupt, seed=100 + seed)
        for where in ("masked", "committed"):
            for which in ("head", "prob"):
                aurocs.setdefault((where, which), []).append(ev[where][f"auroc_{which}"])
            aurocs.setdefault((where, "wrong"), []).append(ev[where]["wrong"])
        heads = {"trained head": (hm, hp)}
        heads["untrained head (random)"] = add_confidence_head(module, params, blocks=args.blocks, init="random",
                                                               seed=seed)
        if seed == 0:
            heads["zero head (ties: left to right)"] = add_confidence_head(module, params, blocks=args.blocks)
        for name, (m, p) in heads.items():
            for F in budgets:
                a, rm = _acc(task, m, p, prompts, F, "head")
                acc.setdefault((name, F), []).append(a)
                remasked.setdefault((name, F), []).append(rm)
        print({k: _fmt(v) for k, v in acc.items()}, flush=True)
    names = list(dict.fromkeys(k[0] for k in acc))
    rows = [dict(score=n, **{f"F={F}": f"{_fmt(acc[(n, F)])} ({np.mean(remasked[(n, F)]):.1f})" for F in budgets})
            for n in names]
    print("\naccuracy (remasked tokens per example)")
    print_table(rows, list(rows[0]))
    print("\nAUROC for 'token is correct' on held-out decoding-like states (mean +- std over head seeds)")
    rows = [dict(positions=w, wrong_fraction=_fmt(aurocs[(w, "wrong")]), head=_fmt(aurocs[(w, "head")]),
                 probability=_fmt(aurocs[(w, "prob")])) for w in ("masked", "committed")]
    print_table(rows, list(rows[0]))


if __name__ == "__main__":
    main()
