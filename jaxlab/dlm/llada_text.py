"""Text in, text out for LLaDA checkpoints with a real tokenizer (LLaDA-8B-Instruct and look-alikes).

``load_llada(checkpoint)`` reads either a Hugging Face directory as released (``config.json`` +
``model.safetensors.index.json`` and its shards, or one ``model.safetensors``), converted in memory
with ``from_torch("llada", config, state_dict)``, or a jaxlab checkpoint written by
``launch.convert`` (``model.json`` + ``params/``). ``load_text_side(tokenizer_path)`` reads
``tokenizer.json`` with the ``tokenizers`` library and, next to it, ``tokenizer_config.json`` for
the ``chat_template`` and the ``bos_token`` / ``eos_token`` strings.

``check_special_ids`` runs before anything is traced and refuses, naming the fix:

- a tokenizer with more ids than the model's embedding table (tokenizer/model mismatch);
- a ``mask_token_id`` (from the model config) that the tokenizer does not have, or that is an
  ordinary text token rather than a special one (``<|mdm_mask|>`` in LLaDA) -- decoding would then
  confuse generated text with masks -- or that equals the EOS / pad id;
- an ``eos_token_id`` the tokenizer does not have.

Generation stops (for display) at the first ``eos_token_id`` or ``<|eot_id|>`` (the chat template's
end of turn, which LLaDA-Instruct emits before its ``<|endoftext|>`` padding); the text is decoded
with special tokens skipped, as LLaDA's ``chat.py`` does. Prompts pass through
``jaxlab.dlm.decoding.check_prompt`` too, so a prompt that encodes to the mask id is refused.
"""

import json
import pathlib

import numpy as np

from jaxlab.dlm.chat_template import render_chat

END_OF_TURN = "<|eot_id|>"


def _checkpoint_dir(checkpoint) -> pathlib.Path:
    path = pathlib.Path(checkpoint)
    if not path.is_dir():
        raise FileNotFoundError(
            f"--checkpoint {path} is not a directory; give a Hugging Face LLaDA directory (config.json + safetensors) "
            f"or a jaxlab checkpoint from `python -m launch.convert --family=llada`"
        )
    if not (path / "model.json").is_file() and not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} has neither config.json (Hugging Face layout) nor model.json (jaxlab)")
    return path


def read_llada_config(checkpoint):
    """The checkpoint's ``LLaDAConfig`` without reading any weights."""
    path = _checkpoint_dir(checkpoint)
    if (path / "model.json").is_file():
        from jaxlab.train.params_io import read_model_config

        family, config = read_model_config(path)
        if family.name != "llada":
            raise ValueError(f"{path} holds a {family.name!r} model; text generation needs a llada checkpoint")
        return config
    from jaxlab.convert.llada import config_from_torch

    return config_from_torch(json.loads((path / "config.json").read_text()))


def load_llada(checkpoint):
    """``(module, params)`` from a Hugging Face LLaDA directory or a jaxlab ``launch.convert`` checkpoint."""
    path = _checkpoint_dir(checkpoint)
    if (path / "model.json").is_file():
        from jaxlab.train.params_io import load_model

        read_llada_config(path)
        return load_model(path)
    from jaxlab.convert.checked import convert_checked
    from jaxlab.convert.io import load_sharded_safetensors, load_state_dict
    from jaxlab.models.registry import get_family

    config = json.loads((path / "config.json").read_text())
    if (path / "model.safetensors.index.json").is_file():
        state_dict = load_sharded_safetensors(path)
    elif (path / "model.safetensors").is_file():
        state_dict = load_state_dict(path / "model.safetensors")
    else:
        raise FileNotFoundError(f"{path} has config.json but no model.safetensors.index.json or model.safetensors")
    family = get_family("llada")
    return convert_checked("llada", state_dict, user_kwargs=config, preset=None, presets=family.presets,
                           source=str(path))


def _token_string(value) -> str:
    """``tokenizer_config.json`` writes special tokens as a string or as ``{"content": ...}``."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else ""


def load_text_side(tokenizer_path, *, chat: bool = True):
    """``(tokenizers.Tokenizer, tokenizer_config dict)``; with ``chat`` the config must carry a chat_template."""
    from tokenizers import Tokenizer

    path = pathlib.Path(tokenizer_path)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"no tokenizer at {path}; pass --tokenizer=<tokenizer.json> (the file that ships with the checkpoint)"
        )
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises its own Exception type
        raise ValueError(f"{path} is not a tokenizers JSON file ({' '.join(str(e).split())[:120]})") from None
    config_file = path.parent / "tokenizer_config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    if chat and not config.get("chat_template"):
        where = f"{config_file} has no 'chat_template'" if config_file.is_file() else f"there is no {config_file}"
        raise ValueError(
            f"--chat needs the model's chat template, but {where}; put the released tokenizer_config.json next to "
            f"tokenizer.json, or pass --nochat to feed the prompt as raw text"
        )
    return tokenizer, config


def check_special_ids(tokenizer, model_config) -> tuple[int, ...]:
    """Checks tokenizer vs model (module docstring); returns the stop ids ``(eos, [eot])``."""
    n_tok = tokenizer.get_vocab_size(with_added_tokens=True)
    if n_tok > model_config.embedding_size:
        raise ValueError(
            f"the tokenizer has {n_tok} ids but the model's embedding table has {model_config.embedding_size} rows: "
            f"this tokenizer does not belong to this checkpoint"
        )
    mask_id, eos_id = model_config.mask_token_id, model_config.eos_token_id
    if mask_id in (eos_id, model_config.pad_token_id):
        raise ValueError(f"mask_token_id={mask_id} equals eos_token_id={eos_id} or pad_token_id="
                         f"{model_config.pad_token_id} in the model config; fix config.json")
    mask_token = tokenizer.id_to_token(mask_id)
    if mask_token is None:
        raise ValueError(f"mask_token_id={mask_id} (model config) is not an id of this tokenizer ({n_tok} ids); "
                         f"the config and tokenizer.json do not match")
    special = {i for i, t in tokenizer.get_added_tokens_decoder().items() if t.special}
    if mask_id not in special:
        raise ValueError(
            f"mask_token_id={mask_id} (model config) collides with the ordinary token {mask_token!r} of the tokenizer: "
            f"generated text could not be told from masks; the mask id must be a special token (LLaDA: <|mdm_mask|>)"
        )
    if tokenizer.id_to_token(eos_id) is None:
        raise ValueError(f"eos_token_id={eos_id} (model config) is not an id of this tokenizer")
    eot = tokenizer.token_to_id(END_OF_TURN)
    return (eos_id,) if eot is None else (eos_id, eot)


def encode_chat(tokenizer, tok_config, prompt: str, *, system: str | None = None, chat: bool = True) -> np.ndarray:
    """Prompt text (chat template applied when ``chat``) -> ids ``[1, P]`` int32 (no special tokens added)."""
    if not prompt:
        raise ValueError("the prompt is empty")
    if chat:
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        text = render_chat(tok_config["chat_template"], messages, bos_token=_token_string(tok_config.get("bos_token")),
                           eos_token=_token_string(tok_config.get("eos_token")))
    else:
        text = prompt
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    return np.asarray(ids, np.int32)[None]


def decode_answer(tokenizer, ids, stop_ids) -> str:
    """Generated ids ``[G]`` -> text, cut at the first stop id, special tokens skipped."""
    ids = [int(i) for i in ids]
    for k, i in enumerate(ids):
        if i in stop_ids:
            ids = ids[:k]
            break
    return tokenizer.decode(ids, skip_special_tokens=True)
