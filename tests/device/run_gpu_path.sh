#!/usr/bin/env bash
# The GPU-path check (tests/device/gpu_path.py) on a lent GPU machine: Python 3.12 with a CUDA
# torch, no network. .whl carries pure-Python wheels (and pydantic-core for cp312), .devsite
# carries DeepSpeed's package and the two base models' config.json files.
set -euo pipefail
out=${OUT:-/tmp/gpu-out}; mkdir -p "$out"
nvidia-smi -L
keep=False  # always our transformers: the image's may predate what doctune registers
wheels=$(ls .whl/*.whl | grep -v '^.whl/transformers-' || true)
[ "$keep" = "True" ] || wheels="$wheels $(ls .whl/transformers-*.whl)"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site $wheels
export PYTHONPATH=/tmp/site:$PWD/.devsite:$PWD/platform HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TRANSFORMERS_VERBOSITY=error
PYTHONPATH=/tmp/site python3 -c "import transformers" || rm -rf /tmp/site/transformers /tmp/site/transformers-*  # ours needs newer deps: keep the image's
unset DS_ACCELERATOR; export TORCH_CUDA_ARCH_LIST=9.0  # DeepSpeed 0.19 cannot parse "9.0a"
python3 -c "import torch, transformers, peft, deepspeed; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'deepspeed', deepspeed.__version__)"
python3 tests/device/gpu_path.py "$out" .devsite
