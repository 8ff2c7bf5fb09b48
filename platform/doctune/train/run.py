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
from doctune.train.loop import newest_complete_checkpoint
from doctune.train.tuning import merges_on_export


def _progress_actor_cls():
    import ray

    @ray.remote(num_cpus=0)
    class ProgressActor:
        """Collects rank 0's progress (the driver copies it into the job record) and
        carries a stop request from the driver to rank 0 (pause)."""

        def __init__(self) -> None:
            self.state: dict[str, Any] = {"worker_pids": {}}
            self.version = 0
            self.stop_requested = False

        def update(self, fields: dict[str, Any]) -> None:
            self.state.update(fields)
            self.version += 1

        def register_worker(self, rank: int, pid: int) -> None:
            self.state["worker_pids"] = {**self.state["worker_pids"], str(rank): pid}
            self.version += 1

        def get(self) -> tuple[int, dict[str, Any]]:
            return self.version, self.state

        def request_stop(self) -> None:
            self.stop_requested = True

        def should_stop(self) -> bool:
            return self.stop_requested

    return ProgressActor


def latest_checkpoint(p: Platform, prefix: str, world: int) -> str | None:
    """Newest complete checkpoint under ``prefix``, as the bucket/key path Ray Train takes."""
    key = newest_complete_checkpoint(p.objects, prefix, world)
    return f"{p.settings.bucket}/{key}" if key else None


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


def run_job(job_id: str, p: Platform | None = None, callbacks: list[Any] | None = None) -> dict[str, Any]:
    """Run one attempt of a job. Ends succeeded, paused (checkpoint kept), re-queued
    as the next attempt (from its last checkpoint), or failed. ``callbacks``: Ray Train
    callbacks (a sweep's trial passes Tune's, and every dev evaluation is then reported)."""
    import ray
    from ray.train import Checkpoint, CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
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
    resumed = f" (attempt {job.attempt}, from {job.resume_from})" if job.resume_from else f" (attempt {job.attempt})"
    update_job(p, job_id, status="running", progress={"phase": "scheduling"}, reason="the job's Ray driver started" + resumed)

    if not ray.is_initialized():
        ray.init(log_to_driver=True)
    use_gpu = spec.resources_per_worker.gpu > 0
    model_id = new_id("model")
    progress = _progress_actor_cls().remote()
    stop = threading.Event()

    def pump() -> None:  # progress actor -> job record + events; pause requests -> rank 0; every 2 s
        seen, prev, stop_sent = -1, {}, False
        while True:
            last = stop.is_set()  # once more after the run ends: its final evaluation and checkpoint events
            try:
                version, state = ray.get(progress.get.remote(), timeout=10)
                if version != seen:
                    update_job(p, job_id, progress={k: v for k, v in state.items() if k != "final"})
                    record_progress_events(p, job_id, prev, state)
                    seen, prev = version, state
                if not stop_sent:
                    with p.db.session() as s:
                        if s.get(Job, job_id).control == "pause":
                            progress.request_stop.remote()
                            stop_sent = True
            except Exception:
                pass
            if last:
                return
            stop.wait(2.0)

    pumper = threading.Thread(target=pump, daemon=True)
    pumper.start()
    resources = {"CPU": spec.resources_per_worker.cpu}
    if use_gpu:
        resources["GPU"] = spec.resources_per_worker.gpu
    if spec.resources_per_worker.memory_gb:
        resources["memory"] = int(spec.resources_per_worker.memory_gb * 1024**3)
    fs = p.objects.pyarrow_fs()
    checkpoints = f"{p.settings.bucket}/{tenant_key(spec.tenant, 'jobs', job_id, 'checkpoints')}"
    attempt_dir = f"attempt-{job.attempt}"
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "spec": spec.model_dump(mode="json"),
            "dataset_uri": dataset.uri,
            "dataset_info": dataset.info,
            "export_prefix": tenant_key(spec.tenant, "models", model_id),
            "progress": progress,
            "use_gpu": use_gpu,
            "resume_from": Checkpoint(path=job.resume_from, filesystem=fs) if job.resume_from else None,
            "checkpoint_prefix": tenant_key(spec.tenant, "jobs", job_id, "checkpoints", attempt_dir),
            "report_evals": bool(callbacks),
        },
        scaling_config=ScalingConfig(num_workers=spec.num_workers, use_gpu=use_gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name=attempt_dir,  # checkpoints are kept per attempt
            storage_path=checkpoints,
            storage_filesystem=fs,
            failure_config=FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            callbacks=callbacks or [],
        ),
    )
    fit_started = time.monotonic()

    def usage(tokens: int) -> dict[str, Any]:  # this attempt's usage added to earlier attempts'
        wall = time.monotonic() - fit_started
        prior = (job.metrics or {}).get("usage") or {}
        now = {"trained_tokens": tokens,
               "worker_cpu_seconds": wall * spec.num_workers * spec.resources_per_worker.cpu,
               "worker_gpu_seconds": wall * spec.num_workers * spec.resources_per_worker.gpu,
               "wall_seconds": wall}
        return {k: round(prior.get(k, 0) + v, 1) for k, v in now.items()}

    try:
        result = trainer.fit()
        _, last = ray.get(progress.get.remote(), timeout=30)
    except Exception as exc:
        stop.set()
        pumper.join(timeout=30)
        message = str(getattr(exc, "message", None) or exc)[-4000:]
        if job.attempt <= spec.retries:
            ckpt = latest_checkpoint(p, tenant_key(spec.tenant, "jobs", job_id, "checkpoints", attempt_dir), spec.num_workers) or job.resume_from
            update_job(p, job_id, status="queued", attempt=job.attempt + 1, resume_from=ckpt, ray_submission_id=None,
                       metrics={"usage": usage(0)},
                       error={"code": "training_failed", "message": message, "attempt": job.attempt},
                       reason=f"attempt {job.attempt} failed; retrying as attempt {job.attempt + 1} "
                              + (f"from checkpoint {ckpt}" if ckpt else "from the start (no checkpoint yet)"))
            return {"requeued": True, "attempt": job.attempt + 1}
        update_job(p, job_id, status="failed", error={"code": "training_failed", "message": message, "attempt": job.attempt},
                   reason=f"training failed on attempt {job.attempt} of {spec.retries + 1}")
        raise
    finally:
        stop.set()
        pumper.join(timeout=30)
    if last.get("paused_at") is not None and last.get("final") is None:
        path = result.checkpoint.path if result.checkpoint else job.resume_from
        update_job(p, job_id, status="paused", control=None, resume_from=path, ray_submission_id=None,
                   metrics={"usage": usage(last.get("tokens_seen", 0))},
                   progress={k: v for k, v in last.items() if k != "final"},
                   reason=f"paused at step {last['paused_at']}; checkpoint {path}")
        return {"paused_at": last["paused_at"], "checkpoint": path}
    final = last["final"]
    info = {"labels": dataset.info.get("labels"), "max_seq_length": spec.max_seq_length}
    model = Model(
        id=model_id,
        tenant_id=spec.tenant,
        job_id=job_id,
        task=spec.task,
        uri=p.objects.uri(tenant_key(spec.tenant, "models", model_id)),
        merged=merges_on_export(spec),
        info=info,
        metrics={"test": final["test"], "dev": final["dev"], "baseline": final["baseline"]},
    )
    with p.db.session() as s:
        s.add(model)
    totals = usage(0)
    totals["trained_tokens"] = final.get("tokens_seen", 0)  # counted across resumes by the loop itself
    from doctune.tasks import get_task

    metrics = {**final, "usage": totals, "checkpoint_path": result.checkpoint.path if result.checkpoint else None,
               "primary_metric": get_task(spec.task).primary_metric}
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
