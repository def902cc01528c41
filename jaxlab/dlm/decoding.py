"""DCD's window decoding for bidirectional diffusion LMs (``shuyingte/DCD`` ``window_bidirectional_decode``).

One entry point, configured like the official ``DecodeConfig``:

- ``window_type='static'``: the block baseline (Fast-dLLM parallel decoding): the window is a block
  of ``block_size`` and moves on only when no row has a [MASK] left in it.
- ``window_type='sliding'``: Deferred Commitment Decoding. The window starts as
  ``[P, P + initial_window_length)``; its left edge skips columns finished in every row, its right
  edge is refilled so the neediest row again holds ``initial_window_length`` masks (capped by
  ``max_window_length`` and the earliest EOS), so uncertain tokens wait for right context.
- ``decode_algo``: ``'threshold'`` (commit candidates with confidence >= ``decode_param``, at least
  one per row that has a candidate) or ``'fixed'`` (``decode_param`` per row); an ``'entropy'``
  prefix (``'entropy-threshold'``) scores by negative entropy, a ``'topk_margin'`` prefix
  (``'topk_margin-threshold'``, DCD at commit a4376eff) by the top-1 minus top-2 probability.
  ``'factor'`` (``decode_param`` = f) is Fast-dLLM's factor rule -- commit the top-n with
  ``(n + 1)(1 - c_n) <= f`` -- which DCD's ``DecodeConfig`` comment names ("see Fast-DLLM V1
  paper") but its ``get_decode_num`` rejects; jaxlab implements it with Fast-dLLM's code
  (``jaxlab.dlm.scoring.factor_count``).
- ``cache_type``: ``'none'``, ``'prefix'``, ``'dual'``, ``'prefix-delayN'``, ``'dual-delayN'`` with a
  full refresh whenever the average number of tokens committed per row since the last refresh
  reaches ``refresh_count`` (and, in static mode, after every block change).

The whole loop is one ``jax.jit`` program (``lax.while_loop``; windows are masks over the fixed
``[B, P + G]`` sequence, the KV cache a fixed-size buffer updated in place); it compiles once per
(model config, DecodeConfig, batch, prompt length). ``decode`` returns the tokens and the trace the
golden files record. Semantics follow the reference line by line, EOS/pad handling included; see
docs/dlm.md for the details and the two documented differences (tie order, refresh counter).
"""

import dataclasses
import functools
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.dlm import streaming
from jaxlab.dlm.cache import ModelCalls, bucket_widths, parse_cache_type
from jaxlab.dlm.scoring import (
    factor_count,
    gumbel,
    max_probability,
    negative_entropy,
    threshold_count,
    top_k_logits,
    top_k_mask,
    top2_margin,
    top_p_logits,
)

_OPTION_KEYS = ("top_p", "top_k")


@dataclasses.dataclass(frozen=True)
class DecodeConfig:
    """The official ``decode_algorithm.DecodeConfig`` (same names and defaults).

    ``kwargs`` takes the reference's optional ``top_p`` / ``top_k``; it is stored as a sorted tuple
    of items so the config stays hashable (one compiled decoder per config). ``debug`` is accepted
    for compatibility: the trace is always returned.
    """

    window_type: str = "sliding"
    generate_length: int = 512
    initial_window_length: int = 32
    block_size: int = 32
    temperature: float = 0.0
    decode_algo: str = "threshold"
    decode_param: int | float = 0.9
    max_window_length: int = 1_000_000_000
    cache_type: str = "none"
    refresh_count: int = 16
    debug: bool = False
    mask_id: int = 126336
    pad_id: int = 126081
    eos_id: int = 126081
    kwargs: Any = ()

    def __post_init__(self):
        kwargs = dict(self.kwargs.items() if isinstance(self.kwargs, Mapping) else self.kwargs)
        object.__setattr__(self, "kwargs", tuple(sorted(kwargs.items())))

    @property
    def options(self) -> dict:
        return dict(self.kwargs)

    def validate(self) -> None:
        """Checks everything that does not depend on the prompt or the model."""
        if self.window_type not in ("static", "sliding"):
            raise ValueError(f"window_type={self.window_type!r}; use 'static' (block baseline) or 'sliding' (DCD)")
        _parse_algo(self.decode_algo)
        parse_cache_type(self.cache_type)
        for name in ("generate_length", "initial_window_length", "block_size", "max_window_length"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer")
        if self.window_type == "sliding" and self.initial_window_length > self.generate_length:
            raise ValueError(
                f"initial_window_length={self.initial_window_length} is larger than generate_length="
                f"{self.generate_length}; the window must fit in the generated span"
            )
        if self.window_type == "static" and self.block_size > self.generate_length:
            raise ValueError(
                f"block_size={self.block_size} is larger than generate_length={self.generate_length}; "
                f"the block must fit in the generated span"
            )
        if not isinstance(self.decode_param, (int, float, np.integer, np.floating)) or isinstance(self.decode_param, bool):
            raise ValueError(f"decode_param={self.decode_param!r} must be a number (threshold or tokens per step)")
        if not np.isfinite(float(self.decode_param)):
            raise ValueError(f"decode_param={self.decode_param!r} must be finite")
        if _parse_algo(self.decode_algo) == ("prob", "threshold") and not 0.0 <= float(self.decode_param) <= 1.0:
            raise ValueError(
                f"decode_algo='threshold' compares token probabilities with decode_param, so it must be in [0, 1]; "
                f"got {self.decode_param!r} (e.g. 0.9)"
            )
        if self.mask_id in (self.eos_id, self.pad_id):
            raise ValueError(
                f"mask_id={self.mask_id} equals eos_id={self.eos_id} or pad_id={self.pad_id}: the decoder could not "
                f"tell masked positions from finished ones; use the model's mask_token_id"
            )
        if _parse_algo(self.decode_algo)[1] == "fixed":
            if float(self.decode_param) != int(self.decode_param) or int(self.decode_param) < 1:
                raise ValueError(f"decode_algo='fixed' needs a positive integer decode_param, got {self.decode_param!r}")
        if _parse_algo(self.decode_algo)[1] == "factor" and not float(self.decode_param) > 0:
            raise ValueError(f"decode_algo='factor' needs decode_param = factor f > 0, got {self.decode_param!r}")
        if not self.refresh_count > 0:
            raise ValueError(f"refresh_count={self.refresh_count!r} must be > 0")
        if not self.temperature >= 0:
            raise ValueError(f"temperature={self.temperature!r} must be >= 0")
        unknown = sorted(set(self.options) - set(_OPTION_KEYS))
        if unknown:
            raise ValueError(f"unsupported DecodeConfig.kwargs {unknown}; supported: {list(_OPTION_KEYS)}")


_CONFIDENCES = {"entropy": "entropy", "topk_margin": "margin"}  # decode_algo prefix -> confidence kind


def _parse_algo(decode_algo: str) -> tuple[str, str]:
    """``'threshold' -> ('prob', 'threshold')``, ``'entropy-fixed' -> ('entropy', 'fixed')``,
    ``'topk_margin-threshold' -> ('margin', 'threshold')``, ``'factor' -> ('prob', 'factor')``."""
    if isinstance(decode_algo, str):
        for count in ("threshold", "fixed", "factor"):
            if decode_algo == count:
                return "prob", count
            for prefix, kind in _CONFIDENCES.items():
                if decode_algo.startswith(prefix) and decode_algo.endswith(count):
                    return kind, count
    raise ValueError(
        f"unknown decode_algo {decode_algo!r}; use 'threshold', 'fixed' or 'factor', optionally prefixed by "
        f"'entropy-' (negative-entropy confidence) or 'topk_margin-' (top-1 minus top-2 probability), "
        f"e.g. 'topk_margin-threshold'"
    )


@dataclasses.dataclass
class DecodeResult:
    """Host-side result of ``decode`` (numpy).

    tokens [B, P+G]; num_forward (model calls = steps); window [S, 2] ``[left, right)`` per step;
    forward_length [S] tokens fed per row; pass_cache [S] (1 = cached call); num_committed [S, B]
    tokens committed by the confidence rule (EOS pad-filling excluded); commit_step [B, P+G] step of
    commitment, -1 prompt, -2 never committed (pad-filled by the EOS rule, or left when static mode
    stops early); commit_conf [B, P+G] confidence at commitment (0 elsewhere).
    """

    tokens: np.ndarray
    num_forward: int
    window: np.ndarray
    forward_length: np.ndarray
    pass_cache: np.ndarray
    num_committed: np.ndarray
    commit_step: np.ndarray
    commit_conf: np.ndarray

    @property
    def committed(self) -> np.ndarray:
        """``[S, B, K]`` positions committed at each step, ascending, -1 padded (K = max per step)."""
        return committed_positions(self.commit_step, self.num_forward)


def committed_positions(commit_step: np.ndarray, num_steps: int) -> np.ndarray:
    """``commit_step [B, L] -> [S, B, K]`` ascending positions per step, -1 padded."""
    rows = [[np.flatnonzero(r == s) for r in commit_step] for s in range(num_steps)]
    k = max([len(p) for row in rows for p in row], default=0)
    out = np.full((num_steps, commit_step.shape[0], k), -1, np.int64)
    for s, row in enumerate(rows):
        for b, p in enumerate(row):
            out[s, b, : len(p)] = p
    return out


def check_prompt(prompt: np.ndarray, model_config, generate_length: int, mask_id: int) -> np.ndarray:
    """Validates prompt ids ``[B, P]`` against the model (before any tracing); returns int32 numpy."""
    prompt = np.asarray(prompt)
    if prompt.ndim != 2 or prompt.shape[0] < 1 or prompt.shape[1] < 1:
        raise ValueError(f"prompt_ids must be [batch, prompt_length] with both >= 1, got shape {prompt.shape}")
    if not np.issubdtype(prompt.dtype, np.integer):
        raise ValueError(f"prompt_ids must be integer token ids, got dtype {prompt.dtype}")
    vocab = model_config.embedding_size
    if not 0 <= mask_id < vocab:
        raise ValueError(f"mask_id={mask_id} is outside the vocabulary [0, {vocab})")
    if prompt.min() < 0 or prompt.max() >= vocab:
        raise ValueError(f"prompt ids must lie in [0, {vocab}), got [{prompt.min()}, {prompt.max()}]")
    if (prompt == mask_id).any():
        where = np.argwhere(prompt == mask_id)[:3].tolist()
        raise ValueError(f"the prompt contains the mask id {mask_id} at [row, col] {where}; prompts must be clean")
    context = model_config.max_sequence_length
    if prompt.shape[1] + generate_length > context:
        raise ValueError(
            f"prompt length {prompt.shape[1]} + generate length {generate_length} = "
            f"{prompt.shape[1] + generate_length} exceeds the model context max_sequence_length={context}"
        )
    return prompt.astype(np.int32)


def decode(module, params, prompt_ids, config: DecodeConfig, *, rng: jax.Array | None = None,
           on_step=None) -> DecodeResult:
    """Decodes ``config.generate_length`` tokens after ``prompt_ids [B, P]`` with DCD / block decoding.

    ``module`` is a ``jaxlab.models.dlm.LLaDA`` (anything with a ``.config`` and the same cached
    ``apply``); ``rng`` is needed only for ``temperature > 0``. ``on_step(step, tokens [B, P+G])`` is
    called live after every step (``jaxlab.dlm.streaming``). Raises ``ValueError`` before tracing
    on bad input.
    """
    config.validate()
    prompt = check_prompt(prompt_ids, module.config, config.generate_length, config.mask_id)
    for name in ("eos_id", "pad_id"):
        if not 0 <= getattr(config, name) < module.config.embedding_size:
            raise ValueError(f"{name}={getattr(config, name)} is outside the vocabulary [0, {module.config.embedding_size})")
    if config.temperature > 0 and rng is None:
        raise ValueError("temperature > 0 samples tokens: pass rng=jax.random.key(...)")
    run = make_decoder(module, config, *prompt.shape, stream=on_step is not None)
    with streaming.listening(on_step):
        out = jax.device_get(run(params, prompt, jax.random.key(0) if rng is None else rng))
    steps = int(out["num_forward"])
    if out["hit_limit"]:
        raise RuntimeError(f"decoding did not finish within {steps} steps; this indicates a bug, please report it")
    return DecodeResult(
        tokens=out["tokens"],
        num_forward=steps,
        window=out["window"][:steps],
        forward_length=out["forward_length"][:steps],
        pass_cache=out["pass_cache"][:steps],
        num_committed=out["num_committed"][:steps],
        commit_step=out["commit_step"],
        commit_conf=out["commit_conf"],
    )


def make_decoder(module, config: DecodeConfig, batch: int, prompt_length: int, *, stream: bool = False):
    """The compiled decoder ``(params, prompt [B, P] int32, key) -> dict of device arrays``.

    Cached per (module class, model config, DecodeConfig, batch, prompt length, stream): a second
    call with new prompts of the same shape reuses the compiled program. ``stream`` compiles the
    variant that reports each step to ``jaxlab.dlm.streaming.listening``'s listener.
    """
    return _compiled(type(module), module.config, config, batch, prompt_length, bool(stream))


@functools.lru_cache(maxsize=64)
def _compiled(module_type, model_config, config: DecodeConfig, batch: int, prompt_length: int, stream: bool = False):
    module = module_type(model_config)
    return jax.jit(functools.partial(_decode, module, config, stream=stream))


def _score_fn(config: DecodeConfig):
    kind, _ = _parse_algo(config.decode_algo)
    options = config.options

    def score(logits, key):
        logits = logits.astype(jnp.float32).at[..., config.mask_id].set(-jnp.inf)  # never propose [MASK]
        if config.temperature > 0:
            logits = logits / config.temperature
        if options.get("top_p") is not None and options["top_p"] < 1:
            logits = top_p_logits(logits, options["top_p"])
        if options.get("top_k") is not None:
            logits = top_k_logits(logits, int(options["top_k"]))
        if config.temperature > 0:
            tok = jnp.argmax(logits + gumbel(key, logits.shape), axis=-1).astype(jnp.int32)
            probs = jax.nn.softmax(logits, axis=-1)
            conf = jnp.take_along_axis(probs, tok[..., None], axis=-1)[..., 0]
        else:
            conf, tok = max_probability(logits)
        if kind == "entropy":
            conf = negative_entropy(logits)
        elif kind == "margin":
            conf = top2_margin(logits)
        return conf, tok

    return score


def _decode(module, config: DecodeConfig, params, prompt, key, stream: bool = False):
    batch, p = prompt.shape
    g = config.generate_length
    length = p + g
    sliding = config.window_type == "sliding"
    cache_kind, delay = parse_cache_type(config.cache_type)
    _, count_rule = _parse_algo(config.decode_algo)
    w0, block = config.initial_window_length, config.block_size
    max_window = min(config.max_window_length, length)  # right <= L anyway: same windows, no int32 overflow
    max_steps = batch * g if sliding else g  # every step commits >= 1 token somewhere (>= 1 per block step)
    refresh_at = math.ceil(config.refresh_count * batch)  # avg since refresh >= refresh_count, in integers
    mask, eos, pad = config.mask_id, config.eos_id, config.pad_id
    calls = ModelCalls(module, params, _score_fn(config))
    if cache_kind == "dual" and delay is None:
        top = min(max(w0, max_window), g) if sliding else block
    else:
        top = g
    widths = bucket_widths(top)
    pos = jnp.arange(length, dtype=jnp.int32)

    tokens = jnp.concatenate([prompt, jnp.full((batch, g), mask, jnp.int32)], axis=1)
    state = dict(
        tokens=tokens,
        commit_step=jnp.where(pos < p, -1, -2)[None].repeat(batch, 0).astype(jnp.int32),
        commit_conf=jnp.zeros((batch, length), jnp.float32),
        num_mask=jnp.full((batch,), w0, jnp.int32),
        eos_pos=jnp.full((batch,), length, jnp.int32),
        left=jnp.int32(p),
        right=jnp.int32(p + (w0 if sliding else block)),
        old_left=jnp.int32(p),
        since=jnp.int32(0),
        fresh=jnp.bool_(True),
        step=jnp.int32(0),
        stop=jnp.bool_(False),
        key=key,
        cache=() if cache_kind == "none" else _init_cache(module, batch, length),
        window=jnp.zeros((max_steps, 2), jnp.int32),
        forward_length=jnp.zeros((max_steps,), jnp.int32),
        pass_cache=jnp.zeros((max_steps,), jnp.int32),
        num_committed=jnp.zeros((max_steps, batch), jnp.int32),
    )

    def cond(s):
        return jnp.any(s["tokens"] == mask) & ~s["stop"] & (s["step"] < max_steps)

    def body(s):
        s = dict(s)
        key, sub = jax.random.split(s["key"])
        tokens, left, right, step = s["tokens"], s["left"], s["right"], s["step"]

        # 1. Logits for the window (full forward, refresh, or cached recompute).
        if cache_kind == "none":
            conf, tok = calls.full(tokens, sub)
            forward_length, passed = jnp.int32(length), jnp.int32(0)
        else:
            refresh = s["fresh"] | (s["since"] >= refresh_at)
            start, stop = _recompute_range(cache_kind, delay, left, right, s["old_left"], p, length)
            conf, tok, cache = jax.lax.cond(
                refresh,
                lambda: calls.refresh(tokens, s["cache"], sub),
                lambda: calls.cached(tokens, s["cache"], start, stop, sub, widths),
            )
            s["cache"] = cache
            s["since"] = jnp.where(refresh, 0, s["since"])
            s["fresh"] = jnp.bool_(False)
            forward_length = jnp.where(refresh, length, stop - start).astype(jnp.int32)
            passed = (~refresh).astype(jnp.int32)

        # 2-3. Commit the most confident candidates of the window, per row.
        in_window = (pos >= left) & (pos < right)
        candidate = (tokens == mask) & in_window[None]
        if count_rule == "fixed":
            n = jnp.minimum(jnp.sum(candidate, axis=-1), int(config.decode_param)).astype(jnp.int32)
        elif count_rule == "factor":
            n = factor_count(conf, candidate, float(config.decode_param))
        else:
            n = threshold_count(conf, candidate, config.decode_param)
        chosen = top_k_mask(conf, candidate, n)
        tokens = jnp.where(chosen, tok, tokens)
        s["commit_step"] = jnp.where(chosen, step, s["commit_step"])
        s["commit_conf"] = jnp.where(chosen, conf, s["commit_conf"])
        decoded = jnp.sum(n)
        num_mask = s["num_mask"] - n if sliding else s["num_mask"]

        # 4. EOS: the first EOS committed this step; sliding mode pads after it at once.
        eos_hit = chosen & (tok == eos)
        has_eos = jnp.any(eos_hit, axis=-1)
        first_eos = jnp.min(jnp.where(eos_hit, pos[None], length), axis=-1)
        eos_pos = s["eos_pos"]
        if sliding:
            after = has_eos[:, None] & (pos[None] > first_eos[:, None])
            to_pad = after & (pos[None] < eos_pos[:, None])
            is_mask = tokens == mask
            decoded = decoded + jnp.sum(to_pad & is_mask)
            num_mask = num_mask - jnp.sum(after & (pos[None] < right) & is_mask, axis=-1).astype(jnp.int32)
            tokens = jnp.where(to_pad, pad, tokens)
        eos_pos = jnp.where(has_eos, jnp.minimum(first_eos, eos_pos), eos_pos)

        # Trace of this step.
        s["window"] = s["window"].at[step].set(jnp.stack([left, right]))
        s["forward_length"] = s["forward_length"].at[step].set(forward_length)
        s["pass_cache"] = s["pass_cache"].at[step].set(passed)
        s["num_committed"] = s["num_committed"].at[step].set(n)

        # 5-6. Refresh counter, then the window update.
        s["since"] = s["since"] + decoded.astype(jnp.int32)
        s["old_left"] = left
        if sliding:
            open_cols = jnp.any(tokens == mask, axis=0) & (pos >= left)
            new_left = jnp.min(jnp.where(open_cols, pos, length)).astype(jnp.int32)
            new_right = jnp.minimum(
                jnp.minimum(right + w0 - jnp.max(num_mask), new_left + max_window), jnp.max(eos_pos)
            ).astype(jnp.int32)
            num_mask = jnp.where(eos_pos == length, num_mask + (new_right - right), num_mask)
            left, right = new_left, new_right
        else:
            block_done = ~jnp.any((tokens == mask) & in_window[None])
            has_eos_row = eos_pos < length
            pad_tail = block_done & has_eos_row[:, None] & (pos[None] >= eos_pos[:, None])
            tokens = jnp.where(pad_tail, pad, tokens)
            s["fresh"] = s["fresh"] | block_done
            s["stop"] = block_done & jnp.all(has_eos_row)
            left, right = (
                jnp.where(block_done, right, left),
                jnp.where(block_done, jnp.minimum(right + block, length), right).astype(jnp.int32),
            )
        s.update(tokens=tokens, num_mask=num_mask, eos_pos=eos_pos, left=left, right=right, step=step + 1, key=key)
        streaming.emit(stream, step, tokens)
        return s

    s = jax.lax.while_loop(cond, body, state)
    hit_limit = jnp.any(s["tokens"] == mask) & ~s["stop"]
    return dict(
        tokens=s["tokens"], num_forward=s["step"], window=s["window"], forward_length=s["forward_length"],
        pass_cache=s["pass_cache"], num_committed=s["num_committed"], commit_step=s["commit_step"],
        commit_conf=s["commit_conf"], hit_limit=hit_limit,
    )


def _recompute_range(kind: str, delay: int | None, left, right, old_left, prompt_length: int, length: int):
    """``[start, stop)`` a cached step recomputes (``decode_algorithm.py``'s cache_type branches)."""
    if delay is None:
        start = left
    else:
        start = jnp.maximum(old_left - delay, prompt_length)
    if kind == "prefix":
        stop = jnp.int32(length)
    elif delay is None:
        stop = right
    else:
        stop = jnp.minimum(right + delay, length)
    return start.astype(jnp.int32), stop.astype(jnp.int32)


def _init_cache(module, batch: int, length: int):
    from jaxlab.models.dlm import init_cache  # models import nothing from dlm; the reverse is fine

    return init_cache(module.config, batch, length)
