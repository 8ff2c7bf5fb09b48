"""The GPU path of doctune's training engine, run on a machine with an NVIDIA GPU.

CI has no GPU, so this is not a test of ``make test``: it is the prepared check for a
session that is lent one (see docs/benchmarks.md, "GPU path"). Each case builds the engine
exactly as a worker with ``resources_per_worker.gpu > 0`` does (the task plugin's model, the
spec's tuning through :func:`doctune.train.tuning.apply_tuning`, DeepSpeed's config from
:func:`doctune.train.ds_config.build_deepspeed_config` with ``on_gpu=True``: bf16, DeepSpeed's
fused Adam, NCCL), on one rank, over the real architectures with random weights (the weights
do not travel to the GPU machine; step time and memory do not depend on them), and trains
one fixed batch for STEPS steps: the loss must fall.

    python tests/device/gpu_path.py OUT_DIR CONFIG_ROOT   # one JSON per case, then a summary

CONFIG_ROOT holds ``gemma-3-270m/config.json`` and ``minilm/config.json``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

STEPS, BATCH, SEQ = 30, 16, 256
CASES = {
    # name: (task, base, tuning, zero stage, offload)
    "minilm-cls-full-zero0": ("classification", "minilm", {"method": "full"}, 0, False),
    "gemma-ner-lora-zero2": ("ner", "gemma-3-270m", {"method": "lora", "lora": {"r": 16, "alpha": 32}}, 2, False),
    "gemma-ner-full-zero0": ("ner", "gemma-3-270m", {"method": "full"}, 0, False),
    "gemma-ner-full-zero3": ("ner", "gemma-3-270m", {"method": "full"}, 3, False),
    "gemma-ner-full-zero3-offload": ("ner", "gemma-3-270m", {"method": "full"}, 3, True),
}


def run_case(name: str, root: Path) -> dict:
    import deepspeed
    import torch

    from doctune.spec import parse_job_spec
    from doctune.tasks import get_task
    from doctune.train.ds_config import build_deepspeed_config, zero3_context
    from doctune.train.tuning import apply_tuning

    task, base, tuning, stage, offload = CASES[name]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29511", RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")
    deepspeed.init_distributed("nccl")
    torch.cuda.set_device(0)
    spec = parse_job_spec({"tenant": "t", "task": task, "dataset": {"id": "d"}, "max_steps": STEPS,
                           "micro_batch_size": BATCH, "learning_rate": 1e-4 if tuning["method"] == "full" else 1e-3,
                           "tuning": tuning, "resources_per_worker": {"cpu": 4, "gpu": 1},
                           "deepspeed": {"zero_stage": stage, "offload_params": offload and stage == 3,
                                         "offload_optimizer": offload}})
    plugin = get_task(task)
    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"] if task == "ner" else [f"c{i}" for i in range(5)]
    info = {"labels": labels}
    cfg = build_deepspeed_config(spec, 1, STEPS, on_gpu=True)
    zero3 = zero3_context(cfg)  # noqa: F841 (kept alive for the engine's lifetime)
    t0 = time.monotonic()
    model = apply_tuning(plugin.build_model(str(root / base), info, pretrained=False), spec, plugin, STEPS)
    engine, *_ = deepspeed.initialize(model=model, model_parameters=[p for p in model.parameters() if p.requires_grad],
                                      config=cfg, dist_init_required=False)
    build_s = time.monotonic() - t0
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(100, vocab - 1, (BATCH, SEQ), generator=g)
    target = torch.randint(0, len(labels), (BATCH, SEQ) if task == "ner" else (BATCH,), generator=g)
    batch = {"input_ids": ids.cuda(), "attention_mask": torch.ones_like(ids).cuda(), "labels": target.cuda()}
    losses, times = [], []
    torch.cuda.reset_peak_memory_stats()
    for _ in range(STEPS):
        torch.cuda.synchronize()
        s = time.monotonic()
        loss = engine(**batch).loss
        engine.backward(loss)
        engine.step()
        torch.cuda.synchronize()
        times.append(time.monotonic() - s)
        losses.append(round(loss.item(), 4))
    step_s = statistics.median(times[5:])
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"case": name, "task": task, "base": base, "tuning": tuning["method"], "zero_stage": stage,
            "offload": offload, "dtype": "bf16" if cfg.get("bf16", {}).get("enabled") else "fp32",
            "optimizer": type(engine.optimizer).__name__, "build_s": round(build_s, 2),
            "median_step_ms": round(step_s * 1000, 2), "tokens_per_s": round(BATCH * SEQ / step_s),
            "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20), "trainable_params": trainable,
            "loss_first": losses[0], "loss_last": losses[-1], "loss_fell": losses[-1] < losses[0],
            "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "deepspeed": deepspeed.__version__,
            "date": time.strftime("%Y-%m-%d")}


def main() -> None:
    out, root = Path(sys.argv[1]), Path(sys.argv[2])
    if len(sys.argv) > 3:  # one case, in its own process (DeepSpeed and NCCL start clean)
        row = run_case(sys.argv[3], root)
        (out / f"{sys.argv[3]}.json").write_text(json.dumps(row))
        print(json.dumps(row), flush=True)
        return
    rows = []
    for name in CASES:
        proc = subprocess.run([sys.executable, __file__, str(out), str(root), name], capture_output=True, text=True,
                              timeout=240)
        path = out / f"{name}.json"
        rows.append(json.loads(path.read_text()) if path.exists() else
                    {"case": name, "error": (proc.stderr or proc.stdout)[-1500:]})
        print(json.dumps(rows[-1])[:2000], flush=True)
    (out / "gpu_path.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
