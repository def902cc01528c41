"""Instruct-IPT's task-sensitivity search, run on a trained shared tiny IPT (our reading of the paper's search).

  python -m benchmarks.ipt_sensitivity --root=/tmp/ipt_claim            # after benchmarks.instruct_ipt trained tiny-shared
  python -m benchmarks.instruct_ipt --root=/tmp/ipt_claim --variants=tiny-sensitive --seeds=0,1,2 --steps=200

Takes the EMA params of ``ROOT/tiny-shared/seed<seed>`` (one IPT trained on all five tasks with no
task information), fine-tunes a copy on each task alone (``jaxlab.restoration.sensitivity``: Adam
``--lr``, ``--steps`` batches of ``--batch`` patches of the training split), ranks every weight
matrix (body q/k/v/out/FFN, body MLPs, head and tail convs) by the mean relative change
``||W_t - W|| / ||W||`` over the tasks, and picks the most sensitive matrices whose rank-``--rank``
factors for five tasks fit in ``--budget`` scalars (default: the factor count of ``tiny-r4``, the
default targets at rank 4, so the searched set costs the same as the ``low-rank r4`` row). Prints the
top of the ranking, the mean score per weight group and the picked set, and writes
``ROOT/sensitivity.json``, whose ``targets`` the ``tiny-sensitive`` row of ``benchmarks.instruct_ipt``
trains with (rank ``--rank``, everything else as ``configs/ipt.py:tiny``).
"""

import argparse
import json
import pathlib
import re

import numpy as np
from flax import traverse_util

from benchmarks.common import print_table
from configs.ipt import get_config
from jaxlab.models.ipt_modulation import TARGET_GROUPS, ModulationConfig, target_paths, task_sensitivity
from jaxlab.restoration.data import parse_spec
from jaxlab.restoration.sensitivity import factor_params, finetune_per_task, sensitive_targets
from jaxlab.restoration.task import load_trained


def group_of(path: str) -> str:
    return next((g for g, pattern in TARGET_GROUPS.items() if re.fullmatch(pattern, path)), "?")


def default_budget(shared, rank: int, num_tasks: int) -> int:
    """Factor scalars of the default targets (q/k/v, attention out, FFN) at ``rank``."""
    shapes = {p: np.shape(w) for p, w in traverse_util.flatten_dict(dict(shared), sep="/").items()}
    paths = target_paths(shared, ModulationConfig().targets)
    return sum(factor_params(shapes[p], rank, num_tasks) for p in paths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="/tmp/ipt_claim")
    parser.add_argument("--seed", type=int, default=0, help="which tiny-shared run to search on")
    parser.add_argument("--steps", type=int, default=100, help="fine-tuning steps per task")
    parser.add_argument("--batch", type=int, default=4, help="patches per fine-tuning step")
    parser.add_argument("--lr", type=float, default=5e-4, help="fine-tuning Adam learning rate (constant)")
    parser.add_argument("--rank", type=int, default=8, help="rank of the searched set's task biases")
    parser.add_argument("--budget", type=int, default=0, help="factor scalars for the searched set (0: tiny-r4's)")
    parser.add_argument("--top", type=int, default=12, help="ranking rows to print")
    args = parser.parse_args()
    root = pathlib.Path(args.root).absolute()
    workdir = root / "tiny-shared" / f"seed{args.seed}"
    if not (workdir / "config.json").is_file():
        raise SystemExit(f"{workdir} holds no finished tiny-shared run; first run python -m benchmarks.instruct_ipt "
                         f"--root={root} --variants=tiny-shared --seeds={args.seed}")
    task, params = load_trained(workdir)
    shared = params["shared"]
    spec = parse_spec(get_config("tiny").data.path)
    num_tasks = len(spec.tasks)
    budget = args.budget or default_budget(shared, 4, num_tasks)
    tuned = finetune_per_task(task.model_config, shared, spec, steps=args.steps, batch_size=args.batch,
                              learning_rate=args.lr)
    ranking = task_sensitivity(shared, tuned)
    per_task = {name: dict(task_sensitivity(shared, [t])) for name, t in zip(spec.tasks, tuned)}
    targets = sensitive_targets(ranking, shared, rank=args.rank, num_tasks=num_tasks, budget=budget)
    picked = {p for p, _ in ranking if any(re.fullmatch(t[3:], p) for t in targets)}

    rows = [{"rank": i + 1, "weight": path, "group": group_of(path), "mean": f"{score:.4f}",
             **{name: f"{per_task[name][path]:.4f}" for name in spec.tasks}, "picked": "yes" if path in picked else ""}
            for i, (path, score) in enumerate(ranking[: args.top])]
    print(f"relative change ||W_t - W|| / ||W|| after {args.steps} Adam steps (lr {args.lr}) per task, from {workdir}")
    print_table(rows, list(rows[0]))
    groups = sorted({group_of(p) for p, _ in ranking})
    summary = [{"group": g, "weights": sum(group_of(p) == g for p, _ in ranking),
                "mean score": f"{np.mean([s for p, s in ranking if group_of(p) == g]):.4f}",
                "picked": sum(group_of(p) == g for p in picked)} for g in groups]
    print()
    print_table(summary, list(summary[0]))
    print(f"\npicked {len(picked)} weights at rank {args.rank} within {budget:,} factor scalars")
    record = {"workdir": str(workdir), "steps": args.steps, "batch": args.batch, "lr": args.lr, "rank": args.rank,
              "budget": budget, "targets": list(targets), "ranking": ranking, "per_task": per_task}
    (root / "sensitivity.json").write_text(json.dumps(record, indent=1))
    print(f"wrote {root / 'sensitivity.json'}")


if __name__ == "__main__":
    main()
