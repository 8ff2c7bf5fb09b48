"""The `ray job submit` door: what ``python -m ray_jobs.finetune --spec job.yaml --token T`` runs.

This driver holds no platform credential of its own: no database URL, no object-store key, no
admin key. It sends the spec file with its one-time submission token to the API
(``POST /v1/jobs/direct``), which redeems the token and queues the job like any other, under the
tenant's quotas and fair share (queued, not refused, when the tenant is at its limit). The
platform's dispatcher then runs the job as it runs every job (``--job-id``, with the job's own
credentials); this driver follows it with the same token, prints its progress and the test metric,
and exits 0 when it succeeded. Stopping this driver (`ray job stop`) cancels the job.

The platform admin may instead pass ``--as-admin``, which works only where DOCTUNE_ADMIN_KEY is in
the job's environment. Without a token and without that flag the driver refuses before any work
starts, saying how to get a token.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from doctune.config import load_settings
from doctune.errors import DoctuneError, error_from_response
from doctune.spec import read_spec_mapping
from doctune.tasks import get_task, metric_label

__all__ = ["submit_spec_file"]

POLL_S = 2.0
END = ("succeeded", "failed", "cancelled")


def _refusal(spec_path: str) -> DoctuneError:
    return DoctuneError(
        "a direct submission needs a one-time submission token: run `doctune jobs token "
        f"{Path(spec_path).name}` where your API key is set (DOCTUNE_API_KEY) and submit the line it prints, "
        f"`ray job submit ... -- python -m ray_jobs.finetune --spec {Path(spec_path).name} --token dtj_...`. "
        "(The platform admin may use --as-admin with DOCTUNE_ADMIN_KEY in the job's environment.)",
        "unauthenticated", field="token")


def read_spec_file(spec_path: str) -> dict[str, Any]:
    """The spec file's mapping, as `doctune jobs token` read it (the token is bound to its hash)."""
    path = Path(spec_path)
    if not path.is_file():
        raise DoctuneError(f"spec file {spec_path} not found in {Path.cwd()}: let it travel with the job "
                           "(`ray job submit --working-dir .` from the folder that holds it)", "invalid_request",
                           field="spec")
    return read_spec_mapping(path)


class _Door:
    """The API as this driver uses it: with a submission token, or (``--as-admin``) the admin key."""

    def __init__(self, token: str | None, admin_key: str | None) -> None:
        import httpx

        api_url = load_settings().api_url
        if not api_url:
            raise DoctuneError("no doctune API configured on this cluster (DOCTUNE_API_URL)", "unavailable")
        self.token, self.admin = token, admin_key is not None
        headers = {"Authorization": f"Bearer {admin_key}"} if admin_key else {"X-Submission-Token": token or ""}
        self.http = httpx.Client(base_url=api_url, headers=headers, timeout=60)

    def call(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        import httpx

        for attempt in range(5):
            try:
                r = self.http.request(method, path, **kw)
                break
            except httpx.TransportError as exc:
                if attempt == 4:
                    raise DoctuneError(f"cannot reach the doctune API at {self.http.base_url}: {exc}; is it up "
                                       "(`doctune status`)?", "unavailable") from None
                time.sleep(2 ** attempt)
        if r.status_code < 400:
            return r.json()
        raise error_from_response(r.status_code, r.text)

    def submit(self, spec: dict[str, Any]) -> dict[str, Any]:
        if self.admin:
            return self.call("POST", "/v1/jobs", json=spec)
        return self.call("POST", "/v1/jobs/direct", json={"token": self.token, "spec": spec})

    def job(self, job_id: str) -> dict[str, Any]:
        return self.call("GET", f"/v1/jobs/{job_id}" if self.admin else f"/v1/jobs/direct/{job_id}")

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self.call("POST", f"/v1/jobs/{job_id}/cancel" if self.admin else f"/v1/jobs/direct/{job_id}/cancel")


def open_door(spec_path: str, token: str | None, as_admin: bool) -> _Door:
    """Refuse, before anything is sent, a submission with neither a token nor ``--as-admin``, and
    ``--as-admin`` where the admin key is not in the environment."""
    if as_admin:
        admin_key = os.environ.get("DOCTUNE_ADMIN_KEY")
        if not admin_key:
            raise DoctuneError(
                "--as-admin works only where the platform admin's key is in the job's environment; submit with "
                "--runtime-env-json '{\"env_vars\": {\"DOCTUNE_ADMIN_KEY\": \"dtk_...\"}}', or, as a tenant, "
                f"use a token: `doctune jobs token {Path(spec_path).name}`", "forbidden", field="as_admin")
        return _Door(None, admin_key)
    if not token:
        raise _refusal(spec_path)
    return _Door(token, None)


def _progress_line(job: dict[str, Any]) -> str:
    pr = job.get("progress") or {}
    if job["status"] == "queued":
        return f"queued: {pr.get('queue_reason') or 'waiting for the dispatcher'}"
    if pr.get("step") is not None:
        loss = f" loss {pr['loss']:.4f}" if isinstance(pr.get("loss"), (int, float)) else ""
        return f"{job['status']}: step {pr['step']}/{pr.get('total_steps', '?')}{loss}"
    return f"{job['status']}: {pr.get('phase') or ''}".rstrip(": ")


def follow(door: _Door, job: dict[str, Any]) -> dict[str, Any]:
    """Print the job's progress until it ends; stopping this driver (SIGTERM) cancels the job."""
    def stop(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(signum)

    signal.signal(signal.SIGTERM, stop)
    last = ""
    try:
        while job["status"] not in END:
            line = _progress_line(job)
            if line != last:
                print(line, flush=True)
                last = line
            time.sleep(POLL_S)
            job = door.job(job["id"])
    except KeyboardInterrupt:
        print(f"driver stopped: cancelling job {job['id']}", flush=True)
        return door.cancel(job["id"])
    return job


def print_outcome(job: dict[str, Any]) -> int:
    """The last line is the headline test metric, as for every doctune job; 0 only when it succeeded."""
    if job["status"] != "succeeded":
        print(f"job {job['id']} {job['status']}: {(job.get('error') or {}).get('message', '')}", file=sys.stderr)
        return 1
    m = job["metrics"]
    primary = m["primary_metric"]
    test, base = m["test"][primary], m["baseline"]["test"].get(primary)
    print(json.dumps({"job_id": job["id"], "step": m["step"], "metric": primary, "test": test, "baseline_test": base}))
    print(f"{metric_label(get_task(m['task']), primary)} {test:.2f}")
    return 0


def submit_spec_file(spec_path: str, token: str | None, as_admin: bool) -> int:
    """``python -m ray_jobs.finetune --spec FILE (--token T | --as-admin)``: queue the job through the
    API, follow it, print its outcome. Exit 0 when it succeeded, 1 when it did not, 2 when refused."""
    try:
        door = open_door(spec_path, token, as_admin)
        job = door.submit(read_spec_file(spec_path))
        print(f"doctune job {job['id']} (tenant {job['tenant']}) queued", flush=True)
        job = follow(door, job)
    except DoctuneError as exc:
        print(f"error [{exc.code}]: {exc.message}", file=sys.stderr)
        return 2
    return print_outcome(job)
