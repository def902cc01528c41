"""Parameter inheritance (PanGu-pi Pro): a smaller LLaMA-layout ``CausalLM`` initialised from a larger trained one.

All functions are pure over param pytrees of the *unscanned* layout (``layers_{i}``; convert a scanned
tree with ``jaxlab.lm.task.relayout``), ``layout="llama"`` with ``num_kv_heads == num_heads``.

1. **Layer importance by removal** (``layer_importance``): the held-out loss with layer ``i`` removed
   (the residual passes through) minus the full model's loss, for every ``i``.
2. **Depth selection** (``select_depth``): keep the first ``keep_first`` and last ``keep_last`` layers
   (the paper: layers near both ends matter most), and fill the middle ``"uniform"`` (evenly spaced,
   default), by ``"importance"`` (the largest loss increases) or ``"random"``. The paper's text says
   "keep first/last, sample the middle"; the counts and the sampling rule are not published, so
   these are jaxlab's switches.
3. **Width selection** over three unit groups: residual channels (``hidden [D]``, shared by all
   layers), attention heads (``heads [L, H]``) and FFN neurons (``mlp [L, F]``). A unit's mask
   multiplies what it writes: the embedding column / every ``o_proj`` and ``down`` output column
   (channel), the head's ``o_proj`` rows (head), the ``down`` row (neuron); ``apply_masks`` returns
   the masked params, so the unchanged model runs them. Criteria (``unit_scores``):
   ``"learned"``: a Gumbel-sigmoid mask per unit, ``m = sigmoid((logit + logistic noise) / tau)``,
   hard 0/1 forward with the straight-through gradient of the soft value, trained on data with the
   parent's weights frozen and a penalty ``penalty * sum_groups (mean sigmoid(logit) - keep_ratio)^2``
   pulling each group to its target width (``learn_masks``); ``"taylor"``: ``mean_batches |dL/dm|`` at
   ``m = 1`` (first-order loss change of removing the unit); ``"l1"`` / ``"l2"``: the norm of every
   weight the unit owns; ``"random"``. The top-k scores of each group are kept (exact target widths).
   The paper (3rd-party notes) uses a Gumbel-sigmoid + STE mask with a sparsity penalty; its
   temperature, penalty form and weight, token budget and whether the weights train with the mask
   are not published: these are jaxlab's choices (defaults in ``MaskConfig``).
4. **Extraction** (``extract``): the kept sub-matrices as the params of the smaller config. RMSNorm
   averages over the width, so the kept norm scales are multiplied by ``sqrt(D/D')`` and ``norm_eps``
   by ``D/D'``: the extracted model then equals the hard-masked parent exactly (float rounding).
"""

import dataclasses
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxlab.models.lm import CausalLM, LMConfig

CRITERIA = ("learned", "taylor", "l1", "l2", "random")
MIDDLE_RULES = ("uniform", "importance", "random")
GROUPS = ("hidden", "heads", "mlp")


def check_parent(config: LMConfig, params: dict) -> None:
    """Inheritance works on unscanned LLaMA-layout MHA models; anything else is a clear error."""
    if config.layout != "llama" or config.num_kv_heads != config.num_heads or config.attention != "softmax":
        raise ValueError(f"parameter inheritance supports layout='llama' softmax models with num_kv_heads == num_heads; "
                         f"got layout={config.layout!r}, attention={config.attention!r}, "
                         f"{config.num_kv_heads} kv heads for {config.num_heads} heads")
    if "blocks" in params:
        raise ValueError("params are in the scanned layout (blocks/block); convert them first with "
                         "jaxlab.lm.task.relayout(params, num_layers, scan_blocks=False)")
    missing = [i for i in range(config.num_layers) if f"layers_{i}" not in params]
    if missing:
        raise ValueError(f"params lack layers {missing} of the config's num_layers={config.num_layers}")


# ----------------------------------------------------------------------------------------------- depth


def drop_layers(config: LMConfig, params: dict, keep: Sequence[int]) -> tuple[LMConfig, dict]:
    """The model made of layers ``keep`` (ascending, distinct), renumbered ``layers_0 ..``."""
    check_parent(config, params)
    keep = [int(i) for i in keep]
    if not keep or sorted(set(keep)) != keep or keep[0] < 0 or keep[-1] >= config.num_layers:
        raise ValueError(f"layers to keep {keep} must be distinct, ascending and in [0, {config.num_layers})")
    out = {k: v for k, v in params.items() if not k.startswith("layers_")}
    out.update({f"layers_{j}": params[f"layers_{i}"] for j, i in enumerate(keep)})
    return config.replace(num_layers=len(keep)), out


def layer_importance(eval_loss: Callable[[LMConfig, dict], float], config: LMConfig, params: dict) -> np.ndarray:
    """``[L]`` loss increase when layer ``i`` is removed: ``eval_loss(without i) - eval_loss(full)``.

    ``eval_loss(config, params) -> float`` is the held-out loss of a model (e.g. mean NLL over fixed batches).
    """
    check_parent(config, params)
    if config.num_layers < 2:
        raise ValueError("layer importance needs a model with at least 2 layers")
    base = float(eval_loss(config, params))
    out = []
    for i in range(config.num_layers):
        cfg, p = drop_layers(config, params, [j for j in range(config.num_layers) if j != i])
        out.append(float(eval_loss(cfg, p)) - base)
    return np.asarray(out)


def select_depth(importance: Sequence[float], target_depth: int, *, keep_first: int = 1, keep_last: int = 1,
                 middle: str = "uniform", seed: int = 0) -> tuple[int, ...]:
    """Sorted indices of ``target_depth`` parent layers (see the module docstring for the rules)."""
    importance = np.asarray(importance, np.float64)
    depth = len(importance)
    if middle not in MIDDLE_RULES:
        raise ValueError(f"middle={middle!r} is not a rule; allowed: {list(MIDDLE_RULES)}")
    if not 1 <= target_depth <= depth:
        raise ValueError(f"target depth {target_depth} must be in [1, {depth}] (the parent has {depth} layers); "
                         f"inheritance can only remove layers")
    if keep_first < 0 or keep_last < 0 or keep_first + keep_last > target_depth:
        raise ValueError(f"keep_first={keep_first} + keep_last={keep_last} must be >= 0 each and <= target depth "
                         f"{target_depth}")
    ends = list(range(keep_first)) + list(range(depth - keep_last, depth))
    pool = [i for i in range(depth) if i not in ends]
    need = target_depth - len(set(ends))
    if middle == "uniform":
        picks = [pool[int(round(x))] for x in np.linspace(0, len(pool) - 1, need)] if need else []
        if len(set(picks)) < need:  # rounding collided: fall back to the first free ones
            picks = sorted(set(picks) | set([i for i in pool if i not in picks][: need - len(set(picks))]))
    elif middle == "importance":
        picks = sorted(pool, key=lambda i: (-importance[i], i))[:need]
    else:
        picks = list(np.random.default_rng(seed).choice(pool, size=need, replace=False)) if need else []
    return tuple(sorted(set(ends) | {int(i) for i in picks}))


# ----------------------------------------------------------------------------------------------- masks


def ones_masks(config: LMConfig) -> dict:
    """All-ones masks ``{"hidden": [D], "heads": [L, H], "mlp": [L, F]}`` float32."""
    return {"hidden": jnp.ones((config.hidden_size,)), "heads": jnp.ones((config.num_layers, config.num_heads)),
            "mlp": jnp.ones((config.num_layers, config.intermediate_size))}


def apply_masks(config: LMConfig, params: dict, masks: dict) -> dict:
    """Params whose forward equals the model with each unit's output scaled by its mask value."""
    hidden = masks["hidden"]
    out = dict(params)
    out["embed"] = {"embedding": params["embed"]["embedding"] * hidden}
    for i in range(config.num_layers):
        layer = params[f"layers_{i}"]
        o = layer["attn"]["o_proj"]["kernel"] * masks["heads"][i][:, None, None] * hidden
        down = layer["mlp"]["down"]["kernel"] * masks["mlp"][i][:, None] * hidden
        out[f"layers_{i}"] = {**layer, "attn": {**layer["attn"], "o_proj": {"kernel": o}},
                              "mlp": {**layer["mlp"], "down": {"kernel": down}}}
    return out


@dataclasses.dataclass(frozen=True)
class MaskConfig:
    """Learned-mask training (jaxlab's choices; the paper does not publish them).

    ``init_logit``: initial logit of every unit (sigmoid 0.95, close to the full parent);
    ``temperature``: Gumbel-sigmoid temperature; ``penalty``: weight of the squared distance of each
    group's mean keep probability from its target ratio; ``learning_rate``: Adam on the logits.
    """

    steps: int = 100
    learning_rate: float = 0.05
    temperature: float = 0.5
    penalty: float = 10.0
    init_logit: float = 3.0

    def validate(self) -> None:
        if self.steps < 1 or self.learning_rate <= 0 or self.temperature <= 0 or self.penalty < 0:
            raise ValueError(f"bad MaskConfig {self}: steps >= 1, learning_rate > 0, temperature > 0, penalty >= 0")


def keep_ratios(parent: LMConfig, child_widths: dict) -> dict:
    """Target keep fraction per group from ``child_widths = {"hidden": D', "heads": H', "mlp": F'}``."""
    totals = {"hidden": parent.hidden_size, "heads": parent.num_heads, "mlp": parent.intermediate_size}
    out = {}
    for g in GROUPS:
        n = int(child_widths[g])
        if not 1 <= n <= totals[g]:
            raise ValueError(f"target {g} width {n} must be in [1, {totals[g]}] (the parent's); sparsity target "
                             f"{1 - n / totals[g]:.3f} is out of range [0, 1)")
        out[g] = n / totals[g]
    return out


def gumbel_sigmoid_st(logits: jax.Array, rng: jax.Array, temperature: float) -> jax.Array:
    """Hard 0/1 sample forward, gradient of the relaxed ``sigmoid((logits + logistic noise) / temperature)``."""
    u = jax.random.uniform(rng, logits.shape, minval=1e-6, maxval=1 - 1e-6)
    soft = jax.nn.sigmoid((logits + jnp.log(u) - jnp.log1p(-u)) / temperature)
    hard = (soft > 0.5).astype(soft.dtype)
    return hard + soft - jax.lax.stop_gradient(soft)


def sparsity_penalty(logits: dict, ratios: dict) -> jax.Array:
    """``sum_groups (mean sigmoid(logit) - keep_ratio)^2``."""
    return sum((jnp.mean(jax.nn.sigmoid(logits[g])) - ratios[g]) ** 2 for g in GROUPS)


def learn_masks(loss: Callable[[LMConfig, dict, dict], jax.Array], config: LMConfig, params: dict,
                child_widths: dict, batches: Sequence[dict], mask_config: MaskConfig = MaskConfig(),
                seed: int = 0) -> tuple[dict, list[float]]:
    """Trains Gumbel-sigmoid mask logits on ``batches`` (cycled) with the parent frozen.

    ``loss(config, params, batch) -> scalar`` (jittable). Returns the logits (same tree as
    ``ones_masks``) and the per-step task losses.
    """
    check_parent(config, params)
    mask_config.validate()
    ratios = keep_ratios(config, child_widths)
    if not batches:
        raise ValueError("learn_masks needs at least one batch")
    logits = jax.tree.map(lambda m: jnp.full(m.shape, mask_config.init_logit, jnp.float32), ones_masks(config))
    opt = optax.adam(mask_config.learning_rate)
    opt_state = opt.init(logits)
    params = jax.tree.map(jnp.asarray, params)

    @jax.jit
    def step(logits, opt_state, batch, rng):
        def objective(lg):
            keys = dict(zip(GROUPS, jax.random.split(rng, len(GROUPS))))
            masks = {g: gumbel_sigmoid_st(lg[g], keys[g], mask_config.temperature) for g in GROUPS}
            task = loss(config, apply_masks(config, params, masks), batch)
            return task + mask_config.penalty * sparsity_penalty(lg, ratios), task

        (_, task), grads = jax.value_and_grad(objective, has_aux=True)(logits)
        updates, opt_state = opt.update(grads, opt_state, logits)
        return optax.apply_updates(logits, updates), opt_state, task

    history = []
    key = jax.random.key(seed)
    for s in range(mask_config.steps):
        logits, opt_state, task = step(logits, opt_state, batches[s % len(batches)], jax.random.fold_in(key, s))
        history.append(float(task))
    if not np.all(np.isfinite(history)):
        raise FloatingPointError(f"mask training loss became non-finite: {history[-5:]}; lower the learning rate")
    return jax.tree.map(np.asarray, logits), history


def taylor_scores(loss: Callable[[LMConfig, dict, dict], jax.Array], config: LMConfig, params: dict,
                  batches: Sequence[dict]) -> dict:
    """``mean_batches |dL/dm|`` at ``m = 1`` per unit (tree of ``ones_masks``)."""
    grad = jax.jit(jax.grad(lambda m, b: loss(config, apply_masks(config, params, m), b)))
    total = jax.tree.map(np.zeros_like, jax.tree.map(np.asarray, ones_masks(config)))
    for b in batches:
        total = jax.tree.map(lambda t, g: t + np.abs(np.asarray(g)), total, grad(ones_masks(config), b))
    return jax.tree.map(lambda t: t / len(batches), total)


def norm_scores(config: LMConfig, params: dict, order: int) -> dict:
    """The L1 (``order=1``) or L2 (``order=2``) norm of every weight each unit owns."""
    f = (lambda x: np.abs(x)) if order == 1 else (lambda x: np.square(x))
    finish = (lambda s: s) if order == 1 else np.sqrt
    hidden = f(np.asarray(params["embed"]["embedding"])).sum(0) + f(np.asarray(params["lm_head"]["kernel"])).sum(1) \
        if "lm_head" in params else f(np.asarray(params["embed"]["embedding"])).sum(0)
    heads, mlp = [], []
    for i in range(config.num_layers):
        layer = jax.tree.map(np.asarray, params[f"layers_{i}"])
        a, m = layer["attn"], layer["mlp"]
        hidden = hidden + sum(f(a[k]["kernel"]).sum((1, 2)) for k in ("q_proj", "k_proj", "v_proj"))
        hidden = hidden + f(a["o_proj"]["kernel"]).sum((0, 1)) + f(m["down"]["kernel"]).sum(0)
        hidden = hidden + f(m["gate"]["kernel"]).sum(1) + f(m["up"]["kernel"]).sum(1)
        heads.append(sum(f(a[k]["kernel"]).sum((0, 2)) for k in ("q_proj", "k_proj", "v_proj"))
                     + f(a["o_proj"]["kernel"]).sum((1, 2)))
        mlp.append(f(m["gate"]["kernel"]).sum(0) + f(m["up"]["kernel"]).sum(0) + f(m["down"]["kernel"]).sum(1))
    return {"hidden": finish(hidden), "heads": finish(np.stack(heads)), "mlp": finish(np.stack(mlp))}


def random_scores(config: LMConfig, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {g: rng.random(np.shape(m)) for g, m in ones_masks(config).items()}


def select_units(scores: dict, child_widths: dict) -> dict:
    """Top-k indices (ascending) per group: ``hidden [D']``, ``heads [L, H']``, ``mlp [L, F']``."""
    top = lambda s, k: np.sort(np.argsort(-np.asarray(s), kind="stable")[:k])  # noqa: E731
    return {"hidden": top(scores["hidden"], int(child_widths["hidden"])),
            "heads": np.stack([top(s, int(child_widths["heads"])) for s in scores["heads"]]),
            "mlp": np.stack([top(s, int(child_widths["mlp"])) for s in scores["mlp"]])}


# ----------------------------------------------------------------------------------------------- extraction


def extract(config: LMConfig, params: dict, keep: dict) -> tuple[LMConfig, dict]:
    """The child config and params of the kept units (``select_units``' tree, for this config's layers).

    The child has ``hidden_size = len(keep["hidden"])``, ``num_heads = keep["heads"].shape[1]`` (the
    parent's head_dim, so ``hidden_size`` must equal heads x head_dim), ``intermediate_size =
    keep["mlp"].shape[1]``; norm scales and eps are rescaled as the module docstring says.
    """
    check_parent(config, params)
    h_idx, head_idx, f_idx = (np.asarray(keep[g]) for g in GROUPS)
    d_new, h_new, f_new = len(h_idx), head_idx.shape[1], f_idx.shape[1]
    if head_idx.shape[0] != config.num_layers or f_idx.shape[0] != config.num_layers:
        raise ValueError(f"keep has {head_idx.shape[0]} head rows and {f_idx.shape[0]} mlp rows for "
                         f"{config.num_layers} layers; select depth first (drop_layers) and widths for those layers")
    if d_new != h_new * config.head_dim:
        raise ValueError(f"the child's hidden size {d_new} must equal kept heads {h_new} x head_dim {config.head_dim}")
    child = config.replace(hidden_size=d_new, num_heads=h_new, num_kv_heads=h_new, intermediate_size=f_new,
                           norm_eps=config.norm_eps * config.hidden_size / d_new)
    scale = np.sqrt(config.hidden_size / d_new)
    p = jax.tree.map(np.asarray, params)
    out = {"embed": {"embedding": p["embed"]["embedding"][:, h_idx]},
           "final_norm": {"norm": {"scale": p["final_norm"]["norm"]["scale"][h_idx] * scale}}}
    if "lm_head" in p:
        out["lm_head"] = {"kernel": p["lm_head"]["kernel"][h_idx]}
    for i in range(config.num_layers):
        a, m, hi, fi = p[f"layers_{i}"]["attn"], p[f"layers_{i}"]["mlp"], head_idx[i], f_idx[i]
        qkv = {k: {"kernel": a[k]["kernel"][h_idx][:, hi]} for k in ("q_proj", "k_proj", "v_proj")}
        out[f"layers_{i}"] = {
            "attn": {**qkv, "o_proj": {"kernel": a["o_proj"]["kernel"][hi][:, :, h_idx]}},
            "mlp": {"gate": {"kernel": m["gate"]["kernel"][h_idx][:, fi]}, "up": {"kernel": m["up"]["kernel"][h_idx][:, fi]},
                    "down": {"kernel": m["down"]["kernel"][fi][:, h_idx]}},
            "ln_attn": {"norm": {"scale": p[f"layers_{i}"]["ln_attn"]["norm"]["scale"][h_idx] * scale}},
            "ln_mlp": {"norm": {"scale": p[f"layers_{i}"]["ln_mlp"]["norm"]["scale"][h_idx] * scale}},
        }
    return child, out


def hard_masks(config: LMConfig, keep: dict) -> dict:
    """0/1 masks (``ones_masks`` tree) that are 1 exactly on the kept units of ``keep``."""
    masks = jax.tree.map(np.zeros_like, jax.tree.map(np.asarray, ones_masks(config)))
    masks["hidden"][np.asarray(keep["hidden"])] = 1.0
    for i in range(config.num_layers):
        masks["heads"][i, np.asarray(keep["heads"][i])] = 1.0
        masks["mlp"][i, np.asarray(keep["mlp"][i])] = 1.0
    return masks


def lm_loss(config: LMConfig, params: dict, batch: dict) -> jax.Array:
    """Mean next-token NLL of ``CausalLM(config)`` on ``batch`` (``tokens``, optional ``segment_ids``)."""
    from jaxlab.lm.task import next_token_loss

    tokens = jnp.asarray(batch["tokens"], jnp.int32)
    seg = batch.get("segment_ids")
    seg = None if seg is None else jnp.asarray(seg, jnp.int32)
    logits, _ = CausalLM(config).apply({"params": params}, tokens, seg)
    return next_token_loss(logits, tokens, seg)[0]


def unit_scores(criterion: str, config: LMConfig, params: dict, batches: Sequence[dict], child_widths: dict,
                *, mask_config: MaskConfig = MaskConfig(), seed: int = 0) -> dict:
    """Scores per unit (higher = keep) by ``criterion`` in ``CRITERIA``, using ``lm_loss`` on ``batches``."""
    if criterion not in CRITERIA:
        raise ValueError(f"criterion={criterion!r} is unknown; allowed: {list(CRITERIA)}")
    keep_ratios(config, child_widths)  # range check before any work
    if criterion == "learned":
        return learn_masks(lm_loss, config, params, child_widths, batches, mask_config, seed)[0]
    if criterion == "taylor":
        return taylor_scores(lm_loss, config, params, batches)
    if criterion == "random":
        return random_scores(config, seed)
    return norm_scores(config, params, 1 if criterion == "l1" else 2)


__all__ = ["CRITERIA", "MaskConfig", "apply_masks", "drop_layers", "extract", "gumbel_sigmoid_st", "hard_masks",
           "keep_ratios", "layer_importance", "learn_masks", "lm_loss", "norm_scores", "ones_masks", "random_scores",
           "select_depth", "select_units", "sparsity_penalty", "taylor_scores", "unit_scores"]
