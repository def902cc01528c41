"""Why prefix/dual caches cost accuracy: cached vs uncached logits along the cached decoder's own path.

  python -m benchmarks.dlm_cache_divergence                      # shipped Sudoku model, 200 puzzles
  python -m benchmarks.dlm_cache_divergence --checkpoint=/tmp/addition.npz

Two measurements on a trained model:

1. **Control** (is the cache implementation at fault?): accuracy of the block decoder (DCD
   ``static``, window 4, threshold 0.9, batch 1) with no cache vs prefix/dual caches at
   ``refresh_count`` 1 (a full refresh before every step: must equal no cache exactly if the cached
   path is correct), 2, 4, 8, 16; and DCD's ``-delayN`` ranges.
2. **Divergence** (eager replay of the static-window decoder with a prefix or dual cache, refresh
   at every block start and every ``refresh_count`` committed tokens): at each cached step the
   window's logits from the cached call are compared with a full forward on the same tokens:
   mean KL(full || cached) over the window's masked positions, the mean absolute difference of the
   max probability, the fraction of masked positions whose argmax differs, and the fraction of
   steps whose commit set differs -- grouped by the number of tokens committed since the last refresh.
"""

import argparse
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import print_table
from jaxlab.data.text_tasks import SPLIT_SEEDS
from jaxlab.dlm.decoding import DecodeConfig
from jaxlab.dlm.pretrained import load_checkpoint
from jaxlab.models.dlm import init_cache


def control(module, params, task, prompts, window=4, threshold=0.9):
    from benchmarks.dlm_decoding import run_decoder

    cfg = module.config
    base = DecodeConfig(window_type="static", generate_length=task.answer_length, block_size=window,
                        initial_window_length=window, decode_param=threshold, mask_id=cfg.mask_token_id,
                        pad_id=cfg.pad_token_id, eos_id=cfg.eos_token_id)
    rows = []
    none_tokens = run_decoder(module, params, prompts, base)[0]
    rows.append(dict(decoder="block", cache="none", refresh_count="-", accuracy=f"{task.check(none_tokens).mean():.3f}",
                     same_tokens_as_none="1.000"))
    settings = [("block", c, r) for c in ("prefix", "dual") for r in (1, 2, 4, 8, 16)]
    settings += [("DCD", "none", 1)] + [("DCD", c, r) for c in ("prefix", "dual", "prefix-delay2", "dual-delay2") for r in (1, 4)]
    for name, cache, refresh in settings:
        config = dataclasses.replace(base, cache_type=cache, refresh_count=refresh,
                                     window_type="static" if name == "block" else "sliding")
        tokens = run_decoder(module, params, prompts, config)[0]
        rows.append(dict(decoder=name, cache=cache, refresh_count=refresh if cache != "none" else "-",
                         accuracy=f"{task.check(tokens).mean():.3f}",
                         same_tokens_as_none=f"{np.mean(np.all(tokens == none_tokens, axis=1)):.3f}"))
    return rows


def _softmax(x):
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


def divergence(module, params, task, prompts, *, cache_kind, refresh_count, window=4, threshold=0.9):
    """Eager static-window decoding with a ``cache_kind`` cache; per cached step, cached vs full logits."""
    cfg = module.config
    mask = cfg.mask_token_id
    full = jax.jit(lambda ids: module.apply({"params": params}, ids))
    refresh = jax.jit(lambda ids, c: module.apply({"params": params}, ids, cache=c))
    cached = jax.jit(lambda ids, c, w: module.apply({"params": params}, ids, cache=c, write_mask=w))
    records = []  # (committed since refresh, kl, |dmaxprob|, argmax differs, decision differs)
    p, g = prompts.shape[1], task.answer_length
    length = p + g
    for prompt in prompts:
        x = np.concatenate([prompt, np.full(g, mask)])[None].astype(np.int32)
        left = p
        while (x == mask).any():
            right = min(left + window, length)
            c = refresh(jnp.asarray(x), init_cache(cfg, 1, length))[1]
            since = 0
            first = True
            while (x[0, left:right] == mask).any():
                logits_full = np.asarray(full(jnp.asarray(x)))[0]
                if first:  # the refresh call itself: exact
                    logits = logits_full
                else:
                    stop = length if cache_kind == "prefix" else right
                    rows = np.arange(length)
                    write = jnp.asarray((rows >= left) & (rows < stop))[None]
                    out, c = cached(jnp.asarray(x), c, write)
                    logits = np.asarray(out)[0]
                decide = []
                for lg in (logits_full, logits):
                    lg = lg[left:right].copy()
                    lg[:, mask] = -np.inf
                    prob = _softmax(lg.astype(np.float64))
                    conf, tok = prob.max(-1), prob.argmax(-1)
                    cand = x[0, left:right] == mask
                    n = max(int((cand & (conf >= threshold)).sum()), int(cand.any()))
                    order = np.argsort(-np.where(cand, conf, -np.inf), kind="stable")[:n]
                    decide.append((prob, conf, tok, cand, set(order.tolist())))
                (pf, cf, tf, cand, sf), (pc, cc, tc, _, sc) = decide
                if not first:
                    kl = np.sum(pf * (np.log(pf + 1e-30) - np.log(pc + 1e-30)), -1)
                    records.append((since, kl[cand].mean(), np.abs(cf - cc)[cand].mean(), (tf != tc)[cand].mean(),
                                    float(sf != sc)))
                for j in sc:
                    x[0, left + j] = tc[j]
                since += len(sc)
                first = False
                if since >= refresh_count and (x[0, left:right] == mask).any():
                    c = refresh(jnp.asarray(x), c)[1]
                    since, first = 0, True
            left = right
    records = np.array(records)
    out = []
    for k in sorted(set(records[:, 0].astype(int))):
        r = records[records[:, 0] == k]
        out.append(dict(cache=cache_kind, refresh_count=refresh_count, committed_since_refresh=k, steps=len(r),
                        kl=f"{r[:, 1].mean():.4f}", abs_dmaxprob=f"{r[:, 2].mean():.4f}",
                        argmax_differs=f"{r[:, 3].mean():.3f}", decision_differs=f"{r[:, 4].mean():.3f}"))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="sudoku")
    parser.add_argument("--num_examples", type=int, default=200)
    parser.add_argument("--skip_control", action="store_true")
    args = parser.parse_args()
    module, params, task, _ = load_checkpoint(args.checkpoint)
    prompts = task.prompts(SPLIT_SEEDS["test"], 0, args.num_examples)
    print(f"model {args.checkpoint}, task {task.name}, {args.num_examples} held-out prompts (shared CPU)")
    if not args.skip_control:
        rows = control(module, params, task, prompts)
        print_table(rows, list(rows[0]))
    rows = []
    for kind in ("prefix", "dual"):
        rows += divergence(module, params, task, prompts[: min(100, len(prompts))], cache_kind=kind, refresh_count=16)
    print_table(rows, list(rows[0]))


if __name__ == "__main__":
    main()
