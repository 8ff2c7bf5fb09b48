"""The sweep driver: what ``python -m ray_jobs.sweep`` runs on the Ray cluster.

Ray Tune draws the trials (grid, random, or random with ASHA stopping weak trials
early) from the sweep's search space. Each trial is a job of the tenant, recorded
like any other and run by :func:`doctune.drivers.job.run_job` — the same Ray Train,
DeepSpeed and peft path — whose dev evaluations flow to Tune through Ray Train's
``TuneReportCallback``. At most ``min(max_concurrent_trials, the tenant's job
quota)`` trials run at once, and a trial starts only when the tenant's quota
allows it. At the end the winner (best dev metric, ties to the lower cost) is
recorded on the sweep. All of that is recorded through the sweep's ledger
(:mod:`doctune.drivers.sweep_ledger`): the metadata database on the shared cluster, the API with a
sweep token on a tenant's dedicated cluster (each trial's attempt then with a job token of its own).
When the platform has an MLflow store, the sweep is an MLflow run and its
trials' runs nest under it (:class:`doctune.drivers.tracking.SweepRun`).
"""

from __future__ import annotations

import os
import time
from typing import Any

from doctune.drivers.job import run_job
from doctune.drivers.sweep_ledger import SweepLedger, TrialStart, sweep_ledger_for
from doctune.drivers.tracking import SweepRun
from doctune.errors import DoctuneError
from doctune.services import Platform
from doctune.services.sweeps import sweep_metric
from doctune.spec import AshaSpec, SweepSpec
from doctune.states import SweepState

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

    p = Platform()
    trial = _start_trial(sweep_ledger_for(p, config["sweep_id"]), config["overrides"])
    if trial is None:
        return  # cancelled: start no more trials
    run_job(trial.job_id, p, callbacks=[TuneReportCallback()], parent_run_id=config.get("mlflow_parent_run_id"),
            ledger=trial.ledger)


def _start_trial(ledger: SweepLedger, overrides: dict[str, Any]) -> TrialStart | None:
    """Record the trial's job once the tenant's quota allows it (Tune keeps this trial pending meanwhile,
    while the tenant's other jobs hold its quota); None when the sweep ended first."""
    if ledger.ended():
        return None
    while True:
        try:
            return ledger.start_trial(overrides)
        except DoctuneError as exc:
            if exc.code not in ("conflict", "forbidden", "quota_exceeded"):
                raise
            if ledger.ended():
                return None
            if exc.code != "quota_exceeded":
                raise
            time.sleep(QUOTA_POLL_S)


def run_sweep(sweep_id: str, p: Platform | None = None, ledger: SweepLedger | None = None) -> dict[str, Any]:
    """Run the sweep's trials and record its outcome through ``ledger`` (default: the one this driver's
    environment says, :func:`doctune.drivers.sweep_ledger.sweep_ledger_for`)."""
    p = p or Platform()
    ledger = ledger or sweep_ledger_for(p, sweep_id)
    record = ledger.load()
    if record.status in SweepState.terminal():
        raise DoctuneError(f"sweep {sweep_id} is already {record.status}", "conflict")
    spec = SweepSpec.model_validate(record.spec)
    metric = sweep_metric(spec)
    quota = record.max_concurrent_jobs
    concurrent = min(spec.max_concurrent_trials, quota or spec.max_concurrent_trials)
    ledger.mark_running()
    tracking = (SweepRun(p.settings.mlflow_uri, p.settings.mlflow_artifact_uri, sweep_id=sweep_id,
                         spec=spec.model_dump(mode="json")) if _logs_to_mlflow(p, spec) else None)
    try:
        result = _tune(p, ledger, spec, metric, concurrent, tracking.parent_run_id() if tracking else None)
    except BaseException:
        if tracking is not None:
            tracking.finish("KILLED" if ledger.ended() else "FAILED", None, metric)
        raise
    if tracking is not None:
        status = "KILLED" if result.get("cancelled") else "FINISHED" if result["winner"] else "FAILED"
        tracking.finish(status, result["winner"], metric)
    return result


def _logs_to_mlflow(p: Platform, spec: SweepSpec) -> bool:
    """Whether the sweep is an MLflow run: the platform has a store and the sweep's job does not opt out."""
    return bool(p.settings.mlflow_uri) and (spec.job.get("tracking") or {}).get("mlflow", True) is not False


def _tune(p: Platform, ledger: SweepLedger, spec: SweepSpec, metric: str, concurrent: int,
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
    sweep_id = ledger.sweep_id
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
        if ledger.ended():
            return {"sweep_id": sweep_id, "winner": None, "trials": [], "cancelled": True}
        ledger.record_failed({"code": "sweep_failed", "message": str(exc)[-2000:]})
        raise
    finally:
        ledger.settle_unfinished()  # trials Tune stopped (ASHA) or lost never reach a final status themselves
    return ledger.record_outcome()


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
