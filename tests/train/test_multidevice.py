"""Sharded training on 8 fake CPU devices (subprocess), and two processes through jax.distributed."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxlab.train.checkpoint import restore_params_subtree
from jaxlab.train.loop import train
from jaxlab.train.metrics import read_metrics
from tests.train.helpers import cli_args, compilation_cache_env, host, tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _env(cache_dir, devices: int) -> dict[str, str]:
    env = dict(os.environ, **compilation_cache_env(cache_dir))
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}".strip()
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_eight_devices_match_one_and_restore_on_four(tmp_path, compilation_cache_dir):
    proc = subprocess.run(
        [sys.executable, "-m", "tests.train.multidevice_check", str(tmp_path)],
        cwd=ROOT, env=_env(compilation_cache_dir, 8), capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout.split("REPORT ", 1)[1])

    one, eight = report["losses_one"], report["losses_eight"]
    assert sorted(eight, key=int) == ["1", "2", "3", "4"]
    np.testing.assert_allclose([eight[k] for k in "1234"], [one[k] for k in "1234"], rtol=2e-5)

    # Parameters and optimizer moments are really sharded: fsdp on "embed", tensor on "mlp"/"heads".
    specs = report["param_specs"]
    assert specs["blocks_0/mlp/fc1/kernel"] == "P('fsdp', 'tensor')"
    assert specs["blocks_0/attn/qkv/kernel"] == "P('fsdp', None, 'tensor', None)"
    assert specs["blocks_0/attn/proj/kernel"] == "P('tensor', None, 'fsdp')"
    assert report["opt_specs"]["0/mu/blocks_0/mlp/fc1/kernel"] == "P('fsdp', 'tensor')"
    assert report["fc1_global_shape"] == [32, 128] and report["fc1_shard_shapes"] == [[16, 64]]
    assert report["fc1_num_devices"] == 8

    # The 8-device checkpoint restores exactly on 4 devices and training continues from it.
    assert report["restored_equal"] and report["restored_devices"] == 4
    assert report["restored_data_state"] == {"next_index": 32}
    assert report["continued_step"] == 6
    continued = report["losses_continued"]
    np.testing.assert_allclose([continued[k] for k in "56"], [one[k] for k in "56"], rtol=2e-5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_agree_with_one(tmp_path, compilation_cache_dir):
    """Two jax.distributed processes x 2 devices (data=2, fsdp=2) vs one process on 1 device."""
    workdir, port = tmp_path / "two", _free_port()
    args = cli_args(training__num_steps=4, mesh__data=2, mesh__fsdp=2, checkpoint__every_steps=4)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "launch.train", *args, f"--workdir={workdir}",
             f"--coordinator_address=localhost:{port}", "--num_processes=2", f"--process_id={i}"],
            cwd=ROOT, env=_env(compilation_cache_dir, 2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-4000:]
    assert "finished at step 4" in outputs[0][1]
    assert "over 4 device(s), 2 process(es)" in outputs[0][1]
    # Each process wrote its own data position (4 global batches: 4 rows each per process).
    for i in range(2):
        state = json.loads((workdir / f"checkpoints/4/data/process_{i}-of-2.json").read_text())
        assert state == {"next_index": 16}

    single = train(tiny_config(training=dict(num_steps=4), checkpoint=dict(every_steps=4)), str(tmp_path / "one"))
    two = {r["step"]: r["loss"] for r in read_metrics(workdir / "metrics.jsonl")}
    one = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "one/metrics.jsonl")}
    np.testing.assert_allclose([two[s] for s in range(1, 5)], [one[s] for s in range(1, 5)], rtol=2e-5)
    # Both processes' shards of the EMA params, read back from the checkpoint, match the 1-process run.
    _, ema = restore_params_subtree(workdir / "checkpoints")
    for a, b in zip(jax.tree.leaves(ema), jax.tree.leaves(host(single.state.ema_params))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.slow  # 2 minutes on 2 cores; test_two_processes_agree_with_one covers the row assembly by default
def test_tensor_axis_across_processes_feeds_both_the_same_rows(tmp_path, compilation_cache_dir):
    """Batch rows come from the sharding's addressable indices: with ``tensor`` spanning the two
    processes, both hold (and read) the whole batch, and the run matches one process."""
    workdir, port = tmp_path / "two", _free_port()
    procs = [
        subprocess.Popen([sys.executable, "-m", "tests.train.multihost_rows_check", str(i), str(port), str(workdir)],
                         cwd=ROOT, env=_env(compilation_cache_dir, 2), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-4000:]
    report = json.loads(outputs[0][0].split("REPORT ", 1)[1])
    assert report["tensor_spans_processes"] == [0, 1] and report["rows"] == [0, 8] and report["step"] == 4

    single = train(tiny_config(training=dict(num_steps=4), checkpoint=dict(every_steps=4)), str(tmp_path / "one"))
    two = {r["step"]: r["loss"] for r in read_metrics(workdir / "metrics.jsonl")}
    one = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "one/metrics.jsonl")}
    np.testing.assert_allclose([two[s] for s in range(1, 5)], [one[s] for s in range(1, 5)], rtol=2e-5)
    assert single.step == 4
