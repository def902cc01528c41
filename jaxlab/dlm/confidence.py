"""A trained per-token confidence head for RemeDi-style remasking (``remedi_generate(score='head')``).

RemeDi (arXiv 2509.23653, ``maple-research-lab/RemeDi``) ranks tokens by a learned confidence: its
"Unmasking Policy Stream" is a side stream of 4 transformer blocks that reads the main stream at
layers 0/10/20/30, feeds back through zero-initialised linears, and ends in ``ln_f_upm`` +
``linear_confidence`` (``[d_model, 1]``); it is trained jointly with the LM (remask SFT, then RL).
The paper's exact training recipe was not available here. **jaxlab's choice** (documented, not the
paper's recipe): a head on the *frozen* backbone -- ``confidence_head_blocks`` extra LLaDA blocks
(0 = none) on the last block's output, an RMSNorm and a zero-initialised ``[D, 1]`` linear layer
(``LLaDAConfig.confidence_head``) -- trained with binary cross-entropy on the target "the token at
this position is correct":

- draw a decoding-like state per answer: mask each answer token with probability ``t ~ U(0, 1)``
  (LLaDA's forward process), run the backbone, and fill a random fraction ``f ~ U(0, 1)`` of the
  masks with the backbone's own argmax proposals (so committed tokens carry the model's real
  mistakes, as during decoding);
- replace committed answer tokens by a random character with probability ``corrupt * U(0, 1)``
  (default 0.3), so that wrong committed tokens -- what remasking must find -- are common;
- run the backbone + head on that state; target = ``token == truth`` at committed answer
  positions, ``argmax proposal == truth`` at still-masked ones (what ``remedi_generate`` ranks);
  prompt positions are excluded; the loss is class-balanced (correct and wrong tokens weigh half
  each), since the sampler uses only the ranking and wrong tokens are rare.

Freezing the backbone keeps the proposals identical, so trained-head vs probability decoding differ
only in the ranking. Alternatives not taken: joint training with the masked-diffusion loss (RemeDi),
self-generated errors only (``corrupt=0``), a side stream like the UPS.
A small dedicated loop (optax Adam on the head's parameters only, one jitted step) is used rather
than ``jaxlab.train``: the shared loop's Task trains every parameter.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxlab.dlm.scoring import probability_of

HEAD_PREFIXES = ("conf_blocks_", "conf_norm", "conf_out")


def split_head(params: dict) -> tuple[dict, dict]:
    """``(backbone params, head params)``."""
    head = {k: v for k, v in params.items() if k.startswith(HEAD_PREFIXES)}
    return {k: v for k, v in params.items() if k not in head}, head


def add_confidence_head(module, params, *, blocks: int = 0, init: str = "zeros", seed: int = 0):
    """``(module with a confidence head, params)``: the backbone's params plus a fresh head.

    ``init='zeros'`` is the trainable start (confidence 0.5 everywhere); ``'random'`` draws the output
    layer from N(0, 1 / D) -- an untrained head that ranks tokens by an arbitrary function of the features.
    """
    if init not in ("zeros", "random"):
        raise ValueError(f"init={init!r}; use 'zeros' or 'random'")
    cfg = dataclasses.replace(module.config, confidence_head=True, confidence_head_blocks=blocks)
    new = type(module)(cfg)
    full = new.init(jax.random.key(seed), jnp.zeros((1, 4), jnp.int32), method=type(module).with_confidence)
    _, head = split_head(nn.meta.unbox(full)["params"])
    head = jax.tree_util.tree_map(np.asarray, head)
    if init == "random":
        d = cfg.d_model
        kernel = np.random.default_rng(seed).standard_normal((d, 1)).astype(np.float32) / np.sqrt(d)
        head = {**head, "conf_out": {**head["conf_out"], "kernel": kernel}}
    backbone, _ = split_head(params)
    return new, {**backbone, **head}


def decoding_state(module, backbone, tokens, prompt_lengths, key, mask_id: int, corrupt: float = 0.0,
                   vocab_ids: tuple = ()):
    """A decoding-like state (module docstring): ``(x [B, L], answer [B, L] bool)``."""
    b, length = tokens.shape
    k_t, k_u, k_f, k_v, k_c, k_r, k_s = jax.random.split(key, 7)
    answer = jnp.arange(length)[None] >= prompt_lengths[:, None]
    t = jax.random.uniform(k_t, (b, 1))
    masked = answer & (jax.random.uniform(k_u, (b, length)) < t)
    x_t = jnp.where(masked, mask_id, tokens)
    logits = module.apply({"params": backbone}, x_t).at[..., mask_id].set(-jnp.inf)
    proposal = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    fill = masked & (jax.random.uniform(k_v, (b, length)) < jax.random.uniform(k_f, (b, 1)))
    x = jnp.where(fill, proposal, x_t)
    if corrupt > 0 and vocab_ids:
        committed = answer & (x != mask_id)
        rate = corrupt * jax.random.uniform(k_c, (b, 1))
        flip = committed & (jax.random.uniform(k_r, (b, length)) < rate)
        ids = jnp.asarray(vocab_ids, jnp.int32)
        x = jnp.where(flip, ids[jax.random.randint(k_s, (b, length), 0, len(vocab_ids))], x)
    return x, answer


def head_outputs(module, params, x, truth, mask_id: int):
    """``(confidence logit [B, L], target [B, L] float, probability score [B, L])`` for state ``x``."""
    logits, conf = module.apply({"params": params}, x, method=type(module).with_confidence)
    logits = logits.at[..., mask_id].set(-jnp.inf)
    proposal = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    masked = x == mask_id
    current = jnp.where(masked, proposal, x)
    target = (current == truth).astype(jnp.float32)
    return conf, target, probability_of(logits, current)


def make_train_step(module, optimizer, mask_id: int, corrupt: float, vocab_ids: tuple):
    def loss_fn(head, backbone, x, truth, answer):
        conf, target, _ = head_outputs(module, {**backbone, **head}, x, truth, mask_id)
        bce = optax.sigmoid_binary_cross_entropy(conf, target)
        w = answer.astype(jnp.float32)
        # class-balanced: correct and wrong tokens weigh half each (ranking is what the sampler uses)
        n_pos = jnp.maximum(jnp.sum(target * w), 1.0)
        n_neg = jnp.maximum(jnp.sum((1 - target) * w), 1.0)
        balanced = w * jnp.where(target > 0.5, 0.5 / n_pos, 0.5 / n_neg)
        loss = jnp.sum(bce * balanced)
        acc = jnp.sum(((conf > 0) == (target > 0.5)) * w) / jnp.sum(w)
        return loss, dict(loss=loss, accuracy=acc, positive_rate=jnp.sum(target * w) / jnp.sum(w))

    @jax.jit
    def step(head, opt_state, backbone, tokens, prompt_lengths, key):
        x, answer = decoding_state(module, backbone, tokens, prompt_lengths, key, mask_id, corrupt, vocab_ids)
        (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(head, backbone, x, tokens, answer)
        updates, opt_state = optimizer.update(grads, opt_state, head)
        return optax.apply_updates(head, updates), opt_state, metrics

    return step


def answer_vocab(task) -> tuple[int, ...]:
    """Ids a corrupted answer token may take: the task's characters (no eos / pad / mask)."""
    v = task.vocab
    return tuple(i for i in range(v.size) if i not in (v.eos_id, v.pad_id, v.mask_id))


def train_confidence_head(module, params, task, *, steps: int = 500, batch_size: int = 64, learning_rate: float = 3e-3,
                          blocks: int = 1, corrupt: float = 0.3, seed: int = 0, log_every: int = 100, log=print):
    """Trains a head on ``task``'s training stream (seed 0); returns ``(module, params, history)``.

    ``corrupt``: committed answer tokens are replaced by a random character with probability
    ``corrupt * U(0, 1)`` per example, on top of the model's own mistakes (0 = self-generated errors only).
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps={steps} and batch_size={batch_size} must be positive")
    module, params = add_confidence_head(module, params, blocks=blocks, seed=seed)
    backbone, head = split_head(params)
    optimizer = optax.adam(learning_rate)
    opt_state = optimizer.init(head)
    step = make_train_step(module, optimizer, module.config.mask_token_id, corrupt, answer_vocab(task))
    key = jax.random.key(seed)
    history = []
    for i, batch in zip(range(steps), task.batches(batch_size, seed=0)):
        head, opt_state, metrics = step(head, opt_state, backbone, jnp.asarray(batch["tokens"]),
                                        jnp.asarray(batch["prompt_lengths"]), jax.random.fold_in(key, i))
        if (i + 1) % log_every == 0 or i + 1 == steps:
            m = {k: float(v) for k, v in metrics.items()}
            if not np.isfinite(m["loss"]):
                raise FloatingPointError(f"confidence-head loss is {m['loss']} at step {i + 1}")
            history.append({"step": i + 1, **m})
            log(f"confidence head step {i + 1}: " + ", ".join(f"{k} {v:.4f}" for k, v in m.items()))
    return module, {**backbone, **jax.tree_util.tree_map(np.asarray, head)}, history


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (rank statistic, ties averaged)."""
    scores, labels = np.asarray(scores, np.float64).ravel(), np.asarray(labels, bool).ravel()
    pos, neg = labels.sum(), (~labels).sum()
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    _, start, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = start + (counts - 1) / 2.0 + 1
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


def evaluate_head(module, params, task, *, num_examples: int = 256, seed: int = 1, corrupt: float = 0.0) -> dict:
    """Held-out decoding-like states: AUROC of the head vs the token probability for "token is correct",
    over all answer positions, the still-masked ones and the committed ones."""
    from jaxlab.data.text_tasks import SPLIT_SEEDS

    batch = task.batch(SPLIT_SEEDS["eval"], 0, num_examples)
    tokens, plen = jnp.asarray(batch["tokens"]), jnp.asarray(batch["prompt_lengths"])
    mask_id = module.config.mask_token_id
    backbone, _ = split_head(params)
    x, answer = decoding_state(module, backbone, tokens, plen, jax.random.key(seed), mask_id, corrupt,
                               answer_vocab(task))
    conf, target, prob = jax.device_get(head_outputs(module, params, x, tokens, mask_id))
    a, m = np.asarray(answer), np.asarray(x) == mask_id
    out = {}
    for name, sel in (("all", a), ("masked", a & m), ("committed", a & ~m)):
        out[name] = dict(n=int(sel.sum()), wrong=float(1 - target[sel].mean()), auroc_head=auroc(conf[sel], target[sel] > 0.5),
                         auroc_prob=auroc(prob[sel], target[sel] > 0.5))
    return out
