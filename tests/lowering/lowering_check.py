"""Run by test_lowering.py in a subprocess with 8 fake CPU devices; prints a JSON report.

Lowers, for "tpu" and "cuda" (``jit(f).trace(...).lower(lowering_platforms=...)``, no hardware
needed), under a (data=2, fsdp=2, tensor=2) mesh: the train step of DiT, U-DiT, DiC and LLaDA
at tiny sizes whose attention fits the kernels (128+ tokens), the DDIM sampler of the image
families, and LLaDA's block decoder without and with a dual KV cache. Reports, per program and
platform, how many Mosaic (``tpu_custom_call``) and Triton custom calls and grouped convolutions
the lowered module holds.
"""

import json
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.train import sharding as sh
from jaxlab.train.optim import make_optimizer
from jaxlab.train.state import create_state, state_shardings
from jaxlab.train.step import make_train_step
from jaxlab.train.task import task_from_config

PLATFORMS = ("tpu", "cuda")
IMAGE_MODELS = {  # configs/<family>.py:tiny, enlarged to 32x32 latents: 256 tokens at patch 2
    "dit": dict(input_size=32, patch_size=2, hidden_size=64, depth=1, num_heads=2),
    "udit": dict(input_size=32, hidden_size=64, num_heads=2),
    "dic": dict(input_size=32, hidden_size=16),
}


MESH = sh.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})


def counts(text: str) -> dict:
    return {
        "mosaic": text.count("tpu_custom_call"),
        "triton": text.count("__gpu$xla.gpu.triton"),
        "conv": text.count("stablehlo.convolution"),
        "grouped_conv": len(re.findall(r"feature_group_count = (?!1\b)\d+", text)),
        "shard_map": text.count("sdy.manual_computation") + text.count("shard_map"),
    }


def lower_all(fn, *args) -> dict:
    with jax.set_mesh(MESH):
        return {p: counts(fn.trace(*args).lower(lowering_platforms=(p,)).as_text()) for p in PLATFORMS}


def train_step_report(config, example, batch) -> dict:
    config.training.global_batch_size = next(iter(batch.values())).shape[0]
    mesh = MESH
    task = task_from_config(config)
    optimizer, schedule = make_optimizer(config.optimizer, config.training.num_steps)
    _, shardings = state_shardings(task, optimizer, 0, example, mesh)
    state = create_state(task, optimizer, 0, example, shardings)
    step = make_train_step(task, optimizer, schedule, 0.999, mesh, shardings, {k: np.ndim(v) for k, v in batch.items()})
    return lower_all(step._fn, state, sh.global_batch(batch, mesh))


def _module(family: str, model_config):
    from jaxlab.config_utils import to_dict
    from jaxlab.models.registry import get_family

    fam = get_family(family)
    return fam.module(fam.config.from_dict(to_dict(model_config)))


def image_reports(family: str) -> dict:
    import importlib

    from jaxlab.diffusion.pipeline import make_class_sampler, sampling_diffusion

    config = importlib.import_module(f"configs.{family}").get_config("tiny")
    config.model.update(IMAGE_MODELS[family])
    size, channels = config.model.input_size, config.model.in_channels
    rng = np.random.default_rng(0)
    example = {"image": np.zeros((size, size, channels), np.float32), "label": np.int32(0)}
    batch = {"image": rng.standard_normal((8, size, size, channels)).astype(np.float32),
             "label": rng.integers(0, 10, 8).astype(np.int32)}
    report = {"train_step": train_step_report(config, example, batch)}
    module = _module(family, config.model)
    params = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, size, size, channels)), jnp.zeros((1,), jnp.int32), jnp.zeros((1,), jnp.int32))["params"]
    params = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype), jax.tree.map(lambda b: getattr(b, "value", b), params, is_leaf=lambda b: hasattr(b, "value")))
    sampler = make_class_sampler(module, sampling_diffusion("ddim", 4, module.config.learn_sigma), sampler="ddim", cfg_scale=4.0)
    report["ddim_sampler"] = lower_all(sampler, params, jnp.zeros((2,), jnp.int32), jax.random.key(0))
    return report


def llada_reports() -> dict:
    from configs.dlm import get_config
    from jaxlab.dlm.decoding import DecodeConfig, _decode

    config = get_config("text")
    config.model.update(n_layers=1, d_model=64, n_heads=2, n_kv_heads=1, max_sequence_length=256)
    config.objective.kind = "pretrain"
    vocab = config.model.vocab_size
    example = {"tokens": np.zeros((128,), np.int32)}
    batch = {"tokens": np.random.default_rng(0).integers(0, vocab - 8, (8, 128)).astype(np.int32)}
    report = {"train_step": train_step_report(config, example, batch)}
    module = _module("llada", config.model)
    params = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"]
    params = jax.tree.map(lambda b: jax.ShapeDtypeStruct(b.value.shape, b.value.dtype) if hasattr(b, "value") else b,
                          params, is_leaf=lambda b: hasattr(b, "value"))
    prompt = jnp.zeros((2, 64), jnp.int32)
    ids = dict(mask_id=module.config.mask_token_id, eos_id=module.config.eos_token_id, pad_id=module.config.pad_token_id)
    for cache in ("none", "dual"):
        decode_config = DecodeConfig(window_type="static", generate_length=64, block_size=32, cache_type=cache,
                                     **ids)
        decoder = jax.jit(lambda p, x, k, c=decode_config: _decode(module, c, p, x, k))
        report[f"block_decoder_{cache}_cache"] = lower_all(decoder, params, prompt, jax.random.key(0))
    return report


def main() -> None:
    assert jax.device_count() == 8, "run with XLA_FLAGS=--xla_force_host_platform_device_count=8"
    families = sys.argv[1:] or ["dit", "udit", "dic", "llada"]
    report = {f: (llada_reports() if f == "llada" else image_reports(f)) for f in families}
    print("REPORT " + json.dumps(report))


if __name__ == "__main__":
    main()
