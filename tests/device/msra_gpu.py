"""MSRA Chinese NER with enough compute: the CPU recipe (Gemma-3-270M, LoRA r=16 on q/k/v/o, lr 1e-3,
batch 16, Viterbi decoding) trained on a lent GPU for a full epoch, bidirectional and causal.

The converted Gemma does not fit the GPU machine's 64 MiB transfers, so it travels as a copy whose
vocabulary keeps only the tokens MSRA uses (embedding rows copied, every other weight as is), in
bf16 shards, with the splits already encoded by the real tokenizer and remapped to that
vocabulary (the token sequences are the ones the CPU runs see). The model is built, tuned,
decoded and scored by doctune's own NER plugin and tuning code, as in tests/bench/levers.py.

    python tests/device/msra_gpu.py MODEL_DIR ENCODED.pt OUT_DIR [--seconds 150] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests.bench.levers


def pad_batch(rows: list[dict], pad_id: int, device: str) -> dict:
    import torch

    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[i, :n], mask[i, :n], labels[i, :n] = torch.tensor(r["input_ids"]), 1, torch.tensor(r["labels"])
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


def score(model, plugin, rows, info, pad_id, device) -> tuple[dict, dict, list, list]:
    import torch

    from doctune.tasks._tagging import tag_predictions

    model.eval()
    argmax, viterbi, gold = [], [], []
    with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16):
        for i in range(0, len(rows), 64):
            b = pad_batch(rows[i:i + 64], pad_id, device)
            out = model(**b)
            p, g = tag_predictions(out, b)
            argmax += p
            gold += g
            viterbi += tag_predictions(out, b, info["labels"])[0]
    model.train()
    return plugin.metrics(argmax, gold, info), plugin.metrics(viterbi, gold, info), argmax, gold


def train_one(attention: str, args, data) -> dict:
    import random

    import torch

    from doctune.spec import parse_job_spec
    from doctune.tasks import get_task
    from doctune.tasks._hf import build_labelled_model
    from doctune.train.tuning import apply_tuning
    from tests.bench.levers import error_kinds

    plugin, info, enc, pad_id = get_task("ner"), data["info"], data["enc"], data["pad_id"]
    torch.manual_seed(42)
    model = (plugin.build_model(args.model, info) if attention == "bidirectional" else
             build_labelled_model("AutoModelForTokenClassification", args.model, info["labels"], True))
    spec = parse_job_spec({"tenant": "t", "task": "ner", "dataset": {"id": "d"}, "max_steps": 1,
                           "base_model": "gemma-3-270m", "tuning": {"method": "lora", "lora": {"r": 16, "alpha": 32}}})
    model = apply_tuning(model.float(), spec, plugin, 1000).to(args.device)
    train = sorted(enc["train"], key=lambda e: len(e["input_ids"]))
    buckets = [train[i:i + args.batch] for i in range(0, len(train), args.batch)]
    random.Random(42).shuffle(buckets)
    steps_total = min(len(buckets), args.max_steps or len(buckets))
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.01)
    began, curve = time.monotonic(), []
    for step, rows in enumerate(buckets[:steps_total], 1):
        for g in optim.param_groups:
            g["lr"] = args.lr * min(1.0, step / 30) * max(0.05, 1 - step / steps_total)
        with torch.autocast(args.device, dtype=torch.bfloat16):
            loss = model(**pad_batch(rows, pad_id, args.device)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        optim.zero_grad(set_to_none=True)
        if step % args.eval_every == 0 or step == steps_total or time.monotonic() - began > args.seconds:
            dev, dev_v, _, _ = score(model, plugin, enc["dev"], info, pad_id, args.device)
            curve.append({"steps": step, "sentences": step * args.batch, "seconds": round(time.monotonic() - began, 1),
                          "dev_f1": round(dev["f1"], 4), "dev_f1_viterbi": round(dev_v["f1"], 4)})
            print(json.dumps({"attention": attention, **curve[-1]}), flush=True)
            if time.monotonic() - began > args.seconds:
                break
    test, test_v, argmax, gold = score(model, plugin, enc["test"], info, pad_id, args.device)
    keep = ("precision", "recall", "f1", "macro_f1")
    return {"label": f"msra-{attention}-qkvo-r16-gpu", "attention": attention, "batch": args.batch, "lr": args.lr,
            "steps": curve[-1]["steps"], "sentences_seen": curve[-1]["sentences"], "train_seconds": curve[-1]["seconds"],
            "epoch_fraction": round(curve[-1]["steps"] / len(buckets), 3), "curve": curve,
            "test": {k: round(test[k], 4) for k in keep}, "test_viterbi": {k: round(test_v[k], 4) for k in keep},
            **error_kinds(argmax, gold, info["labels"]), "test_sentences": len(enc["test"]),
            "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu", "date": time.strftime("%Y-%m-%d")}


def main() -> None:
    import torch

    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("data")
    p.add_argument("out")
    p.add_argument("--device", default="cuda")
    p.add_argument("--seconds", type=float, default=150)
    p.add_argument("--max-steps", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=400)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--attention", default="bidirectional,causal")
    args = p.parse_args()
    data = torch.load(args.data, weights_only=False)
    rows = [train_one(a, args, data) for a in args.attention.split(",")]
    Path(args.out, "msra_gpu.json").write_text(json.dumps(rows, indent=1, ensure_ascii=False))
    for r in rows:
        print(json.dumps({k: r[k] for k in ("label", "steps", "train_seconds", "test", "test_viterbi")}), flush=True)


if __name__ == "__main__":
    main()
