"""Embedded text tasks for masked diffusion LMs: nothing to download, every answer checkable.

Synthetic prompt -> answer tasks where the *order* in which a decoder commits positions matters:

- ``AdditionTask``: ``"04721+38950="`` -> ``"043671"`` + EOS. The answer is written most significant
  digit first, but each digit depends on the carry coming from the digits to its right, so a decoder
  that fills the answer left to right has to guess carries that a confidence-ordered one can defer.
- ``SudokuTask``: a 4x4 Sudoku with blanks ``"1.3..4.........."`` -> the 16 filled cells. Some cells
  are forced by the clues, others only once their neighbours are known.

and a small natural-text corpus for pre-training (``TextCorpus``): the Python reference manual's
help topics that ship with the standard library (``pydoc_data.topics``, ~410k characters once cleaned), or the
Zen of Python (``this``) where ``pydoc_data`` is missing.

All tasks are character level over a ``CharVocab``: ids ``0..n-1`` are characters, followed by
``eos``, ``pad`` and ``mask``. Examples are fixed length: ``tokens [N, P + G]`` int32 with the prompt
in the first ``P`` positions and the answer, EOS-filled to ``G``, after it (LLaDA's SFT format, where
EOS padding is part of the answer the model learns). Example ``i`` of a seeded source is a pure
function of ``(seed, i)``, so any number of workers/hosts can read it in any order.
"""

import abc
import codecs
import contextlib
import dataclasses
import functools
import io
import itertools
from collections.abc import Iterator

import numpy as np


@dataclasses.dataclass(frozen=True)
class CharVocab:
    """Characters ``chars`` (ids ``0..len-1``) followed by the special ids eos, pad, mask."""

    chars: str

    def __post_init__(self):
        if len(set(self.chars)) != len(self.chars):
            raise ValueError(f"CharVocab characters must be unique, got {self.chars!r}")

    @property
    def eos_id(self) -> int:
        return len(self.chars)

    @property
    def pad_id(self) -> int:
        return len(self.chars) + 1

    @property
    def mask_id(self) -> int:
        return len(self.chars) + 2

    @property
    def size(self) -> int:
        return len(self.chars) + 3

    @functools.cached_property
    def _index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.chars)}

    def encode(self, text: str) -> np.ndarray:
        """``text`` -> ``[len(text)]`` int32 ids; fails on characters outside the vocabulary."""
        try:
            return np.fromiter((self._index[c] for c in text), np.int32, len(text))
        except KeyError as err:
            raise ValueError(f"character {err.args[0]!r} is not in the vocabulary {self.chars!r}") from None

    def decode(self, ids, *, stop_at_eos: bool = True) -> str:
        """Ids -> text; EOS ends the text (or shows as ``$``), pad shows as ``_`` and mask as ``?``."""
        out = []
        for i in np.asarray(ids).reshape(-1).tolist():
            if i == self.eos_id:
                if stop_at_eos:
                    break
                out.append("$")
            elif i == self.pad_id:
                out.append("_")
            elif i == self.mask_id:
                out.append("?")
            else:
                out.append(self.chars[i])
        return "".join(out)


class ExampleStream(abc.ABC):
    """Deterministic examples by ``(seed, index)``, and batches of consecutive ones."""

    @abc.abstractmethod
    def example(self, seed: int, index: int) -> dict[str, np.ndarray]:
        """Example ``index`` of the stream ``seed``: ``tokens [L]`` int32, ``prompt_lengths []`` int32."""

    def batch(self, seed: int, start: int, size: int) -> dict[str, np.ndarray]:
        """Examples ``start .. start+size-1`` stacked: ``tokens [size, L]``, ``prompt_lengths [size]``."""
        rows = [self.example(seed, i) for i in range(start, start + size)]
        return {k: np.stack([r[k] for r in rows]) for k in rows[0]}

    def batches(self, batch_size: int, seed: int = 0) -> Iterator[dict[str, np.ndarray]]:
        """An endless stream of batches (numpy), example indices ``0, 1, 2, ...`` of stream ``seed``."""
        for start in itertools.count(0, batch_size):
            yield self.batch(seed, start, batch_size)


class PromptAnswerTask(ExampleStream):
    """Base of the synthetic tasks: fixed ``prompt_length`` P and ``answer_length`` G.

    Subclasses implement ``_example(rng) -> (prompt_text, answer_text)`` and
    ``_is_correct(prompt_text, answer_text) -> bool``.
    """

    name: str
    vocab: CharVocab
    prompt_length: int
    answer_length: int

    @property
    def seq_length(self) -> int:
        return self.prompt_length + self.answer_length

    def example(self, seed: int, index: int) -> dict[str, np.ndarray]:
        """Example ``index`` of the stream ``seed``: ``tokens [P+G]`` int32, ``prompt_lengths []`` int32."""
        prompt, answer = self._example(np.random.default_rng((seed, index)))
        return self._encode(prompt, answer)

    def check(self, tokens) -> np.ndarray:
        """``tokens [N, P+G]`` (prompt + generated answer) -> ``[N]`` bool, True where the answer is right.

        The answer is read up to its first EOS (or pad); any [MASK] left makes it wrong.
        """
        tokens = np.asarray(tokens)
        if tokens.ndim != 2 or tokens.shape[1] != self.seq_length:
            raise ValueError(f"{self.name}: expected tokens [N, {self.seq_length}], got shape {tokens.shape}")
        out = np.zeros(len(tokens), bool)
        for n, row in enumerate(tokens):
            answer_ids = row[self.prompt_length :]
            if (answer_ids == self.vocab.mask_id).any():
                continue
            stop = np.flatnonzero((answer_ids == self.vocab.eos_id) | (answer_ids == self.vocab.pad_id))
            answer_ids = answer_ids[: stop[0]] if stop.size else answer_ids
            out[n] = self._is_correct(self.vocab.decode(row[: self.prompt_length]), self.vocab.decode(answer_ids))
        return out

    def accuracy(self, tokens) -> float:
        return float(np.mean(self.check(tokens)))

    def prompts(self, seed: int, start: int, size: int) -> np.ndarray:
        """Just the prompts of examples ``start ..``: ``[size, P]`` int32 (for decoding)."""
        return self.batch(seed, start, size)["tokens"][:, : self.prompt_length]

    def _encode(self, prompt: str, answer: str) -> dict[str, np.ndarray]:
        if len(prompt) != self.prompt_length or len(answer) > self.answer_length:
            raise AssertionError(f"{self.name}: bad example lengths {prompt!r} -> {answer!r}")
        ids = np.full(self.seq_length, self.vocab.eos_id, np.int32)
        ids[: self.prompt_length] = self.vocab.encode(prompt)
        ids[self.prompt_length : self.prompt_length + len(answer)] = self.vocab.encode(answer)
        return {"tokens": ids, "prompt_lengths": np.int32(self.prompt_length)}

    @abc.abstractmethod
    def _example(self, rng: np.random.Generator) -> tuple[str, str]:
        """One ``(prompt, answer)`` pair drawn with ``rng``."""

    @abc.abstractmethod
    def _is_correct(self, prompt: str, answer: str) -> bool:
        """Whether ``answer`` solves ``prompt``."""


class AdditionTask(PromptAnswerTask):
    """``a+b=`` -> ``a+b`` with ``num_digits``-digit zero-padded operands, most significant digit first.

    Prompt ``"{a:0Nd}+{b:0Nd}="`` (P = 2N + 2); answer the ``N+1``-digit zero-padded sum followed by
    EOS up to ``answer_length`` (default ``N + 3``).
    """

    def __init__(self, num_digits: int = 5, answer_length: int | None = None):
        if not isinstance(num_digits, int) or not 1 <= num_digits <= 18:
            raise ValueError(f"num_digits={num_digits!r} must be an int in [1, 18]")
        self.num_digits = num_digits
        self.name = f"addition{num_digits}"
        self.vocab = CharVocab("0123456789+=")
        self.prompt_length = 2 * num_digits + 2
        self.answer_length = num_digits + 3 if answer_length is None else answer_length
        if self.answer_length < num_digits + 1:
            raise ValueError(
                f"answer_length={answer_length} cannot hold the {num_digits + 1}-digit sum; use >= {num_digits + 1}"
            )

    def _example(self, rng):
        a, b = (int(v) for v in rng.integers(0, 10**self.num_digits, size=2))
        n = self.num_digits
        return f"{a:0{n}d}+{b:0{n}d}=", f"{a + b:0{n + 1}d}"

    def _is_correct(self, prompt, answer):
        a, b = prompt[:-1].split("+")
        return answer == f"{int(a) + int(b):0{self.num_digits + 1}d}"


def _all_sudoku4() -> np.ndarray:
    """Every valid 4x4 Sudoku grid (there are 288): ``[288, 16]`` int8 with digits 1..4, row-major."""
    rows = list(itertools.permutations(range(1, 5)))

    def fits(grid, row):
        r = len(grid)
        for c in range(4):
            if any(g[c] == row[c] for g in grid):
                return False
        if r % 2 == 1:  # second row of a band: each 2x2 box must hold 4 different digits
            above = grid[-1]
            return {above[0], above[1], row[0], row[1]} == {1, 2, 3, 4}
        return True

    grids = [[]]
    for _ in range(4):
        grids = [g + [row] for g in grids for row in rows if fits(g, row)]
    return np.array(grids, np.int8).reshape(-1, 16)


@functools.cache
def sudoku4_grids() -> np.ndarray:
    return _all_sudoku4()


@functools.cache
def _sudoku4_agreement() -> np.ndarray:
    """``[288, 288]`` int32: bit c of ``[i, g]`` is set where grids i and g agree at cell c."""
    grids = sudoku4_grids()
    same = grids[:, None, :] == grids[None, :, :]
    return (same * (1 << np.arange(16))).sum(-1).astype(np.int32)


def sudoku4_is_valid(grid) -> bool:
    """True iff ``grid`` ([16] ints, row-major) is a complete valid 4x4 Sudoku."""
    grid = np.asarray(grid).reshape(-1)
    return grid.shape == (16,) and bool((sudoku4_grids() == grid).all(-1).any())


def sudoku4_num_solutions(clues) -> int:
    """Number of valid grids that agree with ``clues`` ([16] ints, 0 = blank)."""
    clues = np.asarray(clues).reshape(16)
    given = clues > 0
    return int(((sudoku4_grids() == clues) | ~given).all(-1).sum())


class SudokuTask(PromptAnswerTask):
    """4x4 Sudoku with a unique solution: prompt = 16 cells (``.`` = blank), answer = the 16 digits.

    Puzzles start from one of the 288 grids and remove cells in random order as long as the
    solution stays unique, until ``num_blanks`` cells are blank (or no further cell can go). The
    checker accepts any valid grid that keeps the clues (the solution is unique anyway).
    """

    def __init__(self, num_blanks: int = 10):
        if not isinstance(num_blanks, int) or not 1 <= num_blanks <= 13:
            raise ValueError(f"num_blanks={num_blanks!r} must be an int in [1, 13] (4x4 puzzles need >= 3 clues)")
        self.num_blanks = num_blanks
        self.name = f"sudoku4x{num_blanks}"
        self.vocab = CharVocab("1234.")
        self.prompt_length = 16
        self.answer_length = 16

    def _example(self, rng):
        index = rng.integers(len(sudoku4_grids()))
        solution = sudoku4_grids()[index]
        # agree[g] has bit c set where grid g equals the solution at cell c; a clue set C (bits)
        # keeps grid g possible iff agree[g] & C == C.
        agree = _sudoku4_agreement()[index]
        clues = (1 << 16) - 1
        removed = 0
        for cell in rng.permutation(16):
            if removed == self.num_blanks:
                break
            trial = clues & ~(1 << int(cell))
            if np.count_nonzero((agree & trial) == trial) == 1:
                clues, removed = trial, removed + 1
        prompt = "".join(str(v) if clues >> c & 1 else "." for c, v in enumerate(solution))
        return prompt, "".join(str(v) for v in solution)

    def _is_correct(self, prompt, answer):
        if len(answer) != 16 or not set(answer) <= set("1234"):
            return False
        grid = np.array([int(c) for c in answer])
        clues_ok = all(p == "." or p == a for p, a in zip(prompt, answer))
        return clues_ok and sudoku4_is_valid(grid)


class PermutationTask(PromptAnswerTask):
    """Write the prompt's letters in any order: a task with many right answers, where parallel commits clash.

    Prompt: ``num_items`` distinct letters of the first ``alphabet`` lower-case letters, sorted (P =
    ``num_items``); answer: a uniformly random permutation of them (G = P). Any permutation is
    accepted. Every answer position is uncertain on its own, so a decoder that commits several tokens
    in one forward can write the same letter twice -- an early mistake that only a decoder which
    revisits committed tokens can undo (``benchmarks/dlm_selfcorrect.py``).
    """

    def __init__(self, num_items: int = 6, alphabet: int = 12):
        if not isinstance(alphabet, int) or not 2 <= alphabet <= 26:
            raise ValueError(f"alphabet={alphabet!r} must be an int in [2, 26]")
        if not isinstance(num_items, int) or not 2 <= num_items <= alphabet:
            raise ValueError(f"num_items={num_items!r} must be an int in [2, alphabet={alphabet}]")
        self.num_items, self.alphabet = num_items, alphabet
        self.name = f"permutation{num_items}of{alphabet}"
        self.vocab = CharVocab("abcdefghijklmnopqrstuvwxyz"[:alphabet])
        self.prompt_length = self.answer_length = num_items

    def _example(self, rng):
        items = np.sort(rng.choice(self.alphabet, self.num_items, replace=False))
        letters = self.vocab.chars
        return "".join(letters[i] for i in items), "".join(letters[i] for i in rng.permutation(items))

    def _is_correct(self, prompt, answer):
        return sorted(answer) == sorted(prompt)


def _corpus_text(name: str) -> str:
    if name == "zen":
        with contextlib.redirect_stdout(io.StringIO()):  # importing `this` prints the Zen
            import this
        return codecs.decode(this.s, "rot13")
    if name == "pydoc":
        try:
            from pydoc_data.topics import topics
        except ImportError as err:
            raise ValueError("this Python has no pydoc_data (the stdlib help topics); use corpus='zen'") from err
        return "\n\n".join(topics[k] for k in sorted(topics))
    raise ValueError(f"unknown corpus {name!r}; known corpora: ['pydoc', 'zen']")


class TextCorpus(ExampleStream):
    """Character-level windows of an embedded English text for pre-training (no prompt).

    ``corpus``: ``"pydoc"`` (the stdlib's help topics) or ``"zen"`` (the Zen of Python). Characters
    outside printable ASCII become spaces and runs of whitespace collapse to one space. The
    last 5% of the text is held out (``split="eval"``).
    """

    CHARS = "".join(chr(c) for c in range(32, 127))

    def __init__(self, corpus: str = "pydoc", seq_length: int = 64, split: str = "train"):
        if split not in ("train", "eval"):
            raise ValueError(f"split={split!r}; use 'train' or 'eval'")
        text = " ".join(_corpus_text(corpus).split())
        text = "".join(c if c in self.CHARS else " " for c in text)
        cut = int(len(text) * 0.95)
        self.text = text[:cut] if split == "train" else text[cut:]
        if len(self.text) < seq_length:
            raise ValueError(f"corpus {corpus!r} ({split}) has {len(self.text)} characters < seq_length={seq_length}")
        self.name = f"{corpus}-{split}"
        self.vocab = CharVocab(self.CHARS)
        self.seq_length = seq_length
        self._ids = self.vocab.encode(self.text)

    def example(self, seed: int, index: int) -> dict[str, np.ndarray]:
        start = np.random.default_rng((seed, index)).integers(0, len(self._ids) - self.seq_length + 1)
        return {"tokens": self._ids[start : start + self.seq_length].copy(), "prompt_lengths": np.int32(0)}


def make_task(name: str, **kwargs):
    """``"addition"``, ``"sudoku"``, ``"permutation"`` or ``"text"`` -> the task object (kwargs go to its
    constructor)."""
    makers = {"addition": AdditionTask, "sudoku": SudokuTask, "permutation": PermutationTask, "text": TextCorpus}
    if name not in makers:
        raise ValueError(f"unknown text task {name!r}; known tasks: {sorted(makers)}")
    return makers[name](**kwargs)


# ---------------------------------------------------------------- training-loop data source

#: Seeds of the example streams behind ``config.data.split``; evaluation never sees training examples
#: (up to chance collisions between two random draws).
SPLIT_SEEDS = {"train": 0, "eval": 1, "test": 2}
_STREAM_LENGTH = 1 << 30  # examples per "epoch" of a synthetic stream (they are drawn i.i.d. anyway)


def parse_task_spec(spec: str):
    """``"addition:num_digits=5,answer_length=8"`` -> the task (``"name"`` alone takes the defaults).

    Values are ints where they parse as ints, strings otherwise.
    """
    name, _, args = spec.partition(":")
    kwargs = {}
    for item in filter(None, (a.strip() for a in args.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"bad text task spec {spec!r}: {item!r} is not key=value (e.g. 'addition:num_digits=5')")
        kwargs[key.strip()] = int(value) if value.strip().lstrip("-").isdigit() else value.strip()
    try:
        return make_task(name.strip(), **kwargs)
    except TypeError as err:
        raise ValueError(f"bad text task spec {spec!r}: {err}") from None


class TaskSource:
    """Random access to a task's example stream: ``source[i] == task.example(seed, i)``."""

    def __init__(self, task, seed: int, length: int = _STREAM_LENGTH):
        self.task, self.seed, self._length = task, seed, length

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return self.task.example(self.seed, int(index))

    def __repr__(self) -> str:
        return f"TaskSource({self.task.name}, seed={self.seed})"


def _text_task_source(data_cfg):
    """``config.data.source="text_task"``: ``data.path`` is the task spec, ``data.split`` picks the stream.

    For ``text`` the split also picks the train / held-out part of the corpus.
    """
    from jaxlab.data.sources import SourceSpec

    if not data_cfg.path:
        raise ValueError("config.data.path is empty; for source 'text_task' it names the task, e.g. 'sudoku:num_blanks=10'")
    if data_cfg.split not in SPLIT_SEEDS:
        raise ValueError(f"config.data.split={data_cfg.split!r} is not allowed for text_task; allowed values: {list(SPLIT_SEEDS)}")
    spec = data_cfg.path
    if spec.partition(":")[0].strip() == "text" and "split=" not in spec:
        spec += ("," if ":" in spec else ":") + f"split={'train' if data_cfg.split == 'train' else 'eval'}"
    return SourceSpec(TaskSource(parse_task_spec(spec), SPLIT_SEEDS[data_cfg.split]), in_memory=True)


def register() -> None:
    """Makes ``config.data.source="text_task"`` available to ``jaxlab.data.sources.build_source``.

    Called by ``configs/dlm.py`` and ``MaskedDiffusionTask.from_config`` (idempotent); the generators
    above do not need the training pipeline.
    """
    from jaxlab.data.sources import register_source

    register_source("text_task", _text_task_source)
