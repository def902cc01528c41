"""Post-training quantisation of diffusion transformers (HTG, and min-max / SmoothQuant /
PTQ4DiT-lite baselines): ``jaxlab.quant.ptq.quantize_dit`` calibrates and folds; see
docs/htg.md and the module docstrings for every choice."""
