"""`make bench`, precision part: what `JobSpec.precision: auto` picks on a CPU, and why.

In-process, one process, nothing else running: the time of one training step (forward, backward,
AdamW) of the example spec's model (MiniLM-L6 classifier, LoRA r=8 on query/key/value/dense, built
by doctune's task plugin and ``apply_tuning``) on BBC batches of 8 x 128 tokens, per torch thread
count, for each precision recipe; and a bare 1024 x 1024 matrix product in fp32 and bf16.
Medians of ``STEPS`` steps after ``WARMUP``; ratios are against the old recipe (fp32, fused
attention, LoRA dropout 0.05), all measured in one run.

``python -m tests.bench.precision`` writes docs/bench_precision.json and prints the section.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "docs" / "bench_precision.json"
STEPS, WARMUP, MBS, SEQ = int(os.environ.get("BENCH_STEPS", "12")), 3, 8, 128

# name: (precision, attention, LoRA dropout)
RECIPES = {
    "fp32, fused attention, dropout 0.05 (before)": ("fp32", "sdpa", 0.05),
    "fp32, fused attention, dropout 0": ("fp32", "sdpa", 0.0),
    "bf16, fused attention, dropout 0": ("bf16", "sdpa", 0.0),
    "bf16, eager attention, dropout 0 (auto on bf16 units)": ("bf16", "eager", 0.0),
}


def build_model(precision: str, attention: str, dropout: float):
    import torch

    from doctune.base_models import resolve_base_model
    from doctune.spec import parse_job_spec
    from doctune.tasks import get_task
    from doctune.train.precision import apply_precision
    from doctune.train.tuning import apply_tuning

    torch.manual_seed(42)
    plugin = get_task("classification")
    model = plugin.build_model(resolve_base_model("all-minilm-l6-v2"), {"labels": ["a", "b", "c", "d", "e"]})
    spec = parse_job_spec({"tenant": "t", "task": "classification", "dataset": {"id": "d"}, "max_steps": 1,
                           "tuning": {"method": "lora", "lora": {"r": 8, "alpha": 16, "dropout": dropout,
                                                                 "target_modules": ["query", "key", "value", "dense"]}}})
    model = apply_precision(apply_tuning(model, spec, plugin, 1000), precision, use_gpu=False)  # bf16: eager attention
    if attention == "sdpa":
        model.get_base_model().set_attn_implementation("sdpa")
    return model.train()


def batches(n: int) -> list[dict]:
    import torch
    from transformers import AutoTokenizer

    from doctune.base_models import resolve_base_model
    from doctune.corpora import load_bbc_news

    tok = AutoTokenizer.from_pretrained(resolve_base_model("all-minilm-l6-v2"))
    recs = load_bbc_news(limit_per_class=20)
    out = []
    for i in range(n):
        rows = [recs[(i * MBS + j) % len(recs)] for j in range(MBS)]
        enc = tok([r["text"] for r in rows], truncation=True, max_length=SEQ, padding="max_length", return_tensors="pt")
        enc["labels"] = torch.tensor([j % 5 for j in range(MBS)])
        out.append(dict(enc))
    return out


def step_seconds(model, data: list[dict]) -> float:
    """Median seconds of one forward + backward + AdamW step, after the warm-up steps."""
    import torch

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    times = []
    for i, batch in enumerate(data):
        began = time.perf_counter()
        model(**batch).loss.backward()
        opt.step()
        opt.zero_grad()
        if i >= WARMUP:
            times.append(time.perf_counter() - began)
    return statistics.median(times)


def matmul_gflops(dtype_name: str) -> float:
    import torch

    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(1024, 1024).to(dtype), torch.randn(1024, 1024).to(dtype)
    for _ in range(3):
        a @ b
    began, n = time.perf_counter(), 20
    for _ in range(n):
        a @ b
    return 2 * 1024**3 * n / (time.perf_counter() - began) / 1e9


def measure(threads: list[int] | None = None) -> dict:
    import torch

    from doctune.train.precision import cpu_has_bf16_units

    data = batches(STEPS + WARMUP)
    result = {"date": time.strftime("%Y-%m-%d"), "cpu_has_bf16_units": cpu_has_bf16_units(),
              "batch": f"{MBS} x {SEQ}", "steps": STEPS, "threads": {}}
    for t in threads or [1, 2]:
        torch.set_num_threads(t)
        row = {"matmul_gflops": {d: round(matmul_gflops(d), 1) for d in ("float32", "bfloat16")}, "step_s": {}}
        for name, recipe in RECIPES.items():
            row["step_s"][name] = round(step_seconds(build_model(*recipe), data), 4)
            print(f"{t} threads, {name}: {row['step_s'][name]} s", flush=True)
        result["threads"][str(t)] = row
    return result


def render(r: dict) -> str:
    lines = ["## Precision (`JobSpec.precision`)", "",
             f"Measured {r['date']}, in-process, nothing else running (`python -m tests.bench.precision`). "
             f"This CPU has bf16 units (AMX / AVX-512 BF16): **{r['cpu_has_bf16_units']}**. One training step of the "
             f"example spec's model (MiniLM-L6, LoRA r=8 on query/key/value/dense, AdamW) on BBC batches of "
             f"{r['batch']} tokens, median of {r['steps']} steps; ratio = the old recipe's step ÷ this one's. `auto` "
             f"trains in **{'bf16' if r['cpu_has_bf16_units'] else 'fp32'}** here.", ""]
    for t, row in r["threads"].items():
        mm = row["matmul_gflops"]
        lines += [f"{t} thread(s): a 1024² matrix product runs at {mm['float32']:.1f} GFLOP/s in fp32 and "
                  f"{mm['bfloat16']:.1f} in bf16 (**{mm['bfloat16'] / mm['float32']:.2f}×**).", "",
                  "| recipe | step (s) | speed-up |", "| --- | --- | --- |"]
        before = next(iter(row["step_s"].values()))
        lines += [f"| {name} | {s:.3f} | **{before / s:.2f}×** |" for name, s in row["step_s"].items()]
        lines.append("")
    lines += [f"{note}\n" for note in r.get("notes", [])]  # added by hand: runs on other machines
    return "\n".join(lines)


if __name__ == "__main__":
    threads = [int(t) for t in (sys.argv[1:] or ["1", "2"])]
    out = measure(threads)
    OUT.write_text(json.dumps(out, indent=2))
    print(render(out))
