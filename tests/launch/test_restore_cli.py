"""launch.restore: a converted IPT restores a PNG end to end; bad input is refused before any work."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from jaxlab.data.image_files import check_output_path, read_rgb, write_png
from jaxlab.models.ipt import IPTConfig
from jaxlab.models.ipt_ops import resolve_task
from tests.conftest import GoldenCase


def _run(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=300)
    if check and proc.returncode:
        raise AssertionError(f"{args} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_restore_png_with_a_converted_checkpoint(tmp_path):
    case = GoldenCase("ipt", "ipt_forward_small")
    pt, ckpt = tmp_path / "ipt_small.pt", tmp_path / "ckpt"  # an official-format checkpoint through launch.convert
    torch.save({k: torch.from_numpy(np.asarray(v)) for k, v in case.state_dict.items()}, pt)
    _run("launch.convert", "--family=ipt", f"--checkpoint={pt}", f"--output={ckpt}",
         f"--torch_kwargs={json.dumps(case.meta['constructor']['args'])}")
    pixels = np.random.default_rng(0).integers(0, 256, (30, 41, 3), dtype=np.uint8)
    inp, out = tmp_path / "in.png", tmp_path / "out.png"
    Image.fromarray(pixels).save(inp)
    Image.fromarray(pixels).resize((82, 60), Image.BICUBIC).save(tmp_path / "ref.png")
    before = inp.read_bytes()
    proc = _run("launch.restore", f"--checkpoint={ckpt}", "--task=sr2", f"--input={inp}", f"--output={out}",
                f"--reference={tmp_path / 'ref.png'}", "--batch=4")
    assert Image.open(out).size == (82, 60) and inp.read_bytes() == before
    assert re.search(r"\b(\d+)/\1 tiles", proc.stdout) and "PSNR RGB" in proc.stdout and "SSIM RGB" in proc.stdout and ", Y " in proc.stdout
    proc = _run("launch.restore", f"--checkpoint={ckpt}", "--task=sr2", f"--input={inp}", f"--output={inp}", "--overwrite", check=False)
    assert proc.returncode != 0 and "never overwritten" in proc.stderr and inp.read_bytes() == before
    proc = _run("launch.restore", f"--checkpoint={ckpt}", "--task=remove the rain and the noise", f"--input={inp}",
                f"--output={tmp_path / 'new.png'}", check=False)  # an instruction asking for two tasks
    assert proc.returncode != 0 and "which task first?" in proc.stderr and not (tmp_path / "new.png").exists()


def test_image_files_refuse_bad_input(tmp_path):
    pixels = np.zeros((8, 8, 3), np.uint8)
    Image.fromarray(pixels[..., 0]).save(tmp_path / "grey.png")
    Image.fromarray(np.zeros((8, 8, 4), np.uint8)).save(tmp_path / "rgba.png")
    for name, mode in (("grey.png", "'L'"), ("rgba.png", "'RGBA'")):
        with pytest.raises(ValueError, match=f"{mode} image; RGB is expected"):
            read_rgb(tmp_path / name)
    with pytest.raises(FileNotFoundError):
        read_rgb(tmp_path / "missing.png")
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(tmp_path / "photo.jpg", quality=95)
    assert np.abs(read_rgb(tmp_path / "photo.jpg") - 200).max() <= 2  # JPEG in
    with pytest.raises(ValueError, match="never overwritten"):
        check_output_path(tmp_path / "grey.png", [tmp_path / "grey.png"], overwrite=True)
    with pytest.raises(ValueError, match="already exists"):
        check_output_path(tmp_path / "rgba.png", [tmp_path / "grey.png"], overwrite=False)
    with pytest.raises(ValueError, match="must be a .png"):
        check_output_path(tmp_path / "x.jpg", [], overwrite=False)
    with pytest.raises(ValueError, match="non-finite"):
        write_png(tmp_path / "nan.png", np.full((4, 4, 3), np.nan))
    assert not (tmp_path / "nan.png").exists()


def test_task_names_resolve_against_the_scale_list():
    cfg = IPTConfig.from_dict(dict(scale=(2, 3, 4, 1), num_queries=4))
    assert [resolve_task(cfg, t) for t in ("sr3", "denoise", "2", 1)] == [1, 3, 2, 1]
    with pytest.raises(ValueError, match="task=7 is not a task index"):
        resolve_task(cfg, "7")
    with pytest.raises(ValueError, match="pass the task index"):
        resolve_task(IPTConfig.from_dict(dict(scale=(1, 1), num_queries=2)), "derain")
    with pytest.raises(ValueError, match="0 tasks have scale 8"):
        resolve_task(cfg, "sr8")
    with pytest.raises(ValueError, match="unknown task 'colorize'"):
        resolve_task(cfg, "colorize")
