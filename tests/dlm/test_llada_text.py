"""LLaDA text interface (jaxlab.dlm.llada_text, text_generation.run_llada) on a stand-in HF directory."""

import json
import shutil

import numpy as np
import pytest

from jaxlab.convert import from_torch
from jaxlab.convert.io import load_sharded_safetensors
from jaxlab.dlm import llada_generate
from jaxlab.dlm.chat_template import LLADA_CHAT_TEMPLATE, render_chat, render_llada_chat
from jaxlab.dlm.llada_text import check_special_ids, decode_answer, load_text_side, read_llada_config
from jaxlab.dlm.standin import write_standin_llada
from jaxlab.dlm.text_generation import run_llada

MESSAGES = [{"role": "system", "content": "  Be brief. "}, {"role": "user", "content": "What is 7 * 8?\n"}]
EXPECTED = ("<|startoftext|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nWhat is 7 * 8?<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n")


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    return write_standin_llada(tmp_path_factory.mktemp("llada") / "LLaDA-standin")


def test_llada_template_jinja_and_builtin_agree():
    pytest.importorskip("jinja2")
    assert render_chat(LLADA_CHAT_TEMPLATE, MESSAGES, bos_token="<|startoftext|>", use_jinja=True) == EXPECTED
    assert render_chat(LLADA_CHAT_TEMPLATE, MESSAGES, bos_token="<|startoftext|>", use_jinja=False) == EXPECTED
    assert render_llada_chat(MESSAGES[1:], "<s>").startswith("<s><|start_header_id|>user")
    with pytest.raises(ImportError, match="pip install jinja2"):
        render_chat("{{ messages[0]['content'] }}", MESSAGES, bos_token="", use_jinja=False)
    with pytest.raises(ValueError, match="role 'bot'"):
        render_chat(LLADA_CHAT_TEMPLATE, [{"role": "bot", "content": "x"}], bos_token="")


def test_text_in_text_out_equals_direct_decoding(standin):
    """The CLI path = template -> tokenizer ids -> llada_generate on from_torch weights -> decode at the stop id."""
    tok, tok_config = load_text_side(standin)
    answer, frames = run_llada(str(standin), "What is 7 * 8?", "llada", system="Be brief.", gen_length=8,
                               block_length=4, steps=4)
    prompt = np.asarray(tok.encode(EXPECTED, add_special_tokens=False).ids, np.int32)[None]
    assert tok.token_to_id("<|startoftext|>") == prompt[0, 0]  # the template's BOS became its special id
    kwargs = json.loads((standin / "config.json").read_text())
    module, params = from_torch("llada", kwargs, load_sharded_safetensors(standin))
    ref = llada_generate(module, params, prompt, steps=4, gen_length=8, block_length=4,
                         mask_id=kwargs["mask_token_id"])
    stops = check_special_ids(tok, module.config)
    assert answer == decode_answer(tok, ref.tokens[0, prompt.shape[1]:], stops)
    assert len(frames) == 4 and frames[-1] == answer


def test_stop_ids_cut_the_answer(standin):
    tok, _ = load_text_side(standin)
    config = read_llada_config(standin)
    stops = check_special_ids(tok, config)
    assert stops == (config.eos_token_id, tok.token_to_id("<|eot_id|>"))
    words = tok.encode("Beautiful is better", add_special_tokens=False).ids
    ids = words + [tok.token_to_id("<|eot_id|>")] + words + [config.eos_token_id] * 3
    assert decode_answer(tok, ids, stops) == "Beautiful is better"


def test_bad_input_fails_before_the_weights_are_read(standin, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(standin, bad)
    for shard in bad.glob("*.safetensors"):  # any weight read would now fail with another error
        shard.write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="no tokenizer at"):
        run_llada(str(bad), "hi", "llada", tokenizer=str(tmp_path / "nope.json"))
    with pytest.raises(ValueError, match="contains the mask id"):
        run_llada(str(bad), "fill <|mdm_mask|> in", "llada")
    with pytest.raises(ValueError, match="exceeds the model context"):
        run_llada(str(bad), "hi", "llada", gen_length=512)
    cfg = json.loads((standin / "tokenizer_config.json").read_text())
    (bad / "tokenizer_config.json").write_text(json.dumps({k: v for k, v in cfg.items() if k != "chat_template"}))
    with pytest.raises(ValueError, match="has no 'chat_template'.*--nochat"):
        run_llada(str(bad), "hi", "llada")
    shutil.copy(standin / "tokenizer_config.json", bad / "tokenizer_config.json")
    kwargs = json.loads((standin / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**kwargs, "mask_token_id": 40}))  # an ordinary BPE token
    with pytest.raises(ValueError, match="collides with the ordinary token"):
        run_llada(str(bad), "hi", "llada")
    (bad / "config.json").write_text(json.dumps({**kwargs, "mask_token_id": kwargs["eos_token_id"]}))
    with pytest.raises(ValueError, match="equals eos_token_id"):
        run_llada(str(bad), "hi", "llada")
    (bad / "config.json").write_text(json.dumps({**kwargs, "embedding_size": 304, "vocab_size": 304}))
    with pytest.raises(ValueError, match="does not belong to this checkpoint"):
        run_llada(str(bad), "hi", "llada")
