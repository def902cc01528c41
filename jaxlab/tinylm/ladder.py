"""The tiny-LM ladder (``launch/tinylm_ladder.py``): stages, their resumable outputs, and the report.

``run_ladder(spec, run_config)`` runs every stage whose output is missing (see the launcher's
docstring for the rungs). ``run_config(model, tokenizer=, steps=, seed=, batch_size=, seq_length=,
init_from=, selection=)`` builds a train config (``configs/tinylm.py:run_config``); training goes
through ``jaxlab.train.loop.train``, which resumes from a run's last checkpoint.
"""

import dataclasses
import json
import pathlib
import time
from typing import Callable

import jax
import numpy as np

from jaxlab.lm.data import PackedCorpus, corpus_documents
from jaxlab.lm.tokenizer import load_tokenizer, train_bpe
from jaxlab.models.lm import CausalLM, LMConfig
from jaxlab.tinylm import inheritance as inh
from jaxlab.tinylm import multiround as mr
from jaxlab.tinylm import tokenizer_pruning as tp
from jaxlab.tinylm.evaluation import decode_seconds, per_byte_perplexity, token_bytes
from jaxlab.tinylm.sizes import lm_param_count

RUNGS = ("baseline", "compact_tokenizer", "deeper_narrower", "inheritance", "second_round")
# Not a rung: rung 5's training with its batches drawn uniformly instead of by loss (same init, number of
# batches, schedule and tokens), so the loss-based selection's effect is told apart from the extra tokens.
CONTROLS = ("second_round_uniform",)
PROBE_STREAM_SEED = 7  # the training documents, windows drawn apart from the training stream (seed 0)


@dataclasses.dataclass(frozen=True)
class LadderSpec:
    workdir: pathlib.Path
    seeds: tuple
    steps: int
    teacher_steps: int
    batch_size: int
    seq_length: int
    vocab: int
    compact_vocab: int
    teacher: dict
    shallow: dict
    deep: dict
    criterion: str = "learned"
    mask_steps: int = 100
    probe_batches: int = 8
    middle: str = "uniform"
    round_ratio: float = 0.5
    decode_tokens: int = 120
    decode_repeats: int = 5
    keep_first: int = 1
    keep_last: int = 1
    # A teacher training workdir shared by every seed (``shared_teacher``); None: each seed trains its own
    # in ``seed<k>/teacher`` with its seed.
    teacher_dir: pathlib.Path | None = None

    def validate(self) -> None:
        t, d = LMConfig.from_dict(self.teacher), LMConfig.from_dict(self.deep)
        LMConfig.from_dict(self.shallow)
        if d.num_layers > t.num_layers:
            raise ValueError(f"the deeper-narrower model has {d.num_layers} layers > the teacher's {t.num_layers}; "
                             f"inheritance can only remove layers (raise --ladder_teacher's depth)")
        if d.head_dim != t.head_dim or d.hidden_size > t.hidden_size or d.intermediate_size > t.intermediate_size:
            raise ValueError(f"the deeper-narrower model (width {d.hidden_size}, head_dim {d.head_dim}, ffn "
                             f"{d.intermediate_size}) must fit inside the teacher (width {t.hidden_size}, head_dim "
                             f"{t.head_dim}, ffn {t.intermediate_size}) with the same head_dim")
        if min(self.steps, self.teacher_steps, self.batch_size, self.mask_steps, self.probe_batches) < 1:
            raise ValueError("steps, teacher steps, batch size, mask steps and probe batches must be >= 1")
        inh.keep_ratios(t, {"hidden": d.hidden_size, "heads": d.num_heads, "mlp": d.intermediate_size})


def shared_teacher(spec: LadderSpec, path: str | pathlib.Path) -> LadderSpec:
    """``spec`` with every seed inheriting from the teacher trained in the workdir ``path`` (as the paper
    inherits from one trained model) instead of training one teacher per seed.

    The teacher's shape and step count are read from its ``model.json`` / ``config.json``; it may still be
    training when the ladder starts (``check_shared_teacher``).
    """
    path = pathlib.Path(path).absolute()
    if not (path / "config.json").exists() or not (path / "model.json").exists():
        raise ValueError(f"--ladder_teacher_dir={path} is not a training workdir (no config.json / model.json); "
                         f"give the workdir of a ladder teacher (seed<k>/teacher) or of a `launch.train` LM run")
    config, model = _json(path / "config.json"), _json(path / "model.json")
    if model["family"] != "lm":
        raise ValueError(f"--ladder_teacher_dir={path} holds a {model['family']!r} model; the teacher must be an 'lm'")
    return dataclasses.replace(spec, teacher_dir=path, teacher=model["config"],
                               teacher_steps=int(config["training"]["num_steps"]))


def check_shared_teacher(spec: LadderSpec, toks: dict, finished: bool) -> None:
    """Raise unless the shared teacher was trained on this ladder's original tokenizer (and, when
    ``finished``, has its checkpoint at its last step: a teacher still training is an error only there)."""
    config = _json(spec.teacher_dir / "config.json")
    data = config["data"]
    tokenizer = pathlib.Path(_parse(data["path"]).get("tokenizer", "") if data["source"] == "lm_text" else "")
    ours = pathlib.Path(toks["original"]).read_bytes()
    if not tokenizer.name or not tokenizer.is_file() or tokenizer.read_bytes() != ours:
        raise ValueError(f"the teacher in {spec.teacher_dir} was trained on data {data['source']}:{data['path']!r}, "
                         f"not on this ladder's original tokenizer {toks['original']} (a BPE of --ladder_vocab="
                         f"{spec.vocab} ids); train it with the ladder (seed<k>/teacher of another workdir)")
    if finished and not _trained(spec.teacher_dir, spec.teacher_steps):
        raise ValueError(f"the teacher in {spec.teacher_dir} has no checkpoint at its last step {spec.teacher_steps} "
                         f"(still training?); rerun when it has: the rungs without a teacher are done and kept")


def run_dir(spec: LadderSpec, seed: int, name: str) -> pathlib.Path:
    """Where seed ``seed``'s run ``name`` (``"teacher"``, a rung or a control) is trained."""
    if name == "teacher" and spec.teacher_dir:
        return spec.teacher_dir
    return spec.workdir / f"seed{seed}" / name


def _json(path: pathlib.Path, payload=None):
    if payload is None:
        return json.loads(path.read_text()) if path.exists() else None
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    tmp.replace(path)
    return payload


def _data_spec(spec: LadderSpec, tokenizer: str, vocab: int) -> str:
    return f"corpus=pydoc,seq_length={spec.seq_length},vocab_size={vocab},tokenizer={tokenizer}"


# ----------------------------------------------------------------------------------------------- stages


def prepare_tokenizers(spec: LadderSpec, log) -> dict:
    """Original BPE, sharded resumable counts, the compact tokenizer, the vocab-size report."""
    tdir = spec.workdir / "tokenizer"
    tdir.mkdir(parents=True, exist_ok=True)
    orig = tdir / "original.json"
    if not orig.exists():
        train_bpe(corpus_documents("pydoc", "train"), spec.vocab).save(str(orig))
    tok = tp.read_tokenizer_file(orig)
    docs = corpus_documents("pydoc", "train")
    paths = [tdir / f"counts_{i}_of_2.npz" for i in range(2)]
    for i, p in enumerate(paths):
        tp.count_token_frequencies(tok, docs, shard_index=i, num_shards=2, counts_path=p)
    counts = tp.merge_counts(paths)
    compact = tdir / "compact"
    if not (compact / tp.REPORT_FILE).exists():
        report = tp.prune_tokenizer(tok, counts, spec.compact_vocab, compact)
        log(f"compact tokenizer: {report}")
    sizes = sorted({len(tp.required_ids(tok)) + 1, 512, spec.compact_vocab, 1024, 1536, spec.vocab})
    sizes = [s for s in sizes if len(tp.required_ids(tok)) <= s <= spec.vocab]
    rows = tp.vocab_size_report(tok, counts, sizes, LMConfig.from_dict(spec.deep))
    return {"original": str(orig), "compact": str(compact / "tokenizer.json"),
            "id_map": np.load(compact / tp.ID_MAP_FILE), "vocab_rows": rows}


def _trained(workdir: pathlib.Path, steps: int) -> bool:
    """Whether the training run in ``workdir`` has its checkpoint at its last step ``steps``."""
    return (workdir / "checkpoints" / str(steps)).exists()


def _train(run_config, workdir: pathlib.Path, log, **kwargs) -> pathlib.Path:
    from jaxlab.train.loop import train

    if _trained(workdir, kwargs["steps"]):
        return workdir
    start = time.time()
    train(run_config(**kwargs), str(workdir))
    log(f"trained {workdir.name}: {kwargs['steps']} steps in {time.time() - start:.0f}s")
    return workdir


def _probe_batches(spec: LadderSpec, tokenizer: str, vocab: int) -> list[dict]:
    stream = PackedCorpus(**_parse(_data_spec(spec, tokenizer, vocab)), split="train")
    return [stream.batch(PROBE_STREAM_SEED, i * spec.batch_size, spec.batch_size) for i in range(spec.probe_batches)]


def _parse(s: str) -> dict:
    from jaxlab.lm.data import parse_spec

    return parse_spec(s)


def inherit(spec: LadderSpec, seed: int, toks: dict, teacher_dir: pathlib.Path, out: pathlib.Path, log) -> dict:
    """Teacher -> (vocab remap, depth, width, extraction) -> ``out`` (a ``save_model`` dir) + ``inheritance.json``."""
    from jaxlab.train.params_io import load_model, save_model

    info_path = out.parent / "inheritance.json"
    if out.exists() and info_path.exists():
        return _json(info_path)
    module, params = load_model(teacher_dir)
    parent = module.config
    params = tp.remap_vocab_params(params, toks["id_map"])
    parent = parent.replace(vocab_size=int((toks["id_map"] >= 0).sum()))
    probes = _probe_batches(spec, toks["compact"], parent.vocab_size)
    loss = jax.jit(inh.lm_loss, static_argnums=0)

    def eval_loss(cfg, p):
        return float(np.mean([float(loss(cfg, p, b)) for b in probes]))

    importance = inh.layer_importance(eval_loss, parent, params)
    deep = LMConfig.from_dict(spec.deep)
    layers = inh.select_depth(importance, deep.num_layers, keep_first=spec.keep_first, keep_last=spec.keep_last,
                              middle=spec.middle, seed=seed)
    cfg, p = inh.drop_layers(parent, params, layers)
    widths = {"hidden": deep.hidden_size, "heads": deep.num_heads, "mlp": deep.intermediate_size}
    windows = PackedCorpus(**_parse(_data_spec(spec, toks["compact"], parent.vocab_size)), split="eval").windows()
    nbytes = token_bytes(load_tokenizer(toks["compact"]))
    at_extraction, chosen = {}, None
    for criterion in inh.CRITERIA:  # every criterion's child before training (the ladder trains spec.criterion's)
        scores = inh.unit_scores(criterion, cfg, p, probes, widths, mask_config=inh.MaskConfig(steps=spec.mask_steps),
                                 seed=seed)
        child_cfg, child = inh.extract(cfg, p, inh.select_units(scores, widths))
        at_extraction[criterion] = per_byte_perplexity(CausalLM(child_cfg), child, windows, nbytes)
        log(f"seed {seed}: {criterion} child at extraction: {at_extraction[criterion]:.3f} ppl/byte")
        if criterion == spec.criterion:
            chosen = (child_cfg, child)
    save_model(out, "lm", chosen[0], chosen[1], overwrite=out.exists())
    info = {"importance": importance.tolist(), "layers": list(layers), "criterion": spec.criterion,
            "ppl_at_extraction": at_extraction,
            "teacher_remapped_ppl": per_byte_perplexity(CausalLM(parent), params, windows, nbytes)}
    return _json(info_path, info)


def select_round(spec: LadderSpec, seed: int, toks: dict, round1: pathlib.Path, path: pathlib.Path, log) -> str:
    """Losses of round 1's batches under its final params, softmax draw, saved selection."""
    from jaxlab.train.params_io import load_model

    if path.exists():
        return str(path)
    module, params = load_model(round1)
    data_spec = _data_spec(spec, toks["compact"], module.config.vocab_size)
    stream = PackedCorpus(**_parse(data_spec), split="train")
    cfg = module.config
    losses = mr.batch_losses(lambda prm, b: inh.lm_loss(cfg, prm, b), params,
                             lambda k: stream.batch(0, k * spec.batch_size, spec.batch_size), range(spec.steps))
    ids = mr.sample_batches(losses, spec.round_ratio, seed=seed)
    mr.save_selection(path, batch_ids=ids, losses=losses, seed=seed, ratio=spec.round_ratio, data_spec=data_spec,
                      batch_size=spec.batch_size, stream_seed=0)
    log(f"seed {seed}: round-2 selection of {len(ids)}/{len(losses)} batches (loss mean {losses.mean():.3f}, "
        f"selected {losses[ids].mean():.3f})")
    return str(path)


def uniform_selection(seed: int, selection: str, path: pathlib.Path, log) -> str:
    """The control's selection: as many batches as ``selection`` (a saved round-2 selection) holds,
    drawn with every batch equally likely (the softmax draw with all losses equal); its recorded
    losses and data are ``selection``'s."""
    if path.exists():
        return str(path)
    sel = mr.load_selection(selection)
    losses = np.asarray(sel["losses"], np.float64)
    ids = mr.sample_batches(np.zeros_like(losses), sel["ratio"], seed=seed)
    mr.save_selection(path, batch_ids=ids, losses=losses, seed=seed, ratio=sel["ratio"], data_spec=sel["data_spec"],
                      batch_size=sel["batch_size"], stream_seed=sel["stream_seed"])
    log(f"seed {seed}: round-2 uniform selection of {len(ids)}/{len(losses)} batches (loss mean {losses.mean():.3f}, "
        f"selected {losses[ids].mean():.3f})")
    return str(path)


def train_teacher_free(spec: LadderSpec, seed: int, toks: dict, run_config, log) -> None:
    """The seed's own teacher (unless shared) and rungs 1-3 (they need no teacher)."""
    root = spec.workdir / f"seed{seed}"
    root.mkdir(parents=True, exist_ok=True)
    common = dict(seed=seed, batch_size=spec.batch_size, seq_length=spec.seq_length)
    if spec.teacher_dir is None:
        _train(run_config, root / "teacher", log, model=spec.teacher, tokenizer=toks["original"],
               steps=spec.teacher_steps, **common)
    shallow_compact = {**spec.shallow, "vocab_size": spec.compact_vocab}
    _train(run_config, root / "baseline", log, model=spec.shallow, tokenizer=toks["original"], steps=spec.steps, **common)
    _train(run_config, root / "compact_tokenizer", log, model=shallow_compact, tokenizer=toks["compact"],
           steps=spec.steps, **common)
    _train(run_config, root / "deeper_narrower", log, model=spec.deep, tokenizer=toks["compact"], steps=spec.steps,
           **common)


def train_from_teacher(spec: LadderSpec, seed: int, toks: dict, run_config, log) -> dict:
    """Rungs 4-5 (inheritance from the seed's or the shared teacher, second round) and the control."""
    root = spec.workdir / f"seed{seed}"
    common = dict(seed=seed, batch_size=spec.batch_size, seq_length=spec.seq_length)
    info = inherit(spec, seed, toks, run_dir(spec, seed, "teacher"), root / "inherited_init", log)
    _train(run_config, root / "inheritance", log, model=spec.deep, tokenizer=toks["compact"], steps=spec.steps,
           init_from=str(root / "inherited_init"), **common)
    selection = select_round(spec, seed, toks, root / "inheritance", root / "round2_selection.json", log)
    n_round = len(mr.load_selection(selection)["batch_ids"])
    _train(run_config, root / "second_round", log, model=spec.deep, tokenizer=toks["compact"], steps=n_round,
           init_from=str(root / "inheritance"), selection=selection, **common)
    control = uniform_selection(seed, selection, root / "round2_uniform_selection.json", log)
    _train(run_config, root / "second_round_uniform", log, model=spec.deep, tokenizer=toks["compact"], steps=n_round,
           init_from=str(root / "inheritance"), selection=control, **common)
    return {"inheritance": info, "round_steps": n_round}


def evaluate_seed(spec: LadderSpec, seed: int, toks: dict) -> dict:
    """Per-byte held-out perplexity of every run of a seed (cached in ``seed<k>/results.json``; runs
    missing from the cache, e.g. a control added later, are evaluated and added)."""
    from jaxlab.train.params_io import load_model

    root = spec.workdir / f"seed{seed}"
    out = _json(root / "results.json") or {}
    missing = [n for n in ("teacher",) + RUNGS + CONTROLS if n not in out]
    if not missing:
        return out
    for name in missing:
        module, params = load_model(run_dir(spec, seed, name))
        tok = toks["original"] if module.config.vocab_size == spec.vocab else toks["compact"]
        windows = PackedCorpus(**_parse(_data_spec(spec, tok, module.config.vocab_size)), split="eval").windows()
        out[name] = per_byte_perplexity(module, params, windows, token_bytes(load_tokenizer(tok)))
    return _json(root / "results.json", out)


def decode_speeds(spec: LadderSpec, seed: int, toks: dict) -> dict:
    """Greedy decode tokens/s of seed ``seed``'s models, rungs interleaved round by round (median)."""
    from jaxlab.train.params_io import load_model

    models = {n: load_model(run_dir(spec, seed, n)) for n in ("teacher",) + RUNGS + CONTROLS}
    prompt = np.asarray(load_tokenizer(toks["compact"]).encode("The for statement").ids[:4], np.int32)[None]
    prompt = np.clip(prompt, 0, min(spec.vocab, spec.compact_vocab) - 1)  # ids valid in both vocabularies
    times = {n: [] for n in models}
    for n, (m, p) in models.items():  # compile
        decode_seconds(m, p, prompt, spec.decode_tokens)
    for _ in range(spec.decode_repeats):
        for n, (m, p) in models.items():
            times[n].append(decode_seconds(m, p, prompt, spec.decode_tokens))
    return {n: spec.decode_tokens / float(np.median(t)) for n, t in times.items()}


def _fmt(values) -> str:
    v = np.asarray(values, np.float64)
    return f"{v.mean():.3f}" if len(v) == 1 else f"{v.mean():.3f} ± {v.std(ddof=1):.3f}"


def report(spec: LadderSpec, toks: dict, results: dict, speeds: dict, infos: dict) -> dict:
    shapes = {"teacher": (spec.teacher, spec.vocab), "baseline": (spec.shallow, spec.vocab),
              "compact_tokenizer": (spec.shallow, spec.compact_vocab)}
    shapes.update({n: (spec.deep, spec.compact_vocab) for n in RUNGS[2:] + CONTROLS})
    round_steps = {s: infos[s]["round_steps"] for s in infos}
    lines = [f"Seeds: {list(spec.seeds)}; {spec.steps} steps x {spec.batch_size} windows x {spec.seq_length} tokens "
             f"per tiny rung, teacher {spec.teacher_steps} steps"
             + (f" (one teacher for every seed: {spec.teacher_dir})" if spec.teacher_dir else "")
             + "; held-out = the eval pydoc topics.", "",
             "| rung | width x layers (heads, ffn) | vocab | params | train tokens | held-out ppl / byte | "
             "per seed | decode tok/s (seed " + str(spec.seeds[0]) + ") |", "|---|---|---|---|---|---|---|---|"]
    rows = []
    for name in ("teacher",) + RUNGS + CONTROLS:
        model, vocab = shapes[name]
        cfg = LMConfig.from_dict({**model, "vocab_size": vocab})
        steps = spec.teacher_steps if name == "teacher" else spec.steps
        tokens = steps * spec.batch_size * spec.seq_length
        if name in ("second_round",) + CONTROLS:
            tokens = f"{tokens} + {round_steps[spec.seeds[0]] * spec.batch_size * spec.seq_length}"
        if name in ("inheritance", "second_round") + CONTROLS:
            tokens = f"{tokens} (+ teacher's)"
        vals = [results[s][name] for s in spec.seeds]
        row = {"rung": name, "shape": f"{cfg.hidden_size} x {cfg.num_layers} ({cfg.num_heads}, {cfg.intermediate_size})",
               "vocab": vocab, "params": lm_param_count(cfg), "tokens": tokens, "ppl_per_byte": vals,
               "decode_tok_s": speeds[name]}
        rows.append(row)
        label = f"{name} (control)" if name in CONTROLS else name
        lines.append(f"| {label} | {row['shape']} | {vocab} | {row['params']:,} | {tokens} | {_fmt(vals)} | "
                     f"{', '.join(f'{v:.3f}' for v in vals)} | {speeds[name]:.0f} |")
    lines += ["", "Compact tokenizer (original tokenizer's corpus counts; embedding share of the deeper-narrower shape):",
              "", "| vocab | coverage of corpus tokens | embedding + head share of params |", "|---|---|---|"]
    lines += [f"| {r['vocab']} | {100 * r['coverage']:.2f}% | {100 * r['embedding_share']:.2f}% |"
              for r in toks["vocab_rows"]]
    lines += ["", "Inheritance (per seed): layer importance = held-out-probe loss increase when the layer is removed; "
              "child ppl/byte at extraction (before training) per width criterion:", "",
              "| seed | importance per teacher layer | kept layers | teacher (compact vocab) | "
              + " | ".join(inh.CRITERIA) + " |", "|---|---|---|---|" + "---|" * len(inh.CRITERIA)]
    for s in spec.seeds:
        info = infos[s]["inheritance"]
        lines.append(f"| {s} | {', '.join(f'{x:.3f}' for x in info['importance'])} | {info['layers']} | "
                     f"{info['teacher_remapped_ppl']:.3f} | "
                     + " | ".join(f"{info['ppl_at_extraction'][c]:.3f}" for c in inh.CRITERIA) + " |")
    return {"rows": rows, "vocab_rows": toks["vocab_rows"], "inheritance": {s: infos[s] for s in spec.seeds},
            "markdown": "\n".join(lines)}


def run_ladder(spec: LadderSpec, run_config: Callable, log=print) -> dict:
    spec.validate()
    spec.workdir.mkdir(parents=True, exist_ok=True)
    toks = prepare_tokenizers(spec, log)
    if spec.teacher_dir:
        check_shared_teacher(spec, toks, finished=False)
    for seed in spec.seeds:  # first for every seed, so that a shared teacher can train meanwhile elsewhere
        train_teacher_free(spec, seed, toks, run_config, log)
    if spec.teacher_dir:
        check_shared_teacher(spec, toks, finished=True)
    infos, results = {}, {}
    for seed in spec.seeds:
        infos[seed] = train_from_teacher(spec, seed, toks, run_config, log)
        results[seed] = evaluate_seed(spec, seed, toks)
        log(f"seed {seed}: {results[seed]}")
    speeds = decode_speeds(spec, spec.seeds[0], toks)
    out = report(spec, toks, results, speeds, infos)
    (spec.workdir / "ladder.md").write_text(out["markdown"] + "\n")
    _json(spec.workdir / "ladder.json", {k: v for k, v in out.items() if k != "markdown"})
    return out
