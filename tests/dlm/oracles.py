"""Deliberately plain, eager re-statements of the DCD and Fast-dLLM decoding loops for the tests.

It follows the reference's control flow literally -- Python loops over rows, a float64 refresh
counter, cached calls that recompute exactly ``[start, stop)`` -- so the jitted, static-shape decoder
in ``jaxlab.dlm.decoding`` can be checked on cases the golden files do not cover (EOS in the
middle, prompts and lengths that are not multiples of the block, delayed caches, ...). The network
itself is jaxlab's (checked against the reference separately).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.dlm.cache import parse_cache_type
from jaxlab.models.dlm import init_cache


class _Model:
    """Full, refreshing and cached calls of the network (each compiled once)."""

    def __init__(self, module, params):
        self.module, self.params = module, params

    @functools.cached_property
    def _full(self):
        return jax.jit(lambda p, ids: self.module.apply({"params": p}, ids))

    @functools.cached_property
    def _refresh(self):
        return jax.jit(lambda p, ids, c: self.module.apply({"params": p}, ids, cache=c))

    @functools.cached_property
    def _cached(self):
        return jax.jit(lambda p, ids, c, w: self.module.apply({"params": p}, ids, cache=c, write_mask=w))

    def full(self, tokens):
        return np.asarray(self._full(self.params, tokens))

    def refresh(self, tokens):
        cache = init_cache(self.module.config, *tokens.shape)
        logits, cache = self._refresh(self.params, tokens, cache)
        return np.asarray(logits), cache

    def cached(self, tokens, cache, start, stop):
        """``tokens[:, start:stop]`` recomputed against ``cache`` (rows written in place) -> their logits.

        Fed as the whole sequence with only ``[start, stop)`` written: the other rows' outputs are
        dropped, so this equals the exact-width call and compiles once.
        """
        rows = np.arange(tokens.shape[1])
        write = jnp.asarray((rows >= start) & (rows < stop))[None]
        logits, cache = self._cached(self.params, jnp.asarray(tokens, jnp.int32), cache, write)
        return np.asarray(logits)[:, start:stop], cache


def _softmax(x):
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


def oracle_factor_count(sorted_conf, factor):
    """Fast-dLLM ``get_transfer_index_dynamic``'s loop, literally: how many of ``sorted_conf`` (descending) to commit."""
    if not len(sorted_conf):
        return 0  # the reference raises here; the batched decoders commit nothing in such a row
    threshs = [1 - factor / (n + 1) for n in range(1, len(sorted_conf) + 1)]
    threshs[0] = -1
    top_i = 0
    for top_i in range(len(threshs)):
        if sorted_conf[top_i] < threshs[top_i]:
            break
    if top_i == 0 or top_i == len(threshs) - 1:
        top_i += 1
    return top_i


def oracle_decode(module, params, prompt, cfg):
    """Returns ``(tokens, trace)`` with trace keys window / forward_length / pass_cache / num_committed / commit_step."""
    model = _Model(module, params)
    prompt = np.asarray(prompt)
    batch, p = prompt.shape
    length = p + cfg.generate_length
    w0, block, mask = cfg.initial_window_length, cfg.block_size, cfg.mask_id
    sliding = cfg.window_type == "sliding"
    kind, delay = parse_cache_type(cfg.cache_type)
    left, right = (p, p + w0) if sliding else (p, p + block)
    num_mask = [w0] * batch
    tokens = np.full((batch, length), mask, np.int64)
    tokens[:, :p] = prompt
    commit_step = np.where(np.arange(length) < p, -1, -2)[None].repeat(batch, 0)
    cache, since, eos_pos = None, float("inf"), [length] * batch
    trace = dict(window=[], forward_length=[], pass_cache=[], num_committed=[])
    old_left = p
    step = 0
    while (tokens == mask).any():
        passed = 0
        if kind == "none":
            logits, flen = model.full(tokens)[:, left:right], length
        elif since >= cfg.refresh_count:
            full, cache = model.refresh(tokens)
            logits, flen, since = full[:, left:right], length, 0.0
        else:
            passed = 1
            start = left if delay is None else max(old_left - delay, p)
            if kind == "prefix":
                stop = length
            else:
                stop = right if delay is None else min(right + delay, length)
            out, cache = model.cached(tokens, cache, start, stop)
            logits, flen = out[:, left - start : right - start], stop - start
        logits = logits.copy()
        logits[..., mask] = -np.inf
        probs = _softmax(logits.astype(np.float32))
        conf, tok = probs.max(-1), probs.argmax(-1)
        if cfg.decode_algo.startswith("topk_margin"):
            top2 = np.sort(probs, -1)[..., ::-1]
            conf = top2[..., 0] - top2[..., 1]
        cand = tokens[:, left:right] == mask
        if cfg.decode_algo.endswith("fixed"):
            n = np.minimum(cand.sum(1), int(cfg.decode_param))
        elif cfg.decode_algo.endswith("factor"):
            n = np.array([oracle_factor_count(np.sort(conf[i][cand[i]])[::-1], cfg.decode_param) for i in range(batch)])
        else:
            n = np.maximum((cand & (conf >= cfg.decode_param)).sum(1), cand.any(1))
        total = 0
        committed = []
        for i in range(batch):
            scores = np.where(cand[i], conf[i], -np.inf)
            idx = np.argsort(-scores, kind="stable")[: n[i]] + left
            tokens[i, idx] = tok[i, idx - left]
            commit_step[i, idx] = step
            total += len(idx)
            committed.append(len(idx))
            if sliding:
                num_mask[i] -= len(idx)
            if (tokens[i, idx] == cfg.eos_id).any():
                e = idx[tokens[i, idx] == cfg.eos_id].min()
                if sliding:
                    total += int((tokens[i, e + 1 : eos_pos[i]] == mask).sum())
                    num_mask[i] -= int((tokens[i, e + 1 : right] == mask).sum())
                    tokens[i, e + 1 : eos_pos[i]] = cfg.pad_id
                eos_pos[i] = min(e, eos_pos[i])
        trace["window"].append((left, right))
        trace["forward_length"].append(flen)
        trace["pass_cache"].append(passed)
        trace["num_committed"].append(committed)
        since += total / batch
        old_left = left
        step += 1
        if sliding:
            while left < length and (tokens[:, left] != mask).all():
                left += 1
            new_right = min(right + w0 - max(num_mask), left + cfg.max_window_length, max(eos_pos))
            for i in range(batch):
                if eos_pos[i] == length:
                    num_mask[i] += new_right - right
            right = new_right
        elif (tokens[:, left:right] != mask).all():
            left, right = right, min(right + block, length)
            since = float("inf")
            for i in range(batch):
                if eos_pos[i] < length:
                    tokens[i, eos_pos[i] :] = cfg.pad_id
            if max(eos_pos) < length:
                break
    trace = {k: np.asarray(v) for k, v in trace.items()}
    trace["commit_step"] = commit_step
    return tokens, trace


def oracle_fastdllm(module, params, prompt, *, steps, gen_length, block_length, mask_id, threshold, cache, factor=None):
    """Fast-dLLM's ``generate`` / ``generate_with_prefix_cache`` / ``generate_with_dual_cache`` (SPEC section 5).

    Returns ``(x, trace)``; trace: num_forward, commit_step, num_committed [nfe, B], cached_call, recomputed_range.
    """
    model = _Model(module, params)
    prompt = np.asarray(prompt)
    batch, p = prompt.shape
    length = p + gen_length
    num_blocks = gen_length // block_length
    per_block = steps // num_blocks
    x = np.full((batch, length), mask_id, np.int64)
    x[:, :p] = prompt
    commit_step = np.where(np.arange(length) < p, -1, -2)[None].repeat(batch, 0)
    trace = dict(num_committed=[], cached_call=[], recomputed_range=[])
    nfe = 0

    def commit(logits, fed_start, start, end, schedule, i, cached, fed_stop):
        nonlocal nfe
        x0 = logits.argmax(-1)
        conf = np.take_along_axis(_softmax(logits.astype(np.float32)), x0[..., None], -1)[..., 0]
        positions = np.arange(fed_start, fed_start + logits.shape[1])
        eligible = (x[:, fed_start : fed_start + logits.shape[1]] == mask_id) & (positions < end)[None]
        counts = []
        for row in range(batch):
            scores = np.where(eligible[row], conf[row], -np.inf)
            if factor is not None:
                k = oracle_factor_count(np.sort(conf[row][eligible[row]])[::-1], factor)
            else:
                k = int(eligible[row].sum()) if threshold is not None else int(schedule[row, i])
            order = np.argsort(-scores, kind="stable")[:k]
            if threshold is not None:
                order = order[[0 == j or scores[o] >= threshold for j, o in enumerate(order)]]
            x[row, positions[order]] = x0[row, order]
            commit_step[row, positions[order]] = nfe
            counts.append(len(order))
        trace["num_committed"].append(counts)
        trace["cached_call"].append(int(cached))
        trace["recomputed_range"].append((fed_start, fed_stop) if cached else (0, length))
        nfe += 1

    for b in range(num_blocks):
        start, end = p + b * block_length, p + (b + 1) * block_length
        m = (x[:, start:end] == mask_id).sum(1)
        schedule = np.array([[m_ // per_block + (j < m_ % per_block) for j in range(per_block)] for m_ in m])
        if cache == "none":
            i = 0
            while True:
                commit(model.full(x), 0, start, end, schedule, i, False, length)
                i += 1
                if not (x[:, start:end] == mask_id).any():
                    break
            continue
        logits, kv = model.refresh(x)
        commit(logits, 0, start, end, schedule, 0, False, length)
        i = 1
        while True:
            stop = end if cache == "dual" else length
            logits, kv = model.cached(x, kv, start, stop)
            commit(logits, start, start, end, schedule, i, True, stop)
            if not (x[:, start:end] == mask_id).any():
                break
            i += 1
    trace = {k: np.asarray(v) for k, v in trace.items()}
    trace.update(num_forward=nfe, commit_step=commit_step)
    return x, trace


def oracle_mdlm(module, params, prompt, *, steps, gen_length, temperature, mask_id, rng):
    """The MDLM ancestral sampler on the log-linear schedule, one row and one step at a time.

    No remasking code at all: a masked position is unmasked with probability ``(t - s) / t``
    (``= (alpha_s - alpha_t) / (1 - alpha_t)``), a committed one is kept. Random numbers come from
    ``remdm_draws`` with the row's key, so ReMDM with ``sigma = 0`` must reproduce it exactly.
    """
    from jaxlab.dlm.remasking import remdm_draws

    model = _Model(module, params)
    prompt = np.asarray(prompt)
    batch, p = prompt.shape
    x = np.full((batch, p + gen_length), mask_id, np.int64)
    x[:, :p] = prompt
    t = 1 - np.arange(steps + 1) / steps
    for i in range(steps):
        logits = model.full(jnp.asarray(x, jnp.int32)).astype(np.float32)
        logits[..., mask_id] = -np.inf
        alpha_t, alpha_s = np.float32(1 - t[i]), np.float32(1 - t[i + 1])
        for b in range(batch):
            g, u = map(np.asarray, remdm_draws(jax.random.fold_in(rng, b), i, p, gen_length, logits.shape[-1]))
            tok = np.argmax(logits[b] / np.float32(temperature) + g, -1)
            prob = np.float32((alpha_s - alpha_t) / (np.float32(1) - alpha_t))
            unmask = (x[b] == mask_id) & (np.arange(x.shape[1]) >= p) & (u < prob)
            x[b, unmask] = tok[unmask]
    return x
