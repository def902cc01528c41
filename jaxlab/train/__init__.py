"""Training: train state, sharding, steps, loop, checkpoints, metrics."""
