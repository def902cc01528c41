"""LVLM prefill and decode throughput per position scheme: the position scheme should cost ~nothing.

  python -m benchmarks.lvlm                      # small preset, batch 8, 32 new tokens, 5 rounds
  python -m benchmarks.lvlm --batch=16 --new_tokens=64 --rounds=3

For each scheme (1d, mrope, circle, AGE strategy_4) the ``small`` model (random weights; speed does
not depend on them) runs ``jaxlab.lvlm.generate.generate`` on shapes-VQA prompts (one 32x32
image = 16 image tokens + question, left padded). Reported, as medians over ``--rounds`` rounds in
which the schemes take turns (so machine load hits them alike; absolute numbers on a shared
machine are noisy, compare rows):

- ids ms: ``rope_index`` alone for the batch (jitted), all position sets the layers use;
- prefill tok/s: prompt tokens / time of ``generate(max_new_tokens=1)`` (ids + ViT + prefill + 1 pick);
- decode tok/s: ``B * (new_tokens - 1)`` / (time of ``generate(new_tokens)`` - time of ``generate(1)``),
  i.e. cached single-token steps.
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import device_name, print_table
from jaxlab.data.shapes_vqa import ShapesVQA
from jaxlab.lvlm.generate import generate
from jaxlab.lvlm.positions import rope_index
from jaxlab.models import build_model
from jaxlab.models.lvlm import init_inputs

SCHEMES = ("1d", "mrope", "circle", "strategy_4")


def _timed(fn) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--new_tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    data = ShapesVQA()
    batch = data.batch(1, 0, args.batch)
    ids, mask = batch["input_ids"][:, :-2], batch["attention_mask"][:, :-2]  # prompts without the answers
    pixels = batch["pixel_values"].reshape(-1, batch["pixel_values"].shape[-1])
    grid = np.tile(data.image_grid_thw, (args.batch, 1))
    models = {}
    for scheme in SCHEMES:
        module = build_model("lvlm", "small", position_scheme=scheme)
        a, kw = init_inputs(module.config)
        params = module.init(jax.random.key(0), *a, **kw)["params"]
        ids_fn = jax.jit(lambda i, g, m, c=module.config: [rope_index(i, g, m, s, c.rope_options()) for s in c.position_sets])
        models[scheme] = (module, params, ids_fn)
    runs = {s: {"ids": [], "prefill": [], "full": []} for s in SCHEMES}

    def call(scheme, n):
        module, params, _ = models[scheme]
        return generate(module, params, ids, grid, mask, pixel_values=pixels, max_new_tokens=n)

    for scheme in SCHEMES:  # compile everything first
        call(scheme, 1), call(scheme, args.new_tokens)
        jax.block_until_ready(models[scheme][2](jnp.asarray(ids), jnp.asarray(grid), jnp.asarray(mask)))
    for _ in range(args.rounds):
        for scheme in SCHEMES:
            runs[scheme]["ids"].append(_timed(lambda: models[scheme][2](jnp.asarray(ids), jnp.asarray(grid), jnp.asarray(mask))))
            runs[scheme]["prefill"].append(_timed(lambda: call(scheme, 1)))
            runs[scheme]["full"].append(_timed(lambda: call(scheme, args.new_tokens)))
    rows = []
    prompt_tokens = int(mask.sum())
    for scheme in SCHEMES:
        med = {k: statistics.median(v) for k, v in runs[scheme].items()}
        decode = max(med["full"] - med["prefill"], 1e-9)
        rows.append({
            "scheme": scheme,
            "ids ms": f"{med['ids'] * 1e3:.2f}",
            "prefill tok/s": f"{prompt_tokens / med['prefill']:.0f}",
            "decode tok/s": f"{args.batch * (args.new_tokens - 1) / decode:.0f}",
            "prefill ms": f"{med['prefill'] * 1e3:.1f}",
            "decode ms/step": f"{decode / (args.new_tokens - 1) * 1e3:.2f}",
        })
    print(f"device {device_name()}; batch {args.batch}, prompt length {ids.shape[1]} ({prompt_tokens} real tokens), "
          f"{args.new_tokens} new tokens, median of {args.rounds} interleaved rounds")
    print_table(rows, ["scheme", "ids ms", "prefill tok/s", "prefill ms", "decode tok/s", "decode ms/step"])


if __name__ == "__main__":
    main()
