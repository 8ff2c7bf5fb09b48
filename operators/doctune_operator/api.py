"""The operator's side of the REST API: clients, specs, status, and what an API error means to kopf.

Everything here is plain Python over :class:`doctune.client.DoctuneClient`; the handlers call it.
"""

from __future__ import annotations

import datetime
import os
import re
from contextlib import contextmanager
from typing import Any, Iterator

import httpx
import kopf

from doctune.client import DoctuneClient
from doctune.errors import DoctuneError

GROUP, VERSION = "doctune.io", "v1alpha1"
KEY_SECRET = "doctune-api-key"  # the Secret in each tenant namespace: data "api-key", "tenant", "api-url"
TENANT_LABEL = "doctune.io/tenant"

# the API's answers that no retry fixes: the resource is wrong (kopf.PermanentError, shown in status)
PERMANENT_CODES = {"invalid_spec", "invalid_dataset", "invalid_request", "not_found", "forbidden", "too_large",
                   "conflict"}
# reason enum of every condition the operator writes (the CRDs' status.conditions[].reason)
REASONS = ("Queued", "Paused", "Starting", "Running", "Succeeded", "Failed", "Cancelled", "Deploying", "Deleting",
           "Deleted", "Submitted", "InvalidSpec", "QuotaExceeded", "TenantNotReady", "ApiUnavailable", "Ready")
ENDED = ("succeeded", "failed", "cancelled", "deleted")


def api_url() -> str:
    url = os.environ.get("DOCTUNE_API_URL", "")
    if not url:
        raise kopf.PermanentError("the operator has no DOCTUNE_API_URL: set it to the doctune API Service's URL")
    return url


def poll_interval() -> float:
    """Seconds between two reads of an unfinished object's state (DOCTUNE_OPERATOR_POLL_S, default 10)."""
    return float(os.environ.get("DOCTUNE_OPERATOR_POLL_S", "10"))


def admin_client() -> DoctuneClient:
    key = os.environ.get("DOCTUNE_ADMIN_KEY", "")
    if not key:
        raise kopf.PermanentError("the operator has no DOCTUNE_ADMIN_KEY: mount the admin key Secret as that variable")
    return DoctuneClient(api_url(), key, timeout=30)


def tenant_client(api_key: str) -> DoctuneClient:
    return DoctuneClient(api_url(), api_key, timeout=30)


@contextmanager
def kopf_errors(what: str) -> Iterator[None]:
    """Turn an API error into the kopf error that says whether retrying helps: a bad spec is a
    ``PermanentError`` (its message lists the fields), a 5xx, 429 or a connection error a
    ``TemporaryError`` with a backoff."""
    try:
        yield
    except DoctuneError as exc:
        if exc.code in PERMANENT_CODES:
            raise kopf.PermanentError(f"{what}: {describe(exc)}") from None
        delay = 30 if exc.code in ("quota_exceeded", "rate_limited") else 10
        raise kopf.TemporaryError(f"{what}: {describe(exc)}", delay=delay) from None
    except httpx.TransportError as exc:
        raise kopf.TemporaryError(f"{what}: the doctune API is unreachable ({exc})", delay=10) from None


def describe(exc: DoctuneError) -> str:
    fields = "; ".join(f"{e.get('field')}: {e.get('message')}" for e in exc.errors if e.get("field"))
    return f"[{exc.code}] {exc.message}" + (f" ({fields})" if fields and fields not in exc.message else "")


def reason_of(exc: BaseException) -> str:
    text = str(exc)
    if "[invalid_spec]" in text or "[invalid_request]" in text or "[invalid_dataset]" in text:
        return "InvalidSpec"
    if "[quota_exceeded]" in text or "[rate_limited]" in text:
        return "QuotaExceeded"
    if "unreachable" in text or "[unavailable]" in text or "[internal]" in text:
        return "ApiUnavailable"
    return "Failed"


_CAMEL = re.compile(r"(?<=[a-z0-9])([A-Z])")


def snake(value: Any) -> Any:
    """Keys of a custom resource's spec as the API names them: ``baseModel`` and ``base_model`` both
    become ``base_model`` (at every depth; values are left as they are)."""
    if isinstance(value, dict):
        return {_CAMEL.sub(r"_\1", k).lower(): snake(v) for k, v in value.items()}
    if isinstance(value, list):
        return [snake(v) for v in value]
    return value


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(kind: str, ok: bool, reason: str, message: str) -> dict[str, Any]:
    assert reason in REASONS, reason
    return {"type": kind, "status": "True" if ok else "False", "reason": reason, "message": message[:1000],
            "lastTransitionTime": now()}


def state_name(api_state: str) -> str:
    """The API's ``succeeded`` as the resource's ``Succeeded``."""
    return api_state.capitalize()


def job_status(job: dict[str, Any]) -> dict[str, Any]:
    """A FineTuneJob's status from the API's job: state, progress (a line for people, and its numbers in
    ``progressDetail``), metrics and conditions."""
    state = job["status"]
    progress = job.get("progress") or {}
    message = ((job.get("error") or {}).get("message") or progress.get("queue_reason")
               or progress.get("phase") or state)
    step, total = progress.get("step"), progress.get("total_steps")
    detail = {k: v for k, v in {"phase": progress.get("phase"), "step": step, "totalSteps": total,
                                "percent": round(100 * step / total, 1) if step is not None and total else None,
                                "loss": progress.get("loss"), "etaSeconds": progress.get("eta_s")}.items()
              if v is not None}
    return {
        "state": state_name(state),
        "id": job["id"],
        "jobId": job["id"],
        "progress": progress_line(detail),
        "progressDetail": detail,
        "metrics": _scalars(job.get("metrics") or {}),
        "modelId": job.get("model_id"),
        "conditions": [condition("Submitted", True, "Submitted", f"job {job['id']}"),
                       condition("Ready" if state not in ENDED else "Complete", state == "succeeded"
                                 if state in ENDED else state == "running", state_name(state), str(message))],
    }


def progress_line(detail: dict[str, Any]) -> str:
    """``3/4 steps (75.0%), loss 0.62`` (the printer column), or the phase before steps are known."""
    if detail.get("step") is None or not detail.get("totalSteps"):
        return str(detail.get("phase") or "")
    line = f"{detail['step']}/{detail['totalSteps']} steps ({detail['percent']}%)"
    return line + (f", loss {detail['loss']:.4g}" if isinstance(detail.get("loss"), (int, float)) else "")


def sweep_status(board: dict[str, Any], top: int = 10) -> dict[str, Any]:
    """A Sweep's status from the API's leaderboard: its state and its best ``top`` trials."""
    state = board["status"]
    trials = board.get("trials") or []
    return {
        "state": state_name(state),
        "id": board["sweep_id"],
        "sweepId": board["sweep_id"],
        "bestJobId": board.get("best_job_id"),
        "progress": f"{sum(t.get('status') in ENDED for t in trials)}/{len(trials)} trials ended",
        "leaderboard": [_scalars({k: v for k, v in t.items() if k in ("rank", "job_id", "status", "dev", "test", "model_id", "steps")})
                        for t in trials[:top]],
        "conditions": [condition("Complete" if state in ENDED else "Ready", state != "failed" and state != "cancelled",
                                 state_name(state), board.get("metric") and f"ranked by {board['metric']}" or state)],
    }


def deployment_status(dep: dict[str, Any]) -> dict[str, Any]:
    state = dep["status"]
    return {
        "state": state_name(state),
        "id": dep["id"],
        "deploymentId": dep["id"],
        "progress": f"revision {dep.get('revision')}" if dep.get("revision") else "",
        "modelId": dep.get("model_id"),
        "url": dep.get("url"),
        "revision": dep.get("revision"),
        "conditions": [condition("Ready", state == "running", state_name(state),
                                 dep.get("message") or state)],
    }


def failed_status(exc: BaseException) -> dict[str, Any]:
    reason = reason_of(exc)
    return {"state": "Failed", "conditions": [condition("Ready", False, reason, str(exc))]}


def _scalars(d: dict[str, Any]) -> dict[str, Any]:
    """Keep what a status shows well: numbers, strings and booleans (nested dicts become dotted keys)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update({f"{k}.{kk}": vv for kk, vv in _scalars(v).items()})
        elif isinstance(v, (int, float, str, bool)) or v is None:
            out[k] = v
    return out
