"""A tiny stand-in for a released LLaDA-Instruct directory, built the same way (no downloads).

``write_standin_llada(directory)`` writes the Hugging Face layout of ``GSAI-ML/LLaDA-8B-Instruct``
at toy size, so the text interface (``jaxlab.dlm.llada_text``, ``launch.generate``) runs end to end
on CPU:

- ``config.json``: the official ``LLaDAConfig`` keys (``block_type='llama'``, RMSNorm, SwiGLU,
  RoPE), with ``mask_token_id`` / ``eos_token_id`` / ``pad_token_id`` pointing at the tokenizer's
  ``<|mdm_mask|>`` / ``<|endoftext|>``;
- ``model-0000k-of-00002.safetensors`` + ``model.safetensors.index.json``: random float32 weights
  under the official ``model.transformer.*`` names (N(0, 1) embedding and head, N(0, 0.2)
  elsewhere, so that the toy's output depends on its input);
- ``tokenizer.json``: a byte-level BPE trained with ``tokenizers`` on the Zen of Python, with
  LLaDA's special tokens added after the learned vocabulary (as in the released tokenizer, whose
  specials sit at ids 126080-126348);
- ``tokenizer_config.json``: ``bos_token``, ``eos_token``, ``pad_token``, ``added_tokens_decoder``
  and LLaDA-Instruct's ``chat_template``.

The weights are random: the text it generates is noise; it exercises the plumbing only.
"""

import json
import pathlib

import numpy as np

from jaxlab.data.text_tasks import _corpus_text
from jaxlab.dlm.chat_template import LLADA_CHAT_TEMPLATE

SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>", "<|mdm_mask|>", "<|start_header_id|>", "<|end_header_id|>",
                  "<|eot_id|>")


def build_tokenizer(vocab_size: int = 300):
    """A byte-level BPE (``tokenizers.Tokenizer``) with LLaDA's special tokens appended."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(_corpus_text("zen").splitlines(), trainer=trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    return tok


def standin_state_dict(cfg: dict, seed: int = 0) -> dict[str, np.ndarray]:
    """Random float32 weights under ``LLaDAModelLM``'s names for the official kwargs ``cfg``."""
    rng = np.random.default_rng(seed)
    d, h, v, n = cfg["d_model"], cfg["mlp_hidden_size"], cfg["embedding_size"], cfg["n_layers"]
    kv = d // cfg["n_heads"] * cfg["n_kv_heads"]

    def w(*shape, std=0.2):
        return (std * rng.standard_normal(shape)).astype(np.float32)

    sd = {"model.transformer.wte.weight": w(v, d, std=1.0), "model.transformer.ln_f.weight": np.ones(d, np.float32),
          "model.transformer.ff_out.weight": w(v, d, std=1.0)}
    for i in range(n):
        p = f"model.transformer.blocks.{i}"
        sd.update({
            f"{p}.attn_norm.weight": np.ones(d, np.float32), f"{p}.ff_norm.weight": np.ones(d, np.float32),
            f"{p}.q_proj.weight": w(d, d), f"{p}.k_proj.weight": w(kv, d), f"{p}.v_proj.weight": w(kv, d),
            f"{p}.attn_out.weight": w(d, d), f"{p}.ff_proj.weight": w(h, d), f"{p}.up_proj.weight": w(h, d),
            f"{p}.ff_out.weight": w(d, h),
        })
    return sd


def write_standin_llada(directory, *, d_model: int = 32, n_layers: int = 2, n_heads: int = 4, mlp_hidden_size: int = 64,
                        max_sequence_length: int = 256, seed: int = 0) -> pathlib.Path:
    """Writes the stand-in directory (module docstring); refuses to write into an existing non-empty one."""
    from safetensors.numpy import save_file

    directory = pathlib.Path(directory)
    if directory.exists() and any(directory.iterdir()):
        raise FileExistsError(f"{directory} is not empty; pick a new directory for the stand-in checkpoint")
    directory.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer()
    n_tok = tok.get_vocab_size(with_added_tokens=True)
    embedding = -(-n_tok // 16) * 16  # padded like the released 126,464-row table
    ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
    cfg = {
        "activation_type": "silu", "alibi": False, "architectures": ["LLaDAModelLM"], "attention_dropout": 0.0,
        "block_type": "llama", "d_model": d_model, "embedding_size": embedding, "eos_token_id": ids["<|endoftext|>"],
        "include_bias": False, "layer_norm_type": "rms", "mask_token_id": ids["<|mdm_mask|>"],
        "max_sequence_length": max_sequence_length, "mlp_hidden_size": mlp_hidden_size, "mlp_ratio": 4,
        "model_type": "llada", "n_heads": n_heads, "n_kv_heads": n_heads, "n_layers": n_layers,
        "pad_token_id": ids["<|endoftext|>"], "rms_norm_eps": 1e-5, "rope": True, "rope_theta": 500000.0,
        "vocab_size": embedding, "weight_tying": False,
    }
    (directory / "config.json").write_text(json.dumps(cfg, indent=2))
    sd = standin_state_dict(cfg, seed)
    names = sorted(sd)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    weight_map = {}
    for shard, keys in shards.items():
        save_file({k: sd[k] for k in keys}, str(directory / shard))
        weight_map.update({k: shard for k in keys})
    (directory / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    tok.save(str(directory / "tokenizer.json"))
    added = {str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                      "special": True} for t, i in ids.items()}
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "add_bos_token": False, "add_eos_token": False, "added_tokens_decoder": added,
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
        "chat_template": LLADA_CHAT_TEMPLATE, "tokenizer_class": "PreTrainedTokenizerFast",
    }, indent=2))
    return directory
