"""Hugging Face GPT-NeoX / LLaMA and official DiJiang ``state_dict``s -> ``jaxlab.models.lm.CausalLM``.

``torch_kwargs`` are the Hugging Face config keyword arguments (``config.json``): both the
transformers 4.x names (``rotary_pct``, ``rotary_emb_base``, ``rope_theta``, ``rope_scaling``)
and the 5.x ``rope_parameters`` dict are understood. Keys that select an architecture jaxlab does
not implement (RoPE scaling, other activations, biased LLaMA projections, ...) are rejected by name.

- ``gpt_neox``: ``GPTNeoXForCausalLM`` (Pythia): ``gpt_neox.*`` + ``embed_out.weight`` (``lm_head.weight``
  in transformers >= 5).
- ``llama``: ``LlamaForCausalLM``: ``model.*`` + ``lm_head.weight`` (absent when tied).
- ``dijiang``: the official DiJiang checkpoints (``GPTNeoXForCausalLM`` of
  ``modeling_gpt_neox_dijiang.py``, Pythia configs): the GPT-NeoX names plus, per layer,
  ``attention.proj_matrix [d, d]``, ``W_G [D, D]``, ``D1``/``D2 [1, H, max_pos, 1]`` and
  ``group_norm``. The frozen ``proj_matrix = C @ diag(w)`` is checked to have that form and its
  ``w`` goes into the model config (``LMConfig.dijiang_weights``); ``D1``/``D2`` become
  ``log_d1``/``log_d2`` (they must be positive).
"""

from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxlab.convert.common import StateDict, check_against_init, stack_layers
from jaxlab.models.lm import CausalLM, LMConfig
from jaxlab.nn.linear_attention import dct_matrix

_HF_METADATA = {
    "architectures", "auto_map", "model_type", "transformers_version", "torch_dtype", "dtype", "_name_or_path",
    "use_cache", "bos_token_id", "eos_token_id", "pad_token_id", "initializer_range", "output_hidden_states",
    "output_attentions", "return_dict", "id2label", "label2id", "problem_type", "chunk_size_feed_forward",
    "is_encoder_decoder", "is_decoder", "classifier_dropout", "pretraining_tp", "tokenizer_class",
    "attention_dropout", "hidden_dropout", "use_flash_attn", "rope_type",
}


def _rope(kw: Mapping[str, Any], default_pct: float) -> tuple[float, float]:
    """``(rotary_pct, rope_theta)`` from 4.x or 5.x keys; rejects RoPE scaling."""
    params = dict(kw.get("rope_parameters") or {})
    scaling = kw.get("rope_scaling")
    if scaling or params.get("rope_type", "default") != "default":
        raise ValueError(f"RoPE scaling ({scaling or params}) is not supported; jaxlab implements plain RoPE")
    pct = params.get("partial_rotary_factor", kw.get("rotary_pct", kw.get("partial_rotary_factor", default_pct)))
    theta = params.get("rope_theta", kw.get("rotary_emb_base", kw.get("rope_theta", 10000.0)))
    return float(pct), float(theta)


def _check_keys(kw: Mapping[str, Any], known: set[str], name: str) -> None:
    unknown = sorted(set(kw) - known - _HF_METADATA)
    if unknown:
        raise ValueError(f"unknown {name} config argument(s) {unknown}; known arguments: {sorted(known)}")


def gpt_neox_config(torch_kwargs: Mapping[str, Any], attention: str = "softmax", **options) -> LMConfig:
    """``GPTNeoXConfig`` kwargs (+ jaxlab options) -> ``LMConfig``."""
    known = {"vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
             "rotary_pct", "rotary_emb_base", "rope_theta", "rope_scaling", "rope_parameters", "partial_rotary_factor",
             "max_position_embeddings", "layer_norm_eps", "use_parallel_residual", "tie_word_embeddings",
             "attention_bias"}
    _check_keys(torch_kwargs, known, "GPTNeoXConfig")
    kw = dict(torch_kwargs)
    if kw.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"hidden_act={kw['hidden_act']!r} is not supported; GPT-NeoX here uses exact 'gelu'")
    if kw.get("attention_bias", True) is not True:
        raise ValueError("attention_bias=False is not supported for gpt_neox (Pythia has biases)")
    pct, theta = _rope(kw, 0.25)
    heads = int(kw.get("num_attention_heads", 64))
    fields = dict(
        layout="gpt_neox", vocab_size=int(kw.get("vocab_size", 50432)), hidden_size=int(kw.get("hidden_size", 6144)),
        num_layers=int(kw.get("num_hidden_layers", 44)), num_heads=heads, num_kv_heads=heads,
        intermediate_size=int(kw.get("intermediate_size", 24576)), rotary_pct=pct, rope_theta=theta,
        max_position_embeddings=int(kw.get("max_position_embeddings", 2048)),
        norm_eps=float(kw.get("layer_norm_eps", 1e-5)), parallel_residual=bool(kw.get("use_parallel_residual", True)),
        use_bias=True, tie_word_embeddings=bool(kw.get("tie_word_embeddings", False)), attention=attention,
    )
    return LMConfig.from_dict({**fields, **options})


def llama_config(torch_kwargs: Mapping[str, Any], **options) -> LMConfig:
    """``LlamaConfig`` kwargs (+ jaxlab options) -> ``LMConfig``."""
    known = {"vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
             "intermediate_size", "hidden_act", "rope_theta", "rope_scaling", "rope_parameters",
             "max_position_embeddings", "rms_norm_eps", "tie_word_embeddings", "attention_bias", "mlp_bias", "head_dim"}
    _check_keys(torch_kwargs, known, "LlamaConfig")
    kw = dict(torch_kwargs)
    for key, want in (("hidden_act", "silu"), ("attention_bias", False), ("mlp_bias", False)):
        if kw.get(key, want) != want:
            raise ValueError(f"{key}={kw[key]!r} is not supported; jaxlab's LLaMA layout uses {key}={want!r}")
    _, theta = _rope(kw, 1.0)
    heads = int(kw.get("num_attention_heads", 32))
    hidden = int(kw.get("hidden_size", 4096))
    if kw.get("head_dim") not in (None, hidden // heads):
        raise ValueError(f"head_dim={kw['head_dim']} != hidden_size/num_attention_heads={hidden // heads} is not supported")
    fields = dict(
        layout="llama", vocab_size=int(kw.get("vocab_size", 32000)), hidden_size=hidden,
        num_layers=int(kw.get("num_hidden_layers", 32)), num_heads=heads,
        num_kv_heads=int(kw.get("num_key_value_heads") or heads), intermediate_size=int(kw.get("intermediate_size", 11008)),
        rotary_pct=1.0, rope_theta=theta, max_position_embeddings=int(kw.get("max_position_embeddings", 2048)),
        norm_eps=float(kw.get("rms_norm_eps", 1e-6)), parallel_residual=False, use_bias=False,
        tie_word_embeddings=bool(kw.get("tie_word_embeddings", False)),
    )
    return LMConfig.from_dict({**fields, **options})


def _neox_layer(sd: StateDict, prefix: str, cfg: LMConfig) -> dict:
    d, n, hd = cfg.hidden_size, cfg.num_heads, cfg.head_dim
    att = f"{prefix}.attention"
    attn = {
        # Linear [3D, D] whose outputs are [heads, 3, hd] -> kernel [D, heads, 3, hd].
        "query_key_value": {"kernel": sd[f"{att}.query_key_value.weight"].T.reshape(d, n, 3, hd),
                            "bias": sd[f"{att}.query_key_value.bias"].reshape(n, 3, hd)},
        "dense": {"kernel": sd[f"{att}.dense.weight"].T.reshape(n, hd, d), "bias": sd[f"{att}.dense.bias"]},
    }
    layer = {
        "ln_attn": {"norm": {"scale": sd[f"{prefix}.input_layernorm.weight"], "bias": sd[f"{prefix}.input_layernorm.bias"]}},
        "ln_mlp": {"norm": {"scale": sd[f"{prefix}.post_attention_layernorm.weight"],
                            "bias": sd[f"{prefix}.post_attention_layernorm.bias"]}},
        "attn": attn,
        "mlp": {"up": sd.linear(f"{prefix}.mlp.dense_h_to_4h"), "down": sd.linear(f"{prefix}.mlp.dense_4h_to_h")},
    }
    return layer


def _llama_layer(sd: StateDict, prefix: str, cfg: LMConfig) -> dict:
    d, hd = cfg.hidden_size, cfg.head_dim

    def heads(name: str, count: int) -> dict:
        return {"kernel": sd[f"{prefix}.self_attn.{name}.weight"].T.reshape(d, count, hd)}

    return {
        "ln_attn": {"norm": {"scale": sd[f"{prefix}.input_layernorm.weight"]}},
        "ln_mlp": {"norm": {"scale": sd[f"{prefix}.post_attention_layernorm.weight"]}},
        "attn": {
            "q_proj": heads("q_proj", cfg.num_heads), "k_proj": heads("k_proj", cfg.num_kv_heads),
            "v_proj": heads("v_proj", cfg.num_kv_heads),
            "o_proj": {"kernel": sd[f"{prefix}.self_attn.o_proj.weight"].T.reshape(cfg.num_heads, hd, d)},
        },
        "mlp": {"gate": sd.linear(f"{prefix}.mlp.gate_proj", bias=False), "up": sd.linear(f"{prefix}.mlp.up_proj", bias=False),
                "down": sd.linear(f"{prefix}.mlp.down_proj", bias=False)},
    }


def projection_weights(proj: np.ndarray, where: str) -> np.ndarray:
    """``w`` of ``proj_matrix = C @ diag(w)`` (``C`` the orthonormal DCT-II), checking that form."""
    d = proj.shape[0]
    if proj.shape != (d, d):
        raise ValueError(f"{where}: proj_matrix has shape {proj.shape}; expected a square [head_dim, head_dim] matrix")
    diag = dct_matrix(d).T @ proj.astype(np.float64)
    w = np.diag(diag).copy()
    off = np.abs(diag - np.diag(w)).max()
    if off > 1e-4 * max(1.0, np.abs(w).max()):
        raise ValueError(f"{where}: proj_matrix is not DCT @ diag(w) (off-diagonal residue {off:.3g}); "
                         f"it is not a DiJiang projection")
    return w


def _log_decay(sd: StateDict, key: str, cfg: LMConfig) -> np.ndarray:
    table = sd[key]
    want = (1, cfg.num_heads, cfg.max_position_embeddings, 1)
    if table.shape != want:
        raise ValueError(f"{key} has shape {table.shape}; the config implies {want} (num_heads, max_position_embeddings)")
    if not (table > 0).all():
        raise ValueError(f"{key} has non-positive entries; jaxlab stores the decay as its logarithm")
    return np.log(table.astype(np.float64))[0, :, :, 0].astype(np.float32)


def convert(family: str, torch_kwargs: Mapping[str, Any], state_dict: Mapping[str, Any], **options):
    """``family`` in ("gpt_neox", "llama", "dijiang") -> ``(CausalLM, params)``."""
    sd = StateDict(state_dict, ignore=lambda k: k.endswith((".rotary_emb.inv_freq", ".attention.bias",
                                                               ".attention.masked_bias")))
    if family == "llama":
        cfg = llama_config(torch_kwargs, **options)
        layers = [_llama_layer(sd, f"model.layers.{i}", cfg) for i in range(cfg.num_layers)]
        params = {"embed": {"embedding": sd["model.embed_tokens.weight"]}, "final_norm": {"norm": {"scale": sd["model.norm.weight"]}}}
        if not cfg.tie_word_embeddings:
            params["lm_head"] = sd.linear("lm_head", bias=False)
    else:
        attention = "dijiang" if family == "dijiang" else "softmax"
        if family == "dijiang":
            missing = [i for i in range(int(torch_kwargs.get("num_hidden_layers", 0)))
                       if f"gpt_neox.layers.{i}.attention.proj_matrix" not in state_dict]
            if missing:
                raise ValueError(
                    f"the DiJiang checkpoint has no attention.proj_matrix for layer(s) {missing}: the frozen random "
                    f"projection cannot be regenerated, so it must come from the checkpoint. For a softmax GPT-NeoX "
                    f"checkpoint use from_torch('gpt_neox', ...) and jaxlab.lm.convert_to_dijiang"
                )
            weights = tuple(tuple(projection_weights(sd[f"gpt_neox.layers.{i}.attention.proj_matrix"], f"layer {i}"))
                            for i in range(int(torch_kwargs["num_hidden_layers"])))
            options = {**options, "dijiang_weights": weights}
        cfg = gpt_neox_config(torch_kwargs, attention=attention, **options)
        layers = []
        for i in range(cfg.num_layers):
            prefix = f"gpt_neox.layers.{i}"
            layer = _neox_layer(sd, prefix, cfg)
            if family == "dijiang":
                att = f"{prefix}.attention"
                layer["attn"].update({
                    "W_G": sd[f"{att}.W_G"], "log_d1": _log_decay(sd, f"{att}.D1", cfg),
                    "log_d2": _log_decay(sd, f"{att}.D2", cfg),
                    "group_norm": {"scale": sd[f"{att}.group_norm.weight"], "bias": sd[f"{att}.group_norm.bias"]},
                })
            layers.append(layer)
        params = {"embed": {"embedding": sd["gpt_neox.embed_in.weight"]},
                  "final_norm": {"norm": {"scale": sd["gpt_neox.final_layer_norm.weight"],
                                          "bias": sd["gpt_neox.final_layer_norm.bias"]}}}
        if not cfg.tie_word_embeddings:
            # transformers < 5 (and the Pythia / DiJiang files) name it embed_out, 5.x lm_head.
            params["lm_head"] = sd.linear("lm_head" if "lm_head.weight" in sd else "embed_out", bias=False)
    if cfg.scan_blocks:
        params["blocks"] = {"block": stack_layers(layers)}
    else:
        params.update({f"layers_{i}": layer for i, layer in enumerate(layers)})
    sd.finish()
    module = CausalLM(cfg)
    return module, check_against_init(module, params, jnp.zeros((1, 2), jnp.int32))
