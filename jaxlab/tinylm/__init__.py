"""Tiny-LM recipes of PanGu-pi Pro (Tang et al., ICML 2024): compact tokenizer, parameter inheritance,
multiple-round training, batch-size / learning-rate scaling. See docs/tinylm.md."""
