"""Next-token prediction as a ``jaxlab.train.task.Task``, and held-out perplexity.

Batches: ``{"tokens": [B, L] int32, "segment_ids": [B, L] int32}`` (``jaxlab.lm.data``). The loss is
the mean cross-entropy of ``tokens[:, 1:]`` given the prefix, over targets in the same document as
their input (a target across a packing boundary, i.e. the first token of the next document after
``<|endoftext|>``, is skipped); attention is document-masked by ``segment_ids``.

Conversion fine-tuning (DiJiang's recipe): ``config.init.from_workdir`` names a finished softmax run
(or a converted checkpoint); its EMA params become the initial params, passed through
``jaxlab.lm.convert_to_dijiang`` when ``config.model.attention == "dijiang"`` and the source is a
softmax model. The architecture then comes from the source, and only the jaxlab run fields
(``dtype``, ``remat``, ``scan_blocks``, ``dijiang_chunk``, ``dijiang_form``) from ``config.model``.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.config_utils import to_dict
from jaxlab.convert.common import stack_layers
from jaxlab.models.lm import CausalLM, LMConfig

RUN_FIELDS = ("dtype", "remat", "scan_blocks", "dijiang_chunk", "dijiang_form")


def next_token_loss(logits_BTV: jax.Array, tokens_BT: jax.Array, segment_ids_BT: jax.Array | None):
    """``(mean NLL, (sum NLL, target count, correct count))`` of ``tokens[:, 1:]`` under ``logits[:, :-1]``."""
    logp = jax.nn.log_softmax(logits_BTV[:, :-1].astype(jnp.float32), axis=-1)
    targets = tokens_BT[:, 1:]
    nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    valid = jnp.ones_like(targets, bool) if segment_ids_BT is None else segment_ids_BT[:, 1:] == segment_ids_BT[:, :-1]
    count = jnp.sum(valid)
    total = jnp.sum(jnp.where(valid, nll, 0.0))
    correct = jnp.sum(jnp.where(valid, jnp.argmax(logp, -1) == targets, False))
    return total / jnp.maximum(count, 1), (total, count, correct)


def _unstack(tree, n: int) -> list:
    return [jax.tree.map(lambda x, i=i: np.asarray(x)[i], tree) for i in range(n)]


def relayout(params: dict, num_layers: int, scan_blocks: bool) -> dict:
    """Converts a CausalLM param tree between the scanned (``blocks/block``) and unscanned layouts."""
    scanned = "blocks" in params
    if scanned == scan_blocks:
        return params
    out = {k: v for k, v in params.items() if k != "blocks" and not k.startswith("layers_")}
    if scan_blocks:
        out["blocks"] = {"block": stack_layers([params[f"layers_{i}"] for i in range(num_layers)])}
    else:
        out.update({f"layers_{i}": layer for i, layer in enumerate(_unstack(params["blocks"]["block"], num_layers))})
    return out


@dataclasses.dataclass(frozen=True, eq=False)
class CausalLMTask:
    """Next-token loss on ``module``; ``initial_params`` (a float tree) replaces the random init when given."""

    module: CausalLM
    initial_params: Any = None
    family: str = "lm"

    @classmethod
    def from_config(cls, config) -> "CausalLMTask":
        """``config.model`` (``LMConfig`` fields) and ``config.init`` (``from_workdir``, ``seed``)."""
        from jaxlab.lm import data

        data.register()
        model_config = LMConfig.from_dict(to_dict(config.model))
        source = config.init.from_workdir if "init" in config else ""
        if not source:
            return cls(CausalLM(model_config))
        from jaxlab.lm.conversion import convert_to_dijiang
        from jaxlab.train.params_io import load_model

        src_module, params = load_model(source)
        src = src_module.config
        if model_config.attention == "dijiang" and src.attention == "softmax":
            src, params = convert_to_dijiang(params, src, jax.random.key(int(config.init.seed)))
        elif model_config.attention != src.attention:
            raise ValueError(f"config.init.from_workdir={source!r} holds a {src.attention} model; it cannot initialise "
                             f"attention={model_config.attention!r}")
        shape_fields = ("layout", "vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size")
        diff = {f: (getattr(src, f), getattr(model_config, f)) for f in shape_fields if getattr(src, f) != getattr(model_config, f)}
        if diff:
            raise ValueError(f"config.model differs from the model in {source}: {diff} (source, config); "
                             f"make config.model describe the source model")
        cfg = src.replace(**{f: getattr(model_config, f) for f in RUN_FIELDS})
        return cls(CausalLM(cfg), relayout(params, cfg.num_layers, cfg.scan_blocks))

    def model_spec(self):
        return self.family, self.module.config

    def init_params(self, rng: jax.Array, batch):
        tokens = jnp.asarray(batch["tokens"], jnp.int32)
        boxed = self.module.init(rng, tokens)["params"]
        if self.initial_params is None:
            return boxed
        is_box = lambda x: isinstance(x, nn.Partitioned)  # noqa: E731
        return jax.tree.map(lambda box, value: box.replace_boxed(jnp.asarray(value, jnp.float32)) if is_box(box)
                            else jnp.asarray(value, jnp.float32), boxed, self.initial_params, is_leaf=is_box)

    def loss_fn(self, params, batch, rng: jax.Array):
        tokens = jnp.asarray(batch["tokens"], jnp.int32)
        segments = batch.get("segment_ids")
        segments = None if segments is None else jnp.asarray(segments, jnp.int32)
        logits, _ = self.module.apply({"params": params}, tokens, segments)
        loss, (_, count, correct) = next_token_loss(logits, tokens, segments)
        return loss, {"accuracy": correct / jnp.maximum(count, 1)}


def perplexity(module: CausalLM, params, windows: dict, batch_size: int = 16) -> float:
    """Held-out perplexity ``exp(sum NLL / count)`` over ``windows`` (``PackedCorpus.windows()``)."""

    @jax.jit
    def stats(p, tokens, segments):
        logits, _ = module.apply({"params": p}, tokens, segments)
        _, (total, count, _) = next_token_loss(logits, tokens, segments)
        return total, count

    tokens, segments = windows["tokens"], windows["segment_ids"]
    total, count = 0.0, 0
    for start in range(0, len(tokens), batch_size):
        t, c = stats(params, tokens[start : start + batch_size], segments[start : start + batch_size])
        total, count = total + float(t), count + int(c)
    value = float(np.exp(total / max(count, 1)))
    if not np.isfinite(value):
        raise FloatingPointError(f"held-out perplexity is {value}: the model's outputs are not finite")
    return value
