"""Masked-diffusion LM training as a ``jaxlab.train.task.Task``.

Batches: ``{"tokens": [B, L] int32}`` (pre-training) plus ``"prompt_lengths": [B] int32`` for SFT,
where positions ``< prompt_length`` are the prompt (never masked) and the rest is the answer
(EOS-padded answers included, as in LLaDA's SFT). The model is any linen module whose
``apply({"params": p}, tokens [B, L])`` returns logits ``[B, L, V]`` (LLaDA, ``jaxlab.models.dlm``).
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.config_utils import check_choice, to_dict
from jaxlab.dlm.objective import MASK_EPS, draw_noise, masked_diffusion_loss
from jaxlab.models.registry import get_family

OBJECTIVES = ("pretrain", "sft")


@dataclasses.dataclass(frozen=True)
class MaskedDiffusionTask:
    """LLaDA's objective on ``module``: ``objective="pretrain"`` (everything may be masked) or ``"sft"``."""

    module: nn.Module
    mask_id: int
    objective: str = "sft"
    eps: float = MASK_EPS
    family: str = "llada"

    @classmethod
    def from_config(cls, config) -> "MaskedDiffusionTask":
        """``config.model_family`` + ``config.model`` (the network), ``config.objective.{kind, eps}``.

        The mask id is the model's ``mask_token_id``. Used by ``launch/train.py`` through
        ``config.task = "jaxlab.dlm.task:MaskedDiffusionTask.from_config"``.
        """
        from jaxlab.data import text_tasks

        text_tasks.register()  # the "text_task" data source of the small configs
        family = get_family(config.model_family)
        model_config = family.config.from_dict(to_dict(config.model))
        check_choice("objective.kind", config.objective.kind, OBJECTIVES)
        return cls(family.module(model_config), model_config.mask_token_id, config.objective.kind,
                   float(config.objective.eps), config.model_family)

    def model_spec(self):
        """``(family, model config)``: the loop writes it to ``model.json`` for ``load_model(workdir)``."""
        return self.family, self.module.config

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective={self.objective!r} is not supported; use one of {list(OBJECTIVES)}")
        if not 0.0 <= self.eps < 1.0:
            raise ValueError(f"eps={self.eps} must be in [0, 1) (LLaDA uses 1e-3)")

    def check_batch(self, batch) -> None:
        """Token ids of a host batch within the model's embedding table."""
        tokens = np.asarray(batch["tokens"])
        size = self.module.config.embedding_size
        if tokens.size and (tokens.min() < 0 or tokens.max() >= size):
            raise ValueError(
                f"token ids in [{tokens.min()}, {tokens.max()}] fall outside the model's embedding table [0, {size}); "
                f"config.model.vocab_size/embedding_size must cover the data's tokenizer"
            )

    def logits(self, params, tokens: jax.Array) -> jax.Array:
        """``tokens [B, L]`` -> ``logits [B, L, V]`` (the network in inference form: no dropout)."""
        return self.module.apply({"params": params}, tokens)

    def init_params(self, rng: jax.Array, batch):
        tokens = jnp.asarray(batch["tokens"], jnp.int32)
        return self.module.init(rng, tokens)["params"]

    def loss_fn(self, params, batch, rng: jax.Array):
        tokens = jnp.asarray(batch["tokens"], jnp.int32)
        prompt_lengths = None
        if self.objective == "sft":
            if "prompt_lengths" not in batch:
                raise KeyError("the SFT objective needs batch['prompt_lengths'] [B]; use objective='pretrain' for plain text")
            prompt_lengths = jnp.asarray(batch["prompt_lengths"], jnp.int32)
        t, u = draw_noise(rng, *tokens.shape)
        loss, aux = masked_diffusion_loss(
            lambda noisy: self.logits(params, noisy), tokens, t, u, self.mask_id,
            prompt_lengths=prompt_lengths, eps=self.eps,
        )
        return loss, _metrics(loss, tokens, aux)


def _metrics(loss: jax.Array, tokens: jax.Array, aux) -> dict[str, jax.Array]:
    """Scalar metrics: the loss, the fraction of positions masked, and on the masked positions the
    plain (unweighted) cross-entropy and the argmax accuracy."""
    masked = aux["masked"]
    count = jnp.maximum(jnp.sum(masked), 1)
    logp = jax.nn.log_softmax(aux["logits"].astype(jnp.float32), axis=-1)
    ce = -jnp.take_along_axis(logp, tokens[..., None], axis=-1)[..., 0]
    correct = jnp.argmax(logp, axis=-1) == tokens
    return {
        "loss": loss,
        "masked_fraction": jnp.mean(masked.astype(jnp.float32)),
        "masked_ce": jnp.sum(jnp.where(masked, ce, 0.0)) / count,
        "masked_accuracy": jnp.sum(jnp.where(masked, correct, False)) / count,
    }
