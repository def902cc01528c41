"""jaxlab: JAX/Flax reimplementations of generative-model papers.

Every model is tested for numerical equivalence with the authors' PyTorch code
(see ``tests/golden``). Subpackages:

- ``jaxlab.nn``: shared building blocks (embeddings, attention, MLPs, adaLN).
- ``jaxlab.models``: one module per paper family, plus a registry.
- ``jaxlab.diffusion``: Gaussian diffusion (schedules, respacing, losses, samplers).
- ``jaxlab.convert``: official PyTorch checkpoints -> Flax params.
"""

__version__ = "0.1.0"
