"""Training: one loop for every family, driven by the config.

- ``task``: the Task protocol a family implements (``init_params``, ``loss_fn``) and ``task_from_config``.
- ``loop.train(config, workdir)``: the loop (resume, checkpoints, logging, sample grids, stop requests).
- ``state`` (``TrainState``), ``step`` (the jitted sharded step), ``optim`` (optax + EMA).
- ``sharding``: the (data, fsdp, tensor) mesh and the logical-axis rules table.
- ``checkpoint``: orbax checkpoints of the state + grain iterator; ``params_io``: inference checkpoints.
- ``metrics`` (JSONL + TensorBoard), ``perf`` (FLOPs, peaks, MFU), ``preemption``, ``workdir``, ``config``.

See docs/training.md.
"""
