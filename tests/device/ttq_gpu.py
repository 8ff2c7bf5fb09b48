"""Time to quality on BBC News, serving throughput, and two NCCL ranks on one GPU, on a lent GPU machine.

CI has no GPU, so this is not part of ``make test``: it is the prepared check for a session that
is lent one (see tests/device/run_ttq_gpu.sh). Everything runs in its own process, each one timed
from its start (before torch is imported), one after the other:

* ``anchor``: what a user writes without doctune (as tests/bench/time_to_quality.py's ANCHOR): a
  plain PyTorch + transformers loop, MiniLM-L6 full fine-tuning, seq 256 padded, batch 16, AdamW
  lr 5e-5 with linear decay, 2 epochs, fp32; process start to test macro-F1.
* ``doctune``: docs/examples/bbc-classification.yaml built with doctune's own code, as a GPU worker
  of doctune.train.loop does (JobSpec; the task plugin's encode/collate/model/metrics;
  ``apply_tuning``: LoRA r=8 alpha 16 on query/key/value/dense + the head; DeepSpeed from
  ``build_deepspeed_config(on_gpu=True)``: ZeRO-2, bf16, NCCL; the Evaluator; the EarlyStopper with
  target 0.97 every 14 steps; checkpoints every 28 steps to local disk; the baseline evaluations and
  the TF-IDF reference at the start; LoRA merged and exported at the end). The example's effective
  batch (micro 8 x accumulation 4 x 2 workers) is one micro-batch of 64 on one GPU, so the optimizer
  steps (28 an epoch) and the evaluation points are the same. Ray, the object store and the driver
  are not there (they need a cluster): this is the worker's own time, process start to exported model.
* ``serve``: the exported classifier through the plugin's ``predict`` (tokenize, forward, softmax,
  answer dicts) at seq 128, batch 32 against one document at a time, fp32 and bf16.
* ``nccl``: two ranks (torch.multiprocessing spawn, world size 2) both on cuda:0, one all_reduce.

The machine has no network and a 64 MiB transfer cap, so ``prepare`` (run here, where the corpus
package and the model are installed) writes what travels: BBC's split (doctune.data.split_records,
seed 42) and MiniLM-L6 with its vocabulary cut to the word pieces BBC's first 256 tokens use (plus
every single-character piece), in fp16. Cutting unused rows changes no computation: ``prepare``
checks that the cut tokenizer gives every document exactly the original token sequence at 256 and
128 tokens (renumbered), and on the GPU machine the weights are cast back to an fp32 checkpoint
before anything is timed.

    python tests/device/ttq_gpu.py prepare .ttq                     # here, once
    python tests/device/ttq_gpu.py all .ttq OUT [--device cpu] [--tiny] [--work /tmp/ttq]
    python tests/device/ttq_gpu.py anchor|doctune|serve MODEL DATA OUT [--device ...] [--tiny] [--work ...]
    python tests/device/ttq_gpu.py nccl OUT
"""

from __future__ import annotations

import time

BEGAN = time.monotonic()  # process start (before torch is imported): every wall time counts from here

import argparse  # noqa: E402
import gzip  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "docs" / "examples" / "bbc-classification.yaml"
BASE = "all-minilm-l6-v2"
TARGET_F1 = 0.97


def since() -> float:
    return round(time.monotonic() - BEGAN, 2)


def say(what: str, **kw) -> None:
    print(json.dumps({"t": since(), "at": what, **kw}), flush=True)


# -- prepare (here) --------------------------------------------------------------------------------

def prepare(out: Path) -> None:
    """BBC's split and the cut MiniLM (fp16) into ``out``: what the GPU machine needs."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModel, AutoTokenizer

    from doctune.base_models import resolve_base_model
    from doctune.corpora import load_bbc_news
    from doctune.data import split_records

    out.mkdir(parents=True, exist_ok=True)
    splits = split_records(load_bbc_news(), "classification", seed=42)
    base = resolve_base_model(BASE)
    tok = AutoTokenizer.from_pretrained(base)
    texts = [r["text"] for s in ("train", "dev", "test") for r in splits[s]]
    orig = {n: tok(texts, truncation=True, max_length=n)["input_ids"] for n in (256, 128)}
    spec = json.loads(Path(base, "tokenizer.json").read_text())
    vocab: dict[str, int] = spec["model"]["vocab"]
    single = {i for t, i in vocab.items() if len(t) == 1 or (t.startswith("##") and len(t) == 3)}
    special = {a["id"] for a in spec["added_tokens"]}
    kept = sorted({i for ids in orig[256] for i in ids} | single | special)
    new_of = {old: new for new, old in enumerate(kept)}
    assert new_of[tok.pad_token_id] == 0, "the padding id must stay 0"
    by_id = {i: t for t, i in vocab.items()}
    spec["model"]["vocab"] = {by_id[old]: new for new, old in enumerate(kept)}
    for a in spec["added_tokens"]:
        a["id"] = new_of[a["id"]]
    for s in spec["post_processor"]["special_tokens"].values():
        s["ids"] = [new_of[i] for i in s["ids"]]
    if spec.get("padding"):
        spec["padding"]["pad_id"] = new_of[spec["padding"]["pad_id"]]
    mdir = out / "minilm"
    mdir.mkdir(exist_ok=True)
    (mdir / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False))
    (mdir / "vocab.txt").write_text("".join(by_id[old] + "\n" for old in kept))
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        (mdir / name).write_text(Path(base, name).read_text())
    cut = AutoTokenizer.from_pretrained(mdir)
    checked = 0
    for n in (256, 128):  # the cut tokenizer gives every document the original sequence, renumbered
        got = cut(texts, truncation=True, max_length=n)["input_ids"]
        for a, b in zip(got, orig[n]):
            assert [kept[i] for i in a] == b, "the cut tokenizer changed a document's tokens"
            checked += 1
    model = AutoModel.from_pretrained(base, dtype=torch.float32)
    emb = model.get_input_embeddings().weight.data[kept].clone()
    model.resize_token_embeddings(len(kept))
    model.get_input_embeddings().weight.data.copy_(emb)
    full = model.state_dict()
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in full.items()}
    worst = max(float((v.float() - full[k]).abs().max()) for k, v in state.items())
    assert all(torch.isfinite(v).all() for v in state.values())
    save_file(state, str(mdir / "model.safetensors"), metadata={"format": "pt"})
    config = model.config.to_dict()
    config["dtype"] = "float32"  # what `stage` writes on the GPU machine
    (mdir / "config.json").write_text(json.dumps(config, indent=1))
    with gzip.open(out / "bbc_split.json.gz", "wt") as f:
        json.dump(splits, f)
    meta = {"vocab_kept": len(kept), "vocab_original": len(vocab), "documents_checked": checked,
            "split": {k: len(v) for k, v in splits.items()}, "fp16_max_abs_error": worst,
            "labels": sorted({r["label"] for r in splits["train"]})}
    (out / "prepare.json").write_text(json.dumps(meta, indent=1))
    print(json.dumps(meta))


def stage(src: Path, dst: Path) -> None:
    """The fp16 cut model as an fp32 checkpoint (what from_pretrained then loads, as the real one)."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.name != "model.safetensors":
            shutil.copy(f, dst / f.name)
    state = {k: v.to(torch.float32) for k, v in load_file(str(src / "model.safetensors")).items()}
    save_file(state, str(dst / "model.safetensors"), metadata={"format": "pt"})


# -- shared ----------------------------------------------------------------------------------------

def load_splits(path: str, tiny: bool) -> dict:
    with gzip.open(path, "rt") as f:
        splits = json.load(f)
    if tiny:  # every label in each part: split_records lists each split label by label, so stride
        splits = {"train": splits["train"][::111][:16], "dev": splits["dev"][::22][:10], "test": splits["test"][::22][:10]}
    return splits


def macro_f1(gold: list[int], pred: list[int], n: int) -> float:
    f1s = []
    for c in range(n):
        tp = sum(g == c and p == c for g, p in zip(gold, pred))
        fp = sum(g != c and p == c for g, p in zip(gold, pred))
        fn = sum(g == c and p != c for g, p in zip(gold, pred))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(f1s) / n


def gpu_facts(device: str) -> dict:
    import torch

    facts = {"torch": torch.__version__, "device": device}
    if device == "cuda":
        facts |= {"gpu": torch.cuda.get_device_name(0), "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20)}
    try:
        import transformers

        facts["transformers"] = transformers.__version__
    except ImportError:
        pass
    return facts


def sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


# -- the anchor: a plain loop ----------------------------------------------------------------------

def anchor(args) -> dict:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup

    imported = since()
    seq, batch, epochs, lr = (32, 4, 2, 5e-5) if args.tiny else (256, 16, 2, 5e-5)
    dev = args.device
    torch.manual_seed(42)
    splits = load_splits(args.data, args.tiny)
    labels = sorted({r["label"] for r in splits["train"]})
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=len(labels)).to(dev)
    assert next(model.parameters()).dtype == torch.float32

    def encode(rows):
        enc = tok([r["text"] for r in rows], truncation=True, max_length=seq, padding="max_length", return_tensors="pt")
        return enc, torch.tensor([labels.index(r["label"]) for r in rows])

    train_x, train_y = encode(splits["train"])
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(train_x["input_ids"], train_x["attention_mask"], train_y),
        batch_size=batch, shuffle=True, generator=torch.Generator().manual_seed(42))
    steps = 2 if args.tiny else epochs * len(loader)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = get_linear_schedule_with_warmup(opt, 0, epochs * len(loader))
    model.train()
    sync(dev)
    ready = since()
    say("anchor training", steps=steps)
    done, first_loss, loss = 0, None, None
    while done < steps:
        for ids, mask, y in loader:
            loss = model(input_ids=ids.to(dev), attention_mask=mask.to(dev), labels=y.to(dev)).loss
            loss.backward()
            opt.step()
            sched.step()
            opt.zero_grad()
            done += 1
            if first_loss is None:
                first_loss = loss.item()
            if done == steps:
                break
    sync(dev)
    trained = since()
    model.eval()
    test_x, test_y = encode(splits["test"])
    pred = []
    with torch.no_grad():
        for i in range(0, len(test_y), 32):
            pred += model(input_ids=test_x["input_ids"][i:i + 32].to(dev),
                          attention_mask=test_x["attention_mask"][i:i + 32].to(dev)).logits.argmax(-1).tolist()
    f1 = macro_f1(test_y.tolist(), pred, len(labels))
    wall = since()
    return {"run": "anchor", "wall_s": wall, "import_s": imported, "setup_s": round(ready - imported, 2),
            "train_s": round(trained - ready, 2), "test_s": round(wall - trained, 2), "steps": done,
            "step_ms": round(1000 * (trained - ready) / done, 2), "test_macro_f1": round(f1, 4),
            "test_accuracy": round(sum(g == p for g, p in zip(test_y.tolist(), pred)) / len(pred), 4),
            "loss_first": round(first_loss, 4), "loss_last": round(loss.item(), 4),
            "recipe": f"MiniLM-L6 full fine-tuning, seq {seq} (padded), batch {batch}, AdamW lr {lr:g} linear decay, "
                      f"{epochs} epochs, fp32",
            **gpu_facts(dev)}


# -- doctune's recipe, as its worker builds it -----------------------------------------------------

def doctune_spec(tiny: bool, cuda: bool):
    import yaml

    from doctune.spec import parse_job_spec

    raw = yaml.safe_load(EXAMPLE.read_text())
    raw["dataset"] = {"id": "bbc-news"}
    # the example's 8 x 4 accumulation x 2 workers = 64 examples an optimizer step, on one rank
    raw.update(micro_batch_size=64, gradient_accumulation_steps=1, num_workers=1,
               resources_per_worker={"cpu": 4, "gpu": 1} if cuda else {"cpu": 1})
    if tiny:
        raw.update(micro_batch_size=4, max_seq_length=32, epochs=None, max_steps=2, eval_interval=1, checkpoint_interval=1)
    return parse_job_spec(raw), raw


def run_doctune(args) -> dict:
    """The phases of doctune.train.loop.WorkerRun on one rank (that module imports the object
    store and Ray, which the GPU machine lacks): set up, baseline, steps with dev evaluations,
    early stopping and checkpoints, test and dev, export."""
    cuda = args.device == "cuda"
    if not cuda:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import math
    import shutil
    import tempfile

    import deepspeed
    import torch
    from torch.utils.data import DataLoader, DistributedSampler
    from transformers import AutoTokenizer

    from doctune.tasks import get_task
    from doctune.train.ds_config import build_deepspeed_config, zero3_context
    from doctune.train.early_stopping import EarlyStopper
    from doctune.train.evaluation import Evaluator
    from doctune.train.tuning import apply_tuning, is_peft, merges_on_export

    if not cuda:  # the CPU smoke test: DeepSpeed's CPU accelerator would first compile its shared-memory
        # all-reduce (minutes of C++) for one rank that never uses it
        import importlib

        importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None  # (the attribute is torch itself)
    imported = since()
    spec, raw = doctune_spec(args.tiny, cuda)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29517", RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")
    torch.set_num_threads(spec.resources_per_worker.threads or max(1, int(spec.resources_per_worker.cpu)))
    torch.manual_seed(spec.seed)
    deepspeed.init_distributed("nccl" if cuda else "gloo")
    if cuda:
        torch.cuda.set_device(0)
    plugin = get_task(spec.task)
    splits = load_splits(args.data, args.tiny)
    info = plugin.check_splits(splits)  # (done at upload in the platform)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    encoded = {s: plugin.encode(r, tokenizer, info, spec.max_seq_length) for s, r in splits.items()}
    sampler = DistributedSampler(encoded["train"], num_replicas=1, rank=0, shuffle=True, seed=spec.seed)
    loader = DataLoader(encoded["train"], batch_size=spec.micro_batch_size, sampler=sampler,
                        collate_fn=lambda b: plugin.collate(b, tokenizer))
    steps_per_epoch = max(1, len(loader) // spec.gradient_accumulation_steps)
    total = spec.max_steps or max(1, math.ceil(spec.epochs * steps_per_epoch))
    cfg = build_deepspeed_config(spec, 1, total, on_gpu=cuda)
    zero3 = zero3_context(cfg)  # noqa: F841
    model = apply_tuning(plugin.build_model(args.model, info), spec, plugin, total)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    engine, *_ = deepspeed.initialize(model=model, model_parameters=[p for p in model.parameters() if p.requires_grad],
                                      config=cfg, dist_init_required=False)
    evaluator = Evaluator(engine, encoded, plugin, tokenizer, info, spec.micro_batch_size * 2)
    sync(args.device)
    built = since()
    say("doctune engine built", total_steps=total, optimizer=type(engine.optimizer).__name__)

    baseline = {"dev": evaluator.run("dev")["macro_f1"], "test": evaluator.run("test")["macro_f1"]}
    t = time.monotonic()
    refs = plugin.reference_baselines(splits, info)["tfidf_logreg"]
    reference_s = time.monotonic() - t
    baseline["tfidf_logreg_test"] = refs["test"]["macro_f1"]
    after_baseline = since()

    stopper = EarlyStopper(spec.early_stopping)
    history, losses = [], []
    ckpt_root = Path(tempfile.mkdtemp(prefix="ttq-ckpt-", dir=args.work))
    checkpoint_s, reached_at, epoch, stop = 0.0, None, 0, False
    eval_before = evaluator.seconds
    engine.train()
    say("doctune training")
    while not stop:
        sampler.set_epoch(epoch)
        for batch in loader:
            batch = {k: v.to(engine.device) for k, v in batch.items()}
            before = engine.global_steps
            tokens = int(batch["attention_mask"].sum())  # the loop counts tokens for the per-step share
            loss = engine(**batch).loss
            engine.backward(loss)
            engine.step()
            losses.append(loss.detach().item())  # the loop's reporter reads each micro-batch's loss
            if engine.global_steps == before:
                continue
            step = engine.global_steps
            torch.tensor([tokens, 0], dtype=torch.long)  # the per-step share (all-reduced only with 2+ ranks)
            evaluated = step % spec.eval_interval == 0 or step >= total
            if evaluated:
                dev = evaluator.run("dev")
                history.append({"step": step, "seconds": since(), "macro_f1": round(dev["macro_f1"], 4),
                                "loss": round(dev["loss"], 4)})
                say("doctune dev", **history[-1])
                if reached_at is None and dev["macro_f1"] >= TARGET_F1:
                    reached_at = history[-1]
                stop = stopper.observe(dev, step)
            if step % spec.checkpoint_interval == 0 and step < total and not stop:
                c = time.monotonic()
                engine.save_checkpoint(str(ckpt_root), tag="checkpoint", exclude_frozen_parameters=True)
                (ckpt_root / "doctune_state.json").write_text(json.dumps({"history": history, **stopper.state()}))
                checkpoint_s += time.monotonic() - c
            if stop or step >= total:
                stop = True
                break
        epoch += 1
    sync(args.device)
    trained = since()
    test = evaluator.run("test")
    dev = evaluator.run("dev")
    tested = since()
    export_dir = Path(args.work) / "export"
    shutil.rmtree(export_dir, ignore_errors=True)
    module = engine.module
    merged = merges_on_export(spec)
    if is_peft(spec) and merged:
        module = module.merge_and_unload()
    module.save_pretrained(str(export_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(export_dir))
    (export_dir / "doctune.json").write_text(json.dumps({"task": spec.task, "labels": info["labels"],
                                                          "max_seq_length": spec.max_seq_length,
                                                          "tuning": spec.tuning.method, "lora_merged": merged,
                                                          "base_model": spec.base_model}))
    wall = since()
    shutil.rmtree(ckpt_root, ignore_errors=True)
    torch.distributed.destroy_process_group()
    train_s = trained - after_baseline - (evaluator.seconds - eval_before)  # the loop's train_s: no dev evals
    return {"run": "doctune", "wall_s": wall, "import_s": imported, "setup_s": round(built - imported, 2),
            "baseline_s": round(after_baseline - built, 2), "tfidf_reference_s": round(reference_s, 2),
            "loop_s": round(trained - after_baseline, 2), "train_s": round(train_s - checkpoint_s, 2),
            "dev_eval_s": round(evaluator.seconds - eval_before, 2), "checkpoint_s": round(checkpoint_s, 2),
            "test_and_dev_s": round(tested - trained, 2), "export_s": round(wall - tested, 2),
            "steps": engine.global_steps, "total_steps": total, "epochs_run": epoch,
            "early_stopped": stopper.reason.to_dict() if stopper.reason else None,
            "target_reached_at": reached_at, "dev_history": history,
            "step_ms": round(1000 * (train_s - checkpoint_s) / max(engine.global_steps, 1), 2),
            "test_macro_f1": round(test["macro_f1"], 4), "test_accuracy": round(test["accuracy"], 4),
            "dev_macro_f1": round(dev["macro_f1"], 4), "baseline": baseline,
            "loss_first": round(losses[0], 4), "loss_last": round(losses[-1], 4), "trainable_params": trainable,
            "optimizer": type(engine.optimizer).__name__, "dtype": "bf16" if cfg.get("bf16", {}).get("enabled") else "fp32",
            "spec": {k: raw[k] for k in ("tuning", "deepspeed", "micro_batch_size", "gradient_accumulation_steps",
                                         "epochs", "max_steps", "learning_rate", "warmup_ratio", "max_seq_length",
                                         "early_stopping", "eval_interval", "checkpoint_interval") if k in raw},
            "deepspeed": deepspeed.__version__, **gpu_facts(args.device)}


# -- serving: batched against one at a time --------------------------------------------------------

def serve(args) -> dict:
    import statistics

    import torch
    from transformers import AutoTokenizer

    from doctune.tasks import get_task
    from doctune.tasks._hf import label_kwargs

    plugin, dev = get_task("classification"), args.device
    export = Path(args.work) / "export"
    splits = load_splits(args.data, args.tiny)
    labels = sorted({r["label"] for r in splits["train"]})
    if (export / "doctune.json").exists():
        path, which = export, "doctune's exported model (LoRA merged)"
        info = {"labels": json.loads((export / "doctune.json").read_text())["labels"]}
        model0 = plugin.load_model(str(path))
    else:  # the doctune run failed: throughput does not depend on the weights
        from transformers import AutoModelForSequenceClassification

        path, which, info = Path(args.model), "base MiniLM with a fresh head (no export found)", {"labels": labels}
        model0 = AutoModelForSequenceClassification.from_pretrained(path, **label_kwargs(labels)).eval()
    tok = AutoTokenizer.from_pretrained(path)

    class OnDevice:  # the plugin tokenizes on the CPU; a GPU replica moves the batch over
        def __call__(self, *a, **kw):
            return tok(*a, **kw).to(dev)

    texts = [r["text"] for r in splits["test"]]
    gold = [info["labels"].index(r["label"]) for r in splits["test"]]
    seq, big, reps = (32, 4, 1) if args.tiny else (128, 32, 3)
    out = {"run": "serve", "model": which, "documents": len(texts), "seq": seq, "batch": big, "repeats": reps}
    for dtype_name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        model = model0.to(dev, dtype=dtype).eval()

        def predict(batch):
            return plugin.predict(model, OnDevice(), batch, info, seq)

        for i in range(1 if args.tiny else 10):  # warm-up: kernels, allocator, tokenizer
            predict(texts[i % len(texts):i % len(texts) + 1])
            predict(texts[:big])
        row = {}
        for name, size in (("batch_1", 1), (f"batch_{big}", big)):
            rates, preds = [], []
            for _ in range(reps):
                sync(dev)
                t = time.monotonic()
                preds = []
                for i in range(0, len(texts), size):
                    preds += predict(texts[i:i + size])
                sync(dev)
                rates.append(len(texts) / (time.monotonic() - t))
            pred = [info["labels"].index(p["label"]) for p in preds]
            row[name] = {"docs_per_s": round(statistics.median(rates), 1), "all_docs_per_s": [round(r, 1) for r in rates],
                         "test_macro_f1": round(macro_f1(gold, pred, len(info["labels"])), 4)}
        # the model alone on pre-tokenized batches: what the GPU itself gives
        enc = [tok(texts[i:i + s], truncation=True, max_length=seq, padding=True, return_tensors="pt").to(dev)
               for s in (1, big) for i in range(0, len(texts), s)]
        split_at = len(texts)
        model_only = {}
        with torch.inference_mode():
            for name, batches in (("batch_1", enc[:split_at]), (f"batch_{big}", enc[split_at:])):
                sync(dev)
                t = time.monotonic()
                for b in batches:
                    model(**b).logits.float().softmax(-1)
                sync(dev)
                model_only[name] = round(len(texts) / (time.monotonic() - t), 1)
        row["ratio"] = round(row[f"batch_{big}"]["docs_per_s"] / row["batch_1"]["docs_per_s"], 2)
        row["model_only_docs_per_s"] = model_only
        row["model_only_ratio"] = round(model_only[f"batch_{big}"] / model_only["batch_1"], 2)
        out[dtype_name] = row
        say("serve", dtype=dtype_name, **{k: v for k, v in row.items() if k != "model_only_docs_per_s"})
    return out | gpu_facts(dev)


# -- two NCCL ranks on one GPU ---------------------------------------------------------------------

def _nccl_rank(rank: int, world: int, port: int, report: str, backend: str) -> None:
    import datetime

    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    result = {"rank": rank}
    try:
        on = torch.device("cuda:0") if backend == "nccl" else torch.device("cpu")
        if backend == "nccl":
            torch.cuda.set_device(0)
        dist.init_process_group(backend, rank=rank, world_size=world, timeout=datetime.timedelta(seconds=60))
        t = torch.full((4,), float(rank + 1), device=on)
        dist.all_reduce(t)
        if on.type == "cuda":
            torch.cuda.synchronize()
        result |= {"ok": True, "all_reduce": t.tolist(), "expected": float(sum(range(1, world + 1)))}
    except Exception as exc:  # noqa: BLE001 - the error is the measurement
        result |= {"ok": False, "error_type": type(exc).__name__, "error": str(exc)[-3000:]}
    finally:
        try:
            if dist.is_initialized():
                dist.destroy_process_group()
        except Exception as exc:  # noqa: BLE001
            result["destroy_error"] = str(exc)[-500:]
    Path(report, f"{backend}_rank{rank}.json").write_text(json.dumps(result))


def nccl(args) -> dict:
    """world_size 2, both ranks on cuda:0, one all_reduce; then the same with gloo on the CPU."""
    import tempfile

    import torch
    import torch.multiprocessing as mp

    report = tempfile.mkdtemp(prefix="ttq-nccl-")
    wait = 75 if torch.cuda.is_available() else 900  # the CPU smoke test's ranks import torch on a shared CPU
    out = {"run": "nccl", "torch": torch.__version__, "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        try:
            out["nccl_version"] = ".".join(map(str, torch.cuda.nccl.version()))
        except Exception as exc:  # noqa: BLE001
            out["nccl_version"] = f"? {exc}"
    for backend, port in (("nccl", 29531), ("gloo", 29532)):
        if backend == "nccl" and not torch.cuda.is_available():
            out[backend] = {"skipped": "no CUDA device"}
            continue
        t = time.monotonic()
        spawn_error, hung = None, False
        ctx = mp.start_processes(_nccl_rank, args=(2, port, report, backend), nprocs=2, join=False,
                                 start_method="spawn")
        try:  # a rank that neither answers nor fails is killed after `wait` s (the others' errors are kept)
            while not ctx.join(timeout=1):
                if time.monotonic() - t > wait:
                    hung = True
                    for proc in ctx.processes:
                        proc.kill()
                    break
        except Exception as exc:  # noqa: BLE001 - a rank died (NCCL can abort the process)
            spawn_error = f"{type(exc).__name__}: {str(exc)[-2000:]}"
        ranks = [json.loads(p.read_text()) for p in sorted(Path(report).glob(f"{backend}_rank*.json"))]
        out[backend] = {"works": len(ranks) == 2 and all(r.get("ok") for r in ranks), "ranks": ranks,
                        "spawn_error": spawn_error, "hung_killed_after_s": wait if hung else None,
                        "seconds": round(time.monotonic() - t, 2)}
        say("nccl", backend=backend, works=out[backend]["works"])
    return out


# -- driver ----------------------------------------------------------------------------------------

def run_all(args) -> None:
    """Stage the model, then each measurement in its own process; one JSON in OUT."""
    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    model, data = work / "minilm", Path(args.ttq) / "bbc_split.json.gz"
    t = time.monotonic()
    stage(Path(args.ttq) / "minilm", model)
    summary = {"date": time.strftime("%Y-%m-%d"), "device": args.device, "tiny": args.tiny,
               "stage_s": round(time.monotonic() - t, 2),
               "prepare": json.loads((Path(args.ttq) / "prepare.json").read_text())}
    limits = {"anchor": 120, "doctune": 150, "serve": 90, "nccl": 100}  # expected 20-60 s each on an H200
    if args.only:
        limits = {k: v for k, v in limits.items() if k in args.only.split(",")}
    if args.device == "cpu":  # the smoke test, on a shared CPU
        limits = {k: 20 * v for k, v in limits.items()}
    for name, limit in limits.items():
        cmd = [sys.executable, __file__, name, "--out", str(work / f"{name}.json")]
        if name != "nccl":
            cmd += ["--model", str(model), "--data", str(data), "--device", args.device, "--work", str(work)]
        cmd += ["--tiny"] if args.tiny else []
        env = dict(os.environ)
        if name == "nccl":
            env["NCCL_DEBUG"] = "WARN"  # NCCL's own reason, on stderr
        say(f"{name} starting")
        t = time.monotonic()
        (work / f"{name}.json").unlink(missing_ok=True)
        proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            err, rc = proc.communicate(timeout=limit)[1], proc.returncode
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)  # with whatever it started (spawned ranks, compilers)
            err, rc = proc.communicate()[1], "timeout"
        sys.stderr.write(err[-4000:])
        path = work / f"{name}.json"
        row = json.loads(path.read_text()) if path.exists() else {"error": err[-3000:] or f"exit {rc}"}
        row["process_s"] = round(time.monotonic() - t, 2)
        if name == "nccl":
            row["stderr_nccl_lines"] = [l for l in err.splitlines() if "NCCL" in l or "nccl" in l][-40:]
        summary[name] = row
        a, d = summary.get("anchor", {}), summary.get("doctune", {})
        if "wall_s" in a and "wall_s" in d:
            summary["ratio_wall_doctune_over_anchor"] = round(d["wall_s"] / a["wall_s"], 3)
            summary["ratio_train_doctune_over_anchor"] = round((d["loop_s"]) / a["train_s"], 3)
        (out / "ttq_gpu.json").write_text(json.dumps(summary, indent=1))
        say(f"{name} done", rc=rc, seconds=row["process_s"])
    brief = {"anchor": {k: summary.get("anchor", {}).get(k) for k in ("wall_s", "train_s", "steps", "test_macro_f1")},
             "doctune": {k: summary.get("doctune", {}).get(k) for k in ("wall_s", "loop_s", "steps", "test_macro_f1",
                                                                         "target_reached_at")},
             "ratio_wall": summary.get("ratio_wall_doctune_over_anchor"),
             "serve": {k: summary.get("serve", {}).get(k, {}).get("ratio") for k in ("fp32", "bf16")},
             "nccl_two_ranks_one_gpu": summary.get("nccl", {}).get("nccl", {}).get("works")}
    print("SUMMARY " + json.dumps(brief), flush=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("cmd", choices=["prepare", "stage", "all", "anchor", "doctune", "serve", "nccl"])
    p.add_argument("paths", nargs="*")
    p.add_argument("--model")
    p.add_argument("--data")
    p.add_argument("--out")
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="a few steps on a few documents (a CPU smoke test)")
    p.add_argument("--work", default="/tmp/ttq", help="the fp32 model, the export, the checkpoints")
    p.add_argument("--only", help="all: a comma-separated subset of anchor,doctune,serve,nccl")
    args = p.parse_args()
    sys.path.insert(0, str(REPO / "platform"))
    if args.cmd == "prepare":
        return prepare(Path(args.paths[0]))
    if args.cmd == "stage":
        return stage(Path(args.paths[0]), Path(args.paths[1]))
    if args.cmd == "all":
        args.ttq, args.out = args.paths
        return run_all(args)
    Path(args.work).mkdir(parents=True, exist_ok=True)
    row = {"anchor": anchor, "doctune": run_doctune, "serve": serve, "nccl": nccl}[args.cmd](args)
    Path(args.out).write_text(json.dumps(row, indent=1))
    say(f"{args.cmd} result", **{k: v for k, v in row.items() if not isinstance(v, (dict, list))})


if __name__ == "__main__":
    main()
