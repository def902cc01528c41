"""Metric output: ``metrics.jsonl`` (one JSON object per logged step) and TensorBoard event files.

Only process 0 writes (pass ``enabled=False`` elsewhere). TensorBoard files are written with
``tensorboardX`` (no TensorFlow needed) under ``<workdir>/tensorboard``.
"""

import json
import math
import os

from jaxlab.train.workdir import Workdir

METRICS_FILE = "metrics.jsonl"
TB_DIR = "tensorboard"


class MetricsWriter:
    def __init__(self, workdir: Workdir, *, enabled: bool = True, tensorboard: bool = True):
        self.workdir = workdir
        self.enabled = enabled
        self._tb = None
        if not enabled:
            return
        workdir.fetch(METRICS_FILE)  # remote workdir: continue the rows of earlier segments
        self._file = open(workdir.local_file(METRICS_FILE), "a", buffering=1)
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(workdir.local_file(TB_DIR + "/.keep").parent), flush_secs=30)

    def write(self, step: int, scalars: dict[str, float]) -> None:
        """Appends ``{"step": step, **scalars}``; non-finite values are written as strings."""
        if not self.enabled:
            return
        row = {"step": int(step)}
        for name, value in scalars.items():
            value = float(value)
            row[name] = value if math.isfinite(value) else str(value)
            if self._tb is not None:
                self._tb.add_scalar(name, value, int(step))
        self._file.write(json.dumps(row) + "\n")

    def image(self, step: int, name: str, image) -> None:
        """Adds an ``[H, W, C]`` uint8 image (e.g. a sample grid) to TensorBoard."""
        if self.enabled and self._tb is not None:
            self._tb.add_image(name, image, int(step), dataformats="HWC")

    def flush(self) -> None:
        if not self.enabled:
            return
        self._file.flush()
        if self._tb is not None:
            self._tb.flush()
        if self.workdir.remote:
            self.workdir.publish(METRICS_FILE)
            tb_dir = self.workdir.local / TB_DIR
            for name in os.listdir(tb_dir) if tb_dir.exists() else []:
                self.workdir.publish(f"{TB_DIR}/{name}")

    def close(self) -> None:
        if not self.enabled:
            return
        self.flush()
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def read_metrics(path) -> list[dict]:
    """The rows of a ``metrics.jsonl`` file."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
