"""Priors over QAC codes for unconditional sampling (issue 20).

At sampling time the clean image is unknown, so its code must come from a distribution over codes.
QAC's choice is not known (the paper's method section was unreadable); two options, both fitted
to the code indices ``[M, L]`` of the training images (``CodeSpec.indices(encode(x_0))``):

- ``EmpiricalPrior`` (``prior="empirical"``, the default): draw a stored training code uniformly:
  exactly the empirical code distribution; nothing to train; stores M x L ints.
- ``ARPrior`` (``prior="ar"``): a small autoregressive model ``p(k_l | k_<l)`` over the L tokens of a
  code (MADE-style: one hidden layer on the one-hot of the earlier tokens, masked per position,
  plus a learned per-position bias), trained by maximum likelihood with Adam, full batch. It can
  give unseen codes non-zero probability; with L = 1 it is a categorical distribution.

Both give ``sample(key, n) -> [n, L]`` int32 indices; ``CodeSpec.from_indices`` turns them into codes.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax


def _check_indices(indices, vocab_size: int) -> np.ndarray:
    indices = np.asarray(indices)
    if indices.ndim != 2 or indices.shape[0] < 1 or not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(f"code indices must be a non-empty int array [M, L], got {indices.dtype} {indices.shape}")
    if indices.min() < 0 or indices.max() >= vocab_size:
        raise ValueError(f"code indices must lie in [0, {vocab_size}) (the vocabulary per token), got "
                         f"[{indices.min()}, {indices.max()}]: fit the prior on this run's codes")
    return indices.astype(np.int32)


@dataclasses.dataclass(frozen=True)
class EmpiricalPrior:
    """Uniform draws from the stored training codes ``indices [M, L]``."""

    indices: np.ndarray
    vocab_size: int

    @classmethod
    def fit(cls, indices, vocab_size: int) -> "EmpiricalPrior":
        return cls(_check_indices(indices, vocab_size), vocab_size)

    def sample(self, key: jax.Array, n: int) -> jax.Array:
        rows = jax.random.randint(key, (n,), 0, self.indices.shape[0])
        return jnp.asarray(self.indices)[rows]


def _ar_logits(params: dict, indices: jax.Array, vocab_size: int) -> jax.Array:
    """``[N, L]`` indices -> ``[N, L, V]`` logits of token l given tokens < l (teacher forcing)."""
    n, length = indices.shape
    onehot = jax.nn.one_hot(indices, vocab_size, dtype=jnp.float32).reshape(n, length * vocab_size)
    # mask[l, j * V + v] = 1 where j < l: position l sees the earlier tokens only.
    token_of_input = jnp.repeat(jnp.arange(length), vocab_size)
    mask = (token_of_input[None, :] < jnp.arange(length)[:, None]).astype(jnp.float32)  # [L, L*V]
    hidden = jnp.einsum("ni,li,ih->nlh", onehot, mask, params["w_in"]) + params["b_hidden"][None]  # [N, L, H]
    return jnp.einsum("nlh,lhv->nlv", jax.nn.relu(hidden), params["w_out"]) + params["b_out"][None]


@dataclasses.dataclass(frozen=True)
class ARPrior:
    """MADE-style autoregressive prior over ``L`` tokens of ``vocab_size`` values (module docstring)."""

    params: dict
    tokens: int
    vocab_size: int
    final_nll: float  # mean training negative log-likelihood per code, nats

    @classmethod
    def fit(cls, indices, vocab_size: int, *, hidden: int = 64, steps: int = 500, learning_rate: float = 1e-2,
            seed: int = 0) -> "ARPrior":
        indices = _check_indices(indices, vocab_size)
        if steps < 1 or hidden < 1:
            raise ValueError(f"config.qac.prior_steps={steps} and prior_hidden={hidden} must be >= 1")
        length = indices.shape[1]
        k_in, k_out = jax.random.split(jax.random.PRNGKey(seed))
        params = {
            "w_in": jax.random.normal(k_in, (length * vocab_size, hidden)) * 0.1,
            "b_hidden": jnp.zeros((length, hidden)),
            "w_out": jax.random.normal(k_out, (length, hidden, vocab_size)) * 0.1,
            "b_out": jnp.zeros((length, vocab_size)),
        }
        data = jnp.asarray(indices)
        opt = optax.adam(learning_rate)

        def nll(p):
            logp = jax.nn.log_softmax(_ar_logits(p, data, vocab_size))
            return -jnp.mean(jnp.sum(jnp.take_along_axis(logp, data[..., None], axis=-1)[..., 0], axis=-1))

        @jax.jit
        def train(p):
            def step(carry, _):
                p, state = carry
                loss, grads = jax.value_and_grad(nll)(p)
                updates, state = opt.update(grads, state, p)
                return (optax.apply_updates(p, updates), state), loss

            (p, _), losses = jax.lax.scan(step, (p, opt.init(p)), None, length=steps)
            return p, nll(p)

        params, final = train(params)
        final = float(final)
        if not np.isfinite(final):
            raise FloatingPointError(f"the AR code prior's training NLL is {final}: lower config.qac.prior_steps or the "
                                     f"learning rate")
        return cls(params, length, vocab_size, final)

    def log_prob(self, indices: jax.Array) -> jax.Array:
        """``[N, L]`` -> ``[N]`` log-probabilities (nats)."""
        logp = jax.nn.log_softmax(_ar_logits(self.params, indices, self.vocab_size))
        return jnp.sum(jnp.take_along_axis(logp, indices[..., None], axis=-1)[..., 0], axis=-1)

    def sample(self, key: jax.Array, n: int) -> jax.Array:
        """``[n, L]`` int32 indices, one token at a time (``lax.fori_loop``)."""

        def body(l, carry):
            idx, key = carry
            key, sub = jax.random.split(key)
            logits = _ar_logits(self.params, idx, self.vocab_size)[:, l]
            return idx.at[:, l].set(jax.random.categorical(sub, logits).astype(jnp.int32)), key

        init = jnp.zeros((n, self.tokens), jnp.int32)
        return jax.lax.fori_loop(0, self.tokens, body, (init, key))[0]


def fit_prior(kind: str, indices, vocab_size: int, *, hidden: int = 64, steps: int = 500, seed: int = 0):
    """``EmpiricalPrior`` or ``ARPrior`` (``kind`` = ``config.qac.prior``) fitted to ``indices [M, L]``."""
    if kind == "empirical":
        return EmpiricalPrior.fit(indices, vocab_size)
    if kind == "ar":
        return ARPrior.fit(indices, vocab_size, hidden=hidden, steps=steps, seed=seed)
    raise ValueError(f"config.qac.prior={kind!r} is unknown; allowed values: ['empirical', 'ar']")
