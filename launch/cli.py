"""Console scripts of an installed jaxlab: ``jaxlab-<name>`` for each ``launch/<name>.py`` (``jaxlab-train``, ...).

Each runs the matching ``launch/<name>.py`` exactly as ``python -m launch.<name>`` does from a checkout
(same flags). ``--config=configs/<family>.py:<variant>`` names a file relative to the current
directory; when no such file exists there, the config shipped in the wheel (``jaxlab/configs/``) is
used, so the README's commands work from any directory.
"""

import pathlib
import runpy
import sys

SHIPPED_CONFIGS = pathlib.Path(__file__).resolve().parent.parent / "configs"


def resolve_config_arg(argv: list[str], shipped: pathlib.Path = SHIPPED_CONFIGS) -> list[str]:
    """``argv`` with ``--config=configs/<file>.py[:variant]`` pointing at the shipped file when the
    relative path does not exist; every other argument (and a path that exists) is left alone."""
    out = []
    for arg in argv:
        if arg.startswith("--config="):
            path, colon, variant = arg[len("--config=") :].partition(":")
            relative = pathlib.PurePosixPath(path)
            if relative.parts[:1] == ("configs",) and not pathlib.Path(path).exists():
                candidate = shipped.joinpath(*relative.parts[1:])
                if candidate.is_file():
                    arg = f"--config={candidate}{colon}{variant}"
        out.append(arg)
    return out


def _run(module: str, resolve_config: bool) -> None:
    if resolve_config:
        sys.argv[1:] = resolve_config_arg(sys.argv[1:])
    runpy.run_module(f"{__package__}.{module}", run_name="__main__", alter_sys=True)


def train() -> None:
    _run("train", resolve_config=True)


def sample() -> None:
    _run("sample", resolve_config=True)


def convert() -> None:
    _run("convert", resolve_config=False)


def tpu() -> None:
    # The training arguments after ``--`` run on the TPU VM, inside the copied checkout: not resolved here.
    _run("tpu", resolve_config=False)


def encode() -> None:
    _run("encode", resolve_config=True)


def restore() -> None:
    _run("restore", resolve_config=False)


def lm_tokenizer() -> None:
    _run("lm_tokenizer", resolve_config=False)


def lvlm_eval() -> None:
    _run("lvlm_eval", resolve_config=False)


def generate() -> None:
    _run("generate", resolve_config=False)


def evaluate() -> None:
    _run("evaluate", resolve_config=False)


def tinylm_ladder() -> None:
    _run("tinylm_ladder", resolve_config=False)


def tinylm_sweep() -> None:
    _run("tinylm_sweep", resolve_config=False)


def quantize() -> None:
    _run("quantize", resolve_config=True)
