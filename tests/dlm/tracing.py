"""Trace counting for the compile-once tests (the library holds no test instrumentation).

- ``count_jit_traces()``: top-level ``jax.jit`` traces by the traced function's name, from the
  event JAX reports to ``jax.monitoring`` for each trace (a retrace shows as a second count);
  ``programs(counts)`` keeps the jaxlab.dlm decoder/sampler programs (eager operations report
  their primitives' names too).
- ``counting(module)``: the module as an instance of a subclass whose ``__call__`` counts its
  traces in ``model_traces`` (a Python side effect runs once per trace of a call site, not once per
  executed step): a sampler whose loop is staged (a ``lax`` loop) traces the model a fixed few
  times however many steps it runs; a Python-unrolled loop would trace it once per step.
"""

import collections
import contextlib

import jax

from jaxlab.dlm import decoding, remasking, samplers

JIT_TRACE_EVENT = "/jax/core/compile/jaxpr_trace_duration"


@contextlib.contextmanager
def count_jit_traces():
    """Yields a ``Counter`` of the top-level jit traces (by function name) made inside the block."""
    counts: collections.Counter = collections.Counter()

    def listener(event: str, duration: float, **kwargs) -> None:
        if event == JIT_TRACE_EVENT:
            counts[kwargs.get("fun_name")] += 1

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield counts
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


# The functions jaxlab.dlm compiles (one jax.jit program per configuration).
PROGRAMS = frozenset(f.__name__ for f in (decoding._decode, remasking._remdm, remasking._llada_remask, remasking._remedi,
                                          samplers._llada, samplers._fastdllm))


def programs(counts: collections.Counter) -> dict[str, int]:
    """The traces of jaxlab.dlm's compiled programs among ``counts``."""
    return {name: n for name, n in counts.items() if name in PROGRAMS}


_COUNTING: dict[type, type] = {}


def counting(module):
    """A copy of ``module`` (same config) whose class counts its ``__call__`` traces in ``model_traces``."""
    cls = type(module)
    if cls not in _COUNTING:

        def __call__(self, *args, **kwargs):
            type(self).model_traces += 1
            return cls.__call__(self, *args, **kwargs)

        _COUNTING[cls] = type(f"Counting{cls.__name__}", (cls,), {"__call__": __call__, "model_traces": 0})
    return _COUNTING[cls](module.config)
