"""DiC: golden equivalence with YuchuanTian/DiC, presets, switches, conversion and input errors."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import dic as dic_configs
from jaxlab.convert import from_torch
from jaxlab.convert.dic import config_from_torch
from jaxlab.diffusion.pipeline import make_class_sampler, sampling_diffusion
from jaxlab.models import build_model, count_params
from jaxlab.models.dic import PRESETS, DiC, DiCConfig
from jaxlab.nn import timestep_features
from tests.conftest import GoldenCase, nchw_to_nhwc, nhwc_to_nchw

CASES = ("dic_forward_small", "dic_forward_variant", "dic_forward_4level")

@pytest.fixture(scope="module", params=CASES)
def golden(request):
    case = GoldenCase("dic", request.param)
    module, params = from_torch("dic", case.meta["constructor"], case.state_dict)
    return case, module, params


def test_forward_and_intermediates_match_reference(golden):
    case, module, params = golden
    x, t, y = nchw_to_nhwc(case["inputs/x"]), case["inputs/t"], case["inputs/y"]
    out, state = jax.jit(lambda p, x, t, y: module.apply({"params": p}, x, t, y, mutable=["intermediates"]))(params, x, t, y)
    case.assert_close("forward", nhwc_to_nchw(out))

    # Intermediates localise a mismatch (stem, per-level embeddings, stage outputs).
    tol = case.tolerance("forward")
    sown = {name: np.asarray(value[0]) for name, value in state["intermediates"].items()}
    expected = {k.removeprefix("intermediates/") for k in case.arrays if k.startswith("intermediates/")}
    assert set(sown) == expected - {"t_freq_256"}
    for name, value in sown.items():
        np.testing.assert_allclose(nhwc_to_nchw(value) if value.ndim == 4 else value, case[f"intermediates/{name}"],
                                   **tol, err_msg=name)
    np.testing.assert_allclose(timestep_features(jnp.asarray(t)), case["intermediates/t_freq_256"], **tol)


@pytest.mark.default_xla
def test_forward_with_cfg_matches_reference(golden):
    case, module, params = golden
    args = (nchw_to_nhwc(case["inputs/cfg_x"]), case["inputs/cfg_t"], case["inputs/cfg_y"], case["inputs/cfg_scale"])
    out = jax.jit(lambda p, *a: module.apply({"params": p}, *a, method=DiC.forward_with_cfg))(params, *args)
    case.assert_close("forward_with_cfg", nhwc_to_nchw(out))


def test_scanned_stages_match_the_reference():
    """``scan_blocks`` stacks the encoder and middle stages (skips taken from the kept block
    outputs) and converts the same checkpoint; outputs equal the reference and the unscanned model."""
    case = GoldenCase("dic", "dic_forward_small")
    module, params = from_torch("dic", case.meta["constructor"], case.state_dict, scan_blocks=True, remat="full")
    assert params["enc_blocks_0"]["block"]["conv0"]["kernel"].shape[0] == 4 and "enc_blocks_0_0" not in params
    assert params["lat_blocks_0"]["block"]["conv1"]["kernel"].shape[0] == 2 and "dec_blocks_0_0" in params
    x, t, y = nchw_to_nhwc(case["inputs/x"]), case["inputs/t"], case["inputs/y"]
    out = jax.jit(module.apply)({"params": params}, x, t, y)
    case.assert_close("forward", nhwc_to_nchw(out))
    # Train mode with block dropout traces through the scan (train is a static flag of the remat).
    dropout = DiC(module.config.replace(dropout=0.5))
    jaxpr = jax.make_jaxpr(lambda p: dropout.apply({"params": p}, x, t, y, True, rngs={"dropout": jax.random.key(0)}))(params)
    assert jaxpr.out_avals[0].shape == out.shape


# --------------------------------------------------------------------------- presets and configs

# Parameter counts of the official named configs (input 32, 1000 classes), from the reference SPEC.
OFFICIAL_PARAMS_M = {"DiC-S": 32.8, "DiC-B": 129.5, "DiC-XL": 702.3, "DiC-H": 1034.5}


def official_param_count(cfg: DiCConfig) -> int:
    """Closed form of the official module tree (dic_models.py), independent of jaxlab's layout."""
    mults, levels, h = cfg.stage_mults, cfg.levels, cfg.hidden_size
    widths = [h * m for m in mults]

    def block(c_in, c_out):
        g = cfg.affinef * (c_in if cfg.blockconfig else c_out)
        n = 2 * c_in + (9 * c_in * c_out + c_out) + (c_out * g + g) + 2 * c_out + (9 * c_out * c_out + c_out)
        return n + ((c_in * c_out + c_out) if c_in != c_out else 0)

    n = 9 * cfg.in_channels * widths[0] + widths[0]  # stem
    for w in widths[:levels]:  # per-level timestep MLP + label table with the null row
        n += (256 * w + w) + (w * w + w) + (cfg.num_classes + 1) * w
    for k in range(levels):  # encoder stages and the middle
        n += cfg.depth[k] * block(widths[k], widths[k])
    for k in range(levels - 1):  # downsamplers
        n += 9 * widths[k] * widths[k + 1] // 4
    for j in range(levels - 1):  # decoder: upsampler, then blocks (every skip_stride-th takes a skip)
        k, skip = levels + j, widths[levels - 2 - j]
        n += 9 * widths[k - 1] * 4 * widths[k]
        n += sum(block(widths[k] + (skip if b % cfg.skip_stride == 0 else 0), widths[k]) for b in range(cfg.depth[k]))
    w = widths[-1]
    n += (9 * w * w + w) + (w * 2 * w + 2 * w) + (9 * w * cfg.out_channels + cfg.out_channels)  # output + final
    return n


def _param_shapes(module, size=None, batch=1):
    cfg = module.config
    size = size or cfg.input_size
    x = jnp.zeros((batch, size, size, cfg.in_channels))
    t = jnp.zeros((batch,), jnp.int32)
    return nn.unbox(jax.eval_shape(module.init, jax.random.key(0), x, t, t)["params"])


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_match_official_parameter_counts(preset):
    module = build_model("dic", preset)
    n = count_params(_param_shapes(module))  # shapes only: DiC-H is never materialised
    assert n == official_param_count(module.config)
    assert round(n / 1e6, 1) == OFFICIAL_PARAMS_M[preset]


def test_golden_cases_match_the_closed_form_count():
    for name in CASES:
        case = GoldenCase("dic", name)
        cfg = config_from_torch(case.meta["constructor"])
        assert official_param_count(cfg) == sum(v.size for v in case.state_dict.values()), name


@pytest.mark.parametrize("variant", ["S", "B", "XL", "H", "tiny"])
def test_configs_build_valid_models(variant):
    config = dic_configs.get_config(variant)
    assert config.model_family == "dic"
    cfg = DiCConfig.from_dict(config.model.to_dict())
    if variant != "tiny":
        assert cfg == DiCConfig.from_dict(PRESETS[f"DiC-{variant}"])
        # The paper's sampling recipe (sample_ddp.py): 250 DDPM steps, cfg 1.5.
        assert (config.sample.sampler, config.sample.num_steps, config.sample.cfg_scale) == ("ddpm", 250, 1.5)


def test_presets_are_official_kwargs():
    """launch/convert passes a preset's fields as the official kwargs: they must round-trip."""
    for name, fields in PRESETS.items():
        official = {**fields, "depth": list(fields["depth"]), "mult_channels": [1, 2, 4, 2, 1], "actf": [1, 1],
                    "norm_type": "gnorm", "norm_type1": "gnorm", "block_type": "unetblock", "affine": 0}
        assert config_from_torch(official) == DiCConfig.from_dict(fields), name


def test_mirrored_mult_channels_equal_the_explicit_list():
    short = DiCConfig(hidden_size=8, depth=(2, 2, 2, 1, 2, 2, 2), mult_channels=(1, 2, 2, 4))
    assert short.stage_mults == (1, 2, 2, 4, 2, 2, 1)
    assert short.stage_cond_levels == (0, 1, 2, 3, 2, 1, 0)
    variant = DiCConfig(hidden_size=8, depth=(3, 3, 2, 3, 3), mult_channels=(1, 2, 4, 2, 2))
    assert variant.last_stage_cond_level == 1 and variant.stage_cond_levels == (0, 1, 2, 1, 1)


# --------------------------------------------------------------------------- a tiny model

TINY = dict(input_size=8, hidden_size=8, depth=(1, 1, 1, 1, 1), num_classes=10)


def _random_params(module, seed=0):
    """Random weights everywhere (the zero-initialised final layer would hide most bugs)."""
    shapes = _param_shapes(module)
    rng = np.random.default_rng(seed)
    leaves, treedef = jax.tree_util.tree_flatten(shapes)
    values = [
        rng.normal(0, 1 / np.sqrt(np.prod(s.shape[:-1])) if len(s.shape) > 1 else 0.1, s.shape).astype(np.float32)
        for s in leaves
    ]
    return jax.tree_util.tree_unflatten(treedef, values)


@pytest.fixture(scope="module")
def tiny():
    module = build_model("dic", None, **TINY)
    return module, _random_params(module)


# Slow: make_class_sampler is tested by tests/diffusion/test_sampling.py::test_class_sampler_with_guidance_on_a_tiny_dit
# and a DiC samples through it in tests/colab/test_dic_notebook.py, both in the default run.
@pytest.mark.slow
def test_tiny_model_samples_through_the_class_pipeline(tiny):
    module, params = tiny
    diffusion = sampling_diffusion("ddim", 3, module.config.learn_sigma)
    labels = jnp.array([1, 2, 1])
    sample = make_class_sampler(module, diffusion, sampler="ddim", cfg_scale=1.5)
    out = np.asarray(sample(params, labels, jax.random.key(0)))
    assert out.shape == (3, 8, 8, 4) and out.dtype == np.float32 and np.isfinite(out).all()
    again = np.asarray(sample(params, labels, jax.random.key(0)))
    np.testing.assert_array_equal(out, again)
    # Same noise (one key), different class: the label conditions every level.
    swapped = np.asarray(sample(params, jnp.array([2, 2, 1]), jax.random.key(0)))
    assert np.abs(swapped[0] - out[0]).max() > 1e-3
    np.testing.assert_allclose(swapped[2], out[2], rtol=1e-5, atol=1e-5)


def test_bfloat16_and_label_dropout_in_train_mode(tiny):
    module, params = tiny
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 8, 8, 4)).astype(np.float32)
    t, y = np.array([0, 10, 500, 999]), np.array([0, 3, 9, 10])

    def run(p, options, train=False, drop=None):
        m = DiC(module.config.replace(**options))
        return m.apply({"params": p}, x, t, y, train, drop, rngs={"dropout": jax.random.key(5)},
                       mutable=["intermediates"])

    def all_modes(p):
        return (run(p, {}), run(p, {"dtype": "bfloat16"})[0], run(p, {"class_dropout_prob": 0.5}, True),
                run(p, {}, False, jnp.array([0, 1, 0, 1])))

    (ref, _), bf16, (train_out, train_inter), (_, forced_inter) = jax.jit(all_modes)(params)
    assert bf16.dtype == jnp.float32
    assert 1e-3 * np.abs(ref).max() < np.abs(bf16 - ref).max() < 0.1 * np.abs(ref).max()  # bf16 ran: close, not equal

    # Label dropout is decided once and shared by every level's embedder (the official behaviour).
    tables = [params[f"y_embedder_{i}"]["embedding_table"] for i in range(3)]
    for i, table in enumerate(tables):
        y_forced = np.asarray(forced_inter["intermediates"][f"cond_{i}"][0] - forced_inter["intermediates"][f"t_emb_{i}"][0])
        np.testing.assert_allclose(y_forced, table[np.array([0, 10, 9, 10])], rtol=1e-5, atol=1e-5)
    with_train = [np.asarray(train_inter["intermediates"][f"cond_{i}"][0] - train_inter["intermediates"][f"t_emb_{i}"][0])
                  for i in range(3)]
    dropped = [np.all(np.isclose(e, table[10], atol=1e-5), axis=-1) for e, table in zip(with_train, tables)]
    assert 0 < dropped[0][:3].sum() < 3  # row 3 is the null label already; key 5 drops some of rows 0-2
    assert all((d == dropped[0]).all() for d in dropped)
    np.testing.assert_allclose(train_out[~dropped[0]], ref[~dropped[0]], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("remat", ["none", "full", "dots_with_no_batch_dims_saveable"])
def test_remat_wraps_every_block_also_in_train_mode_with_block_dropout(remat):
    module = build_model("dic", None, **TINY, dropout=0.5, remat=remat)
    params = _param_shapes(module)
    x, t = jnp.zeros((2, 8, 8, 4)), jnp.zeros((2,), jnp.int32)
    jaxpr = jax.make_jaxpr(lambda p: module.apply({"params": p}, x, t, t, True, rngs={"dropout": jax.random.key(0)}))(params)
    remat_calls = re.findall(r"= (?:remat2|checkpoint)\[", str(jaxpr))  # the primitive's name varies by JAX version
    assert len(remat_calls) == (0 if remat == "none" else 5)  # one per block
    assert jaxpr.out_avals[0].shape == (2, 8, 8, 8)


def test_other_resolutions_are_accepted():
    module = build_model("dic", None, **TINY)
    params = _param_shapes(module)
    t = jnp.zeros((2,), jnp.int32)
    out = jax.eval_shape(lambda p: module.apply({"params": p}, jnp.zeros((2, 12, 20, 4)), t, t), params)
    assert out.shape == (2, 12, 20, 8) and out.dtype == jnp.float32


# --------------------------------------------------------------------------- bad input and options


@pytest.fixture(scope="module")
def tiny_shapes():
    module = build_model("dic", None, **TINY)
    return module, jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), _param_shapes(module))


def _apply(module, params, x, y=(0, 0)):
    y = jnp.asarray(y)
    return module.apply({"params": params}, x, jnp.zeros((len(y),), jnp.int32), y)


def test_bad_images_are_rejected(tiny_shapes):
    module, params = tiny_shapes
    with pytest.raises(ValueError, match=r"NHWC input \[N, H, W, 4\] with H and W divisible by 4"):
        _apply(module, params, jnp.zeros((2, 4, 8, 8)))  # NCHW
    with pytest.raises(ValueError, match="divisible by 4"):
        _apply(module, params, jnp.zeros((2, 10, 10, 4)))
    with pytest.raises(ValueError, match="NHWC"):
        _apply(module, params, jnp.zeros((8, 8, 4)))


@pytest.mark.parametrize("label", [-1, 11])
def test_label_out_of_range_is_rejected(tiny_shapes, label):
    module, params = tiny_shapes
    with pytest.raises(ValueError, match=r"class label out of range.*allowed \[0, 10\]"):
        _apply(module, params, jnp.zeros((2, 8, 8, 4)), (0, label))


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(depth=(6, 6, 5)), "3/4-entry depth shorthand"),
        (dict(depth=(6, 6, 5, 6)), "3/4-entry depth shorthand"),
        (dict(depth=(6, 6, 5, 6, 5)), "not symmetric"),
        (dict(depth=(2, 2, 2, 2, 2, 2)), "5 entries"),
        (dict(mult_channels=(1, 2, 4, 2)), "does not fit 3 levels"),
        (dict(mult_channels=(1, 2, 4, 4, 3)), "last stage's multiplier 3"),
        (dict(mult_channels=(1, 2, 4, 4, 1)), "decoder multipliers must mirror"),
        (dict(input_size=30), "input_size=30 is not divisible by 4"),
        (dict(hidden_size=9), r"width hidden_size \* mult = 18 is not divisible by 4"),
        (dict(hidden_size=20, num_groups=3, min_channels=1), "cannot be split into 3 groups"),
        (dict(affinef=4), r"affinef=4 is not supported; allowed values: \[2, 3\]"),
        (dict(blockconfig=2), "blockconfig=2"),
        (dict(actfunc="relu"), "actfunc='relu'"),
        (dict(actf=(1,)), "two flags"),
        (dict(dtype="float8"), "dtype='float8'"),
        (dict(hiden_size=10), r"unknown DiCConfig field\(s\) \['hiden_size'\]"),
    ],
)
def test_bad_configs_are_named(fields, message):
    with pytest.raises(ValueError, match=message):
        DiCConfig.from_dict({**PRESETS["DiC-S"], **fields})


def test_converter_rejects_unsupported_options_and_mismatched_weights():
    case = GoldenCase("dic", "dic_forward_small")
    kwargs = case.meta["constructor"]
    with pytest.raises(ValueError, match="norm_type='lnorm' is not supported"):
        from_torch("dic", {**kwargs, "norm_type": "lnorm"}, case.state_dict)
    with pytest.raises(ValueError, match=r"unknown DiC constructor argument\(s\) \['use_gamma'\]"):
        from_torch("dic", {**kwargs, "use_gamma": True}, case.state_dict)
    with pytest.raises(ValueError, match="1 state_dict entries were not converted"):
        from_torch("dic", kwargs, {**case.state_dict, "extra.weight": np.zeros(3)})
    with pytest.raises(KeyError, match=r"dec_blocks\.0\.2\.conv\.skip\.weight"):  # skip_stride 2: more skips
        from_torch("dic", {**kwargs, "skip_stride": 2}, case.state_dict)
    # The reference treats any actfunc but "gelu" as SiLU and ignores its unused kwargs.
    cfg = config_from_torch({**kwargs, "actfunc": "swish", "num_heads": 16, "mlp_ratio": 4, "rep": 1})
    assert cfg.actfunc == "silu"
