"""Position ids (1-D / M-RoPE / Circle-RoPE), M-RoPE tables and PTD against the reference's golden cases."""

import glob
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.lvlm.positions import RopeOptions, check_image_layout, decode_positions, rope_index
from jaxlab.lvlm.ptd import ptd
from jaxlab.nn.mrope import mrope_sin_cos, mrope_tables, select_sections
from jaxlab.nn.rope import apply_rope


FAMILY = "circle_rope"
GOLDEN = pathlib.Path(__file__).parents[1] / "golden" / FAMILY
INDEX_CASES = sorted(pathlib.Path(p).stem for p in glob.glob(str(GOLDEN / "*index*.json")))
IMG, START, END = 151655, 151652, 151653


def _scheme_and_options(case):
    circle = case.meta["constructor"].get("circle_rope")
    return ("circle" if circle else "mrope"), RopeOptions.from_reference(circle)


def test_every_index_case_is_tested():
    assert len(INDEX_CASES) == 11  # mrope + default circle + 9 option cases


@pytest.mark.parametrize("name", INDEX_CASES)
def test_rope_index_golden(golden, name):
    case = golden(FAMILY, name)
    scheme, options = _scheme_and_options(case)
    pos, deltas = rope_index(case["inputs/input_ids"], case["inputs/image_grid_thw"], case["inputs/attention_mask"],
                             scheme, options)
    assert pos.dtype == jnp.float32 and deltas.dtype == jnp.float32
    expected = case["outputs/position_ids"].astype(np.float32)
    if scheme == "mrope":  # integer ids, exact
        np.testing.assert_array_equal(np.asarray(pos), expected)
        np.testing.assert_array_equal(np.asarray(deltas), case["outputs/rope_deltas"])
    else:
        case.assert_close("position_ids", pos)
        case.assert_close("rope_deltas", deltas)


def test_rope_index_under_jit_with_traced_grids(golden):
    case = golden(FAMILY, "circle_rope_index")
    fn = jax.jit(lambda i, g, m: rope_index(i, g, m, "circle", RopeOptions()))
    pos, _ = fn(case["inputs/input_ids"], case["inputs/image_grid_thw"], case["inputs/attention_mask"])
    case.assert_close("position_ids", pos)


def _left_pad(ids, mask, pads):
    """Left-pads row b by pads[b] slots of token 0 with mask 0 (keeps the row length by padding all rows)."""
    width = ids.shape[1] + max(pads)
    out_ids = np.zeros((ids.shape[0], width), ids.dtype)
    out_mask = np.zeros((ids.shape[0], width), mask.dtype)
    for b, p in enumerate(pads):
        out_ids[b, p : p + ids.shape[1]] = ids[b]
        out_mask[b, p : p + ids.shape[1]] = mask[b]
        out_ids[b, p + ids.shape[1] :] = 7  # right tail, masked out too
        out_mask[b, p + ids.shape[1] :] = 0
    return out_ids, out_mask


@pytest.mark.parametrize("scheme", ["1d", "mrope", "circle"])
def test_left_padding_keeps_valid_ids_fills_one_and_uses_padded_length(golden, scheme):
    case = golden(FAMILY, "circle_rope_index")
    ids, mask, grid = case["inputs/input_ids"], case["inputs/attention_mask"], case["inputs/image_grid_thw"]
    pos, deltas = rope_index(ids, grid, mask, scheme)
    pads = [3, 0]
    pids, pmask = _left_pad(ids, mask, pads)
    ppos, pdeltas = rope_index(pids, grid, pmask, scheme)
    for b, p in enumerate(pads):
        np.testing.assert_allclose(ppos[:, b, p : p + ids.shape[1]], pos[:, b], rtol=1e-6)
        assert np.all(np.asarray(ppos[:, b])[:, ~pmask[b].astype(bool)] == 1.0)
    # rope_deltas = max + 1 - padded length: every row loses the 3 extra slots
    np.testing.assert_allclose(pdeltas, deltas - 3, rtol=1e-6)


def test_1d_is_the_valid_rank():
    ids = np.array([[0, 0, 5, IMG, IMG, 6], [5, START, IMG, IMG, END, 6]])
    mask = np.array([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    grid = np.array([[1, 2, 4], [1, 2, 4]])
    pos, deltas = rope_index(ids, grid, mask, "1d")
    np.testing.assert_array_equal(pos[0], [[1, 1, 0, 1, 2, 3], [0, 1, 2, 3, 4, 5]])
    np.testing.assert_array_equal(deltas[:, 0], [3 + 1 - 6, 5 + 1 - 6])


def test_mrope_restart_after_each_image_uses_the_max_of_all_channels():
    # one row, two images: 1x2 then 2x1 merged tokens (grids in ViT patches)
    ids = np.array([[5, START, IMG, IMG, END, START, IMG, IMG, END, 6]])
    grid = np.array([[1, 2, 4], [1, 4, 2]])
    pos, _ = rope_index(ids, grid, None, "mrope")
    np.testing.assert_array_equal(pos[:, 0], [
        [0, 1, 2, 2, 4, 5, 6, 6, 8, 9],
        [0, 1, 2, 2, 4, 5, 6, 7, 8, 9],
        [0, 1, 2, 3, 4, 5, 6, 6, 8, 9],
    ])


def test_circle_rope_text_is_equidistant_from_each_image(golden):
    case = golden(FAMILY, "circle_rope_index")
    pos, _ = rope_index(case["inputs/input_ids"], case["inputs/image_grid_thw"], None, "circle")
    out = ptd(pos, case["inputs/input_ids"], None, case["inputs/image_grid_thw"])
    assert out["ptd_mean_over_images"] < 1e-5


@pytest.mark.parametrize(
    "ids, grid, message",
    [
        ([[START, IMG, IMG, IMG, END]], [[1, 2, 4]], "does not match image 0's grid"),
        ([[START, IMG, IMG, END]], [[1, 2, 4], [1, 2, 4]], "lists 2 image"),
        ([[START, IMG, IMG, END]], [[2, 2, 4]], "only single images"),
        ([[START, IMG, IMG, END]], [[1, 3, 4]], "multiples of spatial_merge_size"),
        ([[START, 151656, END]], np.zeros((0, 3)), "video tokens"),
        ([[START, IMG, IMG, END, START, IMG, IMG, END]], [[1, 2, 4]], "more image-pad tokens"),
    ],
)
def test_bad_layouts_are_rejected(ids, grid, message):
    with pytest.raises(ValueError, match=message):
        rope_index(np.array(ids), np.array(grid), None, "mrope")
    with pytest.raises(ValueError, match=message):
        check_image_layout(np.array(ids), np.array(grid))


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="not one of"):
        rope_index(np.zeros((1, 3), np.int32), np.zeros((0, 3)), None, "2d")
    with pytest.raises(ValueError, match="radius"):
        RopeOptions(radius="big").validate()
    with pytest.raises(ValueError, match="method"):
        RopeOptions.from_reference({"method": "square"})
    with pytest.raises(ValueError, match="unknown circle_rope option"):
        RopeOptions.from_reference({"alpa": 0.5})


def test_decode_positions_continue_after_the_prefill():
    deltas = jnp.array([[-3.0], [2.5]])
    pos = decode_positions(jnp.array([10, 11]), deltas)
    assert pos.shape == (3, 2, 2)
    np.testing.assert_allclose(pos[1], [[7, 8], [12.5, 13.5]])


@pytest.mark.parametrize("suffix, hd, section", [("", 64, [8, 12, 12]), ("_hd128", 128, [16, 24, 24])])
def test_mrope_rotary_golden(golden, suffix, hd, section):
    case = golden(FAMILY, "circle_rope_rotary")
    pos = jnp.asarray(case["inputs/position_ids"])
    cos, sin = mrope_tables(pos, hd, 1e6)
    case.assert_close(f"cos{suffix}", cos)
    case.assert_close(f"sin{suffix}", sin)
    np.testing.assert_allclose(select_sections(cos, section), case[f"intermediates/cos_selected{suffix}"], rtol=1e-4, atol=5e-5)
    sin_sel, cos_sel = mrope_sin_cos(pos, hd, 1e6, section)
    for name in ("q", "k"):
        x = jnp.asarray(case[f"inputs/{name}{suffix}"]).transpose(0, 2, 1, 3)  # [B, N, T, H] -> [B, T, N, H]
        out = apply_rope(x, sin_sel, cos_sel).transpose(0, 2, 1, 3)
        case.assert_close(f"{name}_embed{suffix}", out)


def test_mrope_section_must_fit_head_dim():
    with pytest.raises(ValueError, match="summing to head_dim/2=32"):
        mrope_sin_cos(jnp.zeros((3, 1, 2)), 64, 1e6, [16, 24, 24])


def test_ptd_golden(golden):
    case = golden(FAMILY, "ptd")
    ids, mask, grid = case["inputs/input_ids"], case["inputs/attention_mask"], case["inputs/image_grid_thw"]
    for scheme in ("mrope", "circle"):
        out = ptd(case[f"inputs/position_ids_{scheme}"], ids, mask, grid)
        for i, image in enumerate(out["images"]):
            assert image["batch_row"] == case[f"intermediates/image{i}_batch_row"][0]
            np.testing.assert_array_equal(image["text_columns"], case[f"intermediates/image{i}_text_columns"])
            np.testing.assert_array_equal(image["image_columns"], case[f"intermediates/image{i}_image_columns"])
            for key in ("distances", "mean_distance", "mad", "std"):
                case.assert_close(f"{scheme}/image{i}_{key}", image[key])
            for key in ("ptd", "ptd_std"):
                case.assert_close(f"{scheme}/image{i}_{key}", np.array([image[key]]))
        case.assert_close(f"{scheme}/ptd_mean_over_images", np.array([out["ptd_mean_over_images"]]))
    # and from our own ids: M-RoPE is unequal, Circle-RoPE equidistant
    for scheme, check in (("mrope", lambda v: v > 0.2), ("circle", lambda v: v < 1e-5)):
        pos, _ = rope_index(ids, grid, mask, scheme)
        assert check(ptd(pos, ids, mask, grid)["ptd_mean_over_images"])
