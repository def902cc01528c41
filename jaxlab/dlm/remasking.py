"""Active remasking samplers: committed tokens can go back to [MASK] and be predicted again.

LLaDA's "low-confidence remasking" (``jaxlab.dlm.samplers``) never revisits a committed token. The
three samplers here do, each as one jitted program (``lax.fori_loop`` over a static ``[B, P+G]``
token array, compiled once per configuration and shape):

- ``remdm_generate``: ReMDM (Wang, Schiff, Sahoo, Kuleshov 2025, arXiv 2503.00307) on the
  log-linear schedule ``alpha_t = 1 - t``, grid ``t_i = 1 - i / steps``. Per position, with
  ``s = t - 1/steps``:

  - committed token: -> [MASK] with probability ``sigma_t``;
  - [MASK]: -> the proposal ``x_theta`` with probability ``(alpha_s - (1 - sigma_t) alpha_t) / (1 - alpha_t)``,
    else stays masked;

  valid for ``0 <= sigma_t <= sigma_max = min(1, (1 - alpha_s) / alpha_t)``; ``sigma = 0`` is the
  MDLM ancestral sampler. With a per-row ``sigma`` the expected number of masks after each step
  stays ``G (1 - alpha_s)`` (the schedule). ``schedule``:

  - ``'cap'``: ``sigma = min(eta, sigma_max)`` (paper script default eta = 0.008);
  - ``'rescale'``: ``sigma = eta * sigma_max``, ``0 <= eta <= 1`` (default 0.015);
  - ``'conf'``: ``sigma^l = sigma_max * softmax_l(-c_l)`` over committed positions, ``c_l`` the
    probability of token ``l`` when it was committed (0 on masked positions, which therefore use the
    MDLM coefficient; the expected mask count then exceeds the schedule by at most ``sigma_max``);
  - ``'loop'`` (``t_on, t_off, alpha_on, eta``; defaults 0.55, 0.05, 0.9, 0.02): the first
    ``round((1 - t_on) steps)`` steps are MDLM with ``alpha`` rising linearly to ``alpha_on``, the
    next ``round((t_on - t_off) steps)`` hold ``alpha_s = alpha_t = alpha_on`` and apply the
    remask/re-predict kernel with ``sigma = eta`` (needs ``eta <= (1 - alpha_on) / alpha_on``), the
    rest are MDLM from ``alpha_on`` to 1.

  The last step has ``alpha_s = 1`` (``sigma_max = 0``), so it commits every remaining mask: jaxlab
  uses ``eps = 0`` where the ReMDM scripts stop at ``t = 1e-5`` and then take an argmax
  "noise removal" step. Proposals: the [MASK] logit is suppressed (SUBS parameterisation);
  ``temperature > 0`` samples ``softmax(logits / T)`` (the paper scripts add nucleus p = 0.9;
  not implemented), ``temperature = 0`` takes the argmax.
- ``llada_remask_generate``: ReMDM's deterministic LLaDA variant (``guanghanwang/ReMDM-LLaDA``
  ``eval_llada.py::llada_remdm_sample``). LLaDA's block schedule (``get_num_transfer_tokens``,
  proposals and confidences as ``llada_generate``), plus, inside every block, ``remask_steps``
  extra iterations starting after plain step ``floor(remask_start * steps_per_block)`` (reference:
  after ``int(block * 7/8)`` iterations with ``steps = gen_length``, i.e. 7/8 of the block): each
  first re-masks the ``remask_number`` tokens committed in this block with the lowest confidence
  recorded at their commitment, then runs the forward and commits the same number of the most
  confident masked positions. The block's number of masks after each plain step is LLaDA's, and a
  remask iteration never changes it (the reference, with other settings, can commit past the
  block's masks and then re-mask prompt tokens; here the counts are capped by what exists).
  ``remask_number = 0`` or ``remask_steps = 0`` is ``llada_generate`` exactly.
- ``remedi_generate``: RemeDi's inference rule (``maple-research-lab/RemeDi`` ``inference.py``):
  blocks of ``block_length`` decoded left to right, ``steps_per_block`` forwards each; at step ``i``
  every masked position of the block gets the proposal ``x0`` (argmax, or Gumbel-max at
  ``temperature``), every position of the block is scored, the top ``K_i`` are kept and **all
  others go back to [MASK]** (committed tokens included); ``K_i`` is the cumulative unmask count
  (``block // steps`` per step, the remainder on the last steps). Score: ``'prob'`` = softmax
  probability of the position's current/proposed token (this issue's choice), ``'logit'`` = its raw
  logit (what the released script ranks by), ``'head'`` = a trained per-token confidence head
  (``jaxlab.dlm.confidence``; RemeDi's policy ranks by its UPS head's confidence). Earlier blocks are frozen, later ones masked (the released model is block-causal
  with a KV cache; LLaDA is bidirectional, so later blocks' masks are visible here).

Batch independence: every random draw is keyed by ``fold_in(rng, row)``, so a row's result does
not depend on the other rows or on the batch size; ``attention_mask [B, P]`` (1 = real token)
lets rows with left-padded prompts decode as if alone. ``llada_remask_generate`` keeps
``llada_generate``'s batch-wide random stream so that it reproduces it exactly.

Caches: ReMDM may re-mask any generated position at any step, so no prefix or suffix is stable
and prefix/dual caches are not well-defined (``cache`` other than 'none' is refused). The two
block-local samplers take Fast-dLLM's block caches (``cache='prefix' | 'dual'``): the first step
of every block is a full forward that rewrites the KV cache (and commits as usual); the block's
later steps recompute ``[block start, L)`` (prefix) or only the block (dual) against it. Tokens
outside the current block never change during the block, so the cached K/V are stale only through
attention to the block's changing tokens: exact for a one-layer model or one step per block
(tested token for token), approximate otherwise, as Fast-dLLM's. The forward count is unchanged;
not combined with ``attention_mask`` (padded prompts) or with ``score='head'``.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.dlm import streaming
from jaxlab.dlm.cache import bucket_widths, cached_logits, refresh_logits
from jaxlab.dlm.decoding import check_prompt
from jaxlab.dlm.samplers import _compiled, _proposals, _Settings
from jaxlab.dlm.scoring import gumbel, probability_of, top_k_mask

SCHEDULES = ("cap", "rescale", "conf", "loop")


@dataclasses.dataclass
class RemaskResult:
    """Host-side result (numpy).

    tokens [B, P+G]; num_forward model calls; num_masked [S, B] masks in the generated span after
    each call; num_remasked [S, B] committed tokens sent back to [MASK] at each call; commit_step
    [B, P+G] the call that last committed the position (-1 prompt); commit_conf [B, P+G] its confidence.
    """

    tokens: np.ndarray
    num_forward: int
    num_masked: np.ndarray
    num_remasked: np.ndarray
    commit_step: np.ndarray
    commit_conf: np.ndarray


@dataclasses.dataclass(frozen=True)
class ReMDMSchedule:
    """ReMDM's remasking schedule (see the module docstring); ``eta=None`` takes the paper script default."""

    kind: str = "cap"
    eta: float | None = None
    t_on: float = 0.55
    t_off: float = 0.05
    alpha_on: float = 0.9

    @property
    def eta_value(self) -> float:
        return {"cap": 0.008, "rescale": 0.015, "conf": 1.0, "loop": 0.02}[self.kind] if self.eta is None else self.eta

    def validate(self, steps: int) -> None:
        if self.kind not in SCHEDULES:
            raise ValueError(f"unknown ReMDM schedule {self.kind!r}; use one of {list(SCHEDULES)}")
        eta = self.eta_value
        if not (isinstance(eta, (int, float)) and math.isfinite(eta) and eta >= 0):
            raise ValueError(f"eta={eta!r} must be a finite number >= 0")
        if self.kind == "rescale" and eta > 1:
            raise ValueError(f"ReMDM-rescale needs 0 <= eta <= 1 (sigma = eta * sigma_max), got eta={eta}")
        if self.kind == "conf" and self.eta is not None:
            raise ValueError("ReMDM-conf has no eta: sigma^l = sigma_max * softmax(-confidence); leave eta=None")
        if self.kind == "loop":
            if not 0 < self.t_off < self.t_on < 1:
                raise ValueError(f"ReMDM-loop needs 0 < t_off < t_on < 1, got t_off={self.t_off}, t_on={self.t_on}")
            if not 0 < self.alpha_on < 1:
                raise ValueError(f"ReMDM-loop needs 0 < alpha_on < 1, got alpha_on={self.alpha_on}")
            bound = (1 - self.alpha_on) / self.alpha_on
            if eta > bound:
                raise ValueError(
                    f"ReMDM-loop eta={eta} exceeds the validity bound sigma_max = (1 - alpha_on) / alpha_on = {bound:.4g} "
                    f"while alpha is held at alpha_on={self.alpha_on}; lower eta or alpha_on"
                )
            n1, n2, _ = loop_phases(self, steps)
            if n1 < 1 or steps - n1 - n2 < 1:
                raise ValueError(
                    f"steps={steps} is too few for ReMDM-loop (t_on={self.t_on}, t_off={self.t_off}): each MDLM phase "
                    f"needs >= 1 step"
                )


def loop_phases(schedule: ReMDMSchedule, steps: int) -> tuple[int, int, int]:
    """``(MDLM steps up to alpha_on, held loop steps, final MDLM steps)`` of ReMDM-loop."""
    n1 = int(round((1 - schedule.t_on) * steps))
    n2 = int(round((schedule.t_on - schedule.t_off) * steps))
    return n1, n2, steps - n1 - n2


def remdm_alphas(schedule: ReMDMSchedule, steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per step ``(alpha_t, alpha_s, sigma)`` float64 ``[steps]``; ``sigma`` is the per-row value
    (cap / rescale / loop) or ``sigma_max`` (conf)."""
    if schedule.kind == "loop":
        n1, n2, n3 = loop_phases(schedule, steps)
        a_on = schedule.alpha_on
        grid = np.concatenate([np.linspace(0, a_on, n1 + 1), np.full(n2, a_on), np.linspace(a_on, 1, n3 + 1)[1:]])
        alpha_t, alpha_s = grid[:-1], grid[1:]
        sigma = np.where((np.arange(steps) >= n1) & (np.arange(steps) < n1 + n2), schedule.eta_value, 0.0)
        return alpha_t, alpha_s, sigma
    t = 1 - np.arange(steps + 1) / steps
    alpha_t, alpha_s = 1 - t[:-1], 1 - t[1:]
    with np.errstate(divide="ignore"):
        sigma_max = np.where(alpha_t > 0, np.minimum(1.0, (1 - alpha_s) / np.where(alpha_t > 0, alpha_t, 1)), 1.0)
    eta = schedule.eta_value
    sigma = {"cap": np.minimum(eta, sigma_max), "rescale": eta * sigma_max, "conf": sigma_max}[schedule.kind]
    return alpha_t, alpha_s, sigma


def _check_common(module, prompt, gen_length, mask_id, temperature, attention_mask, cache, block_local=False):
    if cache != "none" and not block_local:
        raise ValueError(f"cache={cache!r}: {_CACHE_REFUSAL}")
    if cache not in BLOCK_CACHES:
        raise ValueError(f"unknown cache {cache!r}; the block-local samplers take one of {list(BLOCK_CACHES)}")
    if cache != "none" and attention_mask is not None:
        raise ValueError(f"cache={cache!r} with an attention_mask (padded prompts) is not implemented; decode padded "
                         f"batches with cache='none' or group prompts by length")
    for name, value in (("gen_length", gen_length),):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive integer")
    if not temperature >= 0:
        raise ValueError(f"temperature={temperature!r} must be >= 0")
    prompt = check_prompt(prompt, module.config, gen_length, mask_id)
    if attention_mask is None:
        return prompt, np.ones(prompt.shape, bool), False
    attention_mask = np.asarray(attention_mask, bool)
    if attention_mask.shape != prompt.shape:
        raise ValueError(f"attention_mask shape {attention_mask.shape} must equal the prompt's {prompt.shape}")
    if not attention_mask.any(axis=1).all():
        raise ValueError("attention_mask hides every prompt token of some row; each row needs >= 1 visible token")
    return prompt, attention_mask, True


_CACHE_REFUSAL = (
    "ReMDM runs without a KV cache: it can re-mask any generated position at any step, so no prefix/suffix is stable "
    "and a prefix or dual cache is not well-defined. Use cache='none'; the block-local samplers "
    "(llada_remask_generate, remedi_generate) take cache='prefix' or 'dual'"
)
BLOCK_CACHES = ("none", "prefix", "dual")


def _block_forward(module, params, cache_kind: str, gen_length: int, block_length: int):
    """``forward(x, cache, j, start) -> (logits [B, L, V], cache)`` with Fast-dLLM's block caches: step ``j == 0``
    of a block is a full forward that rewrites the cache; later steps recompute ``[start, L)`` (prefix) or the
    block ``[start, start + block_length)`` (dual) against it. Logits outside the recomputed range are zeros
    (block-local samplers read only the block)."""
    widths = (block_length,) if cache_kind == "dual" else bucket_widths(gen_length)

    def forward(x, cache, j, start):
        stop = jnp.int32(x.shape[1]) if cache_kind == "prefix" else start + block_length
        return jax.lax.cond(
            j == 0,
            lambda: refresh_logits(module, params, x, cache),
            lambda: cached_logits(module, params, x, cache, start, stop, widths),
        )

    return forward


def _row_keys(key, batch: int):
    return jax.vmap(lambda b: jax.random.fold_in(key, b))(jnp.arange(batch))


def _logits_fn(module, params, attention, has_mask: bool):
    def logits_of(x):
        return module.apply({"params": params}, x, attention if has_mask else None).astype(jnp.float32)

    return logits_of


# ---------------------------------------------------------------------------------------------
# ReMDM


def remdm_generate(
    module, params, prompt, *, steps: int = 128, gen_length: int = 128, schedule: ReMDMSchedule | str = "cap",
    temperature: float = 1.0, mask_id: int = 126336, attention_mask=None, cache: str = "none",
    rng: jax.Array | None = None, on_step=None,
) -> RemaskResult:
    """ReMDM sampling of ``gen_length`` tokens after ``prompt [B, P]`` in ``steps`` forwards (module docstring).
    ``on_step(step, tokens [B, P+G])`` is called live after every forward (``jaxlab.dlm.streaming``)."""
    schedule = ReMDMSchedule(schedule) if isinstance(schedule, str) else schedule
    if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps={steps!r} must be a positive integer")
    schedule.validate(steps)
    prompt, attention_mask, has_mask = _check_common(module, prompt, gen_length, mask_id, temperature, attention_mask, cache)
    if rng is None:
        raise ValueError("ReMDM draws random numbers at every step: pass rng=jax.random.key(...)")
    alpha_t, alpha_s, sigma = remdm_alphas(schedule, steps)
    settings = _RemdmSettings(steps, gen_length, schedule.kind, float(temperature), mask_id, has_mask,
                              tuple(alpha_t.tolist()), tuple(alpha_s.tolist()), tuple(sigma.tolist()),
                              stream=on_step is not None)
    run = _compiled(_remdm, type(module), module.config, settings)
    with streaming.listening(on_step):
        return _to_result(run(params, prompt, attention_mask, rng))


@dataclasses.dataclass(frozen=True)
class _RemdmSettings:
    steps: int
    gen_length: int
    kind: str
    temperature: float
    mask_id: int
    has_attention_mask: bool
    alpha_t: tuple
    alpha_s: tuple
    sigma: tuple
    stream: bool = False


def remdm_draws(row_key, step, prompt_length: int, gen_length: int, vocab: int):
    """One row's random numbers at ``step``: ``(gumbel [P+G, V], uniform [P+G])``, zero over the prompt.

    Drawn for the generated span only, so a row's samples do not depend on how its prompt is padded
    (shared with the test oracle)."""
    k_g, k_u = jax.random.split(jax.random.fold_in(row_key, step))
    g = gumbel(k_g, (gen_length, vocab))
    u = jax.random.uniform(k_u, (gen_length,), jnp.float32)
    return jnp.pad(g, ((prompt_length, 0), (0, 0))), jnp.pad(u, (prompt_length, 0))


def _remdm(module, st: _RemdmSettings, params, prompt, prompt_mask, key):
    batch, p = prompt.shape
    length = p + st.gen_length
    pos = jnp.arange(length, dtype=jnp.int32)
    gen = pos[None] >= p
    attention = jnp.concatenate([prompt_mask, jnp.ones((batch, st.gen_length), bool)], axis=1)
    logits_of = _logits_fn(module, params, attention, st.has_attention_mask)
    row_keys = _row_keys(key, batch)
    alpha_t_all = jnp.asarray(st.alpha_t, jnp.float32)
    alpha_s_all = jnp.asarray(st.alpha_s, jnp.float32)
    sigma_all = jnp.asarray(st.sigma, jnp.float32)
    x = jnp.concatenate([prompt, jnp.full((batch, st.gen_length), st.mask_id, jnp.int32)], axis=1)

    def body(i, s):
        x, commit_step, commit_conf, num_masked, num_remasked = s
        logits = logits_of(x).at[..., st.mask_id].set(-jnp.inf)
        g, u = jax.vmap(lambda k: remdm_draws(k, i, p, st.gen_length, logits.shape[-1]))(row_keys)
        if st.temperature > 0:
            scaled = logits / st.temperature
            tok = jnp.argmax(scaled + g, axis=-1).astype(jnp.int32)
            conf = probability_of(scaled, tok)
        else:
            tok = jnp.argmax(logits, axis=-1).astype(jnp.int32)
            conf = probability_of(logits, tok)
        a_t, a_s, sig = alpha_t_all[i], alpha_s_all[i], sigma_all[i]
        masked = (x == st.mask_id) & gen
        decoded = ~masked & gen
        if st.kind == "conf":
            psi = jnp.where(decoded, -commit_conf, -jnp.inf)
            weights = jax.nn.softmax(psi, axis=-1)
            sigma = jnp.where(decoded, sig * jnp.nan_to_num(weights), 0.0)
        else:
            sigma = jnp.broadcast_to(sig, x.shape)
        unmask_p = jnp.clip((a_s - (1 - sigma) * a_t) / (1 - a_t), 0.0, 1.0)
        remask = decoded & (u < sigma)
        unmask = masked & (u < unmask_p)
        x = jnp.where(unmask, tok, jnp.where(remask, st.mask_id, x))
        commit_step = jnp.where(unmask, i, jnp.where(remask, -2, commit_step))
        commit_conf = jnp.where(unmask, conf, jnp.where(remask, 0.0, commit_conf))
        num_masked = num_masked.at[i].set(jnp.sum((x == st.mask_id) & gen, axis=-1).astype(jnp.int32))
        num_remasked = num_remasked.at[i].set(jnp.sum(remask, axis=-1).astype(jnp.int32))
        streaming.emit(st.stream, i, x)
        return x, commit_step, commit_conf, num_masked, num_remasked

    return _run_steps(body, x, gen, st.steps)


def _run_steps(body, x, gen, steps: int, extra=None) -> dict:
    """Runs ``body(i, (x, commit_step, commit_conf, num_masked, num_remasked[, extra]))`` for ``steps`` steps in
    one ``fori_loop`` from fresh bookkeeping, and returns the sampler's output dict (one forward per step).
    ``extra`` (e.g. a KV cache) is carried when given."""
    batch, length = x.shape
    init = (
        x, jnp.where(gen, -2, -1).repeat(batch, 0).astype(jnp.int32), jnp.zeros((batch, length), jnp.float32),
        jnp.zeros((steps, batch), jnp.int32), jnp.zeros((steps, batch), jnp.int32),
    ) + (() if extra is None else (extra,))
    x, commit_step, commit_conf, num_masked, num_remasked = jax.lax.fori_loop(0, steps, body, init)[:5]
    return dict(tokens=x, num_forward=jnp.int32(steps), num_masked=num_masked, num_remasked=num_remasked,
                commit_step=commit_step, commit_conf=commit_conf)


def _to_result(out) -> RemaskResult:
    out = jax.device_get(out)
    n = int(out["num_forward"])
    return RemaskResult(tokens=out["tokens"], num_forward=n, num_masked=out["num_masked"][:n],
                        num_remasked=out["num_remasked"][:n], commit_step=out["commit_step"],
                        commit_conf=out["commit_conf"])


# ---------------------------------------------------------------------------------------------
# The deterministic LLaDA variant of ReMDM


@dataclasses.dataclass(frozen=True)
class _LladaRemaskSettings:
    base: _Settings
    remask_start: float
    remask_steps: int
    remask_number: int
    cache: str = "none"


def llada_remask_generate(
    module, params, prompt, *, steps: int = 128, gen_length: int = 128, block_length: int = 128,
    temperature: float = 0.0, mask_id: int = 126336, remask_start: float = 7 / 8, remask_steps: int | None = None,
    remask_number: int = 1, attention_mask=None, cache: str = "none", rng: jax.Array | None = None, on_step=None,
) -> RemaskResult:
    """LLaDA's block sampler with ReMDM-LLaDA's late-step remasking (module docstring).

    ``remask_steps`` defaults to the steps per block (the reference's ``steps``); forwards per block =
    ``steps_per_block + remask_steps`` (``remask_number = 0`` adds none). ``on_step(step, tokens [B, P+G])`` is
    called live after every forward (``jaxlab.dlm.streaming``).
    """
    base = _Settings(steps, gen_length, block_length, float(temperature), "low_confidence", mask_id,
                     has_attention_mask=attention_mask is not None, stream=on_step is not None)
    prompt, attention_mask, _ = _check_common(module, prompt, gen_length, mask_id, temperature, attention_mask, cache,
                                              block_local=True)
    from jaxlab.dlm.samplers import _check

    _check(base, module, prompt)
    per_block = steps // (gen_length // block_length)
    remask_steps = per_block if remask_steps is None else remask_steps
    for name, value in (("remask_steps", remask_steps), ("remask_number", remask_number)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name}={value!r} must be an integer >= 0")
    if not 0 <= remask_start <= 1:
        raise ValueError(f"remask_start={remask_start!r} must lie in [0, 1] (fraction of a block's plain steps)")
    if temperature > 0 and rng is None:
        raise ValueError("temperature > 0 samples tokens: pass rng=jax.random.key(...)")
    if remask_number == 0:
        remask_steps = 0  # nothing to remask: no extra forwards (and llada_generate's random stream)
    settings = _LladaRemaskSettings(base, float(remask_start), int(remask_steps), int(remask_number), cache)
    run = _compiled(_llada_remask, type(module), module.config, settings)
    with streaming.listening(on_step):
        return _to_result(run(params, prompt, attention_mask, jax.random.key(0) if rng is None else rng))


def _llada_remask(module, st: _LladaRemaskSettings, params, prompt, prompt_mask, key):
    b = st.base
    batch, p = prompt.shape
    length = p + b.gen_length
    num_blocks = b.gen_length // b.block_length
    per_block = b.steps // num_blocks
    on = int(math.floor(st.remask_start * per_block))
    iters = per_block + st.remask_steps
    total = num_blocks * iters
    pos = jnp.arange(length, dtype=jnp.int32)
    score = _proposals(b)
    attention = jnp.concatenate([prompt_mask, jnp.ones((batch, b.gen_length), bool)], axis=1)
    logits_of = _logits_fn(module, params, attention, b.has_attention_mask)
    x = jnp.concatenate([prompt, jnp.full((batch, b.gen_length), b.mask_id, jnp.int32)], axis=1)
    gen = pos[None] >= p
    if st.cache != "none":
        from jaxlab.models.dlm import init_cache

        forward = _block_forward(module, params, st.cache, b.gen_length, b.block_length)

    def body(it, s):
        x, commit_step, commit_conf, counts, num_masked, num_remasked, key, cache = s
        key, sub = jax.random.split(key)
        block, j = it // iters, it % iters
        start = p + block * b.block_length
        end = start + b.block_length
        in_block = (pos >= start) & (pos < end)
        counts = jnp.where(j == 0, jnp.sum((x == b.mask_id) & in_block[None], axis=-1), counts)
        remask_phase = (j >= on) & (j < on + st.remask_steps)
        # Remask first (before the forward): the lowest commit-time confidences of this block.
        committed_here = (x != b.mask_id) & in_block[None]
        n_remask = jnp.where(remask_phase, jnp.minimum(st.remask_number, jnp.sum(committed_here, axis=-1)), 0)
        remask = top_k_mask(-commit_conf, committed_here, n_remask.astype(jnp.int32))
        x = jnp.where(remask, b.mask_id, x)
        commit_step = jnp.where(remask, -2, commit_step)
        commit_conf = jnp.where(remask, 0.0, commit_conf)
        if st.cache == "none":
            logits = logits_of(x)
        else:
            logits, cache = forward(x, cache, j, start)
        conf, tok = score(logits, sub)
        c = jnp.where(j < on, j, j - st.remask_steps)  # index in LLaDA's schedule
        k_plain = counts // per_block + (c < counts % per_block)
        k = jnp.where(remask_phase, n_remask, k_plain).astype(jnp.int32)
        eligible = (x == b.mask_id) & (pos[None] < end)
        chosen = top_k_mask(conf, eligible, k)
        x = jnp.where(chosen, tok, x)
        commit_step = jnp.where(chosen, it, commit_step)
        commit_conf = jnp.where(chosen, conf, commit_conf)
        num_masked = num_masked.at[it].set(jnp.sum((x == b.mask_id) & gen, axis=-1).astype(jnp.int32))
        num_remasked = num_remasked.at[it].set(jnp.sum(remask, axis=-1).astype(jnp.int32))
        streaming.emit(b.stream, it, x)
        return x, commit_step, commit_conf, counts, num_masked, num_remasked, key, cache

    init = (
        x, jnp.where(gen, -2, -1).repeat(batch, 0).astype(jnp.int32), jnp.zeros((batch, length), jnp.float32),
        jnp.zeros((batch,), jnp.int32), jnp.zeros((total, batch), jnp.int32), jnp.zeros((total, batch), jnp.int32), key,
        () if st.cache == "none" else init_cache(module.config, batch, length),
    )
    x, commit_step, commit_conf, _, num_masked, num_remasked, _, _ = jax.lax.fori_loop(0, total, body, init)
    return dict(tokens=x, num_forward=jnp.int32(total), num_masked=num_masked, num_remasked=num_remasked,
                commit_step=commit_step, commit_conf=commit_conf)


# ---------------------------------------------------------------------------------------------
# RemeDi-style keep-top-K


@dataclasses.dataclass(frozen=True)
class _RemediSettings:
    steps: int
    gen_length: int
    block_length: int
    temperature: float
    mask_id: int
    score: str
    has_attention_mask: bool
    cache: str = "none"
    stream: bool = False


def remedi_keep_counts(block_length: int, steps_per_block: int) -> np.ndarray:
    """RemeDi's cumulative keep counts ``K_i`` ``[steps_per_block]`` (remainder on the last steps)."""
    per = np.full(steps_per_block, block_length // steps_per_block)
    r = block_length % steps_per_block
    if r:
        per[-r:] += 1
    return np.cumsum(per)


def remedi_generate(
    module, params, prompt, *, steps: int = 128, gen_length: int = 128, block_length: int = 32,
    temperature: float = 0.0, mask_id: int = 126336, score: str = "prob", attention_mask=None, cache: str = "none",
    rng: jax.Array | None = None, on_step=None,
) -> RemaskResult:
    """RemeDi-style decoding: each step keeps the block's top-``K_i`` tokens by ``score`` and re-masks the rest.
    ``on_step(step, tokens [B, P+G])`` is called live after every forward (``jaxlab.dlm.streaming``)."""
    prompt, attention_mask, has_mask = _check_common(module, prompt, gen_length, mask_id, temperature, attention_mask, cache,
                                                     block_local=True)
    for name, value in (("steps", steps), ("block_length", block_length)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive integer")
    if gen_length % block_length:
        raise ValueError(f"gen_length={gen_length} is not a multiple of block_length={block_length}")
    num_blocks = gen_length // block_length
    if steps % num_blocks or steps // num_blocks > block_length:
        raise ValueError(f"steps={steps} must be a multiple of the number of blocks ({num_blocks}) with at most "
                         f"block_length={block_length} steps per block")
    if score not in ("prob", "logit", "head"):
        raise ValueError(f"score={score!r}; use 'prob' (token probability), 'logit' (the released script's ranking) or "
                         f"'head' (a trained confidence head, jaxlab.dlm.confidence)")
    if score == "head" and not getattr(module.config, "confidence_head", False):
        raise ValueError("score='head' needs a model with a confidence head (LLaDAConfig.confidence_head=True); "
                         "train one with jaxlab.dlm.confidence.train_confidence_head")
    if score == "head" and cache != "none":
        raise ValueError(f"cache={cache!r} with score='head' is not implemented (the head's blocks have no cache); "
                         f"use cache='none'")
    if temperature > 0 and rng is None:
        raise ValueError("temperature > 0 samples tokens: pass rng=jax.random.key(...)")
    settings = _RemediSettings(steps, gen_length, block_length, float(temperature), mask_id, score, has_mask, cache,
                               stream=on_step is not None)
    run = _compiled(_remedi, type(module), module.config, settings)
    with streaming.listening(on_step):
        return _to_result(run(params, prompt, attention_mask, jax.random.key(0) if rng is None else rng))


def _remedi(module, st: _RemediSettings, params, prompt, prompt_mask, key):
    batch, p = prompt.shape
    length = p + st.gen_length
    num_blocks = st.gen_length // st.block_length
    per_block = st.steps // num_blocks
    keep_counts = jnp.asarray(remedi_keep_counts(st.block_length, per_block), jnp.int32)
    pos = jnp.arange(length, dtype=jnp.int32)
    gen = pos[None] >= p
    attention = jnp.concatenate([prompt_mask, jnp.ones((batch, st.gen_length), bool)], axis=1)
    logits_of = _logits_fn(module, params, attention, st.has_attention_mask)
    row_keys = _row_keys(key, batch)
    x = jnp.concatenate([prompt, jnp.full((batch, st.gen_length), st.mask_id, jnp.int32)], axis=1)
    cache = None
    if st.cache != "none":
        from jaxlab.models.dlm import init_cache

        forward = _block_forward(module, params, st.cache, st.gen_length, st.block_length)
        cache = init_cache(module.config, batch, length)

    def body(it, s):
        x, commit_step, commit_conf, num_masked, num_remasked = s[:5]
        block, i = it // per_block, it % per_block
        start = p + block * st.block_length
        in_block = (pos >= start) & (pos < start + st.block_length)
        extra = s[5:]
        if st.score == "head":
            logits, head_conf = module.apply({"params": params}, x, attention if st.has_attention_mask else None,
                                             method=type(module).with_confidence)
        elif st.cache != "none":
            logits, new_cache = forward(x, s[5], i, start)
            extra = (new_cache,)
        else:
            logits = logits_of(x)
        logits = logits.at[..., st.mask_id].set(-jnp.inf)
        masked = x == st.mask_id
        if st.temperature > 0:
            g = jax.vmap(lambda k: remdm_draws(k, it, p, st.gen_length, logits.shape[-1])[0])(row_keys)
            proposal = jnp.argmax(logits / st.temperature + g, axis=-1).astype(jnp.int32)
        else:
            proposal = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        x0 = jnp.where(masked, proposal, x)
        prob = probability_of(logits, x0)
        if st.score == "head":
            rank_score = head_conf
        elif st.score == "prob":
            rank_score = prob
        else:
            rank_score = jnp.take_along_axis(logits, x0[..., None], axis=-1)[..., 0]
        keep = top_k_mask(rank_score, jnp.broadcast_to(in_block[None], x.shape), jnp.full((batch,), keep_counts[i]))
        new_x = jnp.where(in_block[None], jnp.where(keep, x0, st.mask_id), x)
        newly = keep & masked
        dropped = in_block[None] & ~masked & ~keep
        commit_step = jnp.where(newly, it, jnp.where(dropped, -2, commit_step))
        commit_conf = jnp.where(newly, prob, jnp.where(dropped, 0.0, commit_conf))
        num_masked = num_masked.at[it].set(jnp.sum((new_x == st.mask_id) & gen, axis=-1).astype(jnp.int32))
        num_remasked = num_remasked.at[it].set(jnp.sum(dropped, axis=-1).astype(jnp.int32))
        streaming.emit(st.stream, it, new_x)
        return (new_x, commit_step, commit_conf, num_masked, num_remasked) + extra

    return _run_steps(body, x, gen, st.steps, cache)
