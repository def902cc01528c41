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

Training runs through the shared loop (``jaxlab.train``): ``ConfidenceHeadTask`` starts from a DLM
checkpoint (``jaxlab.dlm.pretrained``) plus a fresh head, and the config's
``optimizer.trainable_params = "^conf_"`` freezes everything else (``jaxlab.train.optim.restrict_to``:
zero updates, no Adam state for the backbone). The loss also stops gradients into the backbone, so
no backbone gradient is computed and ``grad_norm`` is the head's. ``configs/dlm.py:sudoku-confidence``
is the config; ``train_confidence_head(config, ...)`` runs it on an in-memory backbone.
"""

import dataclasses
import pathlib
import shutil
import tempfile

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


def head_loss(module, params, x, truth, answer, mask_id: int):
    """Class-balanced BCE of the head on state ``x [B, L]`` (correct and wrong tokens weigh half each: the sampler
    uses only the ranking, and wrong tokens are rare) -> ``(loss, metrics)``."""
    conf, target, _ = head_outputs(module, params, x, truth, mask_id)
    bce = optax.sigmoid_binary_cross_entropy(conf, target)
    w = answer.astype(jnp.float32)
    n_pos = jnp.maximum(jnp.sum(target * w), 1.0)
    n_neg = jnp.maximum(jnp.sum((1 - target) * w), 1.0)
    balanced = w * jnp.where(target > 0.5, 0.5 / n_pos, 0.5 / n_neg)
    loss = jnp.sum(bce * balanced)
    acc = jnp.sum(((conf > 0) == (target > 0.5)) * w) / jnp.sum(w)
    return loss, dict(loss=loss, accuracy=acc, positive_rate=jnp.sum(target * w) / jnp.sum(w))


TRAINABLE = "^conf_"  # optimizer.trainable_params of the head configs: the head's top-level names


@dataclasses.dataclass(frozen=True, eq=False)
class ConfidenceHeadTask:
    """The confidence head on a frozen DLM backbone as a ``jaxlab.train.task.Task`` (module docstring).

    Batches: the backbone's text task (``{"tokens": [B, L], "prompt_lengths": [B]}``). ``init_params`` is the
    checkpoint's backbone plus a freshly initialised head (boxed like ``module.init``'s output).
    """

    module: nn.Module
    backbone: dict
    vocab_ids: tuple
    corrupt: float = 0.3
    family: str = "llada"

    @classmethod
    def from_config(cls, config) -> "ConfidenceHeadTask":
        """``config.confidence.{checkpoint, blocks, corrupt}``; the config must freeze the backbone with
        ``optimizer.trainable_params`` (``TRAINABLE``). Used through
        ``config.task = "jaxlab.dlm.confidence:ConfidenceHeadTask.from_config"``."""
        from jaxlab.data import text_tasks
        from jaxlab.dlm.pretrained import load_checkpoint

        text_tasks.register()
        trainable = config.optimizer.get("trainable_params", "")
        if trainable != TRAINABLE:
            raise ValueError(f"the confidence head trains on a frozen backbone: set config.optimizer.trainable_params="
                             f"{TRAINABLE!r} (got {trainable!r}); configs/dlm.py:sudoku-confidence does")
        module, params, task, meta = load_checkpoint(config.confidence.checkpoint)
        if config.data.path != meta["task"]:
            raise ValueError(f"config.data.path={config.data.path!r} but the backbone {config.confidence.checkpoint} was "
                             f"trained on {meta['task']!r}; the head must see the backbone's task")
        corrupt = float(config.confidence.corrupt)
        if not 0.0 <= corrupt <= 1.0:
            raise ValueError(f"config.confidence.corrupt={corrupt} must be in [0, 1]")
        blocks = int(config.confidence.blocks)
        if blocks < 0:
            raise ValueError(f"config.confidence.blocks={blocks} must be >= 0")
        cfg = dataclasses.replace(module.config, confidence_head=True, confidence_head_blocks=blocks)
        backbone, _ = split_head(params)
        return cls(type(module)(cfg), backbone, answer_vocab(task), corrupt, meta["family"])

    def model_spec(self):
        return self.family, self.module.config

    def init_params(self, rng, batch):
        tokens = jnp.asarray(batch["tokens"], jnp.int32)
        boxed = self.module.init(rng, tokens, method=type(self.module).with_confidence)["params"]
        _, head = split_head(boxed)
        missing = sorted(set(boxed) - set(head) - set(self.backbone))
        if missing:
            raise ValueError(f"the backbone checkpoint lacks {missing}: it does not match the model config")
        backbone = {k: nn.meta.replace_boxed(boxed[k], jax.tree_util.tree_map(jnp.asarray, self.backbone[k]))
                    for k in boxed if k not in head}
        return {**backbone, **head}

    def loss_fn(self, params, batch, rng):
        tokens = jnp.asarray(batch["tokens"], jnp.int32)
        backbone, head = split_head(params)
        backbone = jax.lax.stop_gradient(backbone)
        mask_id = self.module.config.mask_token_id
        x, answer = decoding_state(self.module, backbone, tokens, jnp.asarray(batch["prompt_lengths"], jnp.int32), rng,
                                   mask_id, self.corrupt, self.vocab_ids)
        return head_loss(self.module, {**backbone, **head}, x, tokens, answer, mask_id)


def answer_vocab(task) -> tuple[int, ...]:
    """Ids a corrupted answer token may take: the task's characters (no eos / pad / mask)."""
    v = task.vocab
    return tuple(i for i in range(v.size) if i not in (v.eos_id, v.pad_id, v.mask_id))


def train_confidence_head(config, module, params, task_spec: str, *, steps: int = 500, batch_size: int = 64,
                          learning_rate: float = 3e-3, blocks: int = 1, corrupt: float = 0.3, seed: int = 0,
                          log_every: int = 100, workdir=None, log=print):
    """Trains a head on the frozen backbone ``(module, params)`` through the shared loop with ``config``
    (``configs/dlm.py:sudoku-confidence``; the arguments here override its fields; data = the training stream of
    the text task ``task_spec``, e.g. a checkpoint's ``meta["task"]``); returns
    ``(module with head, params, history)``, history = the loop's logged metrics rows.

    ``corrupt``: committed answer tokens are replaced by a random character with probability
    ``corrupt * U(0, 1)`` per example, on top of the model's own mistakes (0 = self-generated errors only).
    ``workdir``: where the run is written (default: a temporary directory, removed afterwards).
    """
    from jaxlab.dlm.pretrained import save_checkpoint
    from jaxlab.train.loop import train
    from jaxlab.train.metrics import METRICS_FILE, read_metrics
    from jaxlab.train.params_io import load_model

    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps={steps} and batch_size={batch_size} must be positive")
    tmp = tempfile.mkdtemp(prefix="confidence_head_")
    try:
        backbone_file = save_checkpoint(pathlib.Path(tmp) / "backbone.npz", "llada", module.config, split_head(params)[0],
                                        task_spec)
        config = config.copy_and_resolve_references()
        config.confidence.update(checkpoint=str(backbone_file), blocks=blocks, corrupt=corrupt)
        config.data.path = task_spec
        config.seed = seed
        config.training.update(num_steps=steps, global_batch_size=batch_size)
        config.optimizer.learning_rate = learning_rate
        config.logging.every_steps = log_every
        config.checkpoint.every_steps = steps
        run_dir = pathlib.Path(workdir) if workdir is not None else pathlib.Path(tmp) / "run"
        train(config, str(run_dir))
        history = read_metrics(run_dir / METRICS_FILE)
        for row in history:
            if row["step"] % log_every and row["step"] != steps:
                continue
            log(f"confidence head step {row['step']}: " + ", ".join(
                f"{k} {row[k]:.4f}" for k in ("loss", "accuracy", "positive_rate")))
        head_module, trained = load_model(run_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return head_module, trained, history


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
