"""The gcloud commands behind ``python -m launch.tpu``: plan them as argument lists, then print or run them.

Subcommands:

- ``create``: a TPU VM (``gcloud compute tpus tpu-vm create``), or with ``--queued`` a queued
  resource (``queued-resources create``) and a wait until it is ACTIVE; ``--spot`` for spot capacity.
- ``install``: copies this checkout (``git archive HEAD``) to every worker, or clones ``--git``,
  then ``pip install 'jax[tpu]' gcsfs`` and ``pip install -e ~/jaxlab`` on all workers.
- ``train``: starts ``python -m launch.train --distributed`` on all workers at once, in the
  background, logging to ``~/jaxlab-train.log``; the workdir must be on GCS (shared by all hosts).
- ``logs``: follows worker 0's log. ``delete``: deletes the VM / queued resource.
- ``up``: create + install + train.

Arguments after ``--`` go to ``launch/train.py`` (``--config=...``, ``--config.x=y``).
"""

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ARCHIVE = "/tmp/jaxlab-src.tar.gz"
LOG = "~/jaxlab-train.log"


# Accelerator type prefix -> TPU VM runtime (software) version.
RUNTIMES = (("v6e", "v2-alpha-tpuv6e"), ("v5litepod", "v2-alpha-tpuv5-lite"), ("v5p", "v2-alpha-tpuv5"),
            ("v4", "tpu-ubuntu2204-base"), ("v3", "tpu-ubuntu2204-base"), ("v2", "tpu-ubuntu2204-base"))


def default_runtime(accelerator: str) -> str:
    for prefix, version in RUNTIMES:
        if accelerator.startswith(prefix + "-"):
            return version
    raise SystemExit(f"error: no default runtime for --accelerator={accelerator!r}; pass --version")


def _common(args) -> list[str]:
    flags = [f"--zone={args.zone}"]
    if args.project:
        flags.append(f"--project={args.project}")
    return flags


def _ssh(args, command: str, worker: str = "all") -> list[str]:
    return ["gcloud", "compute", "tpus", "tpu-vm", "ssh", args.name, *_common(args), f"--worker={worker}",
            f"--command={command}"]


def create_commands(args) -> list[list[str]]:
    if args.queued:
        create = ["gcloud", "compute", "tpus", "queued-resources", "create", args.name, f"--node-id={args.name}",
                  *_common(args), f"--accelerator-type={args.accelerator}", f"--runtime-version={args.version}"]
        if args.spot:
            create.append("--spot")
        wait = ["gcloud", "compute", "tpus", "queued-resources", "describe", args.name, *_common(args),
                "--format=value(state.state)"]
        return [create, wait]
    create = ["gcloud", "compute", "tpus", "tpu-vm", "create", args.name, *_common(args),
              f"--accelerator-type={args.accelerator}", f"--version={args.version}"]
    if args.spot:
        create.append("--spot")
    return [create]


def install_commands(args) -> list[list[str]]:
    pip = "python3 -m pip install -q -U pip && python3 -m pip install -q -U 'jax[tpu]' gcsfs && " \
          "python3 -m pip install -q -e ~/jaxlab"
    if args.git:
        url, _, ref = args.git.partition("@")
        fetch = f"rm -rf ~/jaxlab && git clone -q {shlex.quote(url)} ~/jaxlab"
        if ref:
            fetch += f" && git -C ~/jaxlab checkout -q {shlex.quote(ref)}"
        return [_ssh(args, f"{fetch} && {pip}")]
    archive = ["git", "-C", str(REPO), "archive", "--format=tar.gz", f"--output={ARCHIVE}", "HEAD"]
    copy = ["gcloud", "compute", "tpus", "tpu-vm", "scp", ARCHIVE, f"{args.name}:~/jaxlab-src.tar.gz",
            *_common(args), "--worker=all"]
    unpack = "rm -rf ~/jaxlab && mkdir -p ~/jaxlab && tar -xzf ~/jaxlab-src.tar.gz -C ~/jaxlab"
    return [archive, copy, _ssh(args, f"{unpack} && {pip}")]


def train_commands(args) -> list[list[str]]:
    if not args.workdir.startswith("gs://"):
        raise SystemExit(
            f"error: --workdir={args.workdir!r} must be a gs:// path: every TPU worker reads and writes the same run"
        )
    if not any(a.startswith("--config=") for a in args.train_args):
        raise SystemExit("error: pass the training config after --, e.g. -- --config=configs/dit.py:XL-2")
    train = shlex.join(["python3", "-m", "launch.train", "--distributed", f"--workdir={args.workdir}", *args.train_args])
    return [_ssh(args, f"cd ~/jaxlab && nohup {train} > {LOG} 2>&1 &")]


def logs_commands(args) -> list[list[str]]:
    return [_ssh(args, f"tail -n 100 -f {LOG}", worker="0")]


def delete_commands(args) -> list[list[str]]:
    if args.queued:
        return [["gcloud", "compute", "tpus", "queued-resources", "delete", args.name, *_common(args), "--force",
                 "--quiet"]]
    return [["gcloud", "compute", "tpus", "tpu-vm", "delete", args.name, *_common(args), "--quiet"]]


PLANS = {
    "create": [create_commands],
    "install": [install_commands],
    "train": [train_commands],
    "up": [create_commands, install_commands, train_commands],
    "logs": [logs_commands],
    "delete": [delete_commands],
}


def plan(args) -> list[list[str]]:
    """Every command the subcommand runs, in order."""
    return [command for step in PLANS[args.subcommand] for command in step(args)]


def parse_args(argv: list[str]) -> argparse.Namespace:
    train_args: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, train_args = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(prog="python -m launch.tpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("subcommand", choices=sorted(PLANS))
    parser.add_argument("--name", required=True, help="TPU VM / queued resource name")
    parser.add_argument("--zone", required=True, help="e.g. us-central2-b")
    parser.add_argument("--project", default="", help="GCP project (default: gcloud's)")
    parser.add_argument("--accelerator", default="v4-8", help="accelerator type, e.g. v4-32, v5litepod-16")
    parser.add_argument("--version", default="", help="TPU VM runtime version (default: by accelerator family)")
    parser.add_argument("--queued", action="store_true", help="use a queued resource")
    parser.add_argument("--spot", action="store_true", help="spot (preemptible) capacity")
    parser.add_argument("--git", default="", help="install from git URL[@ref] instead of this checkout")
    parser.add_argument("--workdir", default="", help="gs:// run directory (train/up)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands; run nothing")
    args = parser.parse_args(argv)
    args.train_args = train_args
    args.version = args.version or default_runtime(args.accelerator)
    if args.subcommand in ("train", "up") and not args.workdir:
        parser.error("--workdir=gs://... is required for train/up")
    return args


def _wait_until_active(command: list[str], timeout_s: float = 24 * 3600) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        state = subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()
        print(f"queued resource state: {state}", flush=True)
        if state == "ACTIVE":
            return
        if state in ("FAILED", "SUSPENDED"):
            raise SystemExit(f"error: queued resource is {state}")
        time.sleep(30)
    raise SystemExit("error: the queued resource did not become ACTIVE in time")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    for command in plan(args):
        print("+ " + shlex.join(command), flush=True)
        if args.dry_run:
            continue
        if "queued-resources" in command and "describe" in command:
            _wait_until_active(command)
        else:
            subprocess.run(command, check=True)
