"""Live streaming: every decoder can report its token state to the host after each forward, while
its jitted loop is still running.

Every decoder in ``jaxlab.dlm`` (``decode``, ``llada_generate``, ``fastdllm_generate``,
``remdm_generate``, ``llada_remask_generate``, ``remedi_generate``) takes
``on_step(step: int, tokens: np.ndarray [B, P+G] int32)``: it is called on the host after model
call ``step`` (0-based, the index ``commit_step`` records) with the tokens as they stand after that
call's commits (and, for the remasking samplers, re-masks; [MASK] = ``mask_id`` where nothing is
committed). The decoded result is the same with and without ``on_step`` (tested token for token).

How: ``emit(stream, step, tokens)`` at the end of each loop body is ``jax.debug.callback(...,
ordered=True)`` when ``stream`` is set, nothing otherwise. The decoder stays one jitted
``lax.while_loop`` / ``fori_loop``; XLA calls back into Python from inside the loop, so tokens
appear as each step commits, not after decoding. ``stream`` is part of each decoder's static
settings, so a streaming decoder is a second compiled program and the non-streaming one carries no
callback (no host transfer per step on an accelerator).

Alternatives considered: (a) one jitted program per block, printing between calls -- only the
block decoders have blocks (DCD's sliding window does not), it streams per block rather than per
step, and it would turn each sampler's single loop into a host loop with its state round-tripped;
(b) ``jax.experimental.io_callback`` -- the same mechanism, meant for callbacks that return values
into the computation; ``jax.debug.callback`` is the side-effect-only form, never removed as dead
code, and ``ordered=True`` keeps the steps in order.

The callback runs on an XLA runtime thread, not on the caller's, so the listener is process-wide:
one streaming decode at a time (a second one while the first runs raises). An exception raised by
the listener is re-raised by the decoder after the loop finishes.
"""

import contextlib
import threading

import jax
import numpy as np

_lock = threading.Lock()
_listener = None
_error: list[BaseException] = []


def emit(stream: bool, step, tokens) -> None:
    """Inside a traced loop body: send ``(step, tokens)`` to the current listener when ``stream``."""
    if stream:
        jax.debug.callback(_dispatch, step, tokens, ordered=True)


def _dispatch(step, tokens) -> None:
    listener = _listener
    if listener is None or _error:
        return
    try:
        listener(int(step), np.asarray(tokens))
    except BaseException as e:  # surfaced by ``listening`` once the loop has finished
        _error.append(e)


@contextlib.contextmanager
def listening(on_step):
    """Routes ``emit`` calls to ``on_step`` while the block runs (no-op for ``None``); the block must wait for
    the decoder's outputs (``jax.device_get``), so that every step has been delivered when it exits."""
    global _listener
    if on_step is None:
        yield
        return
    if not callable(on_step):
        raise TypeError(f"on_step must be a function (step, tokens) -> None, got {type(on_step).__name__}")
    if not _lock.acquire(blocking=False):
        raise RuntimeError("another streaming decode is running in this process; stream one decode at a time")
    try:
        _listener = on_step
        _error.clear()
        yield
        jax.effects_barrier()
        if _error:
            raise _error[0]
    finally:
        _listener = None
        _error.clear()
        _lock.release()
