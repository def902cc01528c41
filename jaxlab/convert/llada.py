"""Official LLaDA ``state_dict`` (``LLaDAModelLM``) -> Flax params for ``jaxlab.models.dlm.LLaDA``.

``torch_kwargs`` are the official ``LLaDAConfig`` keyword arguments (the golden JSONs'
``constructor.kwargs``, or a released ``config.json``). Keys that are missing take the values of
the released LLaDA-8B ``config.json`` -- not the ``ModelConfig`` class defaults, which describe a
GPT-2-like OLMo model (sequential blocks, no RoPE) this family does not cover. Keys that select
another architecture (ALiBi, sequential blocks, QK-norm, biases, ...) are rejected by name.
"""

from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp

from jaxlab.convert.common import StateDict, check_against_init, stack_layers
from jaxlab.models.dlm import LLaDA, LLaDAConfig

# Official keys copied into LLaDAConfig (same names).
_MODEL_KEYS = (
    "d_model", "n_heads", "n_layers", "vocab_size", "rms_norm_eps", "rope_theta", "max_sequence_length",
    "weight_tying", "init_std", "mask_token_id", "eos_token_id", "pad_token_id",
)
# Official keys whose value must be the one LLaDA uses (value accepted: tuple of allowed values).
_REQUIRED = {
    "block_type": ("llama",),
    "layer_norm_type": ("rms",),
    "activation_type": ("silu",),
    "rope": (True,),
    "alibi": (False,),
    "attention_layer_norm": (False,),
    "input_emb_norm": (False,),
    "scale_logits": (False,),
    "include_bias": (False,),
    "include_qkv_bias": (False, None),
    "bias_for_layer_norm": (False, None),
    "layer_norm_with_affine": (True,),
    "block_group_size": (1,),
    "attention_dropout": (0, 0.0),
    "residual_dropout": (0, 0.0),
    "embedding_dropout": (0, 0.0),
}
# Official keys with no effect on the forward pass (initialisation, device, bookkeeping, HF metadata).
_IGNORED = (
    "mlp_ratio", "rope_full_precision", "flash_attention", "alibi_bias_max", "attention_layer_norm_with_affine",
    "init_device", "init_fn", "init_cutoff_factor", "precision", "use_cache", "architectures", "auto_map",
    "model_type", "transformers_version", "torch_dtype", "multi_query_attention", "n_kv_heads",
    "mlp_hidden_size", "embedding_size", "_name_or_path",
)
# The released LLaDA-8B config.json, for keys the caller leaves out.
_LLADA_8B = {
    "d_model": 4096, "n_heads": 32, "n_kv_heads": 32, "n_layers": 32, "mlp_ratio": 4, "mlp_hidden_size": 12288,
    "vocab_size": 126464, "embedding_size": 126464, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
    "max_sequence_length": 4096, "weight_tying": False, "init_std": 0.02, "mask_token_id": 126336,
    "eos_token_id": 126081, "pad_token_id": 126081, "multi_query_attention": None,
    **{k: v[0] for k, v in _REQUIRED.items()},
}


def config_from_torch(torch_kwargs: Mapping[str, Any], **options) -> LLaDAConfig:
    """Official ``LLaDAConfig`` kwargs (+ jaxlab options ``dtype``, ``remat``, ``scan_blocks``) -> ``LLaDAConfig``."""
    known = set(_MODEL_KEYS) | set(_REQUIRED) | set(_IGNORED)
    unknown = sorted(set(torch_kwargs) - known)
    if unknown:
        raise ValueError(f"unknown LLaDAConfig argument(s) {unknown}; known arguments: {sorted(known)}")
    kw = {**_LLADA_8B, **torch_kwargs}
    for key, allowed in _REQUIRED.items():
        if kw[key] not in allowed:
            raise ValueError(
                f"{key}={kw[key]!r} is not supported: jaxlab's LLaDA implements the released architecture "
                f"({key} in {list(allowed)})"
            )
    fields = {k: kw[k] for k in _MODEL_KEYS}
    fields["n_kv_heads"] = _kv_heads(kw)
    fields["mlp_hidden_size"] = kw["mlp_hidden_size"] if kw["mlp_hidden_size"] is not None else kw["mlp_ratio"] * kw["d_model"]
    fields["embedding_size"] = kw["embedding_size"] if kw["embedding_size"] is not None else kw["vocab_size"]
    return LLaDAConfig.from_dict({**fields, **options})


def _kv_heads(kw: Mapping[str, Any]) -> int:
    """``ModelConfig.effective_n_kv_heads``."""
    mqa, n_kv = kw["multi_query_attention"], kw["n_kv_heads"]
    if n_kv is None:
        return 1 if mqa else kw["n_heads"]
    if mqa is not None and n_kv != (1 if mqa else kw["n_heads"]):
        raise ValueError(f"multi_query_attention={mqa} contradicts n_kv_heads={n_kv}; set only one of them")
    return n_kv


def _block(sd: StateDict, prefix: str, cfg: LLaDAConfig) -> dict:
    d, hd = cfg.d_model, cfg.head_dim

    def heads(name: str, n: int) -> dict:  # [n*hd, D] -> kernel [D, n, hd]
        return {"kernel": sd[f"{prefix}.{name}.weight"].T.reshape(d, n, hd)}

    return {
        "attn_norm": {"scale": sd[f"{prefix}.attn_norm.weight"]},
        "attn": {
            "q_proj": heads("q_proj", cfg.n_heads),
            "k_proj": heads("k_proj", cfg.n_kv_heads),
            "v_proj": heads("v_proj", cfg.n_kv_heads),
            "attn_out": {"kernel": sd[f"{prefix}.attn_out.weight"].T.reshape(cfg.n_heads, hd, d)},
        },
        "ff_norm": {"scale": sd[f"{prefix}.ff_norm.weight"]},
        "mlp": {
            "gate": sd.linear(f"{prefix}.ff_proj", bias=False),
            "up": sd.linear(f"{prefix}.up_proj", bias=False),
            "down": sd.linear(f"{prefix}.ff_out", bias=False),
        },
    }


def convert(torch_kwargs: Mapping[str, Any], state_dict: Mapping[str, Any], **options) -> tuple[LLaDA, dict]:
    """Builds the LLaDA named by the official kwargs and maps the official weights onto it.

    Accepts the names of ``LLaDAModelLM.state_dict()`` (``model.transformer.*``) and, for a bare
    ``LLaDAModel``, the same names without the leading ``model.``.
    """
    config = config_from_torch(torch_kwargs, **options)
    if not any(k.startswith("model.") for k in state_dict):
        state_dict = {f"model.{k}": v for k, v in state_dict.items()}
    sd = StateDict(state_dict)
    root = "model.transformer"
    blocks = [_block(sd, f"{root}.blocks.{i}", config) for i in range(config.n_layers)]
    params = {"wte": {"embedding": sd[f"{root}.wte.weight"]}, "ln_f": {"scale": sd[f"{root}.ln_f.weight"]}}
    if not config.weight_tying:
        params["ff_out"] = sd.linear(f"{root}.ff_out", bias=False)
    if config.scan_blocks:
        params["blocks"] = {"block": stack_layers(blocks)}
    else:
        params.update({f"blocks_{i}": b for i, b in enumerate(blocks)})
    sd.finish()
    module = LLaDA(config)
    params = check_against_init(module, params, jnp.zeros((1, 2), jnp.int32))
    return module, params
