"""Pre-flight plan for a JobSpec: memory per worker, tokens per epoch, steps, the
expected time from throughput measured by earlier jobs, and warnings when the
settings will not fit what was asked (or what the cluster and quota have).

Nothing trains here: the model is built on the ``meta`` device to count its
parameters, and the training split is tokenized to count tokens.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from sqlalchemy import select

from doctune.services import Platform, Principal
from doctune.services.dataset_versions import dataset_view
from doctune.services.jobs import check_spec
from doctune.services.tenants import get_tenant
from doctune.spec import JobSpec
from doctune.states import JobState
from doctune.store.dataset_files import read_split
from doctune.store.db import Job
from doctune.tasks import get_task, task_texts
from doctune.train.plan import MB, count_tokens, estimate_memory, load_tokenizer, model_shape

HISTORY = 5  # the newest comparable finished jobs whose throughput the estimate uses
UNKNOWN_TOKENS_WARN = 0.02


def steps_schedule(n_train: int, spec: JobSpec) -> tuple[int, int]:
    """(optimizer steps per epoch, total steps), exactly as the training loop counts them."""
    per_rank = math.ceil(n_train / spec.num_workers)  # DistributedSampler pads to equal shards
    batches = math.ceil(per_rank / spec.micro_batch_size)
    per_epoch = max(1, batches // spec.gradient_accumulation_steps)
    total = spec.max_steps or max(1, math.ceil((spec.epochs or 1) * per_epoch))
    return per_epoch, total


def measured_throughput(p: Platform, spec: JobSpec) -> dict[str, Any] | None:
    """Throughput of the newest finished jobs with the same base model, tuning method, device
    kind and precision, per logical CPU (or GPU): training tokens/s, evaluation examples/s, and the
    fixed cost of a job (Ray job start, data and model loading, export)."""
    on_gpu = spec.resources_per_worker.gpu > 0
    with p.db.session() as s:
        rows = s.scalars(select(Job).where(Job.status == JobState.SUCCEEDED).order_by(Job.finished_at.desc()).limit(200)).all()
    samples = []
    for job in rows:
        js, timing = job.spec or {}, (job.metrics or {}).get("timing")
        if not timing or timing.get("train_s", 0) <= 0 or (job.metrics or {}).get("resumed_from_step"):
            continue
        res = js.get("resources_per_worker", {})
        if (js.get("base_model"), js.get("tuning", {}).get("method"), (res.get("gpu", 0) or 0) > 0,
                js.get("precision", "fp32")) != (spec.base_model, spec.tuning.method, on_gpu, spec.precision):
            continue  # jobs before JobSpec.precision trained in fp32 on a CPU
        units = js.get("num_workers", 1) * (res.get("gpu") if on_gpu else res.get("cpu", 1))
        wall = (job.finished_at - job.started_at).total_seconds() if job.finished_at and job.started_at else None
        samples.append({
            "tokens_per_s_per_unit": timing["train_tokens"] / timing["train_s"] / units,
            "eval_examples_per_s_per_unit": timing["eval_examples"] / max(timing["eval_s"], 1e-6) / units,
            "fixed_s": max(0.0, wall - timing["train_s"] - timing["eval_s"]) if wall else None,
            "job_id": job.id,
            "tenant_id": job.tenant_id,
        })
        if len(samples) >= HISTORY:
            break
    if not samples:
        return None
    fixed = [x["fixed_s"] for x in samples if x["fixed_s"] is not None]
    return {
        "tokens_per_s_per_unit": statistics.median(x["tokens_per_s_per_unit"] for x in samples),
        "eval_examples_per_s_per_unit": statistics.median(x["eval_examples_per_s_per_unit"] for x in samples),
        "fixed_s": statistics.median(fixed) if fixed else 0.0,
        "jobs": len(samples),
        "own_job_ids": [x["job_id"] for x in samples if x["tenant_id"] == spec.tenant],
    }


def reached_at(history: list[dict[str, Any]], metric: str, target: float, mode: str) -> int | None:
    """The step of the first dev evaluation in ``history`` at or past ``target`` (None: never)."""
    for point in history:
        value = point.get(metric)
        if value is not None and (value >= target if mode == "max" else value <= target):
            return point["step"]
    return None


def target_fraction(p: Platform, spec: JobSpec) -> dict[str, Any] | None:
    """How far into the newest finished jobs on the same dataset, task, base model and method their dev
    metric first reached ``spec.early_stopping.target``: the median fraction of their steps (a job that
    never reached it counts as 1.0, the whole run). None without a target or such jobs."""
    rule = spec.early_stopping
    if rule is None or rule.target is None:
        return None
    with p.db.session() as s:
        rows = s.scalars(select(Job).where(Job.status == JobState.SUCCEEDED, Job.tenant_id == spec.tenant)
                         .order_by(Job.finished_at.desc()).limit(200)).all()
    fractions, reached = [], 0
    for job in rows:
        js, metrics = job.spec or {}, job.metrics or {}
        if ((js.get("dataset") or {}).get("id"), js.get("task"), js.get("base_model"),
                (js.get("tuning") or {}).get("method")) != (spec.dataset.id, spec.task, spec.base_model,
                                                            spec.tuning.method):
            continue
        total = metrics.get("total_steps") or metrics.get("step")
        step = reached_at(metrics.get("history") or [], rule.metric, rule.target, rule.mode)
        if not total:
            continue
        reached += step is not None
        fractions.append(min(1.0, step / total) if step is not None else 1.0)
        if len(fractions) >= HISTORY:
            break
    if not fractions:
        return None
    return {"fraction": statistics.median(fractions), "jobs": len(fractions), "reached": reached}


def time_to_target(p: Platform, spec: JobSpec, time_est: dict[str, Any] | None) -> dict[str, Any] | None:
    """The expected time until the dev metric reaches the spec's early-stopping target, from the
    expected time to the last step and how far into earlier runs on this dataset the target was met."""
    found = target_fraction(p, spec) if time_est is not None else None
    if found is None:
        return None
    rule = spec.early_stopping
    return {
        "total_s": round(time_est["fixed_s"] + (time_est["train_s"] + time_est["eval_s"]) * found["fraction"]),
        "fraction_of_steps": round(found["fraction"], 3),
        "basis": f"dev {rule.metric} reached {rule.target:g} in {found['reached']} of the {found['jobs']} newest "
                 f"finished job(s) of this tenant on this dataset with the same base model and method (median point)",
    }


def plan_job(p: Platform, caller: Principal, spec: JobSpec) -> dict[str, Any]:
    """The plan of ``spec``. Of a tenant's own base model it reads only config.json and the
    tokenizer (into a scratch folder deleted before it returns), never the weights."""
    from doctune.base_models import planning_files

    ds = check_spec(p, caller, spec)
    plugin = get_task(spec.task)
    view = dataset_view(p, ds, spec.dataset.version)  # the version the job would train on
    info = view.info
    on_gpu = spec.resources_per_worker.gpu > 0
    splits = {name: read_split(p.objects, info["parts"], name) for name in ("train", "dev", "test")}
    with planning_files(spec.base_model, p.objects) as base:
        shape = model_shape(spec, plugin, base, info, on_gpu=on_gpu)
        # a scratch copy is loaded uncached: its folder is gone once the plan answers
        tokenizer = load_tokenizer(base, cached=not spec.base_model.startswith("s3://"))
        tokens = count_tokens(task_texts(plugin, splits["train"]), tokenizer, spec.max_seq_length)
    memory = estimate_memory(shape, spec, on_gpu=on_gpu)
    per_epoch, total_steps = steps_schedule(len(splits["train"]), spec)
    evals = total_steps // spec.eval_interval + (0 if total_steps % spec.eval_interval == 0 else 1)
    eval_examples = (evals + 2) * len(splits["dev"]) + 2 * len(splits["test"])  # + baseline and final dev/test
    train_tokens = tokens["tokens_per_epoch"] * total_steps / per_epoch

    warnings: list[str] = []
    throughput = measured_throughput(p, spec)
    time_est: dict[str, Any] | None = None
    if throughput is None:
        warnings.append(
            f"no finished {spec.tuning.method} job of {spec.base_model} on {'GPU' if on_gpu else 'CPU'} has measured "
            "throughput yet, so there is no time estimate; a short job (max_steps: 20) measures it"
        )
    else:
        units = spec.num_workers * (spec.resources_per_worker.gpu if on_gpu else spec.resources_per_worker.cpu)
        train_s = train_tokens / (throughput["tokens_per_s_per_unit"] * units)
        eval_s = eval_examples / (throughput["eval_examples_per_s_per_unit"] * units)
        time_est = {
            "total_s": round(train_s + eval_s + throughput["fixed_s"]),
            "train_s": round(train_s),
            "eval_s": round(eval_s),
            "fixed_s": round(throughput["fixed_s"]),
            "basis": f"median of {throughput['jobs']} finished job(s) with the same base model, method and device",
            "tokens_per_s": round(throughput["tokens_per_s_per_unit"] * units),
            "own_job_ids": throughput["own_job_ids"],
        }

    warnings += fit_warnings(p, spec, memory.as_dict(), on_gpu)
    if tokens["unknown_token_fraction"] > UNKNOWN_TOKENS_WARN:
        warnings.append(
            f"{tokens['unknown_token_fraction']:.0%} of the training tokens are unknown to {spec.base_model}'s "
            "tokenizer: the model cannot read this language; choose a base model whose tokenizer covers it "
            "(gemma-3-270m covers Chinese)"
        )
    if tokens["truncated_documents"] > 0.5 * max(tokens["documents"], 1):
        warnings.append(
            f"{tokens['truncated_documents']} of {tokens['documents']} training documents are longer than "
            f"max_seq_length {spec.max_seq_length} and will be truncated (mean {tokens['mean_tokens']:.0f} tokens)"
        )
    return {
        "tenant": spec.tenant,
        "task": spec.task,
        "base_model": spec.base_model,
        "dataset": {"id": ds.id, "train": len(splits["train"]), "dev": len(splits["dev"]), "test": len(splits["test"])},
        "model": {
            "parameters": shape.params_total,
            "trainable_parameters": shape.params_trainable,
            "trainable_fraction": shape.params_trainable / max(shape.params_total, 1),
            "method": spec.tuning.method,
        },
        "memory_per_worker_mb": memory.as_dict(),
        "workers": spec.num_workers,
        "tokens": tokens,
        "steps": {"per_epoch": per_epoch, "total": total_steps, "evaluations": evals,
                  "examples_per_step": spec.micro_batch_size * spec.gradient_accumulation_steps * spec.num_workers},
        "expected_time": time_est,
        "expected_time_to_target": time_to_target(p, spec, time_est),
        "fits": not any(w.startswith("will not fit") for w in warnings),
        "warnings": warnings,
    }


def fit_warnings(p: Platform, spec: JobSpec, memory: dict[str, float], on_gpu: bool) -> list[str]:
    """Compare the estimate and the resources asked with the worker's memory limit, the
    cluster's nodes and the tenant's quota."""
    out: list[str] = []
    res = spec.resources_per_worker
    need = memory["total_mb"]
    if res.memory_gb is not None and need > res.memory_gb * 1024:
        out.append(f"will not fit: about {need / 1024:.1f} GiB per worker but resources_per_worker.memory_gb is "
                   f"{res.memory_gb}; raise it, lower micro_batch_size/max_seq_length, or use LoRA / a higher ZeRO stage")
    try:
        cluster = p.runner.resources()
    except Exception:  # noqa: BLE001 - the plan stays useful without a reachable cluster
        cluster = None
        out.append("the cluster did not answer: resources were not checked against it")
    if cluster is not None:
        mem_total_mb = cluster.memory_bytes / MB
        if mem_total_mb and need * spec.num_workers > mem_total_mb:
            out.append(f"will not fit: {spec.num_workers} workers x {need / 1024:.1f} GiB exceeds the cluster's "
                       f"{mem_total_mb / 1024:.1f} GiB of memory for tasks")
        if res.cpu * spec.num_workers > cluster.cpus:
            out.append(f"will not fit: {spec.num_workers} workers x {res.cpu} CPUs exceeds the cluster's "
                       f"{cluster.cpus:g} CPUs; the job would wait in the queue forever")
        if on_gpu and res.gpu * spec.num_workers > cluster.gpus:
            out.append(f"will not fit: asks for {res.gpu * spec.num_workers:g} GPUs, the cluster has {cluster.gpus:g}")
    tenant = get_tenant(p, spec.tenant)
    if tenant is not None:
        if tenant.max_cpus is not None and res.cpu * spec.num_workers > tenant.max_cpus:
            out.append(f"will not fit: needs {res.cpu * spec.num_workers:g} CPUs, tenant {spec.tenant}'s quota is "
                       f"{tenant.max_cpus:g}; ask an admin to raise max_cpus or use fewer workers")
        if on_gpu and tenant.max_gpus is not None and res.gpu * spec.num_workers > tenant.max_gpus:
            out.append(f"will not fit: needs {res.gpu * spec.num_workers:g} GPUs, tenant {spec.tenant}'s quota is "
                       f"{tenant.max_gpus:g}")
    if not on_gpu and (spec.deepspeed.offload_optimizer or spec.deepspeed.offload_params):
        out.append("offload moves state from accelerator to host memory; on CPU workers both are the same RAM, "
                   "so it saves nothing here")
    if spec.deepspeed.zero_stage >= 1 and spec.num_workers == 1:
        out.append(f"ZeRO stage {spec.deepspeed.zero_stage} shards across workers; with 1 worker it shards nothing")
    return out
