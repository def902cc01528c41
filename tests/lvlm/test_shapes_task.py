"""The generated grounded-VQA data, the training Task and the configs, end to end on the shared loop."""

import numpy as np
import pytest

from configs import lvlm as lvlm_configs
from jaxlab.data.shapes_vqa import COLOURS, QUESTION_TYPES, ShapesVQA
from jaxlab.models.lvlm import PRESETS


def test_examples_are_deterministic_and_answers_match_the_scene():
    data = ShapesVQA()
    a, b = data.batch(1, 10, 4), data.batch(1, 10, 4)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(data.batch(0, 10, 4)["input_ids"], a["input_ids"])  # splits differ
    v = data.vocab
    for i in range(200):
        rng = np.random.default_rng([0, i])
        scene = data.scene(rng)
        q, ans, qtype = data.question(scene, rng)
        image = (data.render(scene) + 1) / 2
        if QUESTION_TYPES[qtype] == "what":  # the named colour fills the centre of the asked cell
            words = q.split()
            r, c = int(words[4]), int(words[6])
            colour, _ = ans.split()
            centre = image[r * data.cell + data.cell // 2, c * data.cell + data.cell // 2]
            np.testing.assert_allclose(centre, COLOURS[colour], atol=1e-6)
        if QUESTION_TYPES[qtype] == "count":
            attr = q.split()[2]
            assert int(ans) == sum(attr in o for o in scene["objects"].values() if o[0] != "digit")
    ex = data.example(0, 3)
    assert ex["input_ids"].shape == (data.seq_length,) and ex["attention_mask"][-1] == 1
    assert (ex["input_ids"] == v.image_id).sum() == data.image_tokens == 16
    np.testing.assert_array_equal(ex["input_ids"][-2:], ex["answer"])


def test_patches_are_the_processor_layout():
    data = ShapesVQA()
    image = np.random.default_rng(0).normal(size=(32, 32, 3)).astype(np.float32)
    patches = data.patches(image)  # [64, 3 * 2 * 4 * 4]
    assert patches.shape == (64, 96)
    # patch 0..3 = the first 2x2 merge group (rows 0-1, cols 0-1 of 4-px patches); frame repeated
    first = patches[1].reshape(3, 2, 4, 4)
    np.testing.assert_array_equal(first[:, 0], image[0:4, 4:8].transpose(2, 0, 1))
    np.testing.assert_array_equal(first[:, 1], first[:, 0])
    third = patches[2].reshape(3, 2, 4, 4)[:, 0]
    np.testing.assert_array_equal(third, image[4:8, 0:4].transpose(2, 0, 1))


def test_config_variants_and_ids_fit_the_data():
    data = ShapesVQA()
    small = PRESETS["small"]
    assert (small["image_token_id"], small["vision_start_token_id"]) == (data.vocab.image_id, data.vocab.vision_start_id)
    for variant, scheme in [("shapes-1d", "1d"), ("shapes-circle", "circle"), ("shapes-age-strategy_4", "strategy_4")]:
        assert lvlm_configs.get_config(variant).model.position_scheme == scheme
    with pytest.raises(ValueError, match="unknown lvlm config variant"):
        lvlm_configs.get_config("shapes-2d")


def test_loss_is_finite_and_metrics_are_fractions():
    import flax
    import jax

    from jaxlab.lvlm.task import VQATask

    task = VQATask.from_config(lvlm_configs.get_config("tiny"))
    batch = task.data.batch(0, 0, 4)
    params = flax.linen.unbox(jax.jit(task.init_params)(jax.random.key(0), batch))
    loss, metrics = jax.jit(task.loss_fn)(params, batch, jax.random.key(1))
    assert np.isfinite(float(loss)) and 0.0 <= float(metrics["answer_accuracy"]) <= 1.0
    assert abs(float(loss) - np.log(task.module.config.vocab_size)) < 1.0  # untrained: about uniform


@pytest.mark.slow  # ~1-4 min on 2 shared cores (train-step compilation); the loss is covered above
def test_tiny_config_trains_on_the_shared_loop_and_evaluates(tmp_path):
    from jaxlab.lvlm.task import VQATask
    from jaxlab.train.loop import train
    from jaxlab.train.params_io import load_model

    config = lvlm_configs.get_config("tiny")
    config.model.position_scheme = "strategy_4"
    result = train(config, str(tmp_path / "run"))
    assert result.step == 4 and np.isfinite(result.last_metrics["loss"])
    assert 0.0 <= result.last_metrics["answer_accuracy"] <= 1.0
    module, params = load_model(tmp_path / "run")
    assert module.config.layer_schemes == ("circle", "mrope", "circle", "mrope")
    acc = VQATask(module).evaluate(params, "eval", num_examples=16, batch_size=16)
    assert acc["n"] == 16 and 0.0 <= acc["all"] <= 1.0


def test_task_rejects_a_model_that_does_not_fit():
    from jaxlab.lvlm.task import VQATask

    config = lvlm_configs.get_config("tiny")
    config.model.vocab_size = 256
    config.model.image_token_id = 200
    with pytest.raises(ValueError, match="does not fit the shapes VQA data"):
        VQATask.from_config(config)
