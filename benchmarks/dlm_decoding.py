"""Block decoding vs Deferred Commitment Decoding (DCD) on a small trained DLM: the DCD paper's table in miniature.

  python -m benchmarks.dlm_decoding                         # the shipped 4x4-Sudoku model
  python -m benchmarks.dlm_decoding --num_examples=1000 --window=4 --threshold=0.9
  python -m benchmarks.dlm_decoding --workdir=/tmp/dlm_sudoku   # a launch/train.py run instead
  python -m benchmarks.dlm_decoding --train_steps=2000          # train one here first (minutes on CPU)

For each decoder (block = DCD's ``static`` window, the Fast-dLLM parallel baseline; DCD =
``sliding``) and each cache (none, prefix, dual; DCD also with the paper scripts' ``-delay2``
variants) at matched settings -- block size == DCD's initial window, the same confidence
threshold, the same refresh count -- it decodes the same held-out prompts one at a time (batch 1,
as in the paper) and reports:

- accuracy: fraction of answers the task's checker accepts; vs_block: examples this DCD row gets
  right and the block row with the same cache gets wrong (+), and the reverse (-);
- forwards: model calls per example (a cached call counts as one);
- tokens/forward: generated tokens per model call;
- wall s: total decoding time over all examples (each decoder compiled once beforehand; the
  fastest of ``--repeats`` passes);
- low-conf: commits with confidence < 0.5 per example (the paper's Table 4 counts < 0.3).

The DCD paper's claim is higher accuracy at comparable time; compare each DCD row with the block
row of the same cache.
"""

import argparse
import dataclasses
import tempfile
import time

import jax
import numpy as np

from benchmarks.common import device_name, print_table
from jaxlab.data.text_tasks import SPLIT_SEEDS
from jaxlab.dlm.decoding import DecodeConfig, make_decoder
from jaxlab.dlm.pretrained import load_checkpoint

CACHES = ("none", "prefix", "dual")


def settings(window: int, threshold: float, refresh: int, task, module, delay: bool = True):
    """``[(decoder name, cache, DecodeConfig)]`` at matched settings."""
    cfg = module.config
    base = DecodeConfig(
        generate_length=task.answer_length, initial_window_length=window, block_size=window, decode_algo="threshold",
        decode_param=threshold, refresh_count=refresh, mask_id=cfg.mask_token_id, pad_id=cfg.pad_token_id,
        eos_id=cfg.eos_token_id,
    )
    rows = []
    for cache in CACHES:
        rows.append(("block", cache, dataclasses.replace(base, window_type="static", cache_type=cache)))
        rows.append(("DCD", cache, dataclasses.replace(base, window_type="sliding", cache_type=cache)))
    if delay:
        for cache in ("prefix-delay2", "dual-delay2"):
            rows.append(("DCD", cache, dataclasses.replace(base, window_type="sliding", cache_type=cache)))
    return rows


def run_decoder(module, params, prompts: np.ndarray, config: DecodeConfig, repeats: int = 1):
    """Decodes each prompt alone (batch 1). -> (tokens [N, P+G], forwards [N], seconds, low-conf commits [N]).

    ``seconds``: the fastest of ``repeats`` passes over all prompts (less noise from other load).
    """
    run = make_decoder(module, config, 1, prompts.shape[1])
    key = jax.random.key(0)
    jax.block_until_ready(run(params, prompts[:1], key))  # compile outside the clock
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        outs = [run(params, prompt[None], key) for prompt in prompts]
        outs = jax.device_get(jax.block_until_ready(outs))
        times.append(time.perf_counter() - start)
    seconds = min(times)
    tokens = np.concatenate([o["tokens"] for o in outs])
    forwards = np.array([int(o["num_forward"]) for o in outs])
    low = np.array([int(np.sum((o["commit_step"] >= 0) & (o["commit_conf"] < 0.5))) for o in outs])
    return tokens, forwards, seconds, low


def benchmark(module, params, task, *, num_examples: int, window: int, threshold: float, refresh: int,
              delay: bool = True, repeats: int = 1) -> list[dict]:
    prompts = task.prompts(SPLIT_SEEDS["test"], 0, num_examples)
    rows, block_correct = [], {}
    for name, cache, config in settings(window, threshold, refresh, task, module, delay):
        tokens, forwards, seconds, low = run_decoder(module, params, prompts, config, repeats)
        correct = task.check(tokens)
        base_cache = cache.split("-")[0]
        if name == "block":
            block_correct[cache] = correct
            paired = "-"
        else:  # puzzles this DCD row gets right and the block row of the same cache gets wrong, and vice versa
            base = block_correct[base_cache]
            paired = f"+{int(np.sum(correct & ~base))}/-{int(np.sum(~correct & base))}"
        rows.append(dict(
            decoder=name, cache=cache, accuracy=f"{correct.mean():.3f}", vs_block=paired,
            forwards=f"{forwards.mean():.2f}", tokens_per_forward=f"{task.answer_length / forwards.mean():.2f}",
            wall_s=f"{seconds:.2f}", generated_tokens_per_s=f"{len(prompts) * task.answer_length / seconds:.0f}",
            low_conf=f"{low.mean():.2f}",
        ))
    return rows


def train_here(variant: str, steps: int):
    """Trains ``configs/dlm.py:<variant>`` through the shared loop in a temporary workdir -> checkpoint path."""
    from configs.dlm import get_config
    from jaxlab.dlm.pretrained import export_workdir
    from jaxlab.train.loop import train

    config = get_config(variant)
    config.training.num_steps = steps
    config.logging.progress_bar = False
    workdir = tempfile.mkdtemp(prefix=f"dlm_{variant}_")
    start = time.perf_counter()
    train(config, workdir)
    minutes = (time.perf_counter() - start) / 60
    print(f"trained {variant} for {steps} steps in {minutes:.1f} min ({workdir})")
    return export_workdir(workdir, f"{workdir}/model.npz", info={"train_steps": steps, "train_minutes": minutes})


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="sudoku", help="shipped name or .npz path (jaxlab.dlm.pretrained)")
    parser.add_argument("--workdir", default=None, help="a launch/train.py workdir trained on a text task")
    parser.add_argument("--train_steps", type=int, default=0, help="> 0: train configs/dlm.py:<--variant> here first")
    parser.add_argument("--variant", default="sudoku")
    parser.add_argument("--num_examples", type=int, default=500)
    parser.add_argument("--window", type=int, default=4, help="block size == DCD initial window")
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--refresh", type=int, default=4, help="refresh_count of the cached decoders")
    parser.add_argument("--repeats", type=int, default=3, help="timing: fastest of this many passes")
    parser.add_argument("--mode", default="accuracy", choices=["accuracy", "throughput", "selfcorrect", "remask_cache"],
                        help="accuracy: block vs DCD on a trained model; throughput: generated tokens/s of every "
                             "decoder x cache on a ~34M random-weight LLaDA (benchmarks/dlm_throughput.py); "
                             "selfcorrect: accuracy vs forwards of the remasking samplers (benchmarks/dlm_selfcorrect.py); "
                             "remask_cache: accuracy of the block-local remasking samplers with each block cache")
    parser.add_argument("--gen", type=int, default=256, help="throughput: generated tokens")
    parser.add_argument("--prompt_length", type=int, default=64, help="throughput: prompt tokens")
    parser.add_argument("--size", default="512,8,8192", help="throughput: d_model,n_layers,vocab of the random LLaDA")
    parser.add_argument("--seeds", type=int, default=3, help="selfcorrect: seeds of the sampling decoders")
    parser.add_argument("--budgets", default="", help="selfcorrect: comma-separated forwards per example (default G/2,G)")
    parser.add_argument("--only", default="", help="throughput: comma-separated decoder-name substrings to keep")
    args = parser.parse_args()
    if args.mode == "throughput":
        from benchmarks.dlm_throughput import throughput

        print(f"device {device_name()} (shared machine: absolute numbers are contended, compare rows)")
        d_model, n_layers, vocab = (int(v) for v in args.size.split(","))
        model_kw = dict(d_model=d_model, n_layers=n_layers, n_heads=max(1, d_model // 64), mlp=(d_model * 11 // 4) // 64 * 64,
                        vocab=vocab)
        rows = throughput(gen=args.gen, prompt_length=args.prompt_length, rounds=args.repeats, model_kw=model_kw,
                          only=tuple(filter(None, args.only.split(","))))
        print_table(rows, list(rows[0]))
        return

    checkpoint = args.checkpoint
    if args.train_steps > 0:
        checkpoint = str(train_here(args.variant, args.train_steps))
    elif args.workdir:
        from jaxlab.dlm.pretrained import export_workdir

        checkpoint = str(export_workdir(args.workdir, tempfile.mktemp(suffix=".npz")))
    module, params, task, meta = load_checkpoint(checkpoint)
    if args.mode == "selfcorrect":
        from benchmarks.dlm_selfcorrect import selfcorrect

        print(f"device {device_name()} (shared); model {checkpoint}; task {task.name}; {args.num_examples} held-out prompts")
        rows = selfcorrect(module, params, task, num_examples=args.num_examples, seeds=args.seeds,
                           budgets=tuple(int(b) for b in filter(None, args.budgets.split(","))))
        print_table(rows, list(rows[0]))
        return
    if args.mode == "remask_cache":
        from benchmarks.dlm_selfcorrect import remask_cache_accuracy

        print(f"device {device_name()} (shared); model {checkpoint}; task {task.name}; {args.num_examples} held-out prompts")
        rows = remask_cache_accuracy(module, params, task, num_examples=args.num_examples, block=args.window)
        print_table(rows, list(rows[0]))
        return
    print(f"device {device_name()}; model {checkpoint} ({sum(p.size for p in jax.tree.leaves(params)):,} params, "
          f"trained: {meta.get('info', {})}); task {task.name}: prompt {task.prompt_length}, answer {task.answer_length}")
    print(f"{args.num_examples} held-out prompts, batch 1; block size = DCD window = {args.window}, "
          f"threshold {args.threshold}, refresh_count {args.refresh}")
    rows = benchmark(module, params, task, num_examples=args.num_examples, window=args.window,
                     threshold=args.threshold, refresh=args.refresh, repeats=args.repeats)
    print_table(rows, list(rows[0]))


if __name__ == "__main__":
    main()
