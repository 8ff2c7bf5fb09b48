"""The job driver: what ``python -m ray_jobs.finetune`` runs on the Ray cluster.

It reads the job record, builds a Ray Train ``TorchTrainer`` whose run storage
is ``tenants/<tenant>/jobs/<job-id>/`` in the object store, streams progress from
rank 0 into the job record, and on success registers the exported model.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from doctune.errors import DoctuneError
from doctune.services._context import Platform
from doctune.services.jobs import add_event, update_job
from doctune.spec import JobSpec
from doctune.store.db import Dataset, Job, Model, new_id
from doctune.store.objects import tenant_key


def _progress_actor_cls():
    import ray

    @ray.remote(num_cpus=0)
    class ProgressActor:
        """Collects rank 0's progress; the driver copies it into the job record."""

        def __init__(self) -> None:
            self.state: dict[str, Any] = {"worker_pids": {}}
            self.version = 0

        def update(self, fields: dict[str, Any]) -> None:
            self.state.update(fields)
            self.version += 1

        def register_worker(self, rank: int, pid: int) -> None:
            self.state["worker_pids"] = {**self.state["worker_pids"], str(rank): pid}
            self.version += 1

        def get(self) -> tuple[int, dict[str, Any]]:
            return self.version, self.state

    return ProgressActor


def record_progress_events(p: Platform, job_id: str, prev: dict[str, Any], state: dict[str, Any]) -> None:
    """Turn what changed between two progress snapshots into job events."""
    if state.get("step") != prev.get("step") and state.get("phase") == "training":
        add_event(p, job_id, "progress", {k: state.get(k) for k in ("step", "total_steps", "epoch", "loss", "lr", "tokens_seen", "steps_per_s", "eta_s")})
    history = state.get("history") or []
    for entry in history[len(prev.get("history") or []):]:
        add_event(p, job_id, "eval", entry)
    if state.get("last_checkpoint_step") not in (None, prev.get("last_checkpoint_step")):
        add_event(p, job_id, "checkpoint", {"step": state["last_checkpoint_step"]})
    if state.get("resumed_from_step") and state.get("resumed_from_step") != prev.get("resumed_from_step"):
        add_event(p, job_id, "resumed", {"step": state["resumed_from_step"]},
                  reason="Ray Train restarted the workers; resumed from the last checkpoint")


def run_job(job_id: str, p: Platform | None = None) -> dict[str, Any]:
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from doctune.train.loop import train_loop_per_worker

    p = p or Platform()
    with p.db.session() as s:
        job = s.get(Job, job_id)
        if job is None:
            raise DoctuneError(f"job {job_id!r} not found", "not_found")
        dataset = s.get(Dataset, job.spec["dataset"]["id"])
    spec = JobSpec.model_validate(job.spec)
    if job.status in ("succeeded", "failed", "cancelled"):
        raise DoctuneError(f"job {job_id} is already {job.status}", "conflict")
    update_job(p, job_id, status="running", progress={"phase": "scheduling"}, reason="the job's Ray driver started")

    if not ray.is_initialized():
        ray.init(log_to_driver=True)
    use_gpu = spec.resources_per_worker.gpu > 0
    model_id = new_id("model")
    progress = _progress_actor_cls().remote()
    stop = threading.Event()

    def pump() -> None:  # progress actor -> job record + events, every 2 s
        seen, prev = -1, {}
        while not stop.is_set():
            try:
                version, state = ray.get(progress.get.remote(), timeout=10)
                if version != seen:
                    update_job(p, job_id, progress={k: v for k, v in state.items() if k != "final"})
                    record_progress_events(p, job_id, prev, state)
                    seen, prev = version, state
            except Exception:
                pass
            stop.wait(2.0)

    pumper = threading.Thread(target=pump, daemon=True)
    pumper.start()
    resources = {"CPU": spec.resources_per_worker.cpu}
    if use_gpu:
        resources["GPU"] = spec.resources_per_worker.gpu
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "spec": spec.model_dump(mode="json"),
            "dataset_uri": dataset.uri,
            "dataset_info": dataset.info,
            "export_prefix": tenant_key(spec.tenant, "models", model_id),
            "progress": progress,
            "use_gpu": use_gpu,
        },
        scaling_config=ScalingConfig(num_workers=spec.num_workers, use_gpu=use_gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name="checkpoints",
            storage_path=f"{p.settings.bucket}/{tenant_key(spec.tenant, 'jobs', job_id)}",
            storage_filesystem=p.objects.pyarrow_fs(),
            failure_config=FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )
    fit_started = time.monotonic()
    try:
        result = trainer.fit()
        _, last = ray.get(progress.get.remote(), timeout=30)
        final = last["final"]
    except Exception as exc:
        stop.set()
        message = str(getattr(exc, "message", None) or exc)
        update_job(p, job_id, status="failed", error={"code": "training_failed", "message": message[-4000:]},
                   reason="training failed (after any retries from checkpoints)")
        raise
    finally:
        stop.set()
        pumper.join(timeout=5)
    info = {"labels": dataset.info.get("labels"), "max_seq_length": spec.max_seq_length}
    model = Model(
        id=model_id,
        tenant_id=spec.tenant,
        job_id=job_id,
        task=spec.task,
        uri=p.objects.uri(tenant_key(spec.tenant, "models", model_id)),
        merged=spec.tuning.method == "full" or spec.tuning.merge_adapter,
        info=info,
        metrics={"test": final["test"], "dev": final["dev"], "baseline": final["baseline"]},
    )
    with p.db.session() as s:
        s.add(model)
    wall = time.monotonic() - fit_started
    usage = {
        "trained_tokens": final.get("tokens_seen", 0),
        "worker_cpu_seconds": round(wall * spec.num_workers * spec.resources_per_worker.cpu, 1),
        "worker_gpu_seconds": round(wall * spec.num_workers * spec.resources_per_worker.gpu, 1),
        "wall_seconds": round(wall, 1),
    }
    metrics = {**final, "usage": usage, "checkpoint_path": result.checkpoint.path if result.checkpoint else None}
    update_job(p, job_id, status="succeeded", metrics=metrics, model_id=model_id,
               progress={k: v for k, v in last.items() if k != "final"}, reason=f"trained and registered model {model_id}")
    return metrics


def submit_spec_directly(spec: JobSpec, p: Platform | None = None) -> str:
    """For `ray job submit -- python -m ray_jobs.finetune --spec job.yaml`: record the
    job under the tenant of ``DOCTUNE_API_KEY`` (or, without one, as the cluster
    operator who holds the Ray token) and start it here if the tenant's quota allows."""
    import os

    from doctune.services._context import Principal
    from doctune.services.jobs import create_job_record
    from doctune.services.scheduler import claim_direct
    from doctune.services.tenants import authenticate

    p = p or Platform()
    key = os.environ.get("DOCTUNE_API_KEY")
    caller = authenticate(p, key) if key else Principal(key_id="ray-operator", role="admin", tenant_id=None)
    job = create_job_record(p, caller, spec)
    claim_direct(p, job.id)
    return job.id
