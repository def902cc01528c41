"""One of two jax.distributed processes (2 CPU devices each) training on a mesh whose ``tensor``
axis spans the processes; run by test_multidevice.py. Prints a JSON report on process 0.

The devices are ordered ``[p0d0, p1d0, p0d1, p1d1]`` into a (data=2, fsdp=1, tensor=2) mesh, so
each data row of the mesh holds one device of each process: both processes hold every batch row
and must feed identical data.
"""

import json
import sys

import jax


def main(process_id: int, port: int, workdir: str) -> None:
    jax.distributed.initialize(f"localhost:{port}", 2, process_id)
    from jaxlab.train import sharding as sh
    from jaxlab.train.loop import train
    from tests.train.helpers import tiny_config

    by_process = [[d for d in jax.devices() if d.process_index == p] for p in range(2)]
    devices = [d for pair in zip(*by_process) for d in pair]
    config = tiny_config(training=dict(num_steps=4), checkpoint=dict(every_steps=4),
                         mesh=dict(data=2, fsdp=1, tensor=2))
    mesh = sh.make_mesh(dict(config.mesh), devices)
    spans = {d.process_index for d in mesh.devices[0, 0, :]}
    rows = sh.process_batch_rows(mesh, 8)
    result = train(config, workdir, devices=devices)
    if process_id == 0:
        print("REPORT " + json.dumps({"tensor_spans_processes": sorted(spans), "rows": list(rows),
                                      "step": result.step}))


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
