"""DiJiang's conversion: a softmax-attention LM's parameters -> a DiJiang model's initial parameters.

As the released recipe (``train_pythia.py`` loading a Pythia checkpoint into the DiJiang model):
every softmax-model weight (embeddings, q/k/v and output projections, MLP, norms, head) is reused
as is, and each layer gets the new DiJiang pieces from their constructor initialisation: a
frozen projection ``C @ diag(Phi^-1(u))`` (its ``w`` goes into the config), the RetNet decay
tables ``D1 = gamma^n``, ``D2 = gamma^-n`` (as logs), the gate ``W_G`` (xavier-uniform, gain 2^-2.5)
and a GroupNorm with weight 1 and bias 0.
"""

import flax.linen as nn
import jax
import numpy as np
from scipy import special

from jaxlab.models.lm import LMConfig
from jaxlab.nn.linear_attention import retnet_log_decay


def convert_to_dijiang(params, config: LMConfig, rng: jax.Array) -> tuple[LMConfig, dict]:
    """``(dijiang_config, dijiang_params)`` from a softmax ``CausalLM``'s ``params`` and ``config``.

    ``rng`` (a JAX key) draws the per-layer projection weights and the gates. Works for unscanned
    and scanned (``scan_blocks``) parameter trees; the result has the same layout.
    """
    if config.attention != "softmax":
        raise ValueError(f"convert_to_dijiang needs a softmax-attention model, got attention={config.attention!r}")
    if config.num_kv_heads != config.num_heads:
        raise ValueError(f"DiJiang has no grouped-query attention: num_kv_heads={config.num_kv_heads} must equal "
                         f"num_heads={config.num_heads}")
    n_layers, d, hd, n = config.num_layers, config.hidden_size, config.head_dim, config.num_heads
    key_w, key_g = jax.random.split(rng)
    u = np.asarray(jax.random.uniform(key_w, (n_layers, hd)), np.float64)
    w = special.ndtri(u)
    w = np.where(np.isfinite(w), w, 0.0)
    new_config = config.replace(attention="dijiang", dijiang_weights=tuple(tuple(row) for row in w))
    limit = np.sqrt(6.0 / (2 * d)) * 2.0**-2.5  # xavier_uniform(gain=2^-2.5) on [D, D]
    gates = np.asarray(jax.random.uniform(key_g, (n_layers, d, d), minval=-limit, maxval=limit), np.float32)
    log_d1, log_d2 = retnet_log_decay(n, config.max_position_embeddings)

    def new_attention(layer: int) -> dict:
        return {"W_G": gates[layer], "log_d1": log_d1, "log_d2": log_d2,
                "group_norm": {"scale": np.ones(d, np.float32), "bias": np.zeros(d, np.float32)}}

    params = jax.tree.map(np.asarray, dict(nn.unbox(params)))  # logical-axis boxes from init are dropped
    if config.scan_blocks:
        block = params["blocks"]["block"]
        extra = jax.tree.map(lambda *xs: np.stack(xs), *[new_attention(i) for i in range(n_layers)])
        block = {**block, "attn": {**block["attn"], **extra}}
        params["blocks"] = {**params["blocks"], "block": block}
    else:
        for i in range(n_layers):
            layer = params[f"layers_{i}"]
            params[f"layers_{i}"] = {**layer, "attn": {**layer["attn"], **new_attention(i)}}
    return new_config, params
