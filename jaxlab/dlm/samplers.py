"""Block (semi-autoregressive) samplers: LLaDA's ``generate`` and Fast-dLLM's cached variants.

- ``llada_generate``: ``ML-GSAI/LLaDA`` ``generate.py``: ``gen_length / block_length`` blocks, the
  ``steps`` budget split evenly over them; each step is one full forward and commits the
  ``get_num_transfer_tokens`` schedule's count of the most confident masked positions of the current
  block (``remasking='low_confidence'``) or random ones (``'random'``). Optional classifier-free
  guidance (``cfg_scale``) and Gumbel sampling (``temperature``).
- ``fastdllm_generate``: ``NVlabs/Fast-dLLM`` ``llada/generate.py``: ``generate`` (``cache='none'``),
  ``generate_with_prefix_cache`` (``'prefix'``) and ``generate_with_dual_cache`` (``'dual'``), with
  the fixed schedule or the confidence ``threshold`` rule (top-1 always, others if >= threshold).
  Each cached block starts with a full forward that builds the cache *and* commits; the cached loop
  then runs at least once, even if that first call finished the block (the reference counts it).

Neither reference suppresses the [MASK] logit (DCD's decoder does). Both loops are one jitted
program (``lax.fori_loop`` / ``lax.while_loop``), compiled once per configuration and shape; see
``jaxlab.dlm.scoring`` for the precision of confidences and of Gumbel noise.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.dlm import streaming
from jaxlab.dlm.cache import ModelCalls, bucket_widths
from jaxlab.dlm.decoding import check_prompt, committed_positions
from jaxlab.dlm.scoring import factor_count, gumbel, probability_of, threshold_count, top_k_mask

_CACHES = ("none", "prefix", "dual")
_REMASKING = ("low_confidence", "random")


@dataclasses.dataclass
class GenerateResult:
    """Host-side result (numpy).

    tokens [B, P+G]; num_forward model calls; commit_step [B, P+G] index of the call after which
    the position was committed (-1 prompt); commit_conf [B, P+G] its confidence; num_committed
    [S, B] per call; cached_call [S] (1 = cached slice call); recomputed_range [S, 2] positions fed.
    """

    tokens: np.ndarray
    num_forward: int
    commit_step: np.ndarray
    commit_conf: np.ndarray
    num_committed: np.ndarray
    cached_call: np.ndarray
    recomputed_range: np.ndarray

    @property
    def committed(self) -> np.ndarray:
        """``[S, B, K]`` positions committed by each call, ascending, -1 padded."""
        return committed_positions(self.commit_step, self.num_forward)


@dataclasses.dataclass(frozen=True)
class _Settings:
    steps: int
    gen_length: int
    block_length: int
    temperature: float
    remasking: str
    mask_id: int
    cfg_scale: float = 0.0
    threshold: float | None = None
    factor: float | None = None
    cache: str = "none"
    has_attention_mask: bool = False
    stream: bool = False  # report each step live (jaxlab.dlm.streaming)


def _check(settings: _Settings, module, prompt) -> np.ndarray:
    s = settings
    for name in ("steps", "gen_length", "block_length"):
        value = getattr(s, name)
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive integer")
    if s.gen_length % s.block_length:
        raise ValueError(f"gen_length={s.gen_length} is not a multiple of block_length={s.block_length}")
    num_blocks = s.gen_length // s.block_length
    if s.steps % num_blocks:
        raise ValueError(f"steps={s.steps} is not a multiple of the number of blocks ({num_blocks})")
    if s.remasking not in _REMASKING:
        raise ValueError(f"remasking={s.remasking!r}; use one of {list(_REMASKING)}")
    if s.cache not in _CACHES:
        raise ValueError(f"unknown cache {s.cache!r}; use one of {list(_CACHES)}")
    if s.threshold is not None and s.factor is not None:
        raise ValueError(
            f"threshold={s.threshold} and factor={s.factor} are both set; the reference silently uses factor -- pass one"
        )
    if s.factor is not None and not s.factor > 0:
        raise ValueError(f"factor={s.factor!r} must be > 0 (Fast-dLLM's rule commits the top-n with (n+1)(1-c_n) <= f)")
    if s.cache != "none" and s.threshold is None and s.factor is None and s.steps // num_blocks < 2:
        raise ValueError(
            f"{s.cache}-cache decoding without a threshold needs >= 2 steps per block (got {s.steps // num_blocks}): "
            f"the reference's cached loop always takes a second step and indexes past the schedule"
        )
    if not s.temperature >= 0:
        raise ValueError(f"temperature={s.temperature!r} must be >= 0")
    return check_prompt(prompt, module.config, s.gen_length, s.mask_id)


def _proposals(settings: _Settings):
    """LLaDA / Fast-dLLM scoring: raw-logit argmax (+ Gumbel noise), softmax or random confidence."""

    def score(logits, key):
        key_noise, key_rand = jax.random.split(key)
        logits = logits.astype(jnp.float32)
        noisy = logits if settings.temperature == 0 else logits / settings.temperature + gumbel(key_noise, logits.shape)
        tok = jnp.argmax(noisy, axis=-1).astype(jnp.int32)
        if settings.remasking == "random":
            conf = jax.random.uniform(key_rand, tok.shape, jnp.float32)
        else:
            conf = probability_of(logits, tok)
        return conf, tok

    return score


def _to_result(out, length: int) -> GenerateResult:
    out = jax.device_get(out)
    n = int(out["num_forward"])
    return GenerateResult(
        tokens=out["tokens"], num_forward=n, commit_step=out["commit_step"], commit_conf=out["commit_conf"],
        num_committed=out["num_committed"][:n], cached_call=out["cached_call"][:n],
        recomputed_range=out["recomputed_range"][:n],
    )


# ---------------------------------------------------------------------------------------------
# LLaDA generate


def llada_generate(
    module, params, prompt, *, steps: int = 128, gen_length: int = 128, block_length: int = 128,
    temperature: float = 0.0, cfg_scale: float = 0.0, remasking: str = "low_confidence", mask_id: int = 126336,
    attention_mask=None, rng: jax.Array | None = None, on_step=None,
) -> GenerateResult:
    """LLaDA's semi-autoregressive sampler; ``prompt [B, P]`` ids, returns ``GenerateResult``.
    ``on_step(step, tokens [B, P+G])`` is called live after every forward (``jaxlab.dlm.streaming``).

    ``attention_mask [B, P]`` (1 = real token) marks left-padded prompts; it is extended with ones
    over the generated span and hides padding keys (the pinned reference takes none).
    """
    settings = _Settings(steps, gen_length, block_length, float(temperature), remasking, mask_id,
                         cfg_scale=float(cfg_scale), has_attention_mask=attention_mask is not None,
                         stream=on_step is not None)
    prompt = _check(settings, module, prompt)
    if (temperature > 0 or remasking == "random") and rng is None:
        raise ValueError("temperature > 0 or remasking='random' draws random numbers: pass rng=jax.random.key(...)")
    if attention_mask is not None:
        attention_mask = np.asarray(attention_mask, bool)
        if attention_mask.shape != prompt.shape:
            raise ValueError(f"attention_mask shape {attention_mask.shape} must equal the prompt's {prompt.shape}")
    else:
        attention_mask = np.ones(prompt.shape, bool)
    run = _compiled(_llada, type(module), module.config, settings)
    with streaming.listening(on_step):
        return _to_result(run(params, prompt, attention_mask, jax.random.key(0) if rng is None else rng),
                          prompt.shape[1] + gen_length)


def _llada(module, st: _Settings, params, prompt, prompt_mask, key):
    batch, p = prompt.shape
    length = p + st.gen_length
    per_block = st.steps // (st.gen_length // st.block_length)
    pos = jnp.arange(length, dtype=jnp.int32)
    score = _proposals(st)
    attention = jnp.concatenate([prompt_mask, jnp.ones((batch, st.gen_length), bool)], axis=1)
    attention = attention if st.has_attention_mask else None
    x = jnp.concatenate([prompt, jnp.full((batch, st.gen_length), st.mask_id, jnp.int32)], axis=1)
    prompt_index = pos[None] < p

    def logits_of(x):
        if st.cfg_scale > 0:  # unsupervised CFG: a second batch with the prompt masked out
            un_x = jnp.where(prompt_index, st.mask_id, x)
            both = module.apply({"params": params}, jnp.concatenate([x, un_x]),
                                None if attention is None else jnp.concatenate([attention, attention]))
            cond, uncond = jnp.split(both, 2)
            return uncond + (st.cfg_scale + 1) * (cond - uncond)
        return module.apply({"params": params}, x, attention)

    def body(i, s):
        x, commit_step, commit_conf, counts, num_committed, key = s
        key, sub = jax.random.split(key)
        block, i_in = i // per_block, i % per_block
        start = p + block * st.block_length
        end = start + st.block_length
        in_block = (pos >= start) & (pos < end)
        counts = jnp.where(i_in == 0, jnp.sum((x == st.mask_id) & in_block[None], axis=-1), counts)
        k = counts // per_block + (i_in < counts % per_block)  # get_num_transfer_tokens
        conf, tok = score(logits_of(x), sub)
        eligible = (x == st.mask_id) & (pos[None] < end)
        chosen = top_k_mask(conf, eligible, k.astype(jnp.int32))
        x = jnp.where(chosen, tok, x)
        commit_step = jnp.where(chosen, i, commit_step)
        commit_conf = jnp.where(chosen, conf, commit_conf)
        num_committed = num_committed.at[i].set(jnp.sum(chosen, axis=-1).astype(jnp.int32))
        streaming.emit(st.stream, i, x)
        return x, commit_step, commit_conf, counts, num_committed, key

    init = (
        x, jnp.where(prompt_index, -1, -2).repeat(batch, 0).astype(jnp.int32), jnp.zeros((batch, length), jnp.float32),
        jnp.zeros((batch,), jnp.int32), jnp.zeros((st.steps, batch), jnp.int32), key,
    )
    x, commit_step, commit_conf, _, num_committed, _ = jax.lax.fori_loop(0, st.steps, body, init)
    return dict(
        tokens=x, num_forward=jnp.int32(st.steps), commit_step=commit_step, commit_conf=commit_conf,
        num_committed=num_committed, cached_call=jnp.zeros((st.steps,), jnp.int32),
        recomputed_range=jnp.tile(jnp.array([0, length], jnp.int32), (st.steps, 1)),
    )


# ---------------------------------------------------------------------------------------------
# Fast-dLLM generate / generate_with_prefix_cache / generate_with_dual_cache


def fastdllm_generate(
    module, params, prompt, *, steps: int = 128, gen_length: int = 128, block_length: int = 128,
    temperature: float = 0.0, remasking: str = "low_confidence", mask_id: int = 126336,
    threshold: float | None = None, factor: float | None = None, cache: str = "none", rng: jax.Array | None = None,
    on_step=None,
) -> GenerateResult:
    """Fast-dLLM's block decoding (``cache`` = 'none' | 'prefix' | 'dual'); returns ``GenerateResult``.

    Commit rule per call: the ``steps`` schedule, or ``threshold`` (top-1 plus every other >= it), or
    ``factor`` (``get_transfer_index_dynamic``: the top-n with ``(n + 1)(1 - c_n) <= factor``, see
    ``jaxlab.dlm.scoring.factor_count``); ``threshold`` and ``factor`` are exclusive. ``on_step(step,
    tokens [B, P+G])`` is called live after every forward (``jaxlab.dlm.streaming``).

    The reference allocates a batch of one; here every row of ``prompt [B, P]`` decodes in the same
    calls and a block ends when no row has a mask left in it (identical for B = 1).
    """
    settings = _Settings(steps, gen_length, block_length, float(temperature), remasking, mask_id,
                         threshold=None if threshold is None else float(threshold),
                         factor=None if factor is None else float(factor), cache=cache, stream=on_step is not None)
    prompt = _check(settings, module, prompt)
    if (temperature > 0 or remasking == "random") and rng is None:
        raise ValueError("temperature > 0 or remasking='random' draws random numbers: pass rng=jax.random.key(...)")
    run = _compiled(_fastdllm, type(module), module.config, settings)
    with streaming.listening(on_step):
        return _to_result(run(params, prompt, jax.random.key(0) if rng is None else rng), prompt.shape[1] + gen_length)


def _fastdllm(module, st: _Settings, params, prompt, key):
    from jaxlab.models.dlm import init_cache

    batch, p = prompt.shape
    length = p + st.gen_length
    num_blocks = st.gen_length // st.block_length
    per_block = st.steps // num_blocks
    max_calls = num_blocks * (st.block_length + 1)
    pos = jnp.arange(length, dtype=jnp.int32)
    calls = ModelCalls(module, params, _proposals(st))
    widths = (st.block_length,) if st.cache == "dual" else bucket_widths(st.gen_length)

    x = jnp.concatenate([prompt, jnp.full((batch, st.gen_length), st.mask_id, jnp.int32)], axis=1)
    state = dict(
        x=x, block=jnp.int32(0), cached_phase=jnp.bool_(False), i=jnp.int32(0), nfe=jnp.int32(0),
        counts=jnp.zeros((batch,), jnp.int32), key=key,
        cache=() if st.cache == "none" else init_cache(module.config, batch, length),
        commit_step=jnp.where(pos < p, -1, -2)[None].repeat(batch, 0).astype(jnp.int32),
        commit_conf=jnp.zeros((batch, length), jnp.float32),
        num_committed=jnp.zeros((max_calls, batch), jnp.int32),
        cached_call=jnp.zeros((max_calls,), jnp.int32),
        recomputed_range=jnp.zeros((max_calls, 2), jnp.int32),
    )

    def body(s):
        s = dict(s)
        key, sub = jax.random.split(s["key"])
        x, i, nfe = s["x"], s["i"], s["nfe"]
        start = p + s["block"] * st.block_length
        end = start + st.block_length
        in_block = (pos >= start) & (pos < end)
        counts = jnp.where(i == 0, jnp.sum((x == st.mask_id) & in_block[None], axis=-1), s["counts"])
        stop = jnp.int32(length) if st.cache == "prefix" else end
        if st.cache == "none":
            conf, tok = calls.full(x, sub)
            cached = jnp.bool_(False)
        else:
            cached = s["cached_phase"]
            conf, tok, s["cache"] = jax.lax.cond(
                cached,
                lambda: calls.cached(x, s["cache"], start, stop, sub, widths),
                lambda: calls.refresh(x, s["cache"], sub),
            )
        eligible = (x == st.mask_id) & (pos[None] < end)
        if st.factor is not None:
            k = factor_count(conf, eligible, st.factor)
        elif st.threshold is None:
            k = (counts // per_block + (i < counts % per_block)).astype(jnp.int32)
        else:
            k = threshold_count(conf, eligible, st.threshold)
        chosen = top_k_mask(conf, eligible, k)
        x = jnp.where(chosen, tok, x)
        s["commit_step"] = jnp.where(chosen, nfe, s["commit_step"])
        s["commit_conf"] = jnp.where(chosen, conf, s["commit_conf"])
        s["num_committed"] = s["num_committed"].at[nfe].set(jnp.sum(chosen, axis=-1).astype(jnp.int32))
        s["cached_call"] = s["cached_call"].at[nfe].set(cached.astype(jnp.int32))
        fed = jnp.where(cached, jnp.stack([start, stop]), jnp.array([0, length], jnp.int32))
        s["recomputed_range"] = s["recomputed_range"].at[nfe].set(fed.astype(jnp.int32))

        block_done = ~jnp.any((x == st.mask_id) & in_block[None])
        # A cached block's first (full) call is always followed by a cached call.
        advance = block_done & (cached if st.cache != "none" else jnp.bool_(True))
        s["block"] = s["block"] + advance.astype(jnp.int32)
        s["cached_phase"] = jnp.where(advance, False, st.cache != "none")
        s["i"] = jnp.where(advance, 0, i + 1).astype(jnp.int32)
        s.update(x=x, nfe=nfe + 1, counts=counts, key=key)
        streaming.emit(st.stream, nfe, x)
        return s

    s = jax.lax.while_loop(lambda s: (s["block"] < num_blocks) & (s["nfe"] < max_calls), body, state)
    return dict(
        tokens=s["x"], num_forward=s["nfe"], commit_step=s["commit_step"], commit_conf=s["commit_conf"],
        num_committed=s["num_committed"], cached_call=s["cached_call"], recomputed_range=s["recomputed_range"],
    )


@functools.lru_cache(maxsize=64)
def _compiled(impl, module_type, model_config, settings: _Settings):
    return jax.jit(functools.partial(impl, module_type(model_config), settings))


def generate_with_prefix_cache(module, params, prompt, **kwargs) -> GenerateResult:
    """Fast-dLLM's ``generate_with_prefix_cache``: ``fastdllm_generate(..., cache='prefix')``."""
    return fastdllm_generate(module, params, prompt, cache="prefix", **kwargs)


def generate_with_dual_cache(module, params, prompt, **kwargs) -> GenerateResult:
    """Fast-dLLM's ``generate_with_dual_cache``: ``fastdllm_generate(..., cache='dual')``."""
    return fastdllm_generate(module, params, prompt, cache="dual", **kwargs)
