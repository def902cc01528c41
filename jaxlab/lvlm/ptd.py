"""Per-Token Distance (PTD): how unequal the RoPE-index distances from a text token to one image are.

The paper (Circle-RoPE, arXiv 2505.16416) defines PTD; the official repository has no code for
it, so this follows the reading in ``tests/golden/circle_rope/SPEC.md`` section 5 (the exact
normalisation in the paper could not be checked): index points are the 3-D ``(t, h, w)`` ids,
``D(t, i)`` the Euclidean distance between text token ``t`` and image token ``i``; for each text
token ``mad_t = mean_i |D(t, i) - mean_i D(t, i)|``; PTD of an image = mean over text tokens of
``mad_t`` (``ptd_std`` uses the population standard deviation instead). Text tokens are every
valid non-image-pad token of the image's row (markers included). PTD = 0 means every text token
is equidistant from all of the image's tokens (Circle-RoPE's cone geometry).

Host-side metric (numpy, float64), per image of the batch.
"""

import numpy as np


def image_spans(input_ids, attention_mask, image_grid_thw, image_token_id: int = 151655,
                spatial_merge_size: int = 2) -> list[tuple[int, np.ndarray]]:
    """``[(batch row, slot indices [n_j])]`` of every image, in ``image_grid_thw`` order."""
    ids = np.asarray(input_ids)
    mask = np.ones(ids.shape, bool) if attention_mask is None else np.asarray(attention_mask).astype(bool)
    grid = np.asarray(image_grid_thw).reshape(-1, 3)
    sizes = list(grid[:, 0] * (grid[:, 1] // spatial_merge_size) * (grid[:, 2] // spatial_merge_size))
    spans = []
    for b in range(ids.shape[0]):
        slots = np.flatnonzero((ids[b] == image_token_id) & mask[b])
        while slots.size:
            n = int(sizes[len(spans)])
            spans.append((b, slots[:n]))
            slots = slots[n:]
    return spans


def ptd(positions_3BL, input_ids, attention_mask, image_grid_thw, image_token_id: int = 151655,
        spatial_merge_size: int = 2) -> dict:
    """PTD per image: ``{"images": [dict per image], "ptd_mean_over_images": float}``.

    Each image's dict: ``batch_row``, ``text_columns [Nt]``, ``image_columns [Ni]``,
    ``distances [Nt, Ni]``, ``mean_distance``/``mad``/``std`` ``[Nt]``, ``ptd``, ``ptd_std``.
    """
    pos = np.asarray(positions_3BL, np.float64)
    ids = np.asarray(input_ids)
    mask = np.ones(ids.shape, bool) if attention_mask is None else np.asarray(attention_mask).astype(bool)
    images = []
    for b, image_cols in image_spans(ids, mask, image_grid_thw, image_token_id, spatial_merge_size):
        text_cols = np.flatnonzero(mask[b] & (ids[b] != image_token_id))
        p_text, p_img = pos[:, b, text_cols].T, pos[:, b, image_cols].T  # [Nt, 3], [Ni, 3]
        dist = np.linalg.norm(p_text[:, None, :] - p_img[None, :, :], axis=-1)
        mean = dist.mean(axis=1)
        mad = np.abs(dist - mean[:, None]).mean(axis=1)
        std = dist.std(axis=1)
        images.append(dict(batch_row=b, text_columns=text_cols, image_columns=image_cols, distances=dist,
                           mean_distance=mean, mad=mad, std=std, ptd=float(mad.mean()), ptd_std=float(std.mean())))
    mean_ptd = float(np.mean([im["ptd"] for im in images])) if images else float("nan")
    return {"images": images, "ptd_mean_over_images": mean_ptd}
