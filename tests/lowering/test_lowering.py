"""Every family's train step, sampler and decoders lower for TPU and GPU with the accelerator kernels.

Lowering needs no hardware: ``jit(f).trace(...).lower(lowering_platforms=("tpu",))`` runs the
Mosaic (Pallas TPU) and Triton (Pallas GPU) lowerings on this CPU. The programs are lowered in a
subprocess with 8 fake CPU devices under a (data=2, fsdp=2, tensor=2) mesh (lowering_check.py).
What needs the hardware, and is not checked here: compiling the kernels (Mosaic / Triton
compilers) and running them; cuDNN attention refuses even to trace without a GPU.
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _report(*families: str) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=8".strip()
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-m", "tests.lowering.lowering_check", *families],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.split("REPORT ", 1)[1])


def _assert_attention_kernels(program: dict, min_calls: int) -> None:
    assert program["tpu"]["mosaic"] >= min_calls and program["tpu"]["triton"] == 0, program
    assert program["cuda"]["triton"] >= min_calls and program["cuda"]["mosaic"] == 0, program


def test_dit_and_llada_lower_with_flash_attention():
    report = _report("dit", "llada")
    for family in ("dit", "llada"):
        step = report[family]["train_step"]
        _assert_attention_kernels(step, 3)  # forward + the two backward kernels (dq, dkv)
        assert step["tpu"]["shard_map"] > 0 and step["cuda"]["shard_map"] > 0  # per-device kernels
    _assert_attention_kernels(report["dit"]["ddim_sampler"], 1)
    for cache in ("none", "dual"):  # the full-sequence forward; cached 32-token windows fall back
        _assert_attention_kernels(report["llada"][f"block_decoder_{cache}_cache"], 1)


@pytest.mark.slow
def test_udit_and_dic_lower_with_native_convolutions():
    report = _report("udit", "dic")
    for program in ("train_step", "ddim_sampler"):
        udit, dic = report["udit"][program], report["dic"][program]
        _assert_attention_kernels(udit, 3 if program == "train_step" else 1)
        for platform in ("tpu", "cuda"):
            assert udit[platform]["grouped_conv"] > 0  # native depthwise conv, not the CPU shifted products
            assert dic[platform]["conv"] > 0
