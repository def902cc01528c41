"""Self-correction measured: accuracy vs forwards of block, DCD and the remasking samplers on trained DLMs.

  python -m benchmarks.dlm_decoding --mode=selfcorrect                       # shipped Sudoku model
  python -m benchmarks.dlm_decoding --mode=selfcorrect --train_steps=1000 --variant=addition

At a matched number of forwards F per example (F = G/2 and F = G for G answer tokens; every
decoder here uses exactly F forwards except DCD-threshold, whose count is reported), all
greedy in the token choice (argmax proposals), batch = all prompts at once (every sampler here
is batch-independent), one pass per seed:

- ``LLaDA block``: ``llada_generate`` low-confidence, one block (no remasking);
- ``DCD fixed``: sliding window 4, ``G/F`` commits per step (matched forwards);
- ``DCD threshold`` (reference point; its own forward count);
- ``ReMDM-{cap,rescale,conf,loop}``: ``remdm_generate`` with the script defaults' eta
  (cap 0.008, rescale 0.015; loop eta 0.02, t_on 0.55, t_off 0.05, alpha_on 0.9) and also a
  larger eta (cap/rescale 0.1 / 0.5) -- random unmask/remask positions, so 3 seeds;
- ``LLaDA-ReMDM``: ``llada_remask_generate`` with F/2 plain steps and F/2 remask steps, 1 token;
- ``RemeDi``: ``remedi_generate`` with F steps, one block.
"""

import dataclasses

import jax
import numpy as np

from jaxlab.data.text_tasks import SPLIT_SEEDS
from jaxlab.dlm import (
    DecodeConfig,
    ReMDMSchedule,
    decode,
    llada_generate,
    llada_remask_generate,
    remdm_generate,
    remedi_generate,
)


def selfcorrect(module, params, task, *, num_examples: int, seeds: int = 3, budgets=()) -> list[dict]:
    """``budgets``: forwards per example F (default ``G/2`` and ``G``)."""
    cfg = module.config
    mask = cfg.mask_token_id
    prompts = task.prompts(SPLIT_SEEDS["test"], 0, num_examples)
    g = task.answer_length
    rows = []

    def add(name, budget, fn, stochastic=False):
        accs, forwards, remasked = [], [], []
        for seed in range(seeds if stochastic else 1):
            tokens, nf, rm = fn(jax.random.key(seed))
            accs.append(task.check(tokens).mean())
            forwards.append(nf)
            remasked.append(rm)
        acc = np.array(accs)
        rows.append(dict(
            decoder=name, budget_F=budget, forwards=f"{np.mean(forwards):.2f}",
            accuracy=f"{acc.mean():.3f}" + (f" +- {acc.std():.3f} ({len(acc)} seeds)" if len(acc) > 1 else ""),
            remasked_per_example=f"{np.mean(remasked):.2f}",
        ))
        print(rows[-1], flush=True)

    def res(r):
        return r.tokens, r.num_forward, float(np.sum(r.num_remasked) / len(prompts))

    dcd_base = DecodeConfig(window_type="sliding", generate_length=g, initial_window_length=4, mask_id=mask,
                            pad_id=cfg.pad_token_id, eos_id=cfg.eos_token_id)
    r = decode(module, params, prompts, dataclasses.replace(dcd_base, decode_param=0.9))
    rows.append(dict(decoder="DCD threshold 0.9 (batched)", budget_F="-", forwards=f"{r.num_forward}",
                     accuracy=f"{task.check(r.tokens).mean():.3f}", remasked_per_example="0.00"))
    for budget in sorted(set(budgets) or {max(1, g // 2), g}):
        per = -(-g // budget)
        add("LLaDA block (low-conf)", budget,
            lambda k: res_llada(llada_generate(module, params, prompts, steps=budget, gen_length=g, block_length=g,
                                               mask_id=mask)))
        r = decode(module, params, prompts, dataclasses.replace(dcd_base, decode_algo="fixed", decode_param=per))
        rows.append(dict(decoder=f"DCD fixed {per}/step", budget_F=budget, forwards=f"{r.num_forward}",
                         accuracy=f"{task.check(r.tokens).mean():.3f}", remasked_per_example="0.00"))
        schedules = [("cap", 0.008), ("cap", 0.1), ("rescale", 0.015), ("rescale", 0.5), ("conf", None), ("loop", 0.02)]
        for kind, eta in schedules:
            sched = ReMDMSchedule(kind, eta=eta)
            try:
                sched.validate(budget)
            except ValueError as err:
                print(f"skip ReMDM-{kind} at F={budget}: {err}")
                continue
            add(f"ReMDM-{kind}" + (f" eta={eta}" if eta is not None else ""), budget,
                lambda k, s=sched: res(remdm_generate(module, params, prompts, steps=budget, gen_length=g, schedule=s,
                                                      temperature=0.0, mask_id=mask, rng=k)), stochastic=True)
        if budget >= 2:
            add("LLaDA-ReMDM (F/2 + F/2 remask)", budget,
                lambda k: res(llada_remask_generate(module, params, prompts, steps=budget // 2, gen_length=g,
                                                    block_length=g, mask_id=mask, remask_steps=budget - budget // 2,
                                                    remask_number=1, remask_start=7 / 8)))
        if budget > g:
            print(f"skip RemeDi at F={budget}: keep-top-K takes at most one step per answer token (G={g})")
            continue
        add("RemeDi keep-top-K (prob)", budget,
            lambda k: res(remedi_generate(module, params, prompts, steps=budget, gen_length=g, block_length=g,
                                          mask_id=mask)))
    return rows


def res_llada(r):
    return r.tokens, r.num_forward, 0.0


def remask_cache_accuracy(module, params, task, *, num_examples: int, block: int = 4) -> list[dict]:
    """Accuracy of the block-local remasking samplers with Fast-dLLM's block caches (none / prefix / dual):
    blocks of ``block``, 2 steps per block (RemeDi) or 2 plain + 2 remask steps per block (LLaDA-ReMDM,
    one token), all prompts as one batch. Token agreement with the uncached run is reported too."""
    mask = module.config.mask_token_id
    prompts = task.prompts(SPLIT_SEEDS["test"], 0, num_examples)
    g = task.answer_length
    per_block = 2 * (g // block)
    samplers = {
        "RemeDi keep-top-K": lambda c: remedi_generate(module, params, prompts, steps=per_block, gen_length=g,
                                                       block_length=block, mask_id=mask, cache=c),
        "LLaDA-ReMDM (remask 1)": lambda c: llada_remask_generate(module, params, prompts, steps=per_block,
                                                                  gen_length=g, block_length=block, mask_id=mask,
                                                                  remask_steps=2, remask_start=0.5, cache=c),
    }
    rows = []
    for name, fn in samplers.items():
        ref = fn("none")
        for cache in ("none", "prefix", "dual"):
            r = ref if cache == "none" else fn(cache)
            rows.append(dict(decoder=name, cache=cache, forwards=r.num_forward,
                             accuracy=f"{task.check(r.tokens).mean():.3f}",
                             same_tokens_as_none=f"{np.mean(np.all(r.tokens == ref.tokens, axis=1)):.3f}"))
            print(rows[-1], flush=True)
    return rows
