"""The wheel ships launch/ and configs/ inside jaxlab's namespace, with console scripts that work
from any directory (launch/cli.py, setup.py)."""

import ast
import zipfile

import pytest

from launch.cli import resolve_config_arg
from tests.installed import ROOT


@pytest.fixture(scope="module")
def installed(installed_env):
    if not installed_env.has_jaxlab():
        installed_env.install()
    return installed_env


def test_wheel_adds_only_the_jaxlab_name(installed_env):
    names = zipfile.ZipFile(installed_env.wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"jaxlab", installed_env.wheel.name.split("-py3")[0] + ".dist-info"}
    assert {"jaxlab/launch/train.py", "jaxlab/launch/tpu/commands.py", "jaxlab/configs/dit.py",
            "jaxlab/configs/common.py", "jaxlab/data/digits.npz", "jaxlab/assets/dlm_sudoku.npz"} <= set(names)


def test_no_generic_top_level_names(installed):
    probe = installed.run(installed.python, "-c", "import importlib.util as u, jaxlab.launch.tpu.commands, "
                          "jaxlab.configs.dit; print([u.find_spec(n) for n in ('configs', 'launch')])")
    assert probe.returncode == 0, probe.stderr[-3000:]
    # A fresh interpreter that has not imported jaxlab.launch / jaxlab.configs finds no ``configs`` or ``launch``.
    probe = installed.run(installed.python, "-c", "import importlib.util as u, jaxlab; "
                          "print([u.find_spec(n) for n in ('configs', 'launch')])")
    assert probe.stdout.strip() == "[None, None]", probe.stdout + probe.stderr


def test_launch_modules_import_each_other_relatively():
    """Installed, ``launch`` is ``jaxlab.launch``: ``from launch.x import y`` inside it would fail there."""
    offenders = []
    for path in sorted((ROOT / "launch").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            offenders += [f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names if n.split(".")[0] == "launch"]
    assert not offenders, f"use relative imports (from .x import y) in launch/: {offenders}"


def test_console_scripts_use_the_shipped_configs(installed):
    # The config file is found in the wheel and loaded (an unknown key is reported from its contents).
    proc = installed.run("jaxlab-train", "--config=configs/dit.py:digits", "--workdir=run", "--config.training.bogus=1")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "unknown config key 'training.bogus'" in proc.stderr
    # A real (tiny) job: sampling a randomly initialised DiT from the shipped tiny config.
    proc = installed.run("jaxlab-sample", "--config=configs/dit.py:tiny", "--outdir=samples",
                         "--config.sample.num_steps=2", "--config.sample.num_samples=2", "--config.sample.batch_size=2",
                         "--config.sample.classes=(1, 2)")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (installed.workdir / "samples" / "samples.npz").exists()
    proc = installed.run("jaxlab-tpu", "delete", "--name=t", "--zone=z", "--dry-run")
    assert proc.returncode == 0 and proc.stdout.startswith("+ gcloud compute tpus tpu-vm delete t"), proc.stderr
    proc = installed.run("jaxlab-convert", "--help")
    assert "--family" in proc.stdout, proc.stderr[-2000:]


def test_config_paths_resolve_to_the_shipped_files_only_when_missing(tmp_path, monkeypatch):
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    (shipped / "dit.py").write_text("")
    monkeypatch.chdir(tmp_path)
    assert resolve_config_arg(["--config=configs/dit.py:XL-2", "--x=1"], shipped) == [
        f"--config={shipped / 'dit.py'}:XL-2", "--x=1"]
    assert resolve_config_arg(["--config=configs/vae.py"], shipped) == ["--config=configs/vae.py"]  # not shipped
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "dit.py").write_text("")  # the user's own file wins
    assert resolve_config_arg(["--config=configs/dit.py:S-2"], shipped) == ["--config=configs/dit.py:S-2"]


def test_every_entry_point_has_a_console_script():
    """``python -m launch.<name>`` in a checkout is ``jaxlab-<name>`` (``_`` -> ``-``) when installed."""
    import configparser

    declared = configparser.ConfigParser()
    declared.read(ROOT / "setup.cfg")
    scripts = dict(line.replace(" ", "").split("=", 1)
                   for line in declared["options.entry_points"]["console_scripts"].strip().splitlines())
    runnable = [p.stem for p in (ROOT / "launch").glob("*.py") if 'if __name__ == "__main__"' in p.read_text()]
    runnable += [p.parent.name for p in (ROOT / "launch").glob("*/__main__.py")]
    expected = {f"jaxlab-{name.replace('_', '-')}": f"jaxlab.launch.cli:{name}" for name in runnable}
    missing = {k: v for k, v in expected.items() if scripts.get(k) != v}
    assert not missing, f"add to setup.cfg's console_scripts (and a function to launch/cli.py): {missing}"
