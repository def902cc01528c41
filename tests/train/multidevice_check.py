"""Run by test_multidevice.py in a subprocess with 8 fake CPU devices; prints a JSON report.

1. trains 4 steps on 1 device and on a (data=2, fsdp=2, tensor=2) mesh of 8, from the same seed;
2. records the 8-device parameter shardings;
3. restores the 8-device checkpoint on a (data=1, fsdp=2, tensor=2) mesh of 4 devices and
   trains on to step 6 there, next to the 1-device run continued to step 6.
"""

import json
import sys

import jax
import numpy as np

from jaxlab.train import sharding as sh
from jaxlab.train.checkpoint import Checkpointer
from jaxlab.train.loop import train
from jaxlab.train.metrics import read_metrics
from jaxlab.train.optim import make_optimizer
from jaxlab.train.state import state_shardings
from jaxlab.train.task import task_from_config
from jaxlab.data import make_train_data
from tests.train.helpers import host, tiny_config


def losses(workdir):
    return {row["step"]: row["loss"] for row in read_metrics(f"{workdir}/metrics.jsonl")}


def main(root: str) -> None:
    devices = jax.devices()
    assert len(devices) == 8, devices

    def config(steps, **mesh):
        return tiny_config(training=dict(num_steps=steps), checkpoint=dict(every_steps=2), mesh=mesh)

    train(config(6, data=1, fsdp=1, tensor=1), f"{root}/one", devices=devices[:1])
    eight = train(config(4, data=2, fsdp=2, tensor=2), f"{root}/eight", devices=devices)
    kernel = eight.state.params["blocks_0"]["mlp"]["fc1"]["kernel"]
    report = {
        "losses_one": losses(f"{root}/one"),
        "losses_eight": losses(f"{root}/eight"),
        "param_specs": sh.describe(jax.tree.map(lambda x: x.sharding, eight.state.params)),
        "opt_specs": sh.describe(jax.tree.map(lambda x: x.sharding, eight.state.opt_state)),
        "fc1_global_shape": list(kernel.shape),
        "fc1_shard_shapes": sorted({tuple(s.data.shape) for s in kernel.addressable_shards}),
        "fc1_num_devices": len(kernel.sharding.device_set),
    }

    # Restore the 8-device checkpoint onto 4 devices: values identical, new layout.
    four = config(6, data=1, fsdp=2, tensor=2)
    mesh4 = sh.make_mesh(dict(four.mesh), devices[:4])
    task = task_from_config(four)
    data = make_train_data(four.data, global_batch_size=8, seed=0)
    optimizer, _ = make_optimizer(four.optimizer, 6)
    abstract, _ = state_shardings(task, optimizer, 0, data.example, mesh4)
    restored = Checkpointer(f"{root}/eight/checkpoints").restore(4, abstract, data.iterator)
    same = jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), host(restored), host(eight.state))
    report["restored_equal"] = all(jax.tree.leaves(same))
    report["restored_devices"] = len(restored.params["blocks_0"]["mlp"]["fc1"]["kernel"].sharding.device_set)
    report["restored_data_state"] = data.iterator.get_state()
    continued = train(four, f"{root}/eight", devices=devices[:4])
    report["continued_step"] = continued.step
    report["losses_continued"] = losses(f"{root}/eight")
    print("REPORT " + json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1])
