"""Vision-language models with Circle-RoPE: position ids (``positions``), PTD (``ptd``), generation, the shapes VQA task."""
