"""Train (or resume) a model: ``python -m launch.train --config=configs/<family>.py:<variant> --workdir=DIR``.

  python -m launch.train --config=configs/dit.py:digits --workdir=/tmp/digits
  python -m launch.train --config=configs/dit.py:XL-2 --workdir=gs://bucket/dit-xl2 \\
      --config.data.path=/data/imagenet256_latents --config.mesh.fsdp=4 --distributed

Any config field can be overridden (``--config.training.num_steps=1000``); unknown keys fail.
The run resumes from the newest valid checkpoint in ``<workdir>/checkpoints``; on SIGTERM or Ctrl-C it saves
and exits 0. Outputs: ``metrics.jsonl``, ``tensorboard/``, ``samples/step_*.png``,
``model.json`` + ``config.json``; ``python -m launch.sample --checkpoint=<workdir>`` samples
from the latest EMA weights.

Several processes: ``--distributed`` calls ``jax.distributed.initialize()`` with the cluster's
own discovery (Cloud TPU pod slices, SLURM, Open MPI); elsewhere pass
``--coordinator_address``, ``--num_processes`` and ``--process_id`` on every process.
"""

import importlib.util
import re
import sys

import jax
from absl import app, flags
from ml_collections import config_flags

from jaxlab import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/<family>.py:<variant>", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "run directory (local path or gs://...)", required=True)
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "call jax.distributed.initialize() with auto-detection")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (explicit multi-process)")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "number of processes (explicit multi-process)")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "this process's index (explicit multi-process)")
_STOP_AT_STEP = flags.DEFINE_integer("stop_at_step", None, "save and exit after this step (as a stop request would)")


def initialize_distributed() -> None:
    """``jax.distributed.initialize`` when several processes are configured; no-op otherwise."""
    explicit = [_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value]
    if any(v is not None for v in explicit):
        if any(v is None for v in explicit):
            raise app.UsageError("--coordinator_address, --num_processes and --process_id go together")
        if _NUM_PROCESSES.value > 1:
            jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    elif _DISTRIBUTED.value:
        jax.distributed.initialize()


def unknown_override(argv: list[str]) -> str | None:
    """The message for the first ``--config.<key>`` override whose key the config does not have."""
    spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if spec is None:
        return None
    path, _, variant = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("_jaxlab_config_file", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    config = module.get_config(variant or None)
    for arg in argv:
        match = re.match(r"--config\.([^=]+)", arg)
        if not match:
            continue
        node, parts = config, match.group(1).split(".")
        for depth, part in enumerate(parts):
            if not hasattr(node, "keys") or part not in node:
                where = "config" + "".join(f".{p}" for p in parts[:depth])
                allowed = sorted(node.keys()) if hasattr(node, "keys") else []
                return f"unknown config key {match.group(1)!r}: {where} has no {part!r}; allowed keys: {allowed}"
            node = node[part]
    return None


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing that turns ml_collections' bare KeyError for a mistyped override into a clear message."""
    try:
        return flags.FLAGS(argv)
    except (AttributeError, KeyError) as e:
        print(f"error: {unknown_override(argv) or e}", file=sys.stderr)
        sys.exit(2)
    except flags.Error as e:  # e.g. --config.training.num_steps=abc
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    config = _CONFIG.value
    if config is None:
        raise app.UsageError("--config is required, e.g. --config=configs/dit.py:digits")
    initialize_distributed()

    from jaxlab.train.loop import train

    result = train(config, _WORKDIR.value, stop_at_step=_STOP_AT_STEP.value)  # NaN/Inf: exit 3 (jaxlab.cli)
    if jax.process_index() == 0:
        status = "stopped" if result.stopped else "finished"
        grid = f"; latest sample grid: {result.grids[-1]}" if result.grids else ""
        print(f"{status} at step {result.step}{grid}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    cli.run(main, flags_parser=parse_flags)
