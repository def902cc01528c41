"""Grounded VQA on generated scenes: coloured shapes and digits on a grid (nothing to download).

A scene is a ``grid x grid`` board of ``cell``-pixel cells (default 4x4 cells of 8 px = 32x32 RGB);
3-6 cells hold an object: a coloured shape (red/green/blue/yellow x circle/square/triangle/cross,
each (colour, shape) pair at most once per scene) or a white digit 0-9 (3x5 pixel font). Questions
(word tokens) and their short answers (two tokens, the second EOS when the answer is one word):

- ``what``: "what is at row r col c ?" -> colour shape (a shape cell);
- ``count``: "how many <colour or shape> ?" -> a number 0-6;
- ``left``: "is <colour shape> left of <colour shape> ?" -> yes / no (different columns);
- ``above``: "is <colour shape> above <colour shape> ?" -> yes / no (different rows);
- ``digit``: "which digit at row r col c ?" -> the digit.

Every question type is drawn with the same probability. Sequences are left padded to a fixed
length: ``[pad.. vision_start image_pad*T vision_end question.. answer0 answer1]`` where T is
``(grid*cell/patch/2)^2`` merged image tokens. Example ``i`` of split ``s`` is a pure function
of ``(SPLIT_SEEDS[s], i)``; the held-out set is the first N examples of the ``"eval"`` stream.
"""

import dataclasses
import functools

import numpy as np

COLOURS = {"red": (1.0, 0.1, 0.1), "green": (0.1, 0.9, 0.2), "blue": (0.2, 0.3, 1.0), "yellow": (1.0, 0.9, 0.1)}
SHAPES = ("circle", "square", "triangle", "cross")
QUESTION_TYPES = ("what", "count", "left", "above", "digit")
SPLIT_SEEDS = {"train": 0, "eval": 1, "test": 2}
_DIGIT_FONT = [  # 3x5 bitmaps
    "111101101101111", "010110010010111", "111001111100111", "111001111001111", "101101111001001",
    "111100111001111", "111100111101111", "111001001001001", "111101111101111", "111101111001111",
]
_WORDS = ("what is at row col how many left of above which digit ? yes no".split()
          + list(COLOURS) + list(SHAPES) + [str(i) for i in range(10)])


@dataclasses.dataclass(frozen=True)
class Vocab:
    """Word ids; pad 0, eos 1, words from 2; the vision ids sit at the end of a ``size``-token table."""

    size: int = 128

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def eos_id(self) -> int:
        return 1

    vision_start_id = property(lambda self: self.size - 4)
    vision_end_id = property(lambda self: self.size - 3)
    image_id = property(lambda self: self.size - 2)
    video_id = property(lambda self: self.size - 1)

    @functools.cached_property
    def _index(self) -> dict[str, int]:
        return {w: i + 2 for i, w in enumerate(_WORDS)}

    def encode(self, words: str) -> list[int]:
        return [self._index[w] for w in words.split()]

    def decode(self, ids) -> str:
        inv = {v: k for k, v in self._index.items()}
        special = {self.pad_id: "<pad>", self.eos_id: "<eos>", self.vision_start_id: "<vs>", self.vision_end_id: "<ve>",
                   self.image_id: "<img>"}
        return " ".join(inv.get(int(i), special.get(int(i), "?")) for i in np.asarray(ids).reshape(-1))


def _draw(img: np.ndarray, r: int, c: int, cell: int, obj: tuple) -> None:
    y0, x0 = r * cell, c * cell
    yy, xx = np.mgrid[0:cell, 0:cell] + 0.5
    u, v = (xx - cell / 2) / (cell / 2), (yy - cell / 2) / (cell / 2)  # [-1, 1]
    if obj[0] == "digit":
        bits = np.array([int(b) for b in _DIGIT_FONT[obj[1]]], bool).reshape(5, 3)
        rows = np.clip(((v + 0.9) / 1.8 * 5).astype(int), 0, 4)
        cols = np.clip(((u + 0.7) / 1.4 * 3).astype(int), 0, 2)
        inside = bits[rows, cols] & (np.abs(u) < 0.7) & (np.abs(v) < 0.9)
        colour = (1.0, 1.0, 1.0)
    else:
        colour_name, shape = obj
        colour = COLOURS[colour_name]
        inside = {
            "circle": u**2 + v**2 < 0.7,
            "square": (np.abs(u) < 0.7) & (np.abs(v) < 0.7),
            "triangle": (v < 0.75) & (v > -0.75 + 1.5 * np.abs(u) * 1.0) & (np.abs(u) < 0.8),
            "cross": ((np.abs(u) < 0.25) | (np.abs(v) < 0.25)) & (np.abs(u) < 0.85) & (np.abs(v) < 0.85),
        }[shape]
    img[y0 : y0 + cell, x0 : x0 + cell][inside] = colour


@dataclasses.dataclass(frozen=True)
class ShapesVQA:
    """The task: scene rendering, question sampling and the batch layout (see the module docstring)."""

    grid: int = 4
    cell: int = 8
    patch_size: int = 4
    temporal_patch_size: int = 2
    spatial_merge_size: int = 2
    max_question: int = 8
    vocab: Vocab = Vocab()

    @property
    def image_size(self) -> int:
        return self.grid * self.cell

    @property
    def image_grid_thw(self) -> np.ndarray:
        """``[1, 3]`` ViT patch grid of every image."""
        side = self.image_size // self.patch_size
        return np.array([[1, side, side]], np.int64)

    @property
    def image_tokens(self) -> int:
        return (self.image_size // self.patch_size // self.spatial_merge_size) ** 2

    @property
    def seq_length(self) -> int:
        return self.image_tokens + 2 + self.max_question + 2

    def scene(self, rng: np.random.Generator) -> dict:
        """``{"objects": {(row, col): ("red", "square") | ("digit", 7)}}`` with 3-6 objects, >= 1 shape and >= 1 digit."""
        cells = rng.permutation(self.grid * self.grid)[: rng.integers(3, 7)]
        pairs = [(c, s) for c in COLOURS for s in SHAPES]
        chosen = rng.permutation(len(pairs))
        objects = {}
        for i, cell in enumerate(cells):
            pos = (int(cell) // self.grid, int(cell) % self.grid)
            is_digit = i == 0 or (i > 1 and rng.random() < 0.3)
            objects[pos] = ("digit", int(rng.integers(10))) if is_digit else pairs[chosen[i]]
        return {"objects": objects}

    def render(self, scene: dict) -> np.ndarray:
        """``[H, W, 3]`` float32 in [-1, 1] (black background)."""
        img = np.zeros((self.image_size, self.image_size, 3), np.float32)
        for (r, c), obj in scene["objects"].items():
            _draw(img, r, c, self.cell, obj)
        return img * 2.0 - 1.0

    def patches(self, image: np.ndarray) -> np.ndarray:
        """Qwen2.5-VL processor layout: ``[P, C * Tp * p * p]``, patches in 2x2 merge-group order, frame repeated."""
        p, m, tp = self.patch_size, self.spatial_merge_size, self.temporal_patch_size
        g = self.image_size // p
        x = np.stack([image.transpose(2, 0, 1)] * tp)  # [Tp, C, H, W]
        x = x.reshape(tp, 3, g // m, m, p, g // m, m, p)
        x = x.transpose(2, 5, 3, 6, 1, 0, 4, 7)  # [gh, gw, mh, mw, C, Tp, p, p]
        return x.reshape(g * g, 3 * tp * p * p).astype(np.float32)

    def question(self, scene: dict, rng: np.random.Generator) -> tuple[str, str, int]:
        objs = scene["objects"]
        shapes = {pos: o for pos, o in objs.items() if o[0] != "digit"}
        digits = {pos: o for pos, o in objs.items() if o[0] == "digit"}
        kind = QUESTION_TYPES[int(rng.integers(len(QUESTION_TYPES)))]
        if kind in ("left", "above"):
            axis = 1 if kind == "left" else 0
            pairs = [(a, b) for a in shapes for b in shapes if a[axis] != b[axis]]
            if not pairs:
                kind = "what"
            else:
                a, b = pairs[int(rng.integers(len(pairs)))]
                words = "left of" if kind == "left" else "above"
                q = f"is {' '.join(shapes[a])} {words} {' '.join(shapes[b])} ?"
                return q, "yes" if a[axis] < b[axis] else "no", QUESTION_TYPES.index(kind)
        if kind == "what":
            pos = list(shapes)[int(rng.integers(len(shapes)))]
            return f"what is at row {pos[0]} col {pos[1]} ?", " ".join(shapes[pos]), 0
        if kind == "count":
            attr = (list(COLOURS) + list(SHAPES))[int(rng.integers(8))]
            n = sum(attr in o for o in shapes.values())
            return f"how many {attr} ?", str(n), 1
        pos = list(digits)[int(rng.integers(len(digits)))]
        return f"which digit at row {pos[0]} col {pos[1]} ?", str(digits[pos][1]), 4

    def example(self, seed: int, index: int) -> dict[str, np.ndarray]:
        """``input_ids [L]``, ``attention_mask [L]``, ``pixel_values [P, F]``, ``answer [2]``, ``qtype []`` (int32)."""
        rng = np.random.default_rng([seed, index])
        scene = self.scene(rng)
        q, a, qtype = self.question(scene, rng)
        v = self.vocab
        prompt = [v.vision_start_id] + [v.image_id] * self.image_tokens + [v.vision_end_id] + v.encode(q)
        answer = (v.encode(a) + [v.eos_id])[:2]
        tokens = prompt + answer
        pad = self.seq_length - len(tokens)
        return {
            "input_ids": np.array([v.pad_id] * pad + tokens, np.int32),
            "attention_mask": np.array([0] * pad + [1] * len(tokens), np.int32),
            "pixel_values": self.patches(self.render(scene)),
            "answer": np.array(answer, np.int32),
            "qtype": np.int32(qtype),
        }

    def batch(self, seed: int, start: int, size: int) -> dict[str, np.ndarray]:
        rows = [self.example(seed, i) for i in range(start, start + size)]
        return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


class _Source:
    def __init__(self, task: ShapesVQA, seed: int):
        self.task, self.seed = task, seed

    def __len__(self) -> int:
        return 1 << 30

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return self.task.example(self.seed, int(index))


def _source(data_cfg):
    from jaxlab.data.sources import SourceSpec

    if data_cfg.split not in SPLIT_SEEDS:
        raise ValueError(f"config.data.split={data_cfg.split!r} is not allowed for shapes_vqa; allowed: {list(SPLIT_SEEDS)}")
    return SourceSpec(_Source(ShapesVQA(), SPLIT_SEEDS[data_cfg.split]), in_memory=True)


def register() -> None:
    """Makes ``config.data.source="shapes_vqa"`` available (idempotent)."""
    from jaxlab.data.sources import register_source

    register_source("shapes_vqa", _source)
