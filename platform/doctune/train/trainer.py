"""Build the Ray Train ``TorchTrainer`` of one job attempt from its JobSpec.

The run's storage is ``tenants/<tenant>/jobs/<job-id>/checkpoints/attempt-<n>/`` in the
object store (its driver's TensorBoard files go beside it, in ``.../<job-id>/tensorboard/``) (through pyarrow's S3 filesystem); the worker loop is
:func:`doctune.train.loop.train_loop_per_worker`, and everything it needs travels in its
config, so the workers never read platform state beyond the dataset and the base model.
"""

from __future__ import annotations

from typing import Any

from doctune.spec import JobSpec
from doctune.store.objects import ObjectStore, tenant_key

__all__ = ["attempt_dir", "build_trainer", "checkpoint_prefix", "tensorboard_prefix"]


def attempt_dir(attempt: int) -> str:
    return f"attempt-{attempt}"


def checkpoint_prefix(spec: JobSpec, job_id: str, attempt: int | None = None) -> str:
    """Where a job's checkpoints live (one folder per attempt under it)."""
    parts = ("jobs", job_id, "checkpoints") + ((attempt_dir(attempt),) if attempt is not None else ())
    return tenant_key(spec.tenant, *parts)


def tensorboard_prefix(tenant: str, job_id: str) -> str:
    """Where a job's TensorBoard event files live (one per attempt; doctune.drivers.tracking writes them)."""
    return tenant_key(tenant, "jobs", job_id, "tensorboard")


def worker_resources(spec: JobSpec) -> dict[str, float]:
    res = spec.resources_per_worker
    out: dict[str, float] = {"CPU": res.cpu}
    if res.gpu > 0:
        out["GPU"] = res.gpu
    if res.memory_gb:
        out["memory"] = int(res.memory_gb * 1024**3)
    return out


def build_trainer(spec: JobSpec, *, job_id: str, attempt: int, resume_from: str | None, dataset_uri: str,
                  dataset_info: dict[str, Any], export_prefix: str, progress: Any, objects: ObjectStore,
                  callbacks: list[Any] | None = None) -> Any:
    """The trainer for one attempt; ``callbacks`` are Ray Train callbacks (a sweep's trial passes
    Tune's, and every dev evaluation is then reported)."""
    from ray.train import Checkpoint, CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from doctune.train.loop import train_loop_per_worker

    use_gpu = spec.resources_per_worker.gpu > 0
    fs = objects.pyarrow_fs()
    config = {
        "spec": spec.model_dump(mode="json"),
        "dataset_uri": dataset_uri,
        "dataset_info": dataset_info,
        "export_prefix": export_prefix,
        "progress": progress,
        "use_gpu": use_gpu,
        "resume_from": Checkpoint(path=resume_from, filesystem=fs) if resume_from else None,
        "checkpoint_prefix": checkpoint_prefix(spec, job_id, attempt),
        "report_evals": bool(callbacks),
    }
    run = RunConfig(
        name=attempt_dir(attempt),  # checkpoints are kept per attempt
        storage_path=f"{objects.bucket}/{checkpoint_prefix(spec, job_id)}",
        storage_filesystem=fs,
        failure_config=FailureConfig(max_failures=spec.max_failures),
        checkpoint_config=CheckpointConfig(num_to_keep=2),
        callbacks=callbacks or [],
    )
    scaling = ScalingConfig(num_workers=spec.num_workers, use_gpu=use_gpu, resources_per_worker=worker_resources(spec))
    return TorchTrainer(train_loop_per_worker, train_loop_config=config, scaling_config=scaling, run_config=run)
