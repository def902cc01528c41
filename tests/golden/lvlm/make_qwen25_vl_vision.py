"""Writes qwen25_vl_vision.{npz,json}: a tiny Hugging Face Qwen2.5-VL vision tower on two images.

Not a Circle-RoPE reference case (the reference repository does not touch the vision tower): the
vision tower is upstream transformers' ``Qwen2_5_VisionTransformerPretrainedModel``; this script
ran it (transformers 5.24, torch CPU, float32) with random weights so the JAX tower can be
compared with it. Rerun: ``python tests/golden/lvlm/make_qwen25_vl_vision.py`` (needs torch and
transformers).
"""

import json
import pathlib

import numpy as np
import torch
import transformers
from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLVisionConfig
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel

VISION = dict(depth=3, hidden_size=32, intermediate_size=48, num_heads=2, in_channels=3, out_hidden_size=24,
              patch_size=4, spatial_merge_size=2, temporal_patch_size=2, window_size=16,
              fullatt_block_indexes=[1], hidden_act="silu")


def main():
    torch.manual_seed(1234)
    config = Qwen2_5_VLVisionConfig(**VISION)
    config._attn_implementation = "eager"
    model = Qwen2_5_VisionTransformerPretrainedModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * (0.3 if "norm" not in name and "ln_q" not in name else 0.1)
                    + (1.0 if ("norm" in name or "ln_q" in name) else 0.0))
    grid = torch.tensor([[1, 6, 10], [1, 4, 4]])  # ViT patches: 3x5 and 2x2 merged tokens; windows of 2x2
    n = int((grid[:, 0] * grid[:, 1] * grid[:, 2]).sum())
    features = 3 * 2 * 4 * 4
    pixels = torch.randn(n, features)
    with torch.no_grad():
        out = model(pixels, grid_thw=grid)
    arrays = {f"params/visual.{k}": v.detach().numpy() for k, v in model.state_dict().items()}
    arrays.update({"inputs/pixel_values": pixels.numpy(), "inputs/image_grid_thw": grid.numpy(),
                   "outputs/image_embeds": out.pooler_output.numpy(), "outputs/last_hidden_state": out.last_hidden_state.numpy()})
    here = pathlib.Path(__file__).parent
    np.savez(here / "qwen25_vl_vision.npz", **arrays)
    meta = {
        "source": {"repo": "huggingface/transformers", "version": transformers.__version__,
                   "symbol": "Qwen2_5_VisionTransformerPretrainedModel.forward (eager attention)"},
        "constructor": {"vision_config": VISION},
        "notes": "Weights N(0, 0.3) (norm scales 1 + N(0, 0.1)), seed 1234; outputs/image_embeds = merged tokens "
                 "(pooler_output, original order), last_hidden_state = before the merger, in windowed order.",
        "tolerance": {"rtol": 1e-4, "atol": 1e-4},
        "generated_by": "tests/golden/lvlm/make_qwen25_vl_vision.py",
    }
    (here / "qwen25_vl_vision.json").write_text(json.dumps(meta, indent=1))


if __name__ == "__main__":
    main()
