"""Convert an official PyTorch checkpoint into a jaxlab model checkpoint.

  python -m launch.convert --family=dit --checkpoint=DiT-XL-2-256x256.pt \
      --preset=DiT-XL/2 --output=/tmp/dit_xl2

``--torch_kwargs`` (JSON) gives the official constructor's keyword arguments; ``--preset``
names a jaxlab preset instead (e.g. ``DiT-XL/2``; for the 512px DiT add
``--torch_kwargs='{"input_size": 64}'``). ``.pt`` files are read with
``torch.load(weights_only=True)`` (needs ``pip install 'jaxlab[torch]'``); ``.safetensors``
needs no torch.

Sharded Hugging Face checkpoints (e.g. LLaDA-8B) are read from their directory or
``model.safetensors.index.json``; ``--torch_config`` reads the official kwargs from a
``config.json``:

  python -m launch.convert --family=llada --checkpoint=LLaDA-8B-Instruct/ \
      --torch_config=LLaDA-8B-Instruct/config.json --output=/tmp/llada_8b

The SD VAE (``--family=vae``) reads the diffusers ``config.json`` next to the weights when there
is one, else uses the sd-vae-ft-ema config:

  python -m launch.convert --family=vae --checkpoint=sd-vae-ft-ema/diffusion_pytorch_model.safetensors --output=/tmp/sd_vae

IPT (huawei-noah/Pretrained-IPT) checkpoints take the ``option.py`` arguments; ``scale`` is the
checkpoint's task list (``IPT_sr2.pt``: ``[2]``, ``IPT_denoise30.pt``: ``[1]``):

  python -m launch.convert --family=ipt --checkpoint=IPT_sr2.pt --preset=IPT \
      --torch_kwargs='{"scale": [2]}' --output=/tmp/ipt_sr2
"""

import json
import pathlib

from absl import app, flags

from jaxlab import cli
from jaxlab.convert.checked import convert_checked
from jaxlab.convert.io import load_sharded_safetensors, load_state_dict
from jaxlab.convert.vae import config_next_to
from jaxlab.models.registry import get_family
from jaxlab.train.params_io import save_model

_FAMILY = flags.DEFINE_string("family", "dit", "model family (dit, ...)")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "official .pt/.pth/.safetensors file", required=True)
_OUTPUT = flags.DEFINE_string("output", None, "output directory (must not exist)", required=True)
_PRESET = flags.DEFINE_string("preset", None, "jaxlab preset name whose fields are the official kwargs")
_TORCH_KWARGS = flags.DEFINE_string("torch_kwargs", "{}", "JSON object of official constructor kwargs")
_TORCH_CONFIG = flags.DEFINE_string("torch_config", None, "JSON file of official kwargs (e.g. a HF config.json)")
_KEY = flags.DEFINE_string("key", None, "entry of a nested training checkpoint (default: ema, then model)")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "replace an existing output directory")


def main(argv):
    del argv
    family = get_family(_FAMILY.value)
    if pathlib.Path(_OUTPUT.value).exists() and not _OVERWRITE.value:
        raise app.UsageError(f"--output {_OUTPUT.value} already exists; pick a new directory or pass --overwrite")
    try:
        kwargs = json.loads(_TORCH_KWARGS.value)
    except json.JSONDecodeError as e:
        raise app.UsageError(f"--torch_kwargs is not valid JSON: {e}") from None
    if _TORCH_CONFIG.value is not None:
        kwargs = {**json.loads(pathlib.Path(_TORCH_CONFIG.value).read_text()), **kwargs}
    if _PRESET.value is not None and _PRESET.value not in family.presets:
        raise app.UsageError(f"unknown preset {_PRESET.value!r}; known: {sorted(family.presets)}")
    checkpoint = pathlib.Path(_CHECKPOINT.value)
    if family.name == "vae" and _TORCH_CONFIG.value is None:
        kwargs = {**config_next_to(checkpoint), **kwargs}
    if checkpoint.is_dir() or checkpoint.name.endswith(".index.json"):
        state_dict = load_sharded_safetensors(checkpoint)
    else:
        state_dict = load_state_dict(checkpoint, key=_KEY.value)
    module, params = convert_checked(family.name, state_dict, user_kwargs=kwargs, preset=_PRESET.value,
                                     presets=family.presets, source=str(checkpoint))
    path = save_model(_OUTPUT.value, family.name, module.config, params, overwrite=_OVERWRITE.value)
    print(f"wrote {family.name} checkpoint to {path}")


if __name__ == "__main__":
    cli.run(main)
