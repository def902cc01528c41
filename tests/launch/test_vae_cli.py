"""End to end on CPU: the VAE through launch.convert, launch.sample --vae and launch.encode, as a user runs them.

The tiny DiT and tiny VAE are the golden cases' official-format state_dicts (randomised official
module trees), converted with the CLI.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import GoldenCase

DIT = GoldenCase("dit", "dit_forward_small")  # input 8x8x4 latents, 10 classes
VAE = GoldenCase("vae", "vae_tiny")  # 4 latent channels, downsampling factor 2
DIT_KWARGS = '{"input_size": 8, "hidden_size": 64, "depth": 2, "num_heads": 4, "num_classes": 10}'


def _run(*args, check=True, timeout=300):
    proc = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode:
        raise AssertionError(f"{args} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """(converted DiT dir, converted VAE dir)."""
    from safetensors.numpy import save_file

    from jaxlab.convert import from_torch
    from jaxlab.train.params_io import save_model

    root = tmp_path_factory.mktemp("ckpt")
    dit, dit_params = from_torch("dit", json.loads(DIT_KWARGS), DIT.state_dict)  # the DiT CLI: test_convert_and_sample
    save_model(root / "dit", "dit", dit.config, dit_params)
    weights = root / "vae_download" / "diffusion_pytorch_model.safetensors"
    weights.parent.mkdir()
    save_file(VAE.state_dict, str(weights))
    (weights.parent / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL", **VAE.meta["constructor"]}))
    proc = _run("launch.convert", "--family=vae", f"--checkpoint={weights}", f"--output={root / 'vae'}")
    assert "read the VAE config from" in proc.stdout
    return root / "dit", root / "vae"


def test_sample_with_vae_writes_decoded_pngs_and_uint8_npz(checkpoints, tmp_path):
    dit, vae = checkpoints
    out = tmp_path / "samples"
    _run("launch.sample", "--config=configs/dit.py:tiny", f"--checkpoint={dit}", f"--vae={vae}", f"--outdir={out}",
         "--config.sample.num_steps=3", "--config.sample.classes=(3, 7)", "--config.sample.num_samples=3")
    data = np.load(out / "samples.npz")
    images, latents = data["samples"], data["latents"]
    assert images.dtype == np.uint8 and images.shape == (3, 16, 16, 3)  # 8x8 latents x factor 2
    assert latents.shape == (3, 8, 8, 4) and images.std() > 1  # not a constant image
    np.testing.assert_array_equal(data["labels"], [3, 7, 3])
    pngs = sorted((out / "images").glob("*.png"))
    assert len(pngs) == 3
    np.testing.assert_array_equal(np.asarray(Image.open(pngs[1])), images[1])
    assert Image.open(out / "grid.png").mode == "RGB"

    # The decode is sample_ddp.py's: vae.decode(z / 0.18215), clamp(127.5 x + 128) to uint8.
    from jaxlab.convert import from_torch

    module, params = from_torch("vae", VAE.meta["constructor"], VAE.state_dict)
    ref = torch.from_numpy(np.array(module.apply({"params": params}, latents / 0.18215, method="decode")))
    ref = torch.clamp(127.5 * ref + 128.0, 0, 255).to(torch.uint8).numpy()
    assert np.abs(ref.astype(int) - images).max() <= 1


def test_bad_vae_inputs_fail_before_work(checkpoints, tmp_path):
    dit, vae = checkpoints
    proc = _run("launch.sample", "--config=configs/dit.py:digits", f"--vae={vae}", f"--outdir={tmp_path / 'a'}", check=False)
    assert proc.returncode and "--vae was given for a pixel-space model" in proc.stderr
    assert not (tmp_path / "a").exists()

    # The same checks launch.sample runs, in process (a subprocess costs seconds each).
    from jaxlab.diffusion.latents import check_vae_fits_backbone
    from jaxlab.models import build_model
    from launch.latents import load_vae

    with pytest.raises(ValueError, match="holds a 'dit' model, not a VAE"):
        load_vae(str(dit))
    with pytest.raises(FileNotFoundError, match="not a converted VAE.*launch.convert --family=vae"):
        load_vae(str(tmp_path))
    module, _ = load_vae(str(vae))
    pixel_dit = build_model("dit", None, input_size=8, patch_size=2, in_channels=3, hidden_size=32, depth=1, num_heads=2)
    with pytest.raises(ValueError, match="the model samples 3-channel latents but the VAE decodes 4-channel"):
        check_vae_fits_backbone(module.config, pixel_dit.config, latent=True)
