#!/usr/bin/env bash
# MSRA NER on a lent GPU (tests/device/msra_gpu.py). What travels in one call is capped at 64 MiB and
# carried paths do not outlive their call, so the pruned model (tests/device/prune_gemma_for_msra.py
# OUT; then .gxd = OUT's *.json + msra-encoded.pt + seqeval's package under site/, .gx1...5 = one
# shard each, all in .git/info/exclude) is staged into /tmp on the warm machine, one call per path:
#   run: bash tests/device/run_msra_gpu.sh stage .gxd     carry [.gxd, .whl]
#   run: bash tests/device/run_msra_gpu.sh stage .gx1     carry [.gx1]   ... up to .gx5
#   run: bash tests/device/run_msra_gpu.sh train [args]   (e.g. --seconds 165 --batch 48 --lr 2e-3)
set -euo pipefail
case "$1" in
  stage)
    mkdir -p /tmp/gemma-msra /tmp/gxd
    [ -d /tmp/site/transformers ] || [ ! -d .whl ] || \
      python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    if [ "$2" = .gxd ]; then cp -r .gxd/* /tmp/gxd/ && cp .gxd/*.json /tmp/gemma-msra/; else cp "$2"/* /tmp/gemma-msra/; fi
    ls /tmp/gemma-msra ;;
  train)
    shift
    export PYTHONPATH=/tmp/site:/tmp/gxd/site:$PWD/platform HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TRANSFORMERS_VERBOSITY=error
    python3 tests/device/msra_gpu.py /tmp/gemma-msra /tmp/gxd/msra-encoded.pt "${OUT:-/tmp/msra-out}" "$@" ;;
esac
