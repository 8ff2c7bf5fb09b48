"""`make bench`, time-to-quality part: how long until a good BBC classifier, doctune against a plain loop.

*The anchor* is what a user would write without doctune: a plain PyTorch + transformers loop on
the same stratified split (seed 42) that doctune's dataset upload makes — MiniLM-L6, full
fine-tuning, sequence length 256, batch 16, AdamW at lr 5e-5 with linear decay, 2 epochs, fp32,
every core — timed from the process start to its test macro-F1.

*doctune* is a real job through the API on a warm embedded stack, timed from submit to the
registered model (the job's state ``succeeded`` with its ``model_id``): the example spec
``docs/examples/bbc-classification.yaml`` (what ``make run`` submits) and each lever varied on it,
one at a time, so the table shows each lever's effect. Runs go one after the other, anchor
first, on the same machine and nothing else running.

Timings are measured here, never asserted. ``python -m tests.bench.time_to_quality [lever ...]``
runs it alone and writes docs/bench_time_to_quality.json.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "docs" / "examples" / "bbc-classification.yaml"
OUT = Path(os.environ.get("BENCH_TTQ_OUT", REPO / "docs" / "bench_time_to_quality.json"))
GOAL_RATIO, GOAL_F1 = 0.7, 0.97

ANCHOR = r"""
import json, sys, time
began = time.monotonic()
import torch
from sklearn.metrics import f1_score
from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup
from doctune.base_models import resolve_base_model
from doctune.corpora import load_bbc_news
from doctune.data import split_records
seq, batch, epochs, lr = 256, 16, 2, 5e-5
torch.set_num_threads(int(sys.argv[1])); torch.manual_seed(42)
splits = split_records(load_bbc_news(), "classification", seed=42)
labels = sorted({r["label"] for r in splits["train"]})
path = resolve_base_model("all-minilm-l6-v2")
tok = AutoTokenizer.from_pretrained(path)
model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(labels))
def encode(rows):
    enc = tok([r["text"] for r in rows], truncation=True, max_length=seq, padding="max_length", return_tensors="pt")
    return enc, torch.tensor([labels.index(r["label"]) for r in rows])
train_x, train_y = encode(splits["train"])
loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(train_x["input_ids"], train_x["attention_mask"], train_y),
                                     batch_size=batch, shuffle=True, generator=torch.Generator().manual_seed(42))
opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
sched = get_linear_schedule_with_warmup(opt, 0, epochs * len(loader))
model.train()
for _ in range(epochs):
    for ids, mask, y in loader:
        model(input_ids=ids, attention_mask=mask, labels=y).loss.backward()
        opt.step(); sched.step(); opt.zero_grad()
trained = time.monotonic()
model.eval(); test_x, test_y = encode(splits["test"]); pred = []
with torch.no_grad():
    for i in range(0, len(test_y), 32):
        pred += model(input_ids=test_x["input_ids"][i:i + 32], attention_mask=test_x["attention_mask"][i:i + 32]).logits.argmax(-1).tolist()
print(json.dumps({"wall_s": time.monotonic() - began, "train_s": trained - began, "steps": epochs * len(loader),
                  "test_macro_f1": f1_score(test_y.tolist(), pred, average="macro")}))
"""


def levers() -> dict[str, dict]:
    """Each lever as a change to the example spec (``None`` removes a key)."""
    return {
        "default": {},
        # the recipe before 2026-12-01: fp32 on every CPU, and a dropout mask drawn for each LoRA input
        "fp32_lora_dropout": {"precision": "fp32",
                              "tuning": {"method": "lora", "merge_adapter": True,
                                         "lora": {"r": 8, "alpha": 16, "dropout": 0.05,
                                                  "target_modules": ["query", "key", "value", "dense"]}}},
        "fp32": {"precision": "fp32"},
        "target_097": {"early_stopping": {"metric": "macro_f1", "mode": "max", "patience": 3, "target": 0.97}},
        "target_097_seq_64": {"early_stopping": {"metric": "macro_f1", "mode": "max", "patience": 3, "target": 0.97},
                              "max_seq_length": 64},
        "target_097_eval_7": {"early_stopping": {"metric": "macro_f1", "mode": "max", "patience": 3, "target": 0.97},
                              "eval_interval": 7},
        "seq_256": {"max_seq_length": 256},
        "epochs_5": {"epochs": 5},  # where bf16 leaves time in the budget: two more passes over train
        "seq_64": {"max_seq_length": 64},
        "full_ft": {"tuning": {"method": "full"}, "learning_rate": 1e-4},
        "lora_r16": {"tuning": {"method": "lora", "merge_adapter": True, "lora": {"r": 16, "alpha": 32}}},
        "lr_2e-3": {"learning_rate": 2e-3},
        "eval_every_7": {"eval_interval": 7},
    }


def lever_spec(dataset_id: str, change: dict) -> dict:
    spec = yaml.safe_load(EXAMPLE.read_text())
    spec["dataset"] = {"id": dataset_id}
    spec.pop("tenant", None)
    spec.update(copy.deepcopy(change))
    return spec


def run_anchor(threads: int) -> dict:
    out = subprocess.run([sys.executable, "-c", ANCHOR, str(threads)], capture_output=True, text=True, check=False,
                         env={**os.environ, "PYTHONPATH": str(REPO / "platform")})
    if out.returncode != 0:
        raise RuntimeError(f"the anchor loop failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_job(client, spec: dict, deadline_s: float = 3600) -> dict:
    """Submit ``spec`` and wait for its registered model; the seconds from submit to it."""
    began = time.monotonic()
    job = client.submit_job(spec)
    end = began + deadline_s
    while time.monotonic() < end:
        job = client.get_job(job["id"])
        if job["status"] in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(1)
    wall = time.monotonic() - began
    if job["status"] != "succeeded" or not job.get("model_id"):
        raise RuntimeError(f"job {job['id']} ended {job['status']}: {job.get('error')}")
    metrics = job["metrics"]
    return {"wall_s": wall, "test_macro_f1": metrics["test"]["macro_f1"], "steps": metrics.get("step"),
            "timing": metrics.get("timing"), "early_stopped_at": (job.get("progress") or {}).get("early_stopped_at"),
            "dev_history": [[h["step"], h.get("macro_f1")] for h in metrics.get("history") or []], "job_id": job["id"]}


def measure(names: list[str] | None = None, threads: int = 2) -> dict:
    from doctune.client import DoctuneClient
    from doctune.corpora import load_bbc_news
    from doctune.data import to_jsonl
    from doctune.local import LocalStack, find_free_port_base

    chosen = {k: v for k, v in levers().items() if not names or k in names}
    result = {"date": time.strftime("%Y-%m-%d"), "threads": threads, "runs": {}}
    home = Path(tempfile.mkdtemp(prefix="doctune-bench-ttq-"))
    os.environ["DOCTUNE_HOME"] = str(home)
    stack = LocalStack(home=home, base=find_free_port_base(start=42000), num_cpus=4)
    try:
        s = stack.up(echo=print)
        admin = DoctuneClient(s.api_url, s.admin_key)
        client = DoctuneClient(s.api_url, admin.create_tenant("ttq")["api_key"])
        ds = client.upload_dataset("bbc", "classification", {"data": to_jsonl(load_bbc_news())}, seed=42)
        if os.environ.get("BENCH_TTQ_ANCHOR", "1") == "1":  # 0: the levers' quality only, no ratios
            result["anchor"] = run_anchor(threads)  # with the stack idle, as a user's machine would be
            print(f"anchor: {result['anchor']}", flush=True)
        for name, change in chosen.items():
            result["runs"][name] = {"change": change, **run_job(client, lever_spec(ds["id"], change))}
            if "anchor" in result:
                result["runs"][name]["ratio"] = result["runs"][name]["wall_s"] / result["anchor"]["wall_s"]
            print(f"{name}: {result['runs'][name]}", flush=True)
            OUT.write_text(json.dumps(result, indent=2))
    finally:
        stack.down(echo=print)
    return result


def render(r: dict) -> str:
    a = r["anchor"]
    lines = [
        "## Time to quality",
        "",
        f"Measured {r['date']} ({r['threads']} cores, nothing else running). *Anchor*: a plain PyTorch + transformers",
        "loop on the same BBC split (MiniLM-L6 full fine-tuning, seq 256, batch 16, AdamW lr 5e-5, 2 epochs, fp32),",
        "process start to test macro-F1. *doctune*: a real job through the API on a warm embedded stack, submit to",
        "registered model, the example spec (`make run`'s) with one lever changed per row.",
        "",
        f"Anchor: **{a['wall_s']:.0f} s**, {a['steps']} steps, test macro-F1 **{a['test_macro_f1']:.3f}**.",
        "",
        "| run | change | steps | train (s) | eval (s) | setup (s) | submit → model (s) | ÷ anchor | test macro-F1 | goal (≤ 0.7×, F1 ≥ 0.97) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, run in r["runs"].items():
        t = run.get("timing") or {}
        met = run["ratio"] <= GOAL_RATIO and run["test_macro_f1"] >= GOAL_F1
        change = json.dumps(run["change"]) if run["change"] else "(the example spec)"
        lines.append(f"| {name} | `{change}` | {run['steps']} | {t.get('train_s', 0):.0f} | {t.get('eval_s', 0):.0f} | "
                     f"{t.get('setup_s', 0):.0f} | {run['wall_s']:.0f} | **{run['ratio']:.2f}** | "
                     f"{run['test_macro_f1']:.3f} | {'met' if met else 'missed'} |")
    for name, run in r["runs"].items():
        if run.get("dev_history"):
            curve = ", ".join(f"{step}: {f1:.3f}" for step, f1 in run["dev_history"])
            lines += ["", f"`{name}`, dev macro-F1 by step: {curve}."]
        t = run.get("timing") or {}
        if t:
            other = run["wall_s"] - t.get("train_s", 0) - t.get("eval_s", 0) - t.get("setup_s", 0)
            lines += ["", f"`{name}`, where the {run['wall_s']:.0f} s went: training {t.get('train_s', 0):.0f} s "
                      f"({t.get('train_s', 0) / run['wall_s']:.0%}), dev evaluations {t.get('eval_s', 0):.0f} s, setup "
                      f"{t.get('setup_s', 0):.0f} s, the rest (Ray job and worker start, baselines, test, export, "
                      f"registration) {other:.0f} s."]
    lines += [f"\n{note}" for note in r.get("notes", [])]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    out = measure(sys.argv[1:] or None)
    print(render(out))
