"""Architecture sweep at a parameter budget: ``python -m launch.tinylm_sweep --workdir=DIR``.

  python -m launch.tinylm_sweep --workdir=/tmp/tinylm_sweep --sweep_configs=12 --sweep_params=600000 \\
      --sweep_tokens=400000

Draws ``--sweep_configs`` random LLaMA-layout (depth, width, FFN ratio) models within
``--sweep_tolerance`` of ``--sweep_params`` parameters (``jaxlab.tinylm.sweep``), trains each on
``--sweep_tokens`` tokens of the embedded corpus (``configs/tinylm.py:run_config``, the shared train
loop; ``DIR/config<i>``, resumable), measures held-out loss per byte and greedy decode tokens/s
(configs interleaved), and writes ``DIR/sweep.md`` / ``sweep.json``: one row per config and the
Spearman correlation of each factor with held-out loss and decode speed.
"""

import json
import pathlib

import numpy as np
from absl import flags

from configs import tinylm as tl_configs
from jaxlab import cli
from jaxlab.lm.data import PackedCorpus, corpus_documents, parse_spec
from jaxlab.lm.tokenizer import load_tokenizer, train_bpe
from jaxlab.tinylm import sweep
from jaxlab.tinylm.evaluation import decode_seconds, nll_and_bytes, token_bytes
from jaxlab.tinylm.sizes import lm_param_count

from .train import _WORKDIR  # the shared --workdir flag (one definition per flag name)

_N = flags.DEFINE_integer("sweep_configs", 12, "number of random architectures")
_PARAMS = flags.DEFINE_integer("sweep_params", 600_000, "parameter budget")
_TOL = flags.DEFINE_float("sweep_tolerance", 0.1, "relative tolerance on the budget")
_TOKENS = flags.DEFINE_integer("sweep_tokens", 400_000, "training tokens per config")
_VOCAB = flags.DEFINE_integer("sweep_vocab", tl_configs.COMPACT_VOCAB, "byte-level BPE size (trained on the corpus)")
_DEPTHS = flags.DEFINE_list("sweep_depths", ["2", "10"], "min,max depth")
_RATIOS = flags.DEFINE_list("sweep_ffn_ratios", ["2.0", "4.0"], "min,max FFN expansion ratio")
_HEAD_DIM = flags.DEFINE_integer("sweep_head_dim", 32, "head dimension (width is a multiple of it)")
_BATCH = flags.DEFINE_integer("sweep_batch", tl_configs.BASE_BATCH, "windows per batch")
_SEED = flags.DEFINE_integer("sweep_seed", 0, "architecture sampling and training seed")
_DECODE = flags.DEFINE_integer("sweep_decode_tokens", 120, "new tokens per decode-speed call")
_REPEATS = flags.DEFINE_integer("sweep_decode_repeats", 5, "interleaved decode-speed rounds")


def main(argv):
    del argv
    from jaxlab.train.loop import train
    from jaxlab.train.params_io import load_model

    root = pathlib.Path(_WORKDIR.value).absolute()
    root.mkdir(parents=True, exist_ok=True)
    tok_path = root / "tokenizer.json"
    if not tok_path.exists():
        train_bpe(corpus_documents("pydoc", "train"), _VOCAB.value).save(str(tok_path))
    archs = sweep.sample_architectures(_N.value, _PARAMS.value, _VOCAB.value, head_dim=_HEAD_DIM.value,
                                       depth_range=tuple(int(d) for d in _DEPTHS.value),
                                       ffn_ratio_range=tuple(float(r) for r in _RATIOS.value),
                                       tolerance=_TOL.value, seed=_SEED.value)
    seq = tl_configs.SEQ_LENGTH
    steps = max(1, _TOKENS.value // (_BATCH.value * seq))
    spec = tl_configs.data_spec(_VOCAB.value, str(tok_path), seq)
    windows = PackedCorpus(**parse_spec(spec), split="eval").windows()
    nbytes = token_bytes(load_tokenizer(tok_path))
    rows, models = [], []
    for i, arch in enumerate(archs):
        workdir = root / f"config{i}"
        model = tl_configs.llama(_VOCAB.value, arch.width, arch.depth, arch.heads, arch.ffn)
        if not (workdir / "checkpoints" / str(steps)).exists():
            train(tl_configs.run_config(model, tokenizer=str(tok_path), steps=steps, seed=_SEED.value,
                                        batch_size=_BATCH.value), str(workdir))
        module, params = load_model(workdir)
        nll, nb = nll_and_bytes(module, params, windows, nbytes)
        models.append((module, params))
        rows.append({"config": i, "depth": arch.depth, "width": arch.width, "heads": arch.heads, "ffn": arch.ffn,
                     "ffn_ratio": round(arch.ffn_ratio, 3), "params": lm_param_count(module.config),
                     "loss": nll / nb})
    prompt = np.zeros((1, 4), np.int32)
    times = [[] for _ in models]
    for m, p in models:
        decode_seconds(m, p, prompt, _DECODE.value)  # compile
    for _ in range(_REPEATS.value):
        for k, (m, p) in enumerate(models):
            times[k].append(decode_seconds(m, p, prompt, _DECODE.value))
    for r, t in zip(rows, times):
        r["decode_tok_s"] = _DECODE.value / float(np.median(t))
    corr = sweep.spearman_table(rows)
    lines = [f"{len(rows)} configs at {_PARAMS.value:,} +- {_TOL.value:.0%} parameters, {steps} steps x {_BATCH.value} x "
             f"{seq} tokens each, vocab {_VOCAB.value}; loss = held-out nats per byte.", "",
             "| config | depth | width | heads | ffn (ratio) | params | held-out loss / byte | decode tok/s |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['config']} | {r['depth']} | {r['width']} | {r['heads']} | {r['ffn']} ({r['ffn_ratio']}) | "
              f"{r['params']:,} | {r['loss']:.4f} | {r['decode_tok_s']:.0f} |" for r in sorted(rows, key=lambda r: r["loss"])]
    lines += ["", "| factor | Spearman with held-out loss | Spearman with decode tok/s |", "|---|---|---|"]
    lines += [f"| {f} | {c['loss']:.3f} | {c['decode_tok_s']:.3f} |" for f, c in corr.items()]
    (root / "sweep.md").write_text("\n".join(lines) + "\n")
    (root / "sweep.json").write_text(json.dumps({"rows": rows, "spearman": corr}, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    cli.run(main)
