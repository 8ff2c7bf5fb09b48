"""The sweep driver: what ``python -m ray_jobs.sweep`` runs on the Ray cluster.

Ray Tune draws the trials (grid, random, or random with ASHA stopping weak trials
early) from the sweep's search space. Each trial is a job of the tenant, recorded
like any other and run by :func:`doctune.drivers.job.run_job` — the same Ray Train,
DeepSpeed and peft path — whose dev evaluations flow to Tune through Ray Train's
``TuneReportCallback``. At most ``min(max_concurrent_trials, the tenant's job
quota)`` trials run at once, and a trial starts only when the tenant's quota
allows it. At the end the winner (best dev metric, ties to the lower cost) is
recorded on the sweep. When the platform has an MLflow store, the sweep is an MLflow run and its
trials' runs nest under it (:class:`doctune.drivers.tracking.SweepRun`).
"""

from __future__ import annotations

import os
import time
from typing import Any

from doctune.drivers.job import run_job
from doctune.drivers.tracking import SweepRun
from doctune.errors import DoctuneError
from doctune.services import Platform, Principal
from doctune.services.jobs import check_spec, update_job
from doctune.services.scheduler import insert_started
from doctune.services.sweeps import rank, sweep_metric, trial_spec, trials, update_sweep, winner
from doctune.spec import AshaSpec, SweepSpec
from doctune.states import JobState, SweepState
from doctune.store.db import Job, Sweep, Tenant, new_id

QUOTA_POLL_S = 2.0


def _search_space(spec: SweepSpec) -> dict[str, Any]:
    from ray import tune

    out: dict[str, Any] = {}
    for path, d in spec.search_space.items():
        if d.type == "choice":
            out[path] = tune.grid_search(d.values) if spec.algorithm == "grid" else tune.choice(d.values)
        elif d.type == "uniform":
            out[path] = tune.uniform(d.low, d.high)
        else:
            out[path] = tune.loguniform(d.low, d.high)
    return out


def _run_trial(config: dict[str, Any]) -> None:
    """One Tune trial: wait for the tenant's quota, record the trial's job, train it."""
    from ray.tune.integration.ray_train import TuneReportCallback

    sweep_id, overrides = config["sweep_id"], config["overrides"]
    p = Platform()
    with p.db.session() as s:
        spec = SweepSpec.model_validate(s.get(Sweep, sweep_id).spec)
    if _sweep_ended(p, sweep_id):
        return  # cancelled: start no more trials
    job_spec = trial_spec(spec, overrides)
    check_spec(p, Principal(key_id=f"sweep {sweep_id}", role="member", tenant_id=spec.tenant), job_spec)
    job = Job(id=new_id("job"), tenant_id=spec.tenant, task=job_spec.task, spec=job_spec.model_dump(mode="json"),
              sweep_id=sweep_id)
    while True:  # wait while the tenant's other jobs hold its quota; Tune keeps this trial pending meanwhile
        try:
            insert_started(p, job, reason=f"trial of sweep {sweep_id}: {overrides}")
            break
        except DoctuneError as exc:
            if exc.code == "conflict" and _sweep_ended(p, sweep_id):
                return
            if exc.code != "quota_exceeded":
                raise
            if _sweep_ended(p, sweep_id):
                return
            time.sleep(QUOTA_POLL_S)
    run_job(job.id, p, callbacks=[TuneReportCallback()], parent_run_id=config.get("mlflow_parent_run_id"))


def _sweep_ended(p: Platform, sweep_id: str) -> bool:
    with p.db.session() as s:
        return s.get(Sweep, sweep_id).status in SweepState.terminal()


def run_sweep(sweep_id: str, p: Platform | None = None) -> dict[str, Any]:
    p = p or Platform()
    with p.db.session() as s:
        row = s.get(Sweep, sweep_id)
        if row is None:
            raise DoctuneError(f"sweep {sweep_id!r} not found", "not_found")
        spec = SweepSpec.model_validate(row.spec)
        quota = s.get(Tenant, spec.tenant).max_concurrent_jobs
    if row.status in SweepState.terminal():
        raise DoctuneError(f"sweep {sweep_id} is already {row.status}", "conflict")
    metric = sweep_metric(spec)
    concurrent = min(spec.max_concurrent_trials, quota or spec.max_concurrent_trials)
    update_sweep(p, sweep_id, status=SweepState.RUNNING)
    tracking = (SweepRun(p.settings.mlflow_uri, p.settings.mlflow_artifact_uri, sweep_id=sweep_id,
                         spec=spec.model_dump(mode="json")) if p.settings.mlflow_uri else None)
    try:
        result = _tune(p, sweep_id, spec, metric, concurrent, tracking.parent_run_id() if tracking else None)
    except BaseException:
        if tracking is not None:
            tracking.finish("KILLED" if _sweep_ended(p, sweep_id) else "FAILED", None, metric)
        raise
    if tracking is not None:
        status = "KILLED" if result.get("cancelled") else "FINISHED" if result["winner"] else "FAILED"
        tracking.finish(status, result["winner"], metric)
    return result


def _tune(p: Platform, sweep_id: str, spec: SweepSpec, metric: str, concurrent: int,
          parent_run_id: str | None) -> dict[str, Any]:
    """Run the trials with Ray Tune (each trial's MLflow run nested under ``parent_run_id``), then rank
    them and record the winner on the sweep."""
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import BasicVariantGenerator

    # a trial cancelled (or failed) before its first evaluation ends with no dev metric: Tune must
    # not fail the whole sweep for it; the leaderboard simply does not rank it
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    if not ray.is_initialized():
        ray.init(log_to_driver=True)
    scheduler = None
    if spec.algorithm == "asha":
        asha = spec.asha or AshaSpec()
        scheduler = ASHAScheduler(time_attr="training_iteration", grace_period=asha.grace_period,
                                  reduction_factor=asha.reduction_factor)
    fs = p.objects.pyarrow_fs()
    tuner = tune.Tuner(
        tune.with_resources(_run_trial, {"CPU": 0.01}),  # the trial's driver; its Ray Train workers hold the CPUs
        param_space={"sweep_id": sweep_id, "overrides": _search_space(spec), "mlflow_parent_run_id": parent_run_id},
        tune_config=tune.TuneConfig(metric=f"dev_{metric}", mode=spec.mode, scheduler=scheduler,
                                    search_alg=BasicVariantGenerator(random_state=spec.seed, max_concurrent=concurrent),
                                    num_samples=1 if spec.algorithm == "grid" else spec.num_samples,
                                    # a stopped trial's actor must exit: its Ray Train run (controller, workers) goes with it
                                    reuse_actors=False),
        run_config=tune.RunConfig(name=sweep_id, storage_path=f"{p.settings.bucket}/tenants/{spec.tenant}/sweeps",
                                  storage_filesystem=fs),
    )
    try:
        tuner.fit()
    except Exception as exc:
        if _sweep_ended(p, sweep_id):
            return {"sweep_id": sweep_id, "winner": None, "trials": [], "cancelled": True}
        update_sweep(p, sweep_id, status=SweepState.FAILED, error={"code": "sweep_failed", "message": str(exc)[-2000:]})
        raise
    finally:
        _settle_unfinished(p, sweep_id, spec)
    ranked = rank(trials(p, sweep_id), metric, spec.mode, tuple(spec.search_space))
    best = winner(ranked)
    if _sweep_ended(p, sweep_id):  # cancelled while its trials ran
        return {"sweep_id": sweep_id, "winner": None, "trials": ranked, "cancelled": True}
    if best is None:
        update_sweep(p, sweep_id, status=SweepState.FAILED,
                     error={"code": "no_winner", "message": "no trial finished with a model; see the trials' errors"})
        return {"sweep_id": sweep_id, "winner": None, "trials": ranked}
    update_sweep(p, sweep_id, status=SweepState.SUCCEEDED, best_job_id=best["job_id"])
    return {"sweep_id": sweep_id, "winner": best, "trials": ranked}


def _settle_unfinished(p: Platform, sweep_id: str, spec: SweepSpec) -> None:
    """Trials Tune stopped (ASHA) or lost never reach a final status through their driver."""
    cancelled = _sweep_ended(p, sweep_id)
    for job in trials(p, sweep_id):
        if job.status in JobState.terminal():
            continue
        step = (job.progress or {}).get("step")
        if cancelled:
            update_job(p, job.id, status=JobState.CANCELLED, reason="its sweep was cancelled")
        elif spec.algorithm == "asha":
            update_job(p, job.id, status=JobState.CANCELLED,
                       error={"code": "stopped_early", "message": f"ASHA stopped this trial at step {step}: its dev "
                                                                  f"metric was below the best trials' at the same point"},
                       reason="stopped early by ASHA")
        else:
            update_job(p, job.id, status=JobState.FAILED,
                       error={"code": "training_failed", "message": f"the trial ended at step {step} without a result"})


def run_from_entrypoint(sweep_id: str) -> int:
    """``python -m ray_jobs.sweep``: run the sweep and print its winner. Exit 0 with a winner, 1
    without one, 2 for a DoctuneError."""
    import json
    import sys

    try:
        result = run_sweep(sweep_id)
    except DoctuneError as exc:
        print(f"error [{exc.code}]: {exc.message}", file=sys.stderr)
        return 2
    best = result["winner"]
    if result.get("cancelled"):
        print(f"sweep {sweep_id} was cancelled")
        return 0
    print(json.dumps({"sweep_id": sweep_id, "winner": best and best["job_id"], "dev": best and best["dev"],
                      "trials": len(result["trials"])}))
    return 0 if best else 1
