"""jaxlab as a user gets it: a wheel built from this checkout, installed into a fresh virtual
environment, used from a directory outside the checkout.

The environment sees this interpreter's site-packages (jax, flax, ipykernel, ... are not installed
again; a ``.pth`` line adds the directories) but not jaxlab: an editable install of the checkout
there is not activated (its ``.pth`` hook is not read), and no ``PYTHONPATH`` is passed on.
"""

import atexit
import dataclasses
import functools
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Environment:
    wheel: pathlib.Path
    python: pathlib.Path  # the environment's interpreter
    bin: pathlib.Path  # where its console scripts go
    workdir: pathlib.Path  # outside the checkout

    def env(self, **extra: str) -> dict[str, str]:
        """The process environment for commands in it: no PYTHONPATH, its bin/ first on PATH."""
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env["PATH"] = os.pathsep.join([str(self.bin), env.get("PATH", "")])
        return {**env, **extra}

    def run(self, *args: str, timeout: float = 300, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(a) for a in args], cwd=self.workdir, env=self.env(**extra),
                              capture_output=True, text=True, timeout=timeout)

    def has_jaxlab(self) -> bool:
        probe = self.run(self.python, "-c", "import importlib.util as u; print(u.find_spec('jaxlab') is not None)")
        return probe.stdout.strip() == "True"

    def install(self) -> None:
        _check(self.run(self.python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--force-reinstall",
                        self.wheel))

    def uninstall(self) -> None:
        _check(self.run(self.python, "-m", "pip", "uninstall", "-q", "-y", "jaxlab"))


def _check(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    if proc.returncode:
        raise AssertionError(f"{proc.args} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


# What the wheel is built from (copied first: a build inside the checkout would leave build/ there,
# whose stale files a later wheel would pick up).
SOURCES = ("setup.py", "setup.cfg", "pyproject.toml", "README.md", "jaxlab", "launch", "configs")


def build_wheel(out: pathlib.Path) -> pathlib.Path:
    """``pip wheel`` of a copy of the checkout (no dependencies, no network: setuptools from this environment)."""
    source = out / "source"
    source.mkdir(parents=True)
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, source / name)
    _check(subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                           "-w", str(out), str(source)], capture_output=True, text=True, timeout=300))
    (wheel,) = out.glob("jaxlab-*.whl")
    return wheel


def create(tmp: pathlib.Path) -> Environment:
    """A new environment without jaxlab, and the wheel to install into it."""
    wheel = build_wheel(tmp / "dist")
    prefix = tmp / "venv"
    _check(subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(prefix)], capture_output=True,
                          text=True, timeout=120))
    python = prefix / "bin" / "python"
    purelib = _check(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                    capture_output=True, text=True)).stdout.strip()
    # This interpreter's package directories (its site-packages and any a .pth line added), not the checkout.
    packages = [p for p in sys.path if p.endswith(("site-packages", "dist-packages")) and os.path.isdir(p)]
    (pathlib.Path(purelib) / "parent_environment.pth").write_text("\n".join(packages) + "\n")
    workdir = tmp / "elsewhere"
    workdir.mkdir()
    environment = Environment(wheel=wheel, python=python, bin=prefix / "bin", workdir=workdir)
    assert not environment.has_jaxlab(), "the test environment must start without jaxlab"
    return environment


@functools.lru_cache(maxsize=None)
def shared_environment() -> Environment:
    """One environment (and wheel) per test session, removed when the session ends."""
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="jaxlab-installed-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    return create(tmp)
