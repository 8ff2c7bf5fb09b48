"""The ledger of the attempt a job's driver runs: the few things it records, behind one interface.

:class:`AttemptLedger` is what :mod:`doctune.drivers.job` records through: load the attempt, mark it
running, copy progress (and the events it implies), ask whether to stop, end it as failed,
re-queued, paused or succeeded (model registered), and check the export against the storage quota.
Two implementations:

- :class:`DatabaseLedger`, on the shared cluster (whose Ray token only the platform holds): the
  service functions of :mod:`doctune.services.attempts`, straight on the metadata database.
- :class:`ApiLedger`, on a tenant's dedicated cluster, whose jobs get no database URL: the same
  operations through the API (``/v1/jobs/{job_id}/attempt/...``) with the job token the platform
  gave this driver, good for this attempt of this job only.

:func:`ledger_for` picks one from the environment the runner gave the job
(``DOCTUNE_JOB_LEDGER=api``, ``DOCTUNE_JOB_TOKEN``, ``DOCTUNE_API_URL``;
:meth:`doctune.config.Settings.tenant_job_env`).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from doctune.config import JOB_LEDGER_VAR, JOB_TOKEN_VAR
from doctune.errors import DoctuneError, error_from_response
from doctune.services import Platform
from doctune.services import attempts as attempts_svc
from doctune.services.registry import export_refusal

__all__ = ["ApiLedger", "AttemptLedger", "AttemptRecord", "DatabaseLedger", "call_api", "ledger_for"]


@dataclass
class AttemptRecord:
    """What a driver knows of its attempt when it starts."""

    job_id: str
    tenant: str
    status: str
    attempt: int
    resume_from: str | None
    spec: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)
    dataset_uri: str | None = None
    dataset_info: dict[str, Any] = field(default_factory=dict)


def call_api(http: Any, method: str, path: str, headers: dict[str, str], *, once: bool = False,
             **kw: Any) -> dict[str, Any]:
    """One call of a driver to the API: its JSON answer, or the DoctuneError the API answered. Sent again
    while the API cannot be reached (5 tries, backing off); ``once``: a call that must not be made twice
    is sent again only when it never reached the API (the connection failed)."""
    import httpx

    for attempt in range(5):
        try:
            r = http.request(method, path, headers=headers, **kw)
            break
        except httpx.TransportError as exc:
            maybe_sent = not isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout))
            if attempt == 4 or (once and maybe_sent):
                raise DoctuneError(f"cannot reach the doctune API at {http.base_url}: {exc}", "unavailable") from None
            time.sleep(2 ** attempt)
    if r.status_code < 400:
        return r.json()
    raise error_from_response(r.status_code, r.text)


class AttemptLedger(Protocol):
    job_id: str

    def load(self) -> AttemptRecord: ...

    def mark_running(self, reason: str) -> None: ...

    def record_progress(self, prev: dict[str, Any], state: dict[str, Any]) -> None: ...

    def stop_wanted(self) -> str | None: ...

    def record_failed(self, *, error: dict[str, Any], reason: str, metrics: dict[str, Any] | None = None,
                      progress: dict[str, Any] | None = None) -> None: ...

    def record_requeued(self, *, attempt: int, resume_from: str | None, usage: dict[str, Any], error: dict[str, Any],
                        reason: str) -> None: ...

    def record_paused(self, *, resume_from: str | None, usage: dict[str, Any], progress: dict[str, Any],
                      reason: str) -> None: ...

    def export_refusal(self, tenant: str, model_id: str) -> DoctuneError | None: ...

    def record_succeeded(self, *, model_id: str, spec: Any, metrics: dict[str, Any], final: dict[str, Any],
                         progress: dict[str, Any], merged: bool, labels: list[str] | None) -> bool: ...


class DatabaseLedger:
    """The attempt recorded in the metadata database itself (the shared cluster's jobs)."""

    def __init__(self, p: Platform, job_id: str) -> None:
        self.p, self.job_id = p, job_id

    def load(self) -> AttemptRecord:
        job, dataset = attempts_svc.load_attempt(self.p, self.job_id)
        return AttemptRecord(**attempts_svc.attempt_view(job, dataset))

    def mark_running(self, reason: str) -> None:
        attempts_svc.mark_running(self.p, self.job_id, reason)

    def record_progress(self, prev: dict[str, Any], state: dict[str, Any]) -> None:
        attempts_svc.record_progress(self.p, self.job_id, prev, state)

    def stop_wanted(self) -> str | None:
        return attempts_svc.stop_wanted(self.p, self.job_id)

    def record_failed(self, **kw: Any) -> None:
        attempts_svc.record_failed(self.p, self.job_id, **kw)

    def record_requeued(self, **kw: Any) -> None:
        attempts_svc.record_requeued(self.p, self.job_id, **kw)

    def record_paused(self, **kw: Any) -> None:
        attempts_svc.record_paused(self.p, self.job_id, **kw)

    def export_refusal(self, tenant: str, model_id: str) -> DoctuneError | None:
        return export_refusal(self.p, tenant, model_id)

    def record_succeeded(self, **kw: Any) -> bool:
        return attempts_svc.record_succeeded(self.p, self.job_id, **kw)


class ApiLedger:
    """The attempt recorded through the API with this attempt's job token (a tenant's dedicated cluster).

    Once the attempt has ended on the platform's side (cancelled, say) the token is refused (403): the
    driver is then told to stop (``stop_wanted`` answers "cancel"), a success registers nothing, and
    other ends change nothing, as the database ledger does for a job that has ended."""

    def __init__(self, api_url: str, token: str, job_id: str, *, http: Any = None) -> None:
        import httpx

        if not api_url:
            raise DoctuneError(f"this job reports through the doctune API, but {JOB_LEDGER_VAR}=api came without "
                               "DOCTUNE_API_URL", "unavailable")
        if not token:
            raise DoctuneError(f"this job reports through the doctune API, but {JOB_LEDGER_VAR}=api came without "
                               f"its job token ({JOB_TOKEN_VAR})", "unauthenticated")
        self.job_id = job_id
        self.http = http or httpx.Client(base_url=api_url, timeout=60)
        self.headers = {"X-Job-Token": token}

    def _call(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        return call_api(self.http, method, f"/v1/jobs/{self.job_id}/attempt{path}", self.headers, **kw)

    def _end(self, path: str, body: dict[str, Any]) -> bool:
        """Record an end of the attempt; False (nothing changed) when the attempt had already ended."""
        try:
            return bool(self._call("POST", path, json=body).get("recorded"))
        except DoctuneError as exc:
            if exc.code != "forbidden":
                raise
            print(f"doctune: not recorded ({path.strip('/')}): {exc.message}", file=sys.stderr, flush=True)
            return False

    def load(self) -> AttemptRecord:
        return AttemptRecord(**self._call("GET", ""))

    def mark_running(self, reason: str) -> None:
        self._call("POST", "/running", json={"reason": reason})

    def record_progress(self, prev: dict[str, Any], state: dict[str, Any]) -> None:
        self._call("POST", "/progress", json={"prev": prev, "state": state})

    def stop_wanted(self) -> str | None:
        try:
            return self._call("GET", "/control")["stop"]
        except DoctuneError as exc:
            if exc.code == "forbidden":  # the attempt ended on the platform's side: stop, keep nothing
                return "cancel"
            raise

    def record_failed(self, *, error: dict[str, Any], reason: str, metrics: dict[str, Any] | None = None,
                      progress: dict[str, Any] | None = None) -> None:
        self._end("/failed", {"error": error, "reason": reason, "metrics": metrics, "progress": progress})

    def record_requeued(self, *, attempt: int, resume_from: str | None, usage: dict[str, Any], error: dict[str, Any],
                        reason: str) -> None:
        # the API takes the attempt from the token, not from the caller
        self._end("/requeued", {"resume_from": resume_from, "usage": usage, "error": error, "reason": reason})

    def record_paused(self, *, resume_from: str | None, usage: dict[str, Any], progress: dict[str, Any],
                      reason: str) -> None:
        self._end("/paused", {"resume_from": resume_from, "usage": usage, "progress": progress, "reason": reason})

    def export_refusal(self, tenant: str, model_id: str) -> DoctuneError | None:
        try:
            refusal = self._call("POST", "/export-check", json={"model_id": model_id})["refusal"]
        except DoctuneError as exc:
            if exc.code != "forbidden":
                raise
            return None  # the attempt ended meanwhile: record_succeeded keeps nothing, and the driver removes the files
        if refusal is None:
            return None
        return DoctuneError(refusal["message"], refusal["code"], field=refusal.get("field"),
                            tenant_error=refusal.get("tenant_error", False))

    def record_succeeded(self, *, model_id: str, spec: Any, metrics: dict[str, Any], final: dict[str, Any],
                         progress: dict[str, Any], merged: bool, labels: list[str] | None) -> bool:
        # how the model is served (merged, labels) the API takes from the job's own spec and dataset
        return self._end("/succeeded", {"model_id": model_id, "metrics": metrics, "final": final, "progress": progress})


def ledger_for(p: Platform, job_id: str) -> AttemptLedger:
    """The ledger this driver's environment says: the API's with a job token on a tenant's dedicated
    cluster (``DOCTUNE_JOB_LEDGER=api``), else the database's."""
    if os.environ.get(JOB_LEDGER_VAR) == "api":
        return ApiLedger(p.settings.api_url, os.environ.get(JOB_TOKEN_VAR, ""), job_id)
    return DatabaseLedger(p, job_id)
