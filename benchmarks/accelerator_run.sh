#!/usr/bin/env bash
# Every accelerator measurement of the closing notes, on one GPU or TPU chip, in about 9 minutes:
# the attention kernels against the XLA path, the accelerator suite, and the golden-vector
# tests on the chip. Each part has its own time limit, so one that hangs leaves the others.
#   bash benchmarks/accelerator_run.sh [LOG_DIR]      (logs: LOG_DIR, default ./accelerator_logs)
set -u
logs=${1:-accelerator_logs}
mkdir -p "$logs"
export PYTHONUNBUFFERED=1
python=${PYTHON:-python3}
{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || true
  $python -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__); print(jax.devices())"
} 2>&1 | tee "$logs/env.log"
timeout 140 $python -m benchmarks.attention_kernels 2>&1 | tee "$logs/attention.log"
timeout 300 $python -m benchmarks.accelerator_suite --max_batch=128 2>&1 | tee "$logs/suite.log"
timeout 100 $python -m pytest -q -p no:cacheprovider -o addopts="-m 'not slow'" tests/nn tests/models/test_dit.py \
  tests/models/test_udit.py tests/models/test_dic.py tests/dlm/test_model.py tests/dlm/test_decoding_golden.py \
  2>&1 | tee "$logs/pytest.log"
