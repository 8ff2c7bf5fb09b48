#!/usr/bin/env bash
# Time to quality on BBC News (a plain loop against doctune's recipe), serving throughput (batch 32
# against batch 1, fp32 and bf16) and two NCCL ranks on one GPU: tests/device/ttq_gpu.py on a lent GPU
# machine (Python 3.12, CUDA torch, transformers, peft, scikit-learn; no network, 64 MiB a call).
# Made here, in ignored paths (.git/info/exclude):
#   .ttq      python tests/device/ttq_gpu.py prepare .ttq: BBC's split (seed 42) + MiniLM-L6 cut to the
#             word pieces BBC uses, fp16 (~39 MB; cast back to an fp32 checkpoint there, untimed)
#   .whl      wheels the image lacks: pydantic, pydantic-core (cp312), annotated-types,
#             typing-inspection, typing-extensions, hjson; and peft 0.21.2 (ours; the image's if it fails)
#   .devsite  deepspeed-0.19.8.tgz: DeepSpeed's package + dist-info from .venv, without __pycache__
#   .gx1      transformers-5.23.0 wheel (ours), optional: staged by its own call, else the image's
# One call (about 54 MiB travels with a 9 MiB tree):
#   run: bash tests/device/run_ttq_gpu.sh run      carry [.ttq, .whl, .devsite]    timeout_s 540
# Our transformers instead of the image's: first, and the run within the 30 s the machine stays warm,
#   run: bash tests/device/run_ttq_gpu.sh stage .gx1   carry [.gx1]
# Extra arguments of `run` go to ttq_gpu.py all (e.g. --only anchor,doctune). Results: $OUT/ttq_gpu.json
# and $OUT/ttq_gpu.log. Here, on the CPU: bash tests/device/run_ttq_gpu.sh smoke
set -euo pipefail
out=${OUT:-/tmp/ttq-out}; mkdir -p "$out"
site=/tmp/site
install() { python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$@"; }
cmd=${1:-run}; shift || true
case "$cmd" in
  stage)
    for d in "$@"; do install "$d"/*.whl; done
    ls "$site" ;;
  run)
    nvidia-smi -L || true
    [ -d "$site/pydantic" ] || install .whl/*.whl
    [ -d "$site/deepspeed" ] || tar -xzf .devsite/deepspeed-*.tgz -C "$site"
    # ours where they import with the image's other packages, else the image's
    PYTHONPATH=$site python3 -c "import transformers" || rm -rf "$site"/transformers "$site"/transformers-*
    PYTHONPATH=$site python3 -c "import peft" || rm -rf "$site"/peft "$site"/peft-*
    export PYTHONPATH=$site:$PWD/platform HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TRANSFORMERS_VERBOSITY=error
    unset DS_ACCELERATOR; export TORCH_CUDA_ARCH_LIST=9.0  # DeepSpeed 0.19 cannot parse "9.0a"
    python3 -c "import torch, transformers, peft, deepspeed, pydantic, sklearn; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'deepspeed', deepspeed.__version__, 'pydantic', pydantic.__version__, 'sklearn', sklearn.__version__)" 2>&1 | tail -1 || true
    python3 tests/device/ttq_gpu.py all .ttq "$out" --device cuda --work /tmp/ttq "$@" 2>&1 | tee "$out/ttq_gpu.log" ;;
  smoke)  # here: a few steps on a few documents, on the CPU
    export PATH=$PWD/.venv/bin:$PATH DS_ACCELERATOR=cpu HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TRANSFORMERS_VERBOSITY=error
    OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} python tests/device/ttq_gpu.py all .ttq "$out" --device cpu --tiny --work /tmp/ttq-smoke "$@" ;;
  *) echo "usage: $0 run|stage DIR...|smoke" >&2; exit 2 ;;
esac
