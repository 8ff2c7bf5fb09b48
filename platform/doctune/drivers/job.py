"""The job driver: what ``python -m ray_jobs.finetune`` runs on the Ray cluster.

:func:`run_job` runs one attempt of a recorded job: it builds the attempt's Ray Train
``TorchTrainer`` (:mod:`doctune.train.trainer`), copies rank 0's progress into the job
record while it trains (:class:`ProgressPump`), and ends the attempt as succeeded (the
exported model registered through :func:`doctune.services.registry.register_model`),
paused, re-queued as the next attempt (from its last checkpoint), or failed. It records all
of that through the attempt's ledger (:mod:`doctune.drivers.ledger`): the metadata database on
the shared cluster, the API with a job token on a tenant's dedicated cluster. Its experiment
tracking (:mod:`doctune.drivers.tracking`: TensorBoard files in the object store, an MLflow run when
the platform has an MLflow store) follows the same progress.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

from doctune.drivers.ledger import AttemptLedger, DatabaseLedger, ledger_for
from doctune.drivers.tracking import JobTracker
from doctune.errors import DoctuneError
from doctune.services import Platform
from doctune.services.attempts import record_progress_events, without_final
from doctune.services.registry import model_prefix
from doctune.spec import JobSpec
from doctune.states import JobState
from doctune.store.db import new_id
from doctune.store.paths import make_scratch
from doctune.tasks import get_task, metric_label
from doctune.train.checkpoints import newest_complete_checkpoint
from doctune.train.progress import progress_actor
from doctune.train.trainer import build_trainer, checkpoint_prefix, tensorboard_prefix
from doctune.train.tuning import merges_on_export

__all__ = ["ProgressPump", "record_progress_events", "run_from_entrypoint", "run_job", "without_final"]

PUMP_EVERY_S = 2.0


def latest_checkpoint(p: Platform, prefix: str, world: int) -> str | None:
    """Newest complete checkpoint under ``prefix``, as the bucket/key path Ray Train takes."""
    key = newest_complete_checkpoint(p.objects, prefix, world)
    return f"{p.settings.bucket}/{key}" if key else None


class ProgressPump:
    """A thread that copies the progress actor's state into the job record (and its changes
    into job events) every PUMP_EVERY_S, and passes a pause request, or the job's cancel, on to
    rank 0, which stops at its next progress report. ``ledger``: where it records (default: the
    database of ``p``); ``tracker``: the job's experiment tracking, handed each new snapshot with
    the training messages since the last."""

    def __init__(self, p: Platform, job_id: str, progress: Any, ledger: AttemptLedger | None = None,
                 tracker: JobTracker | None = None) -> None:
        self.p, self.job_id, self.progress, self.tracker = p, job_id, progress, tracker
        self.ledger = ledger or DatabaseLedger(p, job_id)
        self._stop = threading.Event()
        self._seen, self._prev, self._stop_sent = -1, {}, False
        self.thread = threading.Thread(target=self._run, name="doctune-progress", daemon=True)

    @property
    def last_state(self) -> dict[str, Any]:
        """The newest progress snapshot it copied."""
        return self._prev

    def start(self) -> "ProgressPump":
        self.thread.start()
        return self

    def stop(self) -> None:
        """Stop after one last copy (the run's final evaluation and checkpoint events)."""
        self._stop.set()
        self.thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            last = self._stop.is_set()
            try:
                self._copy_once()
            except Exception:  # the pump must outlive a slow actor or a database hiccup
                pass
            if last:
                return
            self._stop.wait(PUMP_EVERY_S)

    def _copy_once(self) -> None:
        import ray

        version, state = ray.get(self.progress.get.remote(), timeout=10)
        if version != self._seen:
            self.ledger.record_progress(self._prev, state)
            self._seen, self._prev = version, state
            if self.tracker is not None:
                self.tracker.observe(state, ray.get(self.progress.take_series.remote(), timeout=10))
        if not self._stop_sent:
            kind = self._stop_wanted()
            if kind is not None:
                self.progress.request_stop.remote(kind)
                self._stop_sent = True

    def _stop_wanted(self) -> str | None:
        """"cancel" when the job (or the sweep it is a trial of) was cancelled, "pause" when a pause
        was requested, else None."""
        return self.ledger.stop_wanted()


class _Attempt:
    """One attempt of a job: its record (with its dataset's), spec, ledger, and the usage it adds."""

    def __init__(self, p: Platform, job_id: str, ledger: AttemptLedger | None = None) -> None:
        self.ledger = ledger or DatabaseLedger(p, job_id)
        self.job = self.ledger.load()
        if self.job.status in JobState.terminal():
            raise DoctuneError(f"job {job_id} is already {self.job.status}", "conflict")
        self.p, self.id, self.spec = p, job_id, JobSpec.model_validate(self.job.spec)
        self.model_id = new_id("model")
        self.started = time.monotonic()

    def usage(self, tokens: int) -> dict[str, Any]:
        """This attempt's usage so far, added to earlier attempts'."""
        wall = time.monotonic() - self.started
        res, n = self.spec.resources_per_worker, self.spec.num_workers
        now = {"trained_tokens": tokens, "worker_cpu_seconds": wall * n * res.cpu,
               "worker_gpu_seconds": wall * n * res.gpu, "wall_seconds": wall}
        prior = (self.job.metrics or {}).get("usage") or {}
        return {k: round(prior.get(k, 0) + v, 1) for k, v in now.items()}

    def tracker(self, parent_run_id: str | None = None) -> JobTracker | None:
        """The attempt's experiment tracking (None when it cannot be set up: the job runs without it)."""
        try:
            return JobTracker(job_id=self.id, spec=self.spec.model_dump(mode="json"), store=self.p.objects,
                              prefix=tensorboard_prefix(self.spec.tenant, self.id), scratch=make_scratch("tracking-"),
                              mlflow_uri=self.p.settings.mlflow_uri if self.spec.tracking.mlflow else "",
                              mlflow_artifact_uri=self.p.settings.mlflow_artifact_uri, parent_run_id=parent_run_id)
        except Exception as exc:
            print(f"doctune: experiment tracking is off for this attempt: {exc}", file=sys.stderr, flush=True)
            return None

    def trainer(self, progress: Any, callbacks: list[Any] | None) -> Any:
        return build_trainer(self.spec, job_id=self.id, attempt=self.job.attempt, resume_from=self.job.resume_from,
                             dataset_uri=self.job.dataset_uri, dataset_info=self.job.dataset_info,
                             export_prefix=model_prefix(self.spec.tenant, self.model_id), progress=progress,
                             objects=self.p.objects, callbacks=callbacks)


def run_job(job_id: str, p: Platform | None = None, callbacks: list[Any] | None = None,
            parent_run_id: str | None = None, ledger: AttemptLedger | None = None) -> dict[str, Any]:
    """Run one attempt of a job; returns the final metrics, or what happened instead
    (``{"paused_at"...}``, ``{"requeued"...}``). ``callbacks``: Ray Train callbacks;
    ``parent_run_id``: the MLflow run of the sweep this job is a trial of; ``ledger``: where the
    attempt is recorded (default: what this driver's environment says; a sweep's trial: what its sweep
    said when it started the trial)."""
    import ray

    p = p or Platform()
    attempt = _Attempt(p, job_id, ledger or ledger_for(p, job_id))
    job = attempt.job
    resumed = f" (attempt {job.attempt}, from {job.resume_from})" if job.resume_from else f" (attempt {job.attempt})"
    attempt.ledger.mark_running("the job's Ray driver started" + resumed)
    if not ray.is_initialized():
        ray.init(log_to_driver=True)
    progress = progress_actor()
    tracker = attempt.tracker(parent_run_id)
    pump = ProgressPump(p, job_id, progress, attempt.ledger, tracker).start()
    try:
        result = attempt.trainer(progress, callbacks).fit()
        _, last = ray.get(progress.get.remote(), timeout=30)
    except Exception as exc:
        pump.stop()
        return _failed(attempt, exc, tracker, pump.last_state)
    finally:
        pump.stop()
    if last.get("cancelled_at") is not None:
        if tracker is not None:
            tracker.finish("cancelled", last)
        return {"cancelled_at": last["cancelled_at"]}  # the job's record already says cancelled
    if last.get("paused_at") is not None and last.get("final") is None:
        if tracker is not None:
            tracker.finish("paused", last)
        return _paused(attempt, result, last)
    return _succeeded(attempt, result, last, tracker)


def _failed(attempt: _Attempt, exc: Exception, tracker: JobTracker | None = None,
            last: dict[str, Any] | None = None) -> dict[str, Any]:
    """Re-queue as the next attempt from the newest checkpoint, or (retries spent) fail and re-raise."""
    p, job, spec = attempt.p, attempt.job, attempt.spec
    message = str(getattr(exc, "message", None) or exc)[-4000:]
    error = {"code": "training_failed", "message": message, "attempt": job.attempt}
    if tracker is not None:
        tracker.finish("failed" if job.attempt > spec.retries else "requeued", last)
    if job.attempt > spec.retries:
        attempt.ledger.record_failed(error=error,
                                     reason=f"training failed on attempt {job.attempt} of {spec.retries + 1}")
        raise exc
    ckpt = latest_checkpoint(p, checkpoint_prefix(spec, job.job_id, job.attempt), spec.num_workers) or job.resume_from
    attempt.ledger.record_requeued(
        attempt=job.attempt, resume_from=ckpt, usage=attempt.usage(0), error=error,
        reason=f"attempt {job.attempt} failed; retrying as attempt {job.attempt + 1} "
               + (f"from checkpoint {ckpt}" if ckpt else "from the start (no checkpoint yet)"))
    return {"requeued": True, "attempt": job.attempt + 1}


def _paused(attempt: _Attempt, result: Any, last: dict[str, Any]) -> dict[str, Any]:
    path = result.checkpoint.path if result.checkpoint else attempt.job.resume_from
    attempt.ledger.record_paused(resume_from=path, usage=attempt.usage(last.get("tokens_seen", 0)),
                                 progress=without_final(last),
                                 reason=f"paused at step {last['paused_at']}; checkpoint {path}")
    return {"paused_at": last["paused_at"], "checkpoint": path}


def _succeeded(attempt: _Attempt, result: Any, last: dict[str, Any],
               tracker: JobTracker | None = None) -> dict[str, Any]:
    """Mark the job succeeded and register its model in one transaction, by compare-and-set from
    'running': a job cancelled meanwhile registers nothing, and its exported files are removed."""
    p, spec, final = attempt.p, attempt.spec, last["final"]
    totals = attempt.usage(0)
    totals["trained_tokens"] = final.get("tokens_seen", 0)  # counted across resumes by the loop itself
    metrics = {**final, "usage": totals, "checkpoint_path": result.checkpoint.path if result.checkpoint else None,
               "primary_metric": get_task(spec.task).primary_metric, "task": spec.task}
    mlflow_run = tracker.summary() if tracker is not None else None
    if mlflow_run is not None:
        metrics["mlflow"] = mlflow_run
    refusal = attempt.ledger.export_refusal(spec.tenant, attempt.model_id)
    if refusal is not None:
        error = {"code": refusal.code, "message": refusal.message, "field": refusal.field}
        attempt.ledger.record_failed(error=error, metrics={"usage": totals}, progress=without_final(last),
                                     reason=refusal.message)
        if tracker is not None:
            tracker.finish("failed", last, final)
        return {**metrics, "refused": error}
    if tracker is not None:  # before the job reads succeeded: its TensorBoard files and MLflow run are then whole
        tracker.finish("succeeded", last, final, model_prefix=model_prefix(spec.tenant, attempt.model_id))
    won = attempt.ledger.record_succeeded(model_id=attempt.model_id, spec=spec, metrics=metrics, final=final,
                                          progress=without_final(last), merged=merges_on_export(spec),
                                          labels=attempt.job.dataset_info.get("labels"))
    if not won:  # cancelled (or ended otherwise) while it finished: keep nothing of its export
        p.objects.delete_prefix(model_prefix(spec.tenant, attempt.model_id) + "/")
        if tracker is not None:
            tracker.relabel("cancelled")
        return {"cancelled_at": final.get("step", last.get("step"))}
    return metrics


def run_from_entrypoint(job_id: str) -> int:
    """``python -m ray_jobs.finetune --job-id``: run one attempt of a recorded job; print the outcome
    (the last line is the headline test metric). Exit 0, or 2 for a DoctuneError. (A spec file
    comes through :mod:`doctune.drivers.direct` and the queue instead.)"""
    import json
    import sys

    try:
        print(f"doctune job {job_id}", flush=True)
        result = run_job(job_id)
    except DoctuneError as exc:
        print(f"error [{exc.code}]: {exc.message}", file=sys.stderr)
        return 2
    if "cancelled_at" in result:
        print(f"cancelled at step {result['cancelled_at']}; no model was registered")
    elif "refused" in result:
        print(f"error [{result['refused']['code']}]: {result['refused']['message']}", file=sys.stderr)
        return 2
    elif "paused_at" in result:
        print(f"paused at step {result['paused_at']}; checkpoint {result['checkpoint']}")
    elif result.get("requeued"):
        print(f"attempt failed; re-queued as attempt {result['attempt']}")
    else:
        primary = result["primary_metric"]
        test, base = result["test"][primary], result["baseline"]["test"].get(primary)
        print(json.dumps({"job_id": job_id, "step": result["step"], "metric": primary, "test": test,
                          "baseline_test": base}))
        print(f"{metric_label(get_task(result['task']), primary)} {test:.2f}")
    return 0
