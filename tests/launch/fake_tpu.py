"""A fake ``gcloud`` and fake TPU workers, for executing launch/tpu's commands in a test.

``install(bin_dir, root)`` writes executables into ``bin_dir`` (put it first on PATH):

- ``gcloud``: records every call (``root/calls.jsonl``) and keeps one resource's state in
  ``root/resource.json`` (``{"states": [...]}``: each ``describe`` reports the first state and drops
  it while more follow). ``describe`` of a missing resource fails with NOT_FOUND, as gcloud does;
  ``create`` / ``start`` / ``delete`` change the state. ``scp ... --worker=all`` copies into every
  worker's home (``root/worker<i>``), and ``ssh --command=CMD`` runs CMD with bash in each worker's
  home, with the stubs below first on PATH.
- worker stubs: ``python3`` (the image's Python 3.10: installs a ``uv`` stub for
  ``-m pip install --user uv``), ``uv`` (``venv --python X DIR`` makes a Python stub in DIR),
  that venv Python (records its arguments and working directory; ``-m launch.train`` marks the
  worker as training), and ``pgrep`` (succeeds on a worker marked as training).
"""

import json
import os
import pathlib
import shlex
import shutil
import subprocess
import sys

NUM_WORKERS = 2


def install(bin_dir: pathlib.Path, root: pathlib.Path) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    (root / "stubs").mkdir(exist_ok=True)
    _executable(bin_dir / "gcloud", "gcloud", root)
    for role in ("python3", "uv", "pgrep"):
        _executable(root / "stubs" / role, role, root)
    for i in range(NUM_WORKERS):
        (root / f"worker{i}").mkdir(exist_ok=True)


def calls(root: pathlib.Path) -> list[dict]:
    path = root / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def set_resource(root: pathlib.Path, *states: str) -> None:
    """The resource exists and reports ``states`` in turn (no states: it does not exist)."""
    path = root / "resource.json"
    if states:
        path.write_text(json.dumps({"states": list(states)}))
    elif path.exists():
        path.unlink()


def _executable(path: pathlib.Path, role: str, root: pathlib.Path) -> None:
    path.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(__file__)} {role} "
                    f"{shlex.quote(str(root))} \"$@\"\n")
    path.chmod(0o755)


def _record(root: pathlib.Path, role: str, argv: list[str]) -> None:
    entry = {"role": role, "argv": argv, "cwd": os.getcwd(), "home": os.environ.get("HOME", "")}
    with open(root / "calls.jsonl", "a") as f:
        f.write(json.dumps(entry) + "\n")


def _gcloud(root: pathlib.Path, argv: list[str]) -> int:
    _record(root, "gcloud", argv)
    resource = root / "resource.json"
    verb = next(a for a in argv[3:] if not a.startswith("-")) if len(argv) > 3 else ""
    if verb == "describe":
        if not resource.exists():
            print("ERROR: (gcloud.compute.tpus) NOT_FOUND: Resource not found", file=sys.stderr)
            return 1
        states = json.loads(resource.read_text())["states"]
        print(states[0])
        if len(states) > 1:
            resource.write_text(json.dumps({"states": states[1:]}))
    elif verb == "create":
        queued = "queued-resources" in argv
        set_resource(root, *(["WAITING_FOR_RESOURCES", "ACTIVE"] if queued else ["CREATING", "READY"]))
    elif verb == "start":
        set_resource(root, "READY")
    elif verb == "delete":
        set_resource(root)
    elif verb == "scp":
        source, target = [a for a in argv[4:] if not a.startswith("--")][:2]
        for worker in _workers(root, argv):
            shutil.copy(source, worker / target.split(":", 1)[1].replace("~/", ""))
    elif verb == "ssh":
        command = next(a for a in argv if a.startswith("--command=")).split("=", 1)[1]
        for worker in _workers(root, argv):
            env = {**os.environ, "HOME": str(worker), "PATH": f"{root / 'stubs'}{os.pathsep}{os.environ['PATH']}"}
            # "wait": the fake returns after what the command started in the background (the trainer stub).
            proc = subprocess.run(["bash", "-c", f"{command}\nwait"], cwd=worker, env=env)
            if proc.returncode:
                return proc.returncode
    return 0


def _workers(root: pathlib.Path, argv: list[str]) -> list[pathlib.Path]:
    which = next(a for a in argv if a.startswith("--worker=")).split("=", 1)[1]
    indices = range(NUM_WORKERS) if which == "all" else [int(which)]
    return [root / f"worker{i}" for i in indices]


def _stub(root: pathlib.Path, role: str, argv: list[str]) -> int:
    _record(root, role, argv)
    home = pathlib.Path(os.environ["HOME"])
    if role == "python3" and argv[:2] == ["--version"]:
        print("Python 3.10.12")
    elif role == "python3" and argv[:3] == ["-m", "pip", "install"] and "uv" in argv:
        (home / ".local" / "bin").mkdir(parents=True, exist_ok=True)
        _executable(home / ".local" / "bin" / "uv", "uv", root)
    elif role == "uv" and argv[:1] == ["venv"]:
        python = argv[argv.index("--python") + 1]
        venv = pathlib.Path(argv[-1])
        (venv / "bin").mkdir(parents=True, exist_ok=True)
        _executable(venv / "bin" / "python", f"venv-python{python}", root)
    elif role.startswith("venv-python") and argv[:2] == ["-m", "launch.train"]:
        (home / ".training").write_text(" ".join(argv))
    elif role == "pgrep":
        return 0 if (home / ".training").exists() else 1
    return 0


if __name__ == "__main__":
    role, root, *rest = sys.argv[1:]
    root = pathlib.Path(root)
    sys.exit(_gcloud(root, rest) if role == "gcloud" else _stub(root, role, rest))
