"""Multiple-round training (PanGu-pi Pro; official README "multiple-round training").

After a round, the frozen model's loss ``l_i`` of every training batch ``i`` of that round is
computed (``batch_losses``; sharded by splitting the batch ids over processes, ``shard_ids``, and
concatenating); the next round trains on ``N_0 = round(ratio * N)`` of those batches drawn without
replacement with ``p_i = exp(l_i) / sum_j exp(l_j)`` (``sample_batches``, equivalent to the released
``torch.multinomial(p, N_0, replacement=False)``: Gumbel-top-k, whose order is the sequential draw
order). ``ratio`` defaults to 0.5 (the value the paper's notes recommend).

The selection is saved (``save_selection``: a JSON file with the batch ids, their losses, the
seed and the data they index) and read by the ``lm_rounds`` data source (``register``), so the
next round is an ordinary run of the shared train loop: ``config.data.source="lm_rounds"``,
``config.data.path="selection=/path/selection.json"``, ``config.data.shuffle=False``; its grain
iterator position is checkpointed like any other, so a resumed round reads exactly the batches it
would have read. Round batches are visited in the saved (draw) order and repeat when exhausted.

jaxlab choices: the batches of a round are the first ``N`` batches of the unshuffled ``lm_text``
train stream (``stream.example(stream_seed, k * B + j)``); the draw order is kept as the released
code's ``multinomial`` returns it (highest-loss batches tend to come first); the optimizer restarts
for each round (``config.init.from_workdir`` carries the params only).
"""

import json
import os
import pathlib
from typing import Callable, Sequence

import jax
import numpy as np

SELECTION_VERSION = 1


def shard_ids(num_batches: int, shard_index: int = 0, num_shards: int = 1) -> np.ndarray:
    """Batch ids ``i`` with ``i % num_shards == shard_index`` (each process evaluates its own)."""
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index={shard_index} must be in [0, num_shards={num_shards})")
    return np.arange(shard_index, num_batches, num_shards)


def batch_losses(loss_fn: Callable, params, get_batch: Callable[[int], dict], batch_ids: Sequence[int]) -> np.ndarray:
    """``[len(batch_ids)]`` float64 losses ``loss_fn(params, get_batch(i))`` of the frozen ``params``.

    ``loss_fn`` is jitted here once; a non-finite loss is an error (it would break the softmax).
    """
    fn = jax.jit(loss_fn)
    out = np.array([float(fn(params, get_batch(int(i)))) for i in batch_ids], np.float64)
    if not np.all(np.isfinite(out)):
        raise FloatingPointError(f"non-finite batch losses at ids {np.asarray(batch_ids)[~np.isfinite(out)][:8].tolist()}")
    return out


def selection_probabilities(losses: np.ndarray) -> np.ndarray:
    """``softmax(losses)`` (float64), the probability of each batch being drawn first."""
    losses = np.asarray(losses, np.float64)
    z = np.exp(losses - losses.max())
    return z / z.sum()


def sample_batches(losses: np.ndarray, ratio: float = 0.5, seed: int = 0) -> np.ndarray:
    """``round(ratio * N)`` distinct batch ids drawn without replacement, ``p = softmax(losses)``, in draw order."""
    losses = np.asarray(losses, np.float64)
    if losses.ndim != 1 or not len(losses):
        raise ValueError(f"losses must be a non-empty vector, got shape {losses.shape}")
    if not np.all(np.isfinite(losses)):
        raise ValueError("losses must be finite")
    if not 0 < ratio <= 1:
        raise ValueError(f"sampling ratio {ratio} must be in (0, 1]")
    n = max(1, int(round(ratio * len(losses))))
    gumbel = np.random.default_rng(seed).gumbel(size=len(losses))
    return np.argsort(-(losses + gumbel), kind="stable")[:n].astype(np.int64)


def save_selection(path: str | os.PathLike, *, batch_ids: np.ndarray, losses: np.ndarray, seed: int, ratio: float,
                   data_spec: str, batch_size: int, stream_seed: int = 0) -> pathlib.Path:
    """Writes the selection JSON (refuses to overwrite: a round's data must not change under a resumed run)."""
    path = pathlib.Path(path)
    if path.exists():
        raise FileExistsError(f"{path} already exists; a saved selection is never overwritten (a resumed round reads "
                              f"it); choose another path")
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"version": SELECTION_VERSION, "batch_ids": [int(i) for i in batch_ids],
               "losses": [float(x) for x in losses], "seed": int(seed), "ratio": float(ratio),
               "data_spec": data_spec, "batch_size": int(batch_size), "stream_seed": int(stream_seed)}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload))
    os.replace(tmp, path)
    return path


def load_selection(path: str | os.PathLike) -> dict:
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"selection file {path} does not exist; write it with jaxlab.tinylm.multiround."
                                f"save_selection after the previous round")
    sel = json.loads(path.read_text())
    if sel.get("version") != SELECTION_VERSION or not sel.get("batch_ids"):
        raise ValueError(f"{path} is not a jaxlab multi-round selection (version {SELECTION_VERSION}, non-empty ids)")
    return sel


class RoundSource:
    """Random access to a round's examples: element ``i`` = row ``i % B`` of selected batch ``(i // B) % N_0``."""

    def __init__(self, stream, selection: dict):
        self.stream, self.sel = stream, selection
        self.ids = np.asarray(selection["batch_ids"], np.int64)
        self.batch_size, self.stream_seed = int(selection["batch_size"]), int(selection["stream_seed"])

    def __len__(self) -> int:
        return len(self.ids) * self.batch_size

    def __getitem__(self, index: int) -> dict:
        b, row = divmod(int(index), self.batch_size)
        return self.stream.example(self.stream_seed, int(self.ids[b % len(self.ids)]) * self.batch_size + row)

    def __repr__(self) -> str:
        return f"RoundSource({len(self.ids)} batches of {self.batch_size})"


def _lm_rounds_source(data_cfg):
    from jaxlab.data.sources import SourceSpec
    from jaxlab.lm.data import PackedCorpus, parse_spec

    spec = dict(item.partition("=")[::2] for item in data_cfg.path.split(",") if item)
    if set(spec) != {"selection"}:
        raise ValueError(f"config.data.path={data_cfg.path!r} for source 'lm_rounds' must be 'selection=<file.json>'")
    if data_cfg.shuffle:
        raise ValueError("config.data.shuffle must be False for lm_rounds (the round visits its batches in the saved order)")
    sel = load_selection(spec["selection"])
    return SourceSpec(RoundSource(PackedCorpus(**parse_spec(sel["data_spec"]), split="train"), sel), in_memory=True)


def register() -> None:
    """Makes ``config.data.source="lm_rounds"`` available (idempotent)."""
    from jaxlab.data.sources import register_source

    register_source("lm_rounds", _lm_rounds_source)


__all__ = ["RoundSource", "batch_losses", "load_selection", "register", "sample_batches", "save_selection",
           "selection_probabilities", "shard_ids"]
