"""The per-worker training loop that Ray Train runs on every rank.

:func:`train_loop_per_worker` is the function :func:`doctune.train.trainer.build_trainer`
hands to Ray Train. Each rank builds the task's model (LoRA via peft when asked), wraps
it in a DeepSpeed engine built from the JobSpec, resumes from the newest checkpoint when
Ray Train restarts the worker group after a failure (:mod:`doctune.train.checkpoints`),
evaluates the untrained baseline, trains on its shard, evaluates on dev every
``eval_interval`` steps (:mod:`doctune.train.evaluation`, with early stopping from
:mod:`doctune.train.early_stopping`), saves checkpoints every ``checkpoint_interval``
steps through ``ray.train.report``, pauses when the driver asks, and at the end tests
and exports the model in Hugging Face format (:mod:`doctune.train.export`). Rank 0
streams progress to the driver's ProgressActor (:mod:`doctune.train.progress`).

Under ZeRO-3 every rank must run the same forward passes and collectives in the same
order, so every decision that ends or branches the loop (pause, early stop, last step)
is taken identically on every rank: from the per-step all-reduce or from gathered
metrics.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from doctune.spec import EarlyStoppingSpec, JobSpec
from doctune.store.dataset_files import read_split
from doctune.train.checkpoints import restore_checkpoint, save_checkpoint
from doctune.train.early_stopping import EarlyStopper
from doctune.train.evaluation import Evaluator
from doctune.train.export import export_trained_model
from doctune.train.precision import apply_precision, resolve_precision
from doctune.train.progress import PROGRESS_EVERY_S, RATE_WINDOW, ProgressReporter
from doctune.train.tuning import adalora_step

__all__ = ["PROGRESS_EVERY_S", "RATE_WINDOW", "TrainingState", "WorkerError", "WorkerRun", "process_memory_mb",
           "train_loop_per_worker"]

_PAUSED, _STOP = "paused", "stop"  # what an optimizer step can end the loop with
_STOP_CODES = {"pause": 1, "cancel": 2}  # rank 0's stop request, as the per-step all-reduce carries it


class WorkerError(Exception):
    """A failure inside a training worker, with the rank and step it happened at."""

    def __init__(self, message: str, rank: int, step: int) -> None:
        super().__init__(message, rank, step)
        self.message, self.rank, self.step = message, rank, step

    def __str__(self) -> str:
        return f"rank {self.rank}, step {self.step}: {self.message}"


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """One rank of a job attempt: set up → baseline → steps → test/dev → export → final."""
    run = WorkerRun.set_up(config)
    run.evaluate_baseline()
    if not run.train():
        return  # paused (checkpointed, and the driver knows where) or cancelled
    memory = run.gather_memory()
    test, dev = run.evaluate_test_and_dev()
    run.export()
    run.deliver_final(test=test, dev=dev, memory=memory)


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


@dataclass
class TrainingState:
    """The loop's state that a checkpoint carries beside the engine (rank 0's
    ``doctune_state.json``): dev history, baseline, early-stopping counters, tokens seen."""

    stopper: EarlyStopper
    history: list[dict[str, Any]] = field(default_factory=list)
    baseline: dict[str, Any] | None = None
    checkpoint_step: int = 0
    tokens_seen: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any], rule: EarlyStoppingSpec | None) -> TrainingState:
        return cls(stopper=EarlyStopper.from_state(rule, data), history=data.get("history", []),
                   baseline=data.get("baseline"), checkpoint_step=data.get("checkpoint_step", 0),
                   tokens_seen=data.get("tokens_seen", 0))

    def to_dict(self) -> dict[str, Any]:
        """The JSON a checkpoint stores (the key layout every doctune checkpoint has)."""
        return {"history": self.history, **self.stopper.state(), "baseline": self.baseline,
                "checkpoint_step": self.checkpoint_step, "tokens_seen": self.tokens_seen}


@dataclass
class WorkerData:
    """One rank's data: the splits as stored, encoded, and this rank's train loader."""

    info: dict[str, Any]
    base: str  # the base model's local path
    tokenizer: Any
    splits: dict[str, list[dict[str, Any]]]
    encoded: dict[str, list[Any]]
    sampler: Any
    loader: Any


def _set_environment(use_gpu: bool) -> None:
    """Environment defaults that must be set before DeepSpeed and transformers load."""
    if not use_gpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def _load_split(store, dataset_uri: str, split: str, parts: list[str] | None = None) -> list[dict[str, Any]]:
    """``split`` of the job's dataset version: each version's own files up to it, in order (``parts``,
    from the dataset info; none: the dataset's files at ``dataset_uri`` alone)."""
    return read_split(store, parts or [dataset_uri], split)


def load_worker_data(config: dict[str, Any], spec: JobSpec, plugin: Any, store: Any, rank: int,
                     world: int) -> WorkerData:
    """Read the dataset's splits, encode them with the base model's tokenizer, and build
    this rank's shuffled shard of train."""
    from torch.utils.data import DataLoader, DistributedSampler

    info = config["dataset_info"]
    splits = {s: _load_split(store, config["dataset_uri"], s, info.get("parts")) for s in ("train", "dev", "test")}

    from transformers import AutoTokenizer

    from doctune.base_models import resolve_base_model

    base = resolve_base_model(spec.base_model)
    tokenizer = AutoTokenizer.from_pretrained(base)
    encoded = {s: plugin.encode(r, tokenizer, info, spec.max_seq_length) for s, r in splits.items()}
    for version, n in (info.get("compare_test") or {}).items():  # an earlier version's test split: its first n
        encoded[f"test@{version}"] = plugin.encode(splits["test"][:n], tokenizer, info, spec.max_seq_length)
    sampler = DistributedSampler(encoded["train"], num_replicas=world, rank=rank, shuffle=True, seed=spec.seed)
    loader = DataLoader(
        encoded["train"],
        batch_size=spec.micro_batch_size,
        sampler=sampler,
        collate_fn=lambda b: plugin.collate(b, tokenizer),
    )
    return WorkerData(info=info, base=base, tokenizer=tokenizer, splits=splits, encoded=encoded, sampler=sampler,
                      loader=loader)


def count_total_steps(spec: JobSpec, batches_per_epoch: int) -> int:
    """Optimizer steps in the run: ``max_steps``, or ``epochs`` worth of this rank's batches."""
    steps_per_epoch = max(1, batches_per_epoch // spec.gradient_accumulation_steps)
    return spec.max_steps or max(1, math.ceil(spec.epochs * steps_per_epoch))


def build_engine(spec: JobSpec, plugin: Any, data: WorkerData, world: int, total_steps: int,
                 use_gpu: bool) -> tuple[Any, Any]:
    """The DeepSpeed engine over the task's model with the spec's tuning applied, and the
    ZeRO-3 context (None below stage 3) that must stay referenced for the whole run."""
    import deepspeed

    from doctune.train.ds_config import build_deepspeed_config, zero3_context
    from doctune.train.tuning import apply_tuning

    ds_cfg = build_deepspeed_config(spec, world, total_steps, on_gpu=use_gpu)
    zero3 = zero3_context(ds_cfg)  # ZeRO-3: load straight into partitions; kept alive for the run
    model = apply_precision(apply_tuning(plugin.build_model(data.base, data.info), spec, plugin, total_steps),
                            spec.precision, use_gpu)
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
    return engine, zero3


@dataclass
class WorkerRun:
    """One rank's run of one job attempt: what set-up built, and the counters the steps
    advance. Its methods are the phases :func:`train_loop_per_worker` runs in order."""

    config: dict[str, Any]
    spec: JobSpec
    rank: int
    world: int
    began: float  # time.monotonic() when set-up began
    memory_at_start: dict[str, float]
    reporter: ProgressReporter
    plugin: Any
    store: Any
    data: WorkerData
    total_steps: int
    engine: Any
    zero3: Any  # referenced so that it lives as long as the run
    state: TrainingState
    resumed_from: int
    evaluator: Evaluator
    epoch: int = 0
    last_dev: dict[str, Any] = field(default_factory=dict)  # the newest dev metrics, carried in every report
    local_tokens: int = 0  # this rank's tokens since the last optimizer step
    train_tokens: int = 0  # all ranks' tokens trained on in this attempt
    setup_s: float = 0.0
    train_s: float = 0.0
    test_by_version: dict[str, Any] = field(default_factory=dict)  # version -> test metrics on its test split

    @classmethod
    def set_up(cls, config: dict[str, Any]) -> WorkerRun:
        """Seed, join the process group, load the data, build the engine and restore the
        newest checkpoint; tells the driver the run is starting."""
        entered = time.time()  # before torch and DeepSpeed are imported: the timeline's worker_started
        use_gpu = config.get("use_gpu", False)
        _set_environment(use_gpu)

        import deepspeed
        import ray.train
        import torch
        import torch.distributed as dist

        from doctune.config import load_settings
        from doctune.store.objects import ObjectStore
        from doctune.tasks import get_task

        began = time.monotonic()
        spec = JobSpec.model_validate(config["spec"])
        ctx = ray.train.get_context()
        rank, world = ctx.get_world_rank(), ctx.get_world_size()
        reporter = ProgressReporter(config.get("progress"), rank)
        torch.set_num_threads(spec.resources_per_worker.threads or max(1, int(spec.resources_per_worker.cpu)))
        torch.manual_seed(spec.seed)
        reporter.register_worker()
        reporter.mark("worker_started", entered)

        deepspeed.init_distributed("nccl" if use_gpu else "gloo")
        reporter.mark("process_group_ready")
        memory_at_start = process_memory_mb()  # the runtime (torch, DeepSpeed, Ray) before any model or data
        plugin = get_task(spec.task)
        store = ObjectStore(load_settings())
        data = load_worker_data(config, spec, plugin, store, rank, world)
        total_steps = count_total_steps(spec, len(data.loader))
        engine, zero3 = build_engine(spec, plugin, data, world, total_steps, use_gpu)

        saved = restore_checkpoint(engine, store, config.get("checkpoint_prefix"), world, config.get("resume_from"),
                                   dist)
        state = (TrainingState.from_dict(saved, spec.early_stopping) if saved is not None
                 else TrainingState(stopper=EarlyStopper(spec.early_stopping)))
        resumed_from = engine.global_steps if saved is not None else 0
        evaluator = Evaluator(engine, data.encoded, plugin, data.tokenizer, data.info, spec.micro_batch_size * 2)
        reporter.mark("model_loaded")  # data read and encoded, engine built, checkpoint restored
        reporter.send(phase="starting", total_steps=total_steps, resumed_from_step=resumed_from,
                      step=engine.global_steps, primary_metric=plugin.primary_metric)
        return cls(config=config, spec=spec, rank=rank, world=world, began=began, memory_at_start=memory_at_start,
                   reporter=reporter, plugin=plugin, store=store, data=data, total_steps=total_steps, engine=engine,
                   zero3=zero3, state=state, resumed_from=resumed_from, evaluator=evaluator)

    def evaluate_baseline(self) -> None:
        """Evaluate the base model with the task's fresh (untrained) head, the same way as
        the trained one, unless a restored checkpoint already holds the baseline."""
        if self.state.baseline is not None:
            return
        self.reporter.send(phase="baseline")
        baseline = {
            "kind": getattr(self.plugin, "baseline_kind", "untrained_head"),
            "dev": self.evaluator.run("dev"),
            "test": self.evaluator.run("test"),
        }
        references = getattr(self.plugin, "reference_baselines", None)  # model-free baselines, e.g. TF-IDF + LR
        if references is not None and self.rank == 0:  # model-free: one rank computes them, for the report
            baseline["references"] = references(self.data.splits, self.data.info)
        self.state.baseline = baseline
        self.reporter.send(baseline=baseline)

    def train(self) -> bool:
        """The step loop, from the restored step to the last one (or an early stop); False
        when the driver paused the run (checkpointed, progress delivered) or its job was cancelled."""
        engine, loader = self.engine, self.data.loader
        micro_done = engine.global_steps * self.spec.gradient_accumulation_steps
        self.epoch = micro_done // max(len(loader), 1)
        skip = micro_done % max(len(loader), 1)  # micro-batches of this epoch the checkpoint already trained on
        self.reporter.start_training(time.monotonic())
        self.reporter.mark("training_started")  # after the baseline evaluation
        stop = engine.global_steps >= self.total_steps
        engine.train()
        self.setup_s = time.monotonic() - self.began - self.evaluator.seconds  # loading, building, restoring
        train_began, eval_before = time.monotonic(), self.evaluator.seconds
        while not stop:
            self.data.sampler.set_epoch(self.epoch)
            for i, batch in enumerate(loader):
                if i < skip or not self._train_micro_batch(batch):
                    continue  # skipped, or inside a gradient-accumulation window
                outcome = self._after_optimizer_step()
                if outcome == _PAUSED:
                    return False
                if outcome == _STOP:
                    stop = True
                    break
            skip = 0
            self.epoch += 1
        self.train_s = time.monotonic() - train_began - (self.evaluator.seconds - eval_before)
        return True

    def _train_micro_batch(self, batch: dict[str, Any]) -> bool:
        """Forward and backward on one micro-batch, and the optimizer step at the end of a
        gradient-accumulation window; True when an optimizer step was taken."""
        engine = self.engine
        batch = {k: v.to(engine.device) for k, v in batch.items()}
        before = engine.global_steps
        self.local_tokens += int(batch["attention_mask"].sum())
        loss = engine(**batch).loss
        engine.backward(loss)
        if self.spec.tuning.method == "adalora" and engine.is_gradient_accumulation_boundary():
            adalora_step(engine.module, engine.global_steps)  # rank reallocation, while gradients exist
        engine.step()
        self.reporter.add_loss(loss.detach().item())
        return engine.global_steps != before

    def _after_optimizer_step(self) -> str | None:
        """Count tokens, pause, report, evaluate and checkpoint after an optimizer step, in
        the same order on every rank; ``_PAUSED`` or ``_STOP`` ends the loop."""
        step, now, spec = self.engine.global_steps, time.monotonic(), self.spec
        talk = self.reporter.due(step, self.total_steps, spec.eval_interval, now)
        if talk:
            self.reporter.poll_pause()
        tokens, stop_code = self._share_step_counts()
        self.state.tokens_seen += tokens
        self.train_tokens += tokens
        if stop_code == _STOP_CODES["cancel"]:  # cancelled: leave now, keep nothing
            self.reporter.deliver({"cancelled_at": step, "phase": "cancelled", "step": step})
            return _PAUSED
        if stop_code and step < self.total_steps:  # pause: checkpoint now and leave
            self._pause(step)
            return _PAUSED
        self.reporter.step_done(now)
        if step == self.resumed_from + 1:
            self.reporter.mark("first_step")
        if talk:
            self.reporter.send_training(step=step, epoch=self.epoch, tokens_seen=self.state.tokens_seen,
                                        lr=self.engine.get_lr()[0], total_steps=self.total_steps, now=now,
                                        memory_mb=process_memory_mb()["rss_mb"] if self.rank == 0 else None)
        metrics: dict[str, Any] = {"step": step, "epoch": self.epoch, **self.last_dev}
        evaluated = step % spec.eval_interval == 0 or step >= self.total_steps
        stop = evaluated and self._evaluate_dev(step, metrics)
        if step % spec.checkpoint_interval == 0 and step < self.total_steps and not stop:
            self._save_checkpoint(metrics)
        elif evaluated and self.config.get("report_evals"):  # a sweep's trial: Tune ranks (and ASHA stops) on these
            import ray.train

            ray.train.report(metrics)
        return _STOP if stop or step >= self.total_steps else None

    def _share_step_counts(self) -> tuple[int, int]:
        """One small all-reduce per optimizer step: exact tokens across ranks, and rank 0's
        stop request (0 none, else a :data:`_STOP_CODES` value), so every rank stops at the same step."""
        import torch
        import torch.distributed as dist

        stop = _STOP_CODES.get(self.reporter.stop_kind or "", 0) if self.rank == 0 else 0
        shared = torch.tensor([self.local_tokens, stop], dtype=torch.long)
        if self.world > 1:
            dist.all_reduce(shared)
        self.local_tokens = 0
        return int(shared[0]), int(shared[1])

    def _pause(self, step: int) -> None:
        self._save_checkpoint({"step": step, "epoch": self.epoch})
        self.reporter.deliver({"paused_at": step, "phase": "paused", "step": step,
                               "tokens_seen": self.state.tokens_seen})

    def _evaluate_dev(self, step: int, metrics: dict[str, Any]) -> bool:
        """Evaluate on dev, record it (history, ``metrics``) and apply early stopping; True
        to stop. The stop decision comes from gathered metrics: the same on every rank."""
        self.reporter.send(phase="evaluating")
        dev = self.evaluator.run("dev")
        numeric = {k: v for k, v in dev.items() if isinstance(v, (int, float))}
        self.state.history.append({"step": step, **numeric})
        self.reporter.send(history=self.state.history)
        self.last_dev = {f"dev_{k}": v for k, v in numeric.items()}
        metrics.update(self.last_dev)
        if self.state.stopper.observe(dev, step):
            self.reporter.send(early_stopped_at=step, early_stop_reason=str(self.state.stopper.reason))
            return True
        return False

    def _save_checkpoint(self, metrics: dict[str, Any]) -> None:
        import torch.distributed as dist

        self.state.checkpoint_step = self.engine.global_steps
        save_checkpoint(self.engine, self.state.to_dict(), metrics, rank=self.rank, dist=dist)
        self.reporter.send(last_checkpoint_step=self.engine.global_steps)

    def gather_memory(self) -> dict[str, Any]:
        """Peak resident memory of training itself (before test evaluation and export), for
        the plan's estimate: the largest worker's, and every rank's (a collective)."""
        import torch.distributed as dist

        mine = {"start_mb": self.memory_at_start["rss_mb"], "peak_train_mb": process_memory_mb()["peak_mb"]}
        ranks: list[Any] = [None] * self.world
        dist.all_gather_object(ranks, mine)
        return {k: max(r[k] for r in ranks) for k in mine} | {"per_rank": ranks}

    def evaluate_test_and_dev(self) -> tuple[dict[str, Any], dict[str, Any]]:
        self.reporter.send(phase="testing")
        test = self.evaluator.run("test")
        dev = self.evaluator.run("dev")
        self.test_by_version = {name.split("@", 1)[1]: self.evaluator.run(name)  # in one order on every rank
                                for name in sorted(self.data.encoded) if name.startswith("test@")}
        return test, dev

    def export(self) -> None:
        self.reporter.send(phase="exporting")
        export_trained_model(self.engine, rank=self.rank, tokenizer=self.data.tokenizer, spec=self.spec,
                             info=self.data.info, store=self.store, prefix=self.config["export_prefix"],
                             plugin=self.plugin, splits=self.data.splits)

    def deliver_final(self, *, test: dict[str, Any], dev: dict[str, Any], memory: dict[str, Any]) -> None:
        """The run's result, delivered before returning: the driver reads it after fit()."""
        # where this run's time goes, for the plan's expected-time estimate (doctune.services.plans)
        timing = {"eval_s": self.evaluator.seconds, "eval_examples": self.evaluator.examples,
                  "train_s": self.train_s, "train_tokens": self.train_tokens, "setup_s": self.setup_s,
                  "precision": resolve_precision(self.spec.precision, self.config.get("use_gpu", False))}
        final = {
            "step": self.engine.global_steps,
            "tokens_seen": self.state.tokens_seen,
            "epoch": self.epoch,
            "resumed_from_step": self.resumed_from,
            "test": test,
            "dev": dev,
            "baseline": self.state.baseline,
            "history": self.state.history,
            "total_steps": self.total_steps,
            "memory": memory,
            "timing": timing,
            # the optimizer DeepSpeed built: DeepSpeedCPUAdam when the optimizer state is offloaded
            "optimizer": type(getattr(self.engine, "basic_optimizer", None) or self.engine.optimizer).__name__,
        }
        if self.test_by_version:  # dataset.compare_version: the test metrics on that version's test split
            final["test_by_version"] = self.test_by_version
        self.reporter.deliver({"final": final, "phase": "done", "step": self.engine.global_steps})
