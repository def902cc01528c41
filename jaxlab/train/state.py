"""``TrainState``: everything a run needs to continue, as one pytree, and its sharded creation."""

from collections.abc import Mapping

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from jaxlab.train import sharding as sh
from jaxlab.train.task import Task


@flax.struct.dataclass
class TrainState:
    """step ``[]`` int32, params / EMA params (float32 trees), optimizer state, and ``rng``.

    ``rng`` is raw PRNG key data ``[2]`` uint32 and never changes: step ``s`` draws its
    randomness from ``fold_in(rng, s)``, so a run resumed at step ``s`` repeats it exactly.
    """

    step: jax.Array
    params: object
    ema_params: object
    opt_state: object
    rng: jax.Array


def init_batch(example: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
    """A one-row batch of zeros shaped like ``example`` (parameter shapes do not depend on the batch size)."""
    return {k: jnp.zeros((1,) + np.shape(v), np.asarray(v).dtype) for k, v in example.items()}


def boxed_state(task: Task, optimizer: optax.GradientTransformation, seed: int, example) -> TrainState:
    """The initial state with leaves still boxed in ``nn.Partitioned`` (logical axis names).

    The optimizer state is built from the boxed params, so its moments carry the same names.
    """
    rng = jax.random.PRNGKey(seed)
    init_rng, state_rng = jax.random.split(rng)
    params = task.init_params(init_rng, init_batch(example))
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        ema_params=params,
        opt_state=optimizer.init(params),
        rng=state_rng,
    )


def state_shardings(task: Task, optimizer, seed: int, example, mesh: Mesh) -> tuple[TrainState, TrainState]:
    """``(abstract_state, shardings)``: ShapeDtypeStructs (carrying their sharding) and NamedShardings."""
    boxed = jax.eval_shape(lambda: boxed_state(task, optimizer, seed, example))
    shardings = sh.tree_shardings(boxed, mesh)
    abstract = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), nn.unbox(boxed), shardings
    )
    return abstract, shardings


def create_state(task: Task, optimizer, seed: int, example, shardings: TrainState) -> TrainState:
    """The initial state, created directly in its sharded layout (no host copy of the params)."""

    def init():
        return nn.unbox(boxed_state(task, optimizer, seed, example))

    return jax.jit(init, out_shardings=shardings)()
