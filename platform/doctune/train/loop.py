"""The per-worker training loop that Ray Train runs on every rank.

Each rank builds the task's model (LoRA via peft when asked), wraps it in a
DeepSpeed engine built from the JobSpec, trains on its shard, evaluates on dev
every ``eval_interval`` steps, saves DeepSpeed checkpoints to the object store
every ``checkpoint_interval`` steps (through ``ray.train.report``), and resumes
from the newest one when Ray Train restarts the worker group after a failure.
Rank 0 streams progress to the driver's ProgressActor (no ``report`` cost) and
exports the final model in Hugging Face format.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from doctune.train.checkpoints import restore_checkpoint, save_checkpoint
from doctune.train.early_stopping import EarlyStopper
from doctune.train.evaluation import Evaluator
from doctune.train.export import export_trained_model
from doctune.train.progress import PROGRESS_EVERY_S, RATE_WINDOW, ProgressReporter

__all__ = ["PROGRESS_EVERY_S", "RATE_WINDOW", "WorkerError", "process_memory_mb", "train_loop_per_worker"]


class WorkerError(Exception):
    """A failure inside a training worker, with the rank and step it happened at."""

    def __init__(self, message: str, rank: int, step: int) -> None:
        super().__init__(message, rank, step)
        self.message, self.rank, self.step = message, rank, step

    def __str__(self) -> str:
        return f"rank {self.rank}, step {self.step}: {self.message}"


def _load_split(store, dataset_uri: str, split: str) -> list[dict[str, Any]]:
    blob = store.get_bytes(f"{store.key_of(dataset_uri)}/{split}.jsonl")
    return [json.loads(l) for l in blob.decode().splitlines() if l.strip()]


def process_memory_mb() -> dict[str, float]:
    """This process's resident memory now and its peak so far (VmRSS/VmHWM), in MiB."""
    out = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out["rss_mb" if key == "VmRSS" else "peak_mb"] = int(value.split()[0]) / 1024
    except OSError:  # not Linux: fall back to getrusage's peak
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        out = {"rss_mb": peak, "peak_mb": peak}
    return out


def train_loop_per_worker(config: dict[str, Any]) -> None:
    use_gpu = config.get("use_gpu", False)
    if not use_gpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

    import deepspeed
    import ray.train
    import torch
    import torch.distributed as dist
    from torch.utils.data import DataLoader, DistributedSampler

    from doctune.config import load_settings
    from doctune.spec import JobSpec
    from doctune.store.objects import ObjectStore
    from doctune.tasks import get_task
    from doctune.train.ds_config import build_deepspeed_config, zero3_context
    from doctune.base_models import resolve_base_model
    from doctune.train.tuning import adalora_step, apply_tuning

    began = time.monotonic()
    spec = JobSpec.model_validate(config["spec"])
    info = config["dataset_info"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    reporter = ProgressReporter(config.get("progress"), rank)
    threads = spec.resources_per_worker.threads or max(1, int(spec.resources_per_worker.cpu))
    torch.set_num_threads(threads)
    torch.manual_seed(spec.seed)
    reporter.register_worker()

    deepspeed.init_distributed("nccl" if use_gpu else "gloo")
    memory_at_start = process_memory_mb()  # the runtime (torch, DeepSpeed, Ray) before any model or data
    plugin = get_task(spec.task)
    store = ObjectStore(load_settings())
    splits = {s: _load_split(store, config["dataset_uri"], s) for s in ("train", "dev", "test")}

    from transformers import AutoTokenizer

    base = resolve_base_model(spec.base_model)
    tokenizer = AutoTokenizer.from_pretrained(base)
    encoded = {s: plugin.encode(r, tokenizer, info, spec.max_seq_length) for s, r in splits.items()}
    sampler = DistributedSampler(encoded["train"], num_replicas=world, rank=rank, shuffle=True, seed=spec.seed)
    loader = DataLoader(
        encoded["train"],
        batch_size=spec.micro_batch_size,
        sampler=sampler,
        collate_fn=lambda b: plugin.collate(b, tokenizer),
    )
    gas = spec.gradient_accumulation_steps
    steps_per_epoch = max(1, len(loader) // gas)
    total_steps = spec.max_steps or max(1, math.ceil(spec.epochs * steps_per_epoch))
    ds_cfg = build_deepspeed_config(spec, world, total_steps, on_gpu=use_gpu)
    hf_ds = zero3_context(ds_cfg)  # noqa: F841 - ZeRO-3: load straight into partitions; kept alive for the run
    model = apply_tuning(plugin.build_model(base, info), spec, plugin, total_steps)
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        model_parameters=[p for p in model.parameters() if p.requires_grad],
        config=ds_cfg,
        dist_init_required=False,
    )

    if world == 1 and spec.deepspeed.zero_stage == 0:
        # One rank, no ZeRO: there is nothing to all-reduce, and DeepSpeed would still
        # flatten and "reduce" every gradient each step (about 6% of a MiniLM step).
        engine.enable_backward_allreduce = False

    state: dict[str, Any] = {"history": [], "best": None, "bad_evals": 0, "baseline": None, "checkpoint_step": 0}
    saved = restore_checkpoint(engine, store, config.get("checkpoint_prefix"), world, config.get("resume_from"), dist)
    resumed_from = 0
    if saved is not None:
        state = saved
        resumed_from = engine.global_steps
    stopper = EarlyStopper.from_state(spec.early_stopping, state)  # its counters travel in the state
    eval_bs = spec.micro_batch_size * 2
    # where this run's time goes, for the plan's expected-time estimate (doctune.services.plans)
    timing = {"eval_s": 0.0, "eval_examples": 0, "train_s": 0.0, "train_tokens": 0, "setup_s": 0.0}
    evaluator = Evaluator(engine, encoded, plugin, tokenizer, info, eval_bs)

    def evaluate_timed(split: str) -> dict[str, Any]:
        out = evaluator.run(split)
        timing["eval_s"], timing["eval_examples"] = evaluator.seconds, evaluator.examples
        return out

    send = reporter.send

    send(phase="starting", total_steps=total_steps, resumed_from_step=resumed_from, step=engine.global_steps,
         primary_metric=plugin.primary_metric)
    if state["baseline"] is None:
        # Baseline = the base model with the task's fresh (untrained) head, evaluated the same way.
        send(phase="baseline")
        state["baseline"] = {
            "kind": getattr(plugin, "baseline_kind", "untrained_head"),
            "dev": evaluate_timed("dev"),
            "test": evaluate_timed("test"),
        }
        references = getattr(plugin, "reference_baselines", None)  # model-free baselines, e.g. lead-N
        if references is not None:
            state["baseline"]["references"] = references(splits, info)
        send(baseline=state["baseline"])

    def save_and_report(metrics: dict[str, Any]) -> None:
        state["checkpoint_step"] = engine.global_steps
        save_checkpoint(engine, state, metrics, rank=rank, dist=dist)
        send(last_checkpoint_step=engine.global_steps)

    micro_done = engine.global_steps * gas
    epoch = micro_done // max(len(loader), 1)
    skip = micro_done % max(len(loader), 1)
    reporter.start_training(time.monotonic())
    local_tokens = 0
    stop = engine.global_steps >= total_steps
    last_dev: dict[str, Any] = {}  # the newest dev metrics, carried in every report
    engine.train()
    timing["setup_s"] = time.monotonic() - began - timing["eval_s"]  # loading, building, restoring
    train_began, eval_before = time.monotonic(), timing["eval_s"]
    while not stop:
        sampler.set_epoch(epoch)
        for i, batch in enumerate(loader):
            if i < skip:
                continue
            batch = {k: v.to(engine.device) for k, v in batch.items()}
            before = engine.global_steps
            local_tokens += int(batch["attention_mask"].sum())
            loss = engine(**batch).loss
            engine.backward(loss)
            if spec.tuning.method == "adalora" and engine.is_gradient_accumulation_boundary():
                adalora_step(engine.module, engine.global_steps)  # rank reallocation, while gradients exist
            engine.step()
            reporter.add_loss(loss.detach().item())
            if engine.global_steps == before:  # inside a gradient-accumulation window
                continue
            step = engine.global_steps
            now = time.monotonic()
            talk = reporter.due(step, total_steps, spec.eval_interval, now)
            if talk:
                reporter.poll_pause()
            # one small all-reduce per optimizer step: exact tokens across ranks, and rank 0's pause flag
            shared = torch.tensor([local_tokens, int(reporter.pause_requested and rank == 0)], dtype=torch.long)
            if world > 1:
                dist.all_reduce(shared)
            state["tokens_seen"] = state.get("tokens_seen", 0) + int(shared[0])
            timing["train_tokens"] += int(shared[0])
            local_tokens = 0
            if int(shared[1]) and step < total_steps:  # pause: checkpoint now and leave
                save_and_report({"step": step, "epoch": epoch})
                reporter.deliver({"paused_at": step, "phase": "paused", "step": step,
                                  "tokens_seen": state["tokens_seen"]})
                return
            reporter.step_done(now)  # rate over the last RATE_WINDOW steps: steady state, not warm-up
            if talk:
                reporter.send_training(step=step, epoch=epoch, tokens_seen=state["tokens_seen"], lr=engine.get_lr()[0],
                                       total_steps=total_steps, now=now)
            metrics: dict[str, Any] = {"step": step, "epoch": epoch, **last_dev}
            evaluated = False
            if step % spec.eval_interval == 0 or step >= total_steps:
                evaluated = True
                send(phase="evaluating")
                dev = evaluate_timed("dev")
                state["history"].append({"step": step, **{k: v for k, v in dev.items() if isinstance(v, (int, float))}})
                send(history=state["history"])
                last_dev = {f"dev_{k}": v for k, v in dev.items() if isinstance(v, (int, float))}
                metrics.update(last_dev)
                stopped = stopper.observe(dev, step)
                state.update(stopper.state())
                if stopped:
                    send(early_stopped_at=step)
                    stop = True
            if step % spec.checkpoint_interval == 0 and step < total_steps and not stop:
                save_and_report(metrics)
            elif evaluated and config.get("report_evals"):  # a sweep's trial: Tune ranks (and ASHA stops) on these
                ray.train.report(metrics)
            if step >= total_steps:
                stop = True
            if stop:
                break
        skip = 0
        epoch += 1

    timing["train_s"] = time.monotonic() - train_began - (timing["eval_s"] - eval_before)
    # peak resident memory of training itself (before test evaluation and export), for the plan's estimate
    mine = {"start_mb": memory_at_start["rss_mb"], "peak_train_mb": process_memory_mb()["peak_mb"]}
    ranks: list[Any] = [None] * world
    dist.all_gather_object(ranks, mine)
    memory = {k: max(r[k] for r in ranks) for k in mine} | {"per_rank": ranks}  # the largest worker counts
    send(phase="testing")
    test = evaluate_timed("test")
    dev = evaluate_timed("dev")
    send(phase="exporting")
    export_trained_model(engine, rank=rank, tokenizer=tokenizer, spec=spec, info=info, store=store,
                         prefix=config["export_prefix"], plugin=plugin, splits=splits)
    final = {
        "step": engine.global_steps,
        "tokens_seen": state.get("tokens_seen", 0),
        "epoch": epoch,
        "resumed_from_step": resumed_from,
        "test": test,
        "dev": dev,
        "baseline": state["baseline"],
        "history": state["history"],
        "total_steps": total_steps,
        "memory": memory,
        "timing": timing,
    }
    # wait for delivery: the driver reads it after fit()
    reporter.deliver({"final": final, "phase": "done", "step": engine.global_steps})

