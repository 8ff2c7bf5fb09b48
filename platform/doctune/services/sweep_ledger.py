"""The ledger of one sweep: everything a sweep's driver records about the sweep it runs.

A sweep's driver (:mod:`doctune.drivers.sweep`) loads its sweep, marks it running, asks whether it
has ended (a cancel), records each trial as a job of the tenant once the tenant's quota allows it,
settles the trials its search stopped or lost, and ends the sweep: failed, or ranked with its winner
recorded. On the shared cluster the driver calls these functions itself
(``doctune.drivers.sweep_ledger.DatabaseSweepLedger``). On a tenant's dedicated cluster it holds no
database URL: it calls the API (``/v1/sweeps/{sweep_id}/driver/...``, ``doctune.api.routes.sweep_driver``),
which checks its sweep token (:func:`sweep_for_token`) and then calls the same functions, with the
checks a caller that is not the platform needs (:func:`start_trial_checked`). Each trial started
there comes with a job token for it, with which the trial's attempt is recorded like any job's
(``/v1/jobs/{job_id}/attempt/...``, :mod:`doctune.services.attempts`).
"""

from __future__ import annotations

import hmac
import math
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select

from doctune.errors import DoctuneError, from_validation_error
from doctune.services import Platform, Principal
from doctune.services.jobs import add_event, check_spec, update_job
from doctune.services.scheduler import insert_started
from doctune.services.sweeps import TERMINAL, rank, sweep_metric, trial_spec, trials, update_sweep, winner
from doctune.spec import SearchDimension, SweepSpec
from doctune.states import JobState, SweepState
from doctune.store.db import Job, Sweep, Tenant, new_id
from doctune.store.job_tokens import mint_job_token, read_sweep_token, sweep_token_mac
from doctune.store.keys import server_secret

__all__ = ["check_overrides", "check_trial_room", "load_sweep", "mark_running", "record_failed", "record_outcome",
           "settle_unfinished", "start_trial", "start_trial_checked", "sweep_ended", "sweep_for_token", "sweep_view"]


# ------------------------------------------------------------------ the operations
def load_sweep(p: Platform, sweep_id: str) -> Sweep:
    """The sweep's record; 404 for a sweep that does not exist."""
    with p.db.session() as s:
        row = s.get(Sweep, sweep_id)
    if row is None:
        raise DoctuneError(f"sweep {sweep_id!r} not found", "not_found")
    return row


def sweep_view(p: Platform, row: Sweep) -> dict[str, Any]:
    """What a driver needs of its sweep: its spec and state, and its tenant's concurrent-job quota."""
    with p.db.session() as s:
        quota = s.get(Tenant, row.tenant_id).max_concurrent_jobs
    return {"sweep_id": row.id, "tenant": row.tenant_id, "status": row.status, "spec": row.spec,
            "max_concurrent_jobs": quota}


def sweep_ended(p: Platform, sweep_id: str) -> bool:
    return load_sweep(p, sweep_id).status in TERMINAL


def mark_running(p: Platform, sweep_id: str) -> None:
    update_sweep(p, sweep_id, status=SweepState.RUNNING)


def start_trial(p: Platform, sweep_id: str, overrides: dict[str, Any]) -> Job:
    """Record one trial (the sweep's job with ``overrides`` set) as a job of the tenant that the sweep's
    driver runs itself, 'starting': only if the tenant's quota allows it (``quota_exceeded`` while it
    does not: the driver waits and asks again), never once the sweep has ended (``conflict``)."""
    spec = SweepSpec.model_validate(load_sweep(p, sweep_id).spec)
    try:
        job_spec = trial_spec(spec, overrides)
    except ValidationError as exc:
        raise from_validation_error(exc, "invalid_spec", prefix="trial") from None
    check_spec(p, Principal(key_id=f"sweep {sweep_id}", role="member", tenant_id=spec.tenant), job_spec)
    job = Job(id=new_id("job"), tenant_id=spec.tenant, task=job_spec.task, spec=job_spec.model_dump(mode="json"),
              sweep_id=sweep_id)
    insert_started(p, job, reason=f"trial of sweep {sweep_id}: {overrides}")
    return job


def settle_unfinished(p: Platform, sweep_id: str) -> None:
    """Trials Tune stopped (ASHA) or lost never reach a final status through their own driver: cancelled
    with a cancelled sweep, cancelled as stopped early by ASHA, else failed, each saying why."""
    row = load_sweep(p, sweep_id)
    cancelled, asha = row.status in TERMINAL, (row.spec or {}).get("algorithm") == "asha"
    for job in trials(p, sweep_id):
        if job.status in JobState.terminal():
            continue
        step = (job.progress or {}).get("step")
        if cancelled:
            update_job(p, job.id, status=JobState.CANCELLED, reason="its sweep was cancelled")
        elif asha:
            update_job(p, job.id, status=JobState.CANCELLED,
                       error={"code": "stopped_early", "message": f"ASHA stopped this trial at step {step}: its dev "
                                                                  f"metric was below the best trials' at the same point"},
                       reason="stopped early by ASHA")
        else:
            update_job(p, job.id, status=JobState.FAILED,
                       error={"code": "training_failed", "message": f"the trial ended at step {step} without a result"})


def record_failed(p: Platform, sweep_id: str, error: dict[str, Any]) -> None:
    """The search itself failed (not one trial): the sweep fails with ``error``, unless it has ended."""
    update_sweep(p, sweep_id, status=SweepState.FAILED, error=error)


def record_outcome(p: Platform, sweep_id: str) -> dict[str, Any]:
    """Rank the trials and end the sweep: succeeded with its winner (the best finished trial, ties to the
    lower cost), or failed when no trial finished with a model. A sweep that ended meanwhile (cancelled)
    keeps its state: ``cancelled`` is then true and there is no winner."""
    row = load_sweep(p, sweep_id)
    spec = SweepSpec.model_validate(row.spec)
    ranked = rank(trials(p, sweep_id), sweep_metric(spec), spec.mode, tuple(spec.search_space))
    best, out = winner(ranked), {"sweep_id": sweep_id, "winner": None, "trials": ranked, "cancelled": False}
    if row.status in TERMINAL:  # cancelled while its trials ran
        return {**out, "cancelled": True}
    if best is None:
        update_sweep(p, sweep_id, status=SweepState.FAILED,
                     error={"code": "no_winner", "message": "no trial finished with a model; see the trials' errors"})
        return out
    if update_sweep(p, sweep_id, status=SweepState.SUCCEEDED, best_job_id=best["job_id"]).status != SweepState.SUCCEEDED:
        return {**out, "cancelled": True}
    return {**out, "winner": best}


# ------------------------------------------------------------------ a driver that is not the platform
def driver_submission(row: Sweep) -> str:
    """The Ray submission that runs the sweep's driver (the platform submits it under the sweep's id)."""
    return row.ray_submission_id or row.id


def sweep_for_token(p: Platform, token: str | None, sweep_id: str) -> Sweep:
    """The sweep ``token`` lets its holder record, which must be ``sweep_id``: 401 for a missing or forged
    token, 403 for a token of another sweep (of this tenant or another), and 403 once the sweep has ended
    or another submission runs its driver."""
    parsed = read_sweep_token(token or "")
    if parsed is None:
        raise DoctuneError("this call needs the sweep token its driver was given (X-Sweep-Token: dts_...); only "
                           "the platform makes them, for the driver of one sweep", "unauthenticated", field="token")
    if parsed.sweep_id != sweep_id:
        raise DoctuneError(f"this sweep token is for sweep {parsed.sweep_id}, not sweep {sweep_id}: a sweep token "
                           "acts on its own sweep only", "forbidden", field="token")
    with p.db.session() as s:
        row = s.get(Sweep, sweep_id)
    expected = sweep_token_mac(server_secret(p.db, p.settings.key_secret), row.tenant_id if row else "", sweep_id,
                               parsed.submission_id)
    if row is None or not hmac.compare_digest(expected, parsed.mac):
        raise DoctuneError("this sweep token is not valid (altered, or made with another key secret)",
                           "unauthenticated", field="token")
    if row.status in TERMINAL:
        raise DoctuneError(f"sweep {sweep_id} has ended (it is {row.status}); a sweep token acts only while its "
                           "sweep runs", "forbidden", field="token")
    if driver_submission(row) != parsed.submission_id:
        raise DoctuneError(f"this sweep token is for driver {parsed.submission_id} of sweep {sweep_id}, and another "
                           f"driver ({driver_submission(row)}) runs it now", "forbidden", field="token")
    return row


def _describe(dim: SearchDimension) -> str:
    return f"one of {dim.values}" if dim.type == "choice" else f"a number in [{dim.low}, {dim.high}]"


def _in_range(dim: SearchDimension, value: Any) -> bool:
    if dim.type == "choice":
        return any(value == v and isinstance(value, bool) == isinstance(v, bool) for v in dim.values or [])
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return number and math.isfinite(value) and dim.low <= value <= dim.high


def check_overrides(spec: SweepSpec, overrides: dict[str, Any]) -> None:
    """A trial a driver asks for sets every search-space field of its sweep, each to a value of its range,
    and nothing else; every bad field is named at once."""
    errors = [{"field": f"overrides.{path}", "message": "not a field of the sweep's search space "
                                                        f"({', '.join(spec.search_space)})"}
              for path in sorted(set(overrides) - set(spec.search_space))]
    for path, dim in spec.search_space.items():
        if path not in overrides:
            errors.append({"field": f"overrides.{path}", "message": f"missing; give {_describe(dim)}"})
        elif not _in_range(dim, overrides[path]):
            errors.append({"field": f"overrides.{path}",
                           "message": f"{overrides[path]!r} is outside the sweep's search space; give {_describe(dim)}"})
    if errors:
        lines = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        raise DoctuneError(f"{len(errors)} invalid field(s): {lines}", "invalid_request", field=errors[0]["field"],
                           errors=errors)


def check_trial_room(p: Platform, row: Sweep) -> None:
    """A driver starts at most the sweep's trials (its grid's combinations, else num_samples)."""
    n = SweepSpec.model_validate(row.spec).trial_count()
    with p.db.session() as s:
        started = s.execute(select(func.count()).select_from(Job).where(Job.sweep_id == row.id)).scalar_one()
    if started >= n:
        raise DoctuneError(f"sweep {row.id} has started all of its {n} trials; it starts no more", "conflict",
                           field="overrides")


def start_trial_checked(p: Platform, row: Sweep, overrides: dict[str, Any]) -> tuple[Job, str]:
    """:func:`start_trial` for a driver that is not the platform: its overrides must be of the sweep's search
    space, within its trial count. Returns the trial's job and a job token for its attempt, run in the
    sweep driver's own submission (recorded as the trial's ``submit`` event, which the token is checked on)."""
    check_overrides(SweepSpec.model_validate(row.spec), overrides)
    check_trial_room(p, row)
    job = start_trial(p, row.id, overrides)
    sid = driver_submission(row)
    add_event(p, job.id, "submit", {"submission_id": sid, "attempt": job.attempt, "ray_cluster_id": row.ray_cluster_id})
    token = mint_job_token(server_secret(p.db, p.settings.key_secret), row.tenant_id, job.id, job.attempt, sid)
    return job, token
