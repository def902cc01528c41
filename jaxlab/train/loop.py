"""The generic training loop: one function for every family, driven by the config.

``train(config, workdir)`` validates the config, builds the mesh, the family's Task, the data
iterator and the optimizer, restores the latest checkpoint in ``<workdir>/checkpoints`` (or
initialises), then runs the jitted step until ``config.training.num_steps``. It checkpoints
every ``config.checkpoint.every_steps``, at the end, and when asked to stop (SIGTERM on one
process, JAX's preemption sync point on several), logs to ``metrics.jsonl`` + TensorBoard, and
writes sample grids from the EMA params when the Task can sample.

Multi-host: every process runs this same function (same collectives, same checkpoint calls);
only process 0 writes logs, grids and ``model.json``.
"""

import dataclasses
import json
import math
import sys
import time

import jax
import numpy as np

from jaxlab.data import make_train_data
from jaxlab.eval.train_eval import make_fid_evaluator
from jaxlab.train import perf
from jaxlab.train import run_config
from jaxlab.train import sharding as sh
from jaxlab.train.checkpoint import Checkpointer, NonFiniteStateError
from jaxlab.train.config import validate
from jaxlab.train.metrics import MetricsWriter
from jaxlab.train.optim import make_optimizer
from jaxlab.train.preemption import StopWatcher
from jaxlab.train.state import TrainState, create_state, state_shardings
from jaxlab.train.step import make_train_step
from jaxlab.train.task import task_from_config
from jaxlab.train.workdir import Workdir

MODEL_JSON = "model.json"
CONFIG_JSON = run_config.CONFIG_JSON
SAMPLES_DIR = "samples"


_NAN_ADVICE = (
    "Try a lower --config.optimizer.learning_rate, warmup (--config.optimizer.warmup_steps) or gradient clipping "
    "(--config.optimizer.grad_clip_norm=1.0 --config.checkpoint.allow_config_change=optimizer.grad_clip_norm)"
)


class NonFiniteLossError(FloatingPointError):
    """The loss or gradient norm became NaN/Inf; the run stopped without saving the bad state."""


@dataclasses.dataclass
class RunResult:
    state: TrainState
    step: int
    stopped: bool  # True when a stop request (SIGTERM / preemption / stop_at_step) ended the run early
    last_metrics: dict[str, float]
    grids: list[str]


def _say(message: str, is_main: bool) -> None:
    """One line on stderr from process 0 (printed once: not also sent through logging)."""
    if is_main:
        print(message, file=sys.stderr, flush=True)


def _write_json(workdir: Workdir, relpath: str, payload) -> None:
    workdir.local_file(relpath).write_text(json.dumps(payload, indent=2, default=str))
    workdir.publish(relpath)


class _Window:
    """Metrics of the steps since the last log line, kept on device until they are read.

    ``start_time`` / ``timed_steps`` measure training throughput: the run's first step (compilation
    and warm-up) is not timed, and the clock restarts after checkpointing and sampling.
    """

    def __init__(self):
        self.rows: list[tuple[int, dict]] = []
        self.start_time: float | None = None
        self.timed_steps = 0

    def add(self, step: int, metrics: dict) -> None:
        self.rows.append((step, metrics))
        if self.start_time is None:
            jax.block_until_ready(metrics)
            self.restart_clock()
        else:
            self.timed_steps += 1

    def restart_clock(self) -> None:
        self.start_time, self.timed_steps = time.perf_counter(), 0

    def drain(self) -> tuple[list[tuple[int, dict]], float | None]:
        """(rows as floats, steps/s over the timed steps or None)."""
        rows = [(step, {k: float(v) for k, v in m.items()}) for step, m in jax.device_get(self.rows)]
        self.rows = []
        elapsed = time.perf_counter() - (self.start_time or 0.0)
        rate = self.timed_steps / elapsed if self.timed_steps and elapsed > 0 else None
        return rows, rate


def _check_finite(rows, last_saved: int | None) -> None:
    for step, metrics in rows:
        bad = [k for k in ("loss", "grad_norm") if k in metrics and not math.isfinite(metrics[k])]
        if bad:
            raise NonFiniteLossError(
                f"{' and '.join(bad)} became {metrics[bad[0]]} at step {step}; stopping without saving this state. "
                f"The last good checkpoint is step {last_saved} (restored on restart). {_NAN_ADVICE}"
            )


def train(config, workdir: str, *, devices=None, stop_at_step: int | None = None) -> RunResult:
    """Trains (or resumes) the run in ``workdir``; see the module docstring.

    ``devices`` restricts the mesh to a subset (default: all devices of all processes).
    ``stop_at_step`` ends the run early at that step with a checkpoint, as a stop request would.
    """
    validate(config)
    workdir_ = Workdir(workdir)
    workdir_.check_writable()
    is_main = jax.process_index() == 0
    training = config.training
    num_steps, global_batch_size = int(training.num_steps), int(training.global_batch_size)

    mesh = sh.make_mesh(dict(config.mesh), devices)
    sh.check_batch_divisible(global_batch_size, mesh, jax.process_count())
    task = task_from_config(config)
    shard_index, shard_count = sh.batch_shard(mesh, global_batch_size)  # processes that share rows read the same data
    data = make_train_data(config.data, global_batch_size=global_batch_size, seed=int(config.seed),
                           process_index=shard_index, process_count=shard_count)
    optimizer, schedule = make_optimizer(config.optimizer, num_steps)
    abstract, shardings = state_shardings(task, optimizer, int(config.seed), data.example, mesh)

    watcher = StopWatcher()  # first, so a Ctrl-C / SIGTERM from now on ends in a checkpoint, not a traceback
    checkpointer = Checkpointer.from_config(workdir_.checkpoints, config.checkpoint)
    writer = None
    try:
        saved_config = run_config.read(workdir_.path)
        if checkpointer.all_steps():
            run_config.check_resume(saved_config, config, str(workdir_.path))
        last_saved, state = checkpointer.restore_latest(abstract, data.iterator)
        if last_saved is not None:
            _say(f"resumed from {workdir_.checkpoints}/{last_saved}", is_main)
        else:
            state = create_state(task, optimizer, int(config.seed), data.example, shardings)
            _say(f"initialised a new run in {workdir_.path}", is_main)
        if is_main:
            if hasattr(task, "model_spec"):
                family, model_config = task.model_spec()
                _write_json(workdir_, MODEL_JSON, {"family": family, "config": dataclasses.asdict(model_config)})

        step = int(jax.device_get(state.step))
        writer = MetricsWriter(workdir_, enabled=is_main, tensorboard=bool(config.logging.tensorboard))
        grids: list[str] = []
        last_metrics: dict[str, float] = {}
        stopped = False
        sampler = _make_sampler(task, mesh) if int(config.logging.sample_every_steps) > 0 else None
        fid_eval = make_fid_evaluator(config, task, mesh)  # config.evals.fid; None when off
        if step >= num_steps:
            _say(f"already trained to step {step} >= num_steps={num_steps}; nothing to do", is_main)
            return RunResult(state, step, False, {}, grids)
        if is_main:
            _write_json(workdir_, CONFIG_JSON, run_config.record(saved_config, config, step))
        batch_ndims = {k: np.ndim(v) + 1 for k, v in data.example.items()}
        step_fn = make_train_step(task, optimizer, schedule, float(training.ema_decay), mesh, shardings, batch_ndims)
        first_local = next(data.iterator)
        if hasattr(task, "check_batch"):  # labels / token ids against the model, before they turn into NaN under jit
            try:
                task.check_batch(first_local)
            except ValueError as e:
                raise ValueError(f"the first training batch does not fit the model: {e}") from None
        first = sh.global_batch(first_local, mesh, global_batch_size)
        lowered = step_fn.lower(state, first)
        compiled = lowered.compile()
        flops = perf.flops_per_device(lowered, mesh.size)
        peak, peak_source = perf.peak_flops_per_device(float(config.logging.peak_flops_per_device))
        _say(
            f"mesh {dict(mesh.shape)} over {mesh.size} device(s), {jax.process_count()} process(es); "
            f"global batch {global_batch_size}; {flops / 1e9:.2f} GFLOP/step/device; peak {peak / 1e12:.3g} "
            f"TFLOP/s/device ({peak_source})",
            is_main,
        )
        progress = _progress_bar(config, is_main, step, num_steps)
        window = _Window()
        batch = first
        log_every, ckpt_every = int(config.logging.every_steps), int(config.checkpoint.every_steps)
        sample_every = int(config.logging.sample_every_steps)
        while step < num_steps:
            if batch is None:
                batch = sh.global_batch(next(data.iterator), mesh, global_batch_size)
            state, metrics = compiled(state, batch)
            batch = None
            step += 1
            window.add(step, metrics)
            if progress is not None:
                progress.update(1)
            stop_requested = watcher.should_stop(step) or step == stop_at_step
            save_now = step % ckpt_every == 0 or step == num_steps or stop_requested
            if step % log_every == 0 or save_now:
                last_metrics = _flush_window(window, writer, step, num_steps, global_batch_size, flops,
                                             (peak, peak_source), last_saved, progress)
            if save_now:
                try:
                    checkpointer.save(step, state, data.iterator)
                except NonFiniteStateError as e:
                    raise NonFiniteStateError(f"{e}. The last good checkpoint is step {last_saved} (restored on "
                                              f"restart); {_NAN_ADVICE}") from None
                last_saved = step
            if sampler is not None and (step % sample_every == 0 or step == num_steps):
                grids.append(_write_grid(sampler, state, step, task, workdir_, is_main, writer))
            if fid_eval is not None and fid_eval.due(step, num_steps):
                writer.write(step, fid_eval(state.ema_params))
                writer.flush()
                window.restart_clock()
            if save_now or (sampler is not None and step % sample_every == 0):
                window.restart_clock()
            if stop_requested:
                stopped = True
                reason = watcher.signal_name or f"stop_at_step={stop_at_step}"
                _say(f"stopping at step {step} ({reason}); checkpoint saved", is_main)
                break
        if progress is not None:
            progress.close()
        return RunResult(state, step, stopped, last_metrics, grids)
    finally:
        checkpointer.close()
        if writer is not None:
            writer.close()
        watcher.close()
        workdir_.cleanup()


def _flush_window(window: _Window, writer: MetricsWriter, step: int, num_steps: int, global_batch_size: int,
                  flops: float, peak: tuple[float, str], last_saved, progress) -> dict[str, float]:
    rows, steps_per_sec = window.drain()
    _check_finite(rows, last_saved)
    if not rows:
        return {}
    for row_step, metrics in rows[:-1]:
        writer.write(row_step, metrics)
    summary = dict(rows[-1][1])
    if steps_per_sec is not None:
        summary.update(
            steps_per_sec=steps_per_sec,
            examples_per_sec=steps_per_sec * global_batch_size,
            mfu=perf.mfu(flops, steps_per_sec, peak[0]),
        )
    window.restart_clock()
    writer.write(step, summary)
    writer.flush()
    if writer.enabled:
        line = log_line(step, num_steps, rows, steps_per_sec, summary.get("mfu") if _stable_peak(peak[1]) else None)
        if progress is not None:
            progress.write(line, file=sys.stderr)  # above the bar, which stays whole
        else:
            print(line, file=sys.stderr, flush=True)
    return summary


def _stable_peak(source: str) -> bool:
    """MFU is printed only against a datasheet or configured peak: a CPU matmul measured at start
    varies 3x between runs on a shared machine (the value stays in metrics.jsonl)."""
    return not source.startswith("measured")


def log_line(step: int, num_steps: int, rows, steps_per_sec: float | None, mfu: float | None = None) -> str:
    """``step 200/4000 (5%): loss 0.1234 (mean of 100 steps), grad_norm 0.456, 12.3 steps/s, ETA 5m10s``."""
    losses = [m["loss"] for _, m in rows]
    parts = [f"step {step}/{num_steps} ({step / num_steps:.0%}): loss {np.mean(losses):.4f}"
             + (f" (mean of {len(losses)} steps)" if len(losses) > 1 else "")]
    norms = [m["grad_norm"] for _, m in rows if "grad_norm" in m]
    if norms:
        parts.append(f"grad_norm {np.mean(norms):.3f}")
    if steps_per_sec:
        parts.append(f"{steps_per_sec:.2f} steps/s")
        parts.append(f"ETA {_duration((num_steps - step) / steps_per_sec)}")
    if mfu is not None:
        parts.append(f"MFU {mfu:.1%}")
    return ", ".join(parts)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _progress_bar(config, is_main: bool, step: int, num_steps: int):
    if not (is_main and config.logging.progress_bar and sys.stderr.isatty()):
        return None
    from tqdm import tqdm

    return tqdm(total=num_steps, initial=step, unit="step", dynamic_ncols=True)


def _make_sampler(task, mesh):
    """The task's sampling hook jitted with a replicated output (every process runs it), or None."""
    if not hasattr(task, "sample"):
        return None
    return jax.jit(task.sample, out_shardings=sh.replicated(mesh))


def _write_grid(sampler, state: TrainState, step: int, task, workdir: Workdir, is_main: bool,
                writer: MetricsWriter) -> str:
    from jaxlab.eval.images import make_grid, save_grid, to_uint8

    images = np.asarray(jax.device_get(sampler(state.ema_params, jax.random.fold_in(state.rng, 2**31 - 1))))
    if not np.isfinite(images).all():
        raise FloatingPointError(
            f"the sample grid at step {step} holds NaN/Inf ({np.mean(~np.isfinite(images)):.1%} of the values) "
            f"although the EMA params are finite; check config.sample (cfg_scale, num_steps) and config.diffusion"
        )
    relpath = f"{SAMPLES_DIR}/step_{step:08d}.png"
    if is_main:
        scale = max(1, 64 // images.shape[1])
        ncol = getattr(task, "grid_columns", 0) or None
        save_grid(workdir.local_file(relpath), images, ncol=ncol, scale=scale)
        workdir.publish(relpath)
        writer.image(step, "samples", make_grid(to_uint8(images), ncol))
    return str(workdir.path / relpath)
