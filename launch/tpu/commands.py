"""The gcloud commands behind ``python -m launch.tpu`` (``jaxlab-tpu`` when installed).

Subcommands:

- ``create``: a TPU VM (``gcloud compute tpus tpu-vm create``), or with ``--queued`` a queued
  resource (``queued-resources create``); ``--spot`` for spot capacity. Idempotent: it describes
  the resource first and creates it only when it does not exist. A resource that is ready is
  reused, one still being created is waited for, a stopped VM is started, and a preempted,
  suspended or failed one is deleted and created again (what a spot slice needs after a preemption).
- ``install``: copies this checkout's committed ``HEAD`` (``git archive``; refused when tracked
  files have uncommitted changes, unless ``--allow-dirty``) to every worker, or clones ``--git``;
  then installs Python 3.11 next to the image's own Python (TPU VM images ship 3.10, jax needs
  >= 3.11) with ``uv`` into ``~/jaxlab-venv``, and ``jax[tpu]``, ``gcsfs`` and jaxlab into it.
- ``train``: starts ``launch.train --distributed`` with that venv's Python on all workers at once,
  in the background, logging to ``~/jaxlab-train.log``; a worker that is already training is left
  alone (so rerunning ``up`` never starts a second trainer). The workdir must be on GCS.
- ``logs``: follows worker 0's log. ``delete``: deletes the VM / queued resource.
- ``up``: create + install + train; rerun it after a preemption to continue from the last checkpoint.

Arguments after ``--`` go to ``launch/train.py`` (``--config=...``, ``--config.x=y``).
``--dry-run`` prints the commands and runs none (it assumes the resource does not exist yet).
"""

import argparse
import dataclasses
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LOG = "~/jaxlab-train.log"
VENV = "~/jaxlab-venv"
PYTHON = "3.11"  # setup.cfg's python_requires (and jax's); installed by uv next to the image's python3
REMOTE_ARCHIVE = "~/jaxlab-src.tar.gz"

# Accelerator type prefix -> TPU VM runtime (software) version.
RUNTIMES = (("v6e", "v2-alpha-tpuv6e"), ("v5litepod", "v2-alpha-tpuv5-lite"), ("v5p", "v2-alpha-tpuv5"),
            ("v4", "tpu-ubuntu2204-base"), ("v3", "tpu-ubuntu2204-base"), ("v2", "tpu-ubuntu2204-base"))

# Resource states (``state.state`` of a queued resource, ``state`` of a TPU VM).
READY = {"ACTIVE", "READY"}
PENDING = {"ACCEPTED", "WAITING_FOR_RESOURCES", "PROVISIONING", "CREATING", "STARTING", "RESTARTING", "REPAIRING"}
STOPPED = {"STOPPED"}
# Anything else (PREEMPTED, SUSPENDED, SUSPENDING, FAILED, TERMINATED, ...) is deleted and created again.


def default_runtime(accelerator: str) -> str:
    for prefix, version in RUNTIMES:
        if accelerator.startswith(prefix + "-"):
            return version
    raise SystemExit(f"error: no default runtime for --accelerator={accelerator!r}; pass --version")


# --------------------------------------------------------------------------- commands (pure)


def _common(args) -> list[str]:
    flags = [f"--zone={args.zone}"]
    if args.project:
        flags.append(f"--project={args.project}")
    return flags


def _kind(args) -> list[str]:
    return ["gcloud", "compute", "tpus", "queued-resources" if args.queued else "tpu-vm"]


def ssh_command(args, command: str, worker: str = "all") -> list[str]:
    return ["gcloud", "compute", "tpus", "tpu-vm", "ssh", args.name, *_common(args), f"--worker={worker}",
            f"--command={command}"]


def describe_command(args) -> list[str]:
    field = "state.state" if args.queued else "state"
    return [*_kind(args), "describe", args.name, *_common(args), f"--format=value({field})"]


def create_command(args) -> list[str]:
    if args.queued:
        command = [*_kind(args), "create", args.name, f"--node-id={args.name}", *_common(args),
                   f"--accelerator-type={args.accelerator}", f"--runtime-version={args.version}"]
    else:
        command = [*_kind(args), "create", args.name, *_common(args), f"--accelerator-type={args.accelerator}",
                   f"--version={args.version}"]
    return command + (["--spot"] if args.spot else [])


def delete_command(args) -> list[str]:
    return [*_kind(args), "delete", args.name, *_common(args), *(["--force"] if args.queued else []), "--quiet"]


def start_command(args) -> list[str]:
    return ["gcloud", "compute", "tpus", "tpu-vm", "start", args.name, *_common(args)]


# True on a worker where this launcher's trainer runs ("pytho[n]": the pattern does not match the
# shell whose command line carries it).
TRAINING = "pgrep -f 'jaxlab-venv/bin/pytho[n] -m launch.train' > /dev/null"


def install_script(fetch: str) -> str:
    """The shell command each worker runs: put the source in ~/jaxlab, then Python 3.11 + jaxlab in a venv.

    The image's own ``python3`` (3.10 on the TPU VM images) only installs ``uv``; ``uv venv --python
    3.11`` uses a 3.11 on the machine or downloads a standalone build. A worker that is training is
    left alone (its code is not replaced under the running job).
    """
    uv = "~/.local/bin/uv"
    steps = " && ".join([
        fetch,
        "python3 -m pip install -q --user -U uv",
        f"rm -rf {VENV}",
        f"{uv} venv -q --python {PYTHON} {VENV}",
        f"{uv} pip install -q --python {VENV}/bin/python 'jax[tpu]' gcsfs -e ~/jaxlab",
    ])
    return f'if {TRAINING}; then echo "jaxlab: $(hostname) is training; not reinstalling"; else {steps}; fi'


def train_script(args) -> str:
    train = shlex.join(["-m", "launch.train", "--distributed", f"--workdir={args.workdir}", *args.train_args])
    start = f"cd ~/jaxlab && nohup {VENV}/bin/python {train} > {LOG} 2>&1 &"
    return f'if {TRAINING}; then echo "jaxlab: $(hostname) is already training"; else {start} fi'


def archive_commands(args, source: Path, archive: str) -> list[list[str]]:
    return [["git", "-C", str(source), "archive", "--format=tar.gz", f"--output={archive}", "HEAD"],
            ["gcloud", "compute", "tpus", "tpu-vm", "scp", archive, f"{args.name}:{REMOTE_ARCHIVE}", *_common(args),
             "--worker=all"]]


def logs_command(args) -> list[str]:
    return ssh_command(args, f"tail -n 100 -f {LOG}", worker="0")


# --------------------------------------------------------------------------- checks on this machine


def source_checkout(start: Path | None = None) -> Path:
    """The jaxlab git checkout that ``install`` archives: the one around the current directory."""
    start = start or Path.cwd()
    proc = subprocess.run(["git", "-C", str(start), "rev-parse", "--show-toplevel"], capture_output=True, text=True)
    root = Path(proc.stdout.strip()) if proc.returncode == 0 else None
    if root is None or not (root / "launch" / "train.py").is_file():
        raise SystemExit(f"error: {start} is not inside a jaxlab git checkout; run from your clone, "
                         "or install a published version with --git=URL[@ref]")
    return root


def uncommitted_changes(source: Path) -> tuple[list[str], list[str]]:
    """(tracked files with uncommitted changes, untracked files) of the checkout."""
    proc = subprocess.run(["git", "-C", str(source), "status", "--porcelain"], check=True, capture_output=True,
                          text=True)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    untracked = [line[3:] for line in lines if line.startswith("??")]
    return [line[3:] for line in lines if not line.startswith("??")], untracked


def check_committed(source: Path, allow_dirty: bool) -> None:
    changed, untracked = uncommitted_changes(source)
    if untracked:
        print(f"warning: {len(untracked)} untracked file(s) are not copied to the workers (git archive HEAD): "
              f"{', '.join(untracked[:5])}{' ...' if len(untracked) > 5 else ''}", file=sys.stderr)
    if changed and not allow_dirty:
        raise SystemExit(
            f"error: {len(changed)} file(s) have uncommitted changes ({', '.join(changed[:5])}"
            f"{' ...' if len(changed) > 5 else ''}); the workers get the committed HEAD only. Commit them, "
            "or pass --allow-dirty to run HEAD without them")
    if changed:
        print(f"warning: --allow-dirty: {len(changed)} uncommitted change(s) are left out", file=sys.stderr)


# --------------------------------------------------------------------------- running


@dataclasses.dataclass
class Gcloud:
    """Prints each command, then runs it (``dry_run``: prints only)."""

    dry_run: bool
    poll_seconds: float = 30.0

    def run(self, command: list[str]) -> None:
        print("+ " + shlex.join(command), flush=True)
        if not self.dry_run:
            subprocess.run(command, check=True)

    def state(self, args) -> str | None:
        """The resource's state, or None when it does not exist (and always in a dry run)."""
        command = describe_command(args)
        print("+ " + shlex.join(command), flush=True)
        if self.dry_run:
            return None
        proc = subprocess.run(command, capture_output=True, text=True)
        if proc.returncode:
            if "not_found" in proc.stderr.lower().replace(" ", "_"):
                return None
            raise SystemExit(f"error: {shlex.join(command)} failed:\n{proc.stderr.strip()}")
        return proc.stdout.strip().upper()

    def wait_until_ready(self, args, timeout_s: float = 24 * 3600) -> None:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            state = self.state(args)
            if self.dry_run or state in READY:
                return
            print(f"{args.name}: {state}", flush=True)
            if state not in PENDING:
                raise SystemExit(f"error: {args.name} is {state}; delete it or rerun `up` to recreate it")
            time.sleep(self.poll_seconds)
        raise SystemExit(f"error: {args.name} did not become ready in time")


def ensure_resource(args, gcloud: Gcloud) -> None:
    """Creates the VM / queued resource unless a usable one exists (see the module docstring)."""
    state = gcloud.state(args)
    if state in READY:
        print(f"{args.name} exists and is {state}: reusing it", flush=True)
        return
    if state in PENDING:
        print(f"{args.name} exists and is {state}: waiting for it", flush=True)
    elif state in STOPPED and not args.queued:
        gcloud.run(start_command(args))
    else:
        if state is not None:
            print(f"{args.name} is {state}: deleting it and creating it again", flush=True)
            gcloud.run(delete_command(args))
        gcloud.run(create_command(args))
    gcloud.wait_until_ready(args)


def install(args, gcloud: Gcloud) -> None:
    if args.git:
        url, _, ref = args.git.partition("@")
        fetch = f"rm -rf ~/jaxlab && git clone -q {shlex.quote(url)} ~/jaxlab"
        if ref:
            fetch += f" && git -C ~/jaxlab checkout -q {shlex.quote(ref)}"
        gcloud.run(ssh_command(args, install_script(fetch)))
        return
    source = source_checkout()
    check_committed(source, args.allow_dirty)
    with tempfile.TemporaryDirectory(prefix="jaxlab-tpu-") as tmp:
        for command in archive_commands(args, source, str(Path(tmp) / "jaxlab-src.tar.gz")):
            gcloud.run(command)
        unpack = f"rm -rf ~/jaxlab && mkdir -p ~/jaxlab && tar -xzf {REMOTE_ARCHIVE} -C ~/jaxlab"
        gcloud.run(ssh_command(args, install_script(unpack)))


def check_train_args(args) -> None:
    if not args.workdir.startswith("gs://"):
        raise SystemExit(
            f"error: --workdir={args.workdir!r} must be a gs:// path: every TPU worker reads and writes the same run"
        )
    if not any(a.startswith("--config=") for a in args.train_args):
        raise SystemExit("error: pass the training config after --, e.g. -- --config=configs/dit.py:XL-2")


def train(args, gcloud: Gcloud) -> None:
    gcloud.run(ssh_command(args, train_script(args)))


STEPS = {
    "create": [ensure_resource],
    "install": [install],
    "train": [train],
    "up": [ensure_resource, install, train],
    "logs": [lambda args, gcloud: gcloud.run(logs_command(args))],
    "delete": [lambda args, gcloud: gcloud.run(delete_command(args))],
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    train_args: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, train_args = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(prog="python -m launch.tpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("subcommand", choices=sorted(STEPS))
    parser.add_argument("--name", required=True, help="TPU VM / queued resource name")
    parser.add_argument("--zone", required=True, help="e.g. us-central2-b")
    parser.add_argument("--project", default="", help="GCP project (default: gcloud's)")
    parser.add_argument("--accelerator", default="v4-8", help="accelerator type, e.g. v4-32, v5litepod-16")
    parser.add_argument("--version", default="", help="TPU VM runtime version (default: by accelerator family)")
    parser.add_argument("--queued", action="store_true", help="use a queued resource")
    parser.add_argument("--spot", action="store_true", help="spot (preemptible) capacity")
    parser.add_argument("--git", default="", help="install from git URL[@ref] instead of this checkout")
    parser.add_argument("--allow-dirty", action="store_true",
                        help="install even though tracked files have uncommitted changes (they are left out)")
    parser.add_argument("--workdir", default="", help="gs:// run directory (train/up)")
    parser.add_argument("--poll-seconds", type=float, default=30.0, help="wait between state checks")
    parser.add_argument("--dry-run", action="store_true", help="print the commands; run nothing")
    args = parser.parse_args(argv)
    args.train_args = train_args
    args.version = args.version or default_runtime(args.accelerator)
    if args.subcommand in ("train", "up"):
        if not args.workdir:
            parser.error("--workdir=gs://... is required for train/up")
        check_train_args(args)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    gcloud = Gcloud(dry_run=args.dry_run, poll_seconds=args.poll_seconds)
    for step in STEPS[args.subcommand]:
        step(args, gcloud)
