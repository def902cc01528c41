"""Grounded-VQA training of ``jaxlab.models.lvlm.LVLM`` as a ``jaxlab.train.task.Task``.

Batches (``jaxlab.data.shapes_vqa``): ``input_ids [B, L]`` (left padded, the two answer tokens
last), ``attention_mask [B, L]``, ``pixel_values [B, P, F]`` (same-size images), ``answer [B, 2]``,
``qtype [B]``. The loss is the next-token cross-entropy of the two answer tokens (teacher forced);
``answer_accuracy`` counts an example right when both argmax tokens are right, which is exactly
greedy decoding of the two-token answer. Position ids come from ``rope_index`` inside the jitted
step for every scheme the layers use; the vision window layout is the same for every image and
is computed once on the host.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.config_utils import to_dict
from jaxlab.data import shapes_vqa
from jaxlab.lvlm.positions import rope_index
from jaxlab.models.lvlm import LVLM, LVLMConfig
from jaxlab.models.lvlm_vision import vision_layout


@dataclasses.dataclass(frozen=True)
class VQATask:
    module: LVLM
    data: shapes_vqa.ShapesVQA = shapes_vqa.ShapesVQA()
    family: str = "lvlm"

    @classmethod
    def from_config(cls, config) -> "VQATask":
        """``config.model`` (``LVLMConfig`` fields); used as ``config.task = "jaxlab.lvlm.task:VQATask.from_config"``."""
        shapes_vqa.register()
        model_config = LVLMConfig.from_dict(to_dict(config.model))
        task = cls(LVLM(model_config))
        task.check_model()
        return task

    def check_model(self) -> None:
        cfg, data, v = self.module.config, self.data, self.data.vocab
        want = dict(vocab_size=v.size, image_token_id=v.image_id, vision_start_token_id=v.vision_start_id,
                    vision_end_token_id=v.vision_end_id, video_token_id=v.video_id,
                    vision_patch_size=data.patch_size, vision_temporal_patch_size=data.temporal_patch_size,
                    spatial_merge_size=data.spatial_merge_size)
        bad = {k: (getattr(cfg, k), x) for k, x in want.items() if getattr(cfg, k) != x}
        if bad or not cfg.vision_depth:
            raise ValueError(f"the model does not fit the shapes VQA data: (model, data) values {bad}; "
                             "vision_depth must be > 0 (use configs/lvlm.py:shapes-<scheme>)")

    def model_spec(self):
        return self.family, self.module.config

    def logits(self, params, batch) -> jax.Array:
        """``[B, L, vocab]`` float32 for a batch of the shapes VQA layout."""
        cfg = self.module.config
        ids = jnp.asarray(batch["input_ids"], jnp.int32)
        mask = jnp.asarray(batch["attention_mask"], jnp.int32)
        grid = np.tile(self.data.image_grid_thw, (ids.shape[0], 1))
        positions = jnp.stack([rope_index(ids, grid, mask, s, cfg.rope_options())[0] for s in cfg.position_sets])
        layout = vision_layout(self.data.image_grid_thw, cfg.vision_patch_size, cfg.vision_window_size,
                               cfg.spatial_merge_size)
        return self.module.apply({"params": params}, ids, positions, mask,
                                 pixel_values=jnp.asarray(batch["pixel_values"], jnp.float32), vision_layout=layout)

    def init_params(self, rng, batch):
        cfg = self.module.config
        ids = jnp.asarray(batch["input_ids"], jnp.int32)
        grid = np.tile(self.data.image_grid_thw, (ids.shape[0], 1))
        mask = jnp.asarray(batch["attention_mask"], jnp.int32)
        positions = jnp.stack([rope_index(ids, grid, mask, s, cfg.rope_options())[0] for s in cfg.position_sets])
        layout = vision_layout(self.data.image_grid_thw, cfg.vision_patch_size, cfg.vision_window_size,
                               cfg.spatial_merge_size)
        return self.module.init(rng, ids, positions, mask, pixel_values=jnp.asarray(batch["pixel_values"], jnp.float32),
                                vision_layout=layout)["params"]

    def loss_fn(self, params, batch, rng):
        del rng
        logits = self.logits(params, batch)[:, -3:-1]  # the slots that predict the two answer tokens
        answer = jnp.asarray(batch["answer"], jnp.int32)
        logp = jax.nn.log_softmax(logits, axis=-1)
        ce = -jnp.take_along_axis(logp, answer[..., None], axis=-1)[..., 0]
        correct = jnp.argmax(logits, -1) == answer
        loss = ce.mean()
        return loss, {"loss": loss, "token_accuracy": correct.mean(), "answer_accuracy": correct.all(-1).mean()}

    def evaluate(self, params, split: str = "eval", num_examples: int = 1000, batch_size: int = 250) -> dict:
        """Held-out answer accuracy overall and per question type (the first ``num_examples`` of ``split``)."""
        seed = shapes_vqa.SPLIT_SEEDS[split]
        fn = jax.jit(lambda p, b: jnp.argmax(self.logits(p, b)[:, -3:-1], -1))
        right, qtypes = [], []
        for start in range(0, num_examples, batch_size):
            batch = self.data.batch(seed, start, min(batch_size, num_examples - start))
            pred = np.asarray(fn(params, {k: v for k, v in batch.items() if k not in ("answer", "qtype")}))
            right.append((pred == batch["answer"]).all(-1))
            qtypes.append(batch["qtype"])
        right, qtypes = np.concatenate(right), np.concatenate(qtypes)
        out = {"all": float(right.mean()), "n": int(right.size)}
        for i, name in enumerate(shapes_vqa.QUESTION_TYPES):
            out[name] = float(right[qtypes == i].mean()) if (qtypes == i).any() else float("nan")
        return out
