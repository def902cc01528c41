"""Instruct-IPT's claim on CPU: weight modulation vs one shared model, prompt tokens and per-task models.

  python -m benchmarks.instruct_ipt --root=/tmp/ipt_claim --seeds=0,1,2      # trains what is missing, evaluates
  python -m benchmarks.instruct_ipt --root=/tmp/ipt_claim --report           # only the table of finished runs

Every run is ``jaxlab.train.loop.train`` (the shared loop ``launch.train`` runs) on
``configs/ipt.py:<variant>`` with ``config.seed=<seed>`` in ``ROOT/<variant>/seed<seed>``, all on
the same task groups of synthetic degradations (five tasks, 24 px patches of scikit-image's photos):

- ``tiny-shared``: one IPT for every task (no task information at all);
- ``tiny-prompt``: + per-task prompt tokens added to the body input (feature adaptation);
- ``tiny-r4`` / ``tiny`` (rank 8) / ``tiny-r16``: + Instruct-IPT low-rank task biases on q/k/v,
  attention out and FFN weights, trained synchronously with the shared weights;
- ``tiny-per-task``: five separate IPTs, one per task (five times the parameters);
- ``tiny-per-task-eq-shared`` / ``-eq-r4`` / ``-eq-r8``: five per-task IPTs narrowed to 3 / 4 / 5
  feature channels, about as many parameters *in total* as ``tiny-shared`` / ``tiny-r4`` / ``tiny``;
- ``tiny-sensitive``: ``tiny`` with the rank-8 task biases on the weights ``benchmarks.ipt_sensitivity``
  picked (run that first: it searches the seed-0 ``tiny-shared`` model and writes ``ROOT/sensitivity.json``).

Training budget: every run is the same number of steps of the same task groups (``--steps`` x
``global_batch_size`` groups, each group one patch per task). A per-task run trains its five models
in lockstep, each on its own task's column, so each per-task model sees exactly the patches of its
task that every all-in-one model sees: same steps per model and same total examples.

Each is evaluated (EMA params) on ``--eval_groups`` held-out task groups (``split="eval"``: the
right 20 % of every photo, never trained on): mean PSNR / SSIM on RGB in [0, 255] per task, outputs
rounded to 8 bits. Results go to ``ROOT/results.json`` after every run (a rerun skips finished
runs), and the table prints mean +- std over the seeds that finished. Timings on a shared machine
are not reported: only quality.
"""

import argparse
import json
import pathlib
import time

import jax
import numpy as np

from benchmarks.common import print_table
from configs.ipt import get_config
from jaxlab.models import count_params
from jaxlab.restoration.data import RestorationSource, parse_spec
from jaxlab.restoration.task import evaluate_groups, load_trained
from jaxlab.train.loop import train

VARIANTS = ("tiny-shared", "tiny-prompt", "tiny-r4", "tiny", "tiny-r16", "tiny-per-task", "tiny-per-task-eq-shared",
            "tiny-per-task-eq-r4", "tiny-per-task-eq-r8", "tiny-sensitive")
LABELS = {"tiny-shared": "shared (no task info)", "tiny-prompt": "prompt tokens", "tiny-r4": "low-rank r4",
          "tiny": "low-rank r8", "tiny-r16": "low-rank r16", "tiny-per-task": "per-task models (x5 params)",
          "tiny-per-task-eq-shared": "per-task C=3 (~shared params)", "tiny-per-task-eq-r4": "per-task C=4 (~r4 params)",
          "tiny-per-task-eq-r8": "per-task C=5 (~r8 params)", "tiny-sensitive": "low-rank r8, searched set"}
SEARCHED = "tiny-sensitive"  # configs/ipt.py:tiny with the rank and targets benchmarks.ipt_sensitivity picked


def searched_set(root: pathlib.Path) -> dict:
    """``ROOT/sensitivity.json``, written by ``benchmarks.ipt_sensitivity``."""
    record = pathlib.Path(root) / "sensitivity.json"
    if not record.is_file():
        raise SystemExit(f"the {SEARCHED} row trains on the weights the task-sensitivity search picked, and {record} "
                         f"does not exist: train the other rows (--variants without {SEARCHED}), run python -m "
                         f"benchmarks.ipt_sensitivity --root={root}, then this row")
    return json.loads(record.read_text())


def run_config(variant: str, seed: int, steps: int | None, root: pathlib.Path | None = None):
    config = get_config("tiny" if variant == SEARCHED else variant)
    if variant == SEARCHED:
        record = searched_set(root)
        config.variant = SEARCHED
        config.modulation.update(rank=int(record["rank"]), targets=tuple(record["targets"]))
    config.seed = seed
    if steps:
        config.training.num_steps = steps
        config.checkpoint.every_steps = steps
    config.logging.progress_bar = False
    config.logging.tensorboard = False
    return config


def evaluate_run(workdir: pathlib.Path, eval_groups: int) -> dict:
    task, params = load_trained(workdir)
    spec = parse_spec(get_config("tiny").data.path)
    held_out = RestorationSource(spec, task.model_config.patch_size, split="eval").batch(eval_groups)
    return {"params": count_params(params), "metrics": evaluate_groups(task, params, held_out)}


def table(results: dict) -> list[dict]:
    rows = []
    tasks = None
    for variant in VARIANTS:
        runs = [r for key, r in sorted(results.items()) if key.split("/")[0] == variant]
        if not runs:
            continue
        tasks = list(runs[0]["metrics"])
        row = {"model": LABELS[variant], "params": f"{runs[0]['params']:,}", "seeds": len(runs)}
        for metric in ("psnr", "ssim"):
            fmt = "{:.2f}+-{:.2f}" if metric == "psnr" else "{:.3f}+-{:.3f}"
            per_task = np.array([[r["metrics"][t][metric] for t in tasks] for r in runs])  # [seeds, tasks]
            for j, t in enumerate(tasks):
                row[f"{t} {metric}"] = fmt.format(per_task[:, j].mean(), per_task[:, j].std())
            row[f"mean {metric}"] = fmt.format(per_task.mean(1).mean(), per_task.mean(1).std())
        rows.append(row)
    if rows:
        first = next(iter(results.values()))["metrics"]
        row = {"model": "degraded input", "params": "-", "seeds": "-"}
        for metric in ("psnr", "ssim"):
            fmt = "{:.2f}" if metric == "psnr" else "{:.3f}"
            for t in tasks:
                row[f"{t} {metric}"] = fmt.format(first[t][f"{metric}_input"])
            row[f"mean {metric}"] = fmt.format(np.mean([first[t][f"{metric}_input"] for t in tasks]))
        rows.insert(0, row)
    return rows


def print_results(results: dict) -> None:
    rows = table(results)
    if not rows:
        print("no finished runs")
        return
    columns = list(rows[-1])
    for metric in ("psnr", "ssim"):
        print(f"\nheld-out {metric.upper()} (RGB), mean +- std over seeds")
        print_table(rows, ["model", "params", "seeds"] + [c for c in columns if c.endswith(metric)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="/tmp/ipt_claim")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--steps", type=int, default=0, help="training steps (0: the config's)")
    parser.add_argument("--eval_groups", type=int, default=40, help="held-out task groups (x5 patches)")
    parser.add_argument("--report", action="store_true", help="print the table of finished runs only")
    args = parser.parse_args()
    root = pathlib.Path(args.root).absolute()
    root.mkdir(parents=True, exist_ok=True)
    results_file = root / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    seeds = [int(s) for s in args.seeds.split(",") if s]
    if not args.report and SEARCHED in variants:
        searched_set(root)  # before any training: the searched row needs benchmarks.ipt_sensitivity's output
    if not args.report:
        jax.config.update("jax_compilation_cache_dir", str(root / "jax_cache"))  # seeds > 0 reuse the step compiles
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        for seed in seeds:  # seed-major: every finished seed is a complete comparison
            for variant in variants:
                key = f"{variant}/seed{seed}"
                if key in results:
                    continue
                config = run_config(variant, seed, args.steps, root)
                workdir = root / variant / f"seed{seed}"
                start = time.time()
                result = train(config, str(workdir))
                summary = evaluate_run(workdir, args.eval_groups)
                summary.update(steps=int(result.step), seconds=round(time.time() - start, 1),
                               final_loss=result.last_metrics.get("loss"))
                results[key] = summary
                results_file.write_text(json.dumps(results, indent=1))
                mean_psnr = np.mean([m["psnr"] for m in summary["metrics"].values()])
                print(f"{key}: mean held-out PSNR {mean_psnr:.2f} dB ({summary['seconds']} s)", flush=True)
    print_results({k: v for k, v in results.items() if int(k.split("seed")[-1]) in seeds})


if __name__ == "__main__":
    main()
