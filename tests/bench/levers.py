"""Quality levers (issue "chinese-quality"): F1 against training minutes, one lever setting per run.

One setting per process, in-process and single-rank (no Ray, no DeepSpeed: every lever is
measured on the same plain loop, so the comparison is the lever's alone), with doctune's own
task plugin (model, encoding, collation, metrics, cheap baseline) and tuning code::

    python -m tests.bench.levers --corpus msra --attention bidirectional --minutes 20
    python -m tests.bench.levers --corpus chinese-reviews --minutes 10

Corpora: ``msra`` (Chinese NER, MSRA's own test split), ``wnut16`` (English NER) and
``chinese-reviews`` (Chinese product-review sentiment); the dev set for the curve is held out of
train, the split otherwise doctune's own (``split_records``) where the corpus has no test split.

Each run appends one JSON line to ``--out`` (default docs/quality_runs.jsonl, which
``tests/bench/quality.py`` renders on docs/benchmarks.md): the settings and
a curve of (minutes, optimizer steps, dev entity F1), the gazetteer baseline's test F1 on the
same split, and for NER the final test F1 per entity type,
with the errors split into boundary errors (a predicted span overlapping a gold one of the
same type), type errors (the same span, another type) and spurious spans. Not part of ``make test``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", choices=sorted(CORPORA), default="msra")
    p.add_argument("--base-model", default="gemma-3-270m")
    p.add_argument("--attention", choices=["bidirectional", "causal"], default="bidirectional",
                   help="NER only: a decoder's mask (classification pools the last token and stays causal)")
    p.add_argument("--targets", default="", help="comma-separated target_modules; empty: the base model's default")
    p.add_argument("--r", type=int, default=16, help="LoRA rank; 0: full fine-tuning")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--max-len", type=int, default=0, help="0: the 98th percentile of the train token counts")
    p.add_argument("--train", type=int, default=0, help="train sentences (0: all)")
    p.add_argument("--dev", type=int, default=400, help="dev sentences held out of train for the curve")
    p.add_argument("--test", type=int, default=0, help="test sentences (0: all)")
    p.add_argument("--minutes", type=float, default=20.0)
    p.add_argument("--eval-every", type=float, default=4.0, help="minutes between dev evaluations")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="as JobSpec.precision: auto is bf16 autocast on a CPU with AMX / AVX-512 BF16")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    p.add_argument("--out", default=str(REPO / "docs" / "quality_runs.jsonl"))
    p.add_argument("--label", default="")
    return p.parse_args()


CORPORA = {"msra": "ner", "wnut16": "ner", "chinese-reviews": "classification"}


def load_corpus(name: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, test) records: MSRA's own split, else doctune's seeded stratified split (80/10/10,
    its dev part unused here: the dev set for the curve is taken from train)."""
    if name == "msra":
        from doctune.tasks.ner import load_msra

        return load_msra("train"), load_msra("test")
    from doctune.data import split_records

    if name == "wnut16":
        from doctune.tasks.ner import load_wnut16

        records = load_wnut16()
    else:
        from doctune.corpora import load_chinese_reviews

        records = load_chinese_reviews()
    split = split_records(records, CORPORA[name])
    return split["train"] + split["dev"], split["test"]


def build(args: argparse.Namespace, info: dict[str, Any]) -> tuple[Any, Any, Any]:
    """(plugin, tokenizer, model with LoRA) for one lever setting."""
    import torch
    from transformers import AutoTokenizer

    from doctune.base_models import resolve_base_model
    from doctune.spec import parse_job_spec
    from doctune.tasks import get_task
    from doctune.tasks._hf import build_labelled_model
    from doctune.train.precision import apply_precision
    from doctune.train.tuning import apply_tuning

    task = CORPORA[args.corpus]
    plugin = get_task(task)
    base = resolve_base_model(args.base_model)
    torch.manual_seed(42)
    if task == "ner" and args.attention == "causal":
        model = build_labelled_model("AutoModelForTokenClassification", base, info["labels"], True)
    else:
        model = plugin.build_model(base, info)
    lora: dict[str, Any] = {"r": args.r, "alpha": 2 * args.r}
    if args.targets:
        lora["target_modules"] = args.targets.split(",")
    spec = parse_job_spec({"tenant": "t", "task": task, "dataset": {"id": "d"}, "max_steps": 1,
                           "base_model": args.base_model,
                           "tuning": {"method": "full"} if args.r == 0 else {"method": "lora", "lora": lora}})
    model = apply_precision(apply_tuning(model, spec, plugin, 1000), args.precision, use_gpu=False)
    return plugin, AutoTokenizer.from_pretrained(base), model


def fitted_length(encoded_lengths: list[int], asked: int) -> int:
    if asked:
        return asked
    ordered = sorted(encoded_lengths)
    return ordered[int(0.98 * (len(ordered) - 1))]


def evaluate(model: Any, plugin: Any, tokenizer: Any, encoded: list[dict[str, Any]], info: dict[str, Any],
             batch: int) -> tuple[dict[str, Any], list[Any], list[Any], dict[str, Any] | None]:
    """(metrics, predicted, gold, metrics with Viterbi BIO decoding for NER else None)."""
    import torch

    from doctune.tasks._tagging import tag_predictions

    model.eval()
    predicted, gold, valid = [], [], []
    with torch.inference_mode():
        for i in range(0, len(encoded), batch * 2):
            b = plugin.collate(encoded[i:i + batch * 2], tokenizer)
            out = model(**b)
            # NER: each position's argmax here, the best valid BIO sequence (Viterbi) beside it
            p, g = tag_predictions(out, b) if plugin.name == "ner" else plugin.predictions(out, b)
            predicted += p
            gold += g
            if plugin.name == "ner":
                valid += tag_predictions(out, b, info["labels"])[0]
    model.train()
    viterbi = plugin.metrics(valid, gold, info) if valid else None
    return plugin.metrics(predicted, gold, info), predicted, gold, viterbi


def error_kinds(predicted: list[Any], gold: list[Any], labels: list[str]) -> dict[str, Any]:
    """Per-type F1 and where the misses come from: boundary (overlaps a gold span of the same
    type), type (same span, other type), or spurious/missed outright."""
    from seqeval.metrics import classification_report

    from doctune.tasks._tagging import spans

    def tags(rows: list[Any]) -> list[list[str]]:
        return [[labels[i] for i in row] for row in rows]

    report = classification_report(tags(gold), tags(predicted), output_dict=True, zero_division=0)
    kinds: Counter[str] = Counter()
    for p_row, g_row in zip(tags(predicted), tags(gold)):
        gold_spans = set(spans(g_row))
        for kind, a, b in set(spans(p_row)) - gold_spans:
            if any(k == kind and a < gb and ga < b for k, ga, gb in gold_spans):
                kinds["boundary"] += 1
            elif any((ga, gb) == (a, b) for _, ga, gb in gold_spans):
                kinds["type"] += 1
            else:
                kinds["spurious"] += 1
    per_type = {t: round(v["f1-score"], 4) for t, v in report.items() if isinstance(v, dict) and " avg" not in t}
    return {"per_type_f1": per_type, "wrong_spans": dict(kinds)}


def main() -> None:
    import torch

    from doctune.train.precision import resolve_precision

    args = parse_args()
    torch.set_num_threads(args.threads)
    train, test = load_corpus(args.corpus)
    random.Random(7).shuffle(train)
    dev, train = train[:args.dev], train[args.dev:]
    train = train[:args.train] if args.train else train
    test = test[:args.test] if args.test else test
    from doctune.tasks import get_task

    task = CORPORA[args.corpus]
    info = get_task(task).check_splits({"train": train, "dev": dev, "test": test})
    plugin, tokenizer, model = build(args, info)
    lengths = [len(e["input_ids"]) for e in plugin.encode(train[:2000], tokenizer, info, 10_000)]
    max_len = fitted_length(lengths, args.max_len)
    enc = {name: plugin.encode(rows, tokenizer, info, max_len) for name, rows in
           (("train", train), ("dev", dev), ("test", test))}
    for part in enc.values():  # length buckets: batches of similar lengths pad little (metrics ignore the order)
        part.sort(key=lambda e: len(e["input_ids"]))
    buckets = [enc["train"][i:i + args.batch] for i in range(0, len(enc["train"]), args.batch)]
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.01)
    total = int(args.minutes * 60)
    began, curve, step, train_s, next_eval = time.monotonic(), [], 0, 0.0, args.eval_every * 60
    rng = random.Random(42)
    model.train()
    while train_s < total:
        rng.shuffle(buckets)
        for rows in buckets:
            t0 = time.monotonic()
            lr_now = args.lr * min(1.0, (step + 1) / 30) * max(0.05, 1 - train_s / total)
            for g in optim.param_groups:
                g["lr"] = lr_now
            loss = model(**plugin.collate(rows, tokenizer)).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optim.step()
            optim.zero_grad(set_to_none=True)
            step += 1
            train_s += time.monotonic() - t0
            if train_s >= next_eval or train_s >= total:
                dev_m, _, _, _ = evaluate(model, plugin, tokenizer, enc["dev"], info, args.batch)
                curve.append({"minutes": round(train_s / 60, 2), "steps": step,
                              "dev_f1": round(dev_m[plugin.primary_metric], 4),
                              "loss": round(loss.item(), 4)})
                print(json.dumps(curve[-1]), flush=True)
                next_eval += args.eval_every * 60
            if train_s >= total:
                break
    test_m, predicted, gold, viterbi = evaluate(model, plugin, tokenizer, enc["test"], info, args.batch)
    name, baseline = next(iter(plugin.reference_baselines({"train": train, "dev": dev, "test": test}, info).items()))
    attention = args.attention if task == "ner" else "causal"
    row = {"label": args.label or f"{args.corpus}-{attention}-r{args.r}-{args.targets or 'default'}",
           "task": task, "corpus": args.corpus,
           "baseline": {"name": name, "test_f1": round(baseline["test"][plugin.primary_metric], 4)},
           "base_model": args.base_model, "attention": attention,
           "targets": args.targets or "default", "r": args.r,
           "precision": resolve_precision(args.precision, use_gpu=False), "lr": args.lr, "batch": args.batch, "max_len": max_len,
           "threads": args.threads, "train_sentences": len(train), "test_sentences": len(test),
           "train_minutes": round(train_s / 60, 2), "wall_minutes": round((time.monotonic() - began) / 60, 2),
           "steps": step, "sentences_seen": step * args.batch, "curve": curve,
           "test": {k: round(v, 4) for k, v in test_m.items() if isinstance(v, float)},
           **({"test_viterbi": {k: round(v, 4) for k, v in viterbi.items() if isinstance(v, float)}} if viterbi else {}),
           **(error_kinds(predicted, gold, info["labels"]) if task == "ner" else {}), "date": time.strftime("%Y-%m-%d")}
    with open(args.out, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(json.dumps({k: row.get(k) for k in ("label", "steps", "baseline", "test", "test_viterbi", "per_type_f1",
                                               "wrong_spans")}),
          flush=True)


if __name__ == "__main__":
    main()
