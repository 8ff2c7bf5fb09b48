"""Job tokens: the credential a job on a tenant's dedicated Ray cluster reports its attempt with.

Such a job gets no database URL (its tenant can read everything a job there is given); its driver
records the attempt through the API (``/v1/jobs/{job_id}/attempt/...``) with this token instead.
A token names one job, one attempt and the one Ray submission that runs it, and carries an
HMAC-SHA256 over those and the job's tenant, keyed by the platform's key secret
(:func:`doctune.store.keys.server_secret`): nothing is stored, and only the platform can make one.
The API (:mod:`doctune.services.attempts`) checks it on every call, and only while that submission
is the job's current run: when the attempt ends (succeeded, failed, paused, re-queued, cancelled)
the token stops working.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass

__all__ = ["JOB_TOKEN_PREFIX", "JobToken", "job_token_mac", "mint_job_token", "read_job_token"]

JOB_TOKEN_PREFIX = "dta_"
_DOMAIN = b"doctune-job-attempt-token"


@dataclass(frozen=True)
class JobToken:
    """What a token says it is for (not yet checked: see :func:`job_token_mac`)."""

    job_id: str
    attempt: int
    submission_id: str
    mac: str


def job_token_mac(server_secret: bytes, tenant: str, job_id: str, attempt: int, submission_id: str) -> str:
    key = hmac.new(server_secret, _DOMAIN, hashlib.sha256).digest()  # not the API keys' HMAC key itself
    message = json.dumps([tenant, job_id, attempt, submission_id], separators=(",", ":")).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def mint_job_token(server_secret: bytes, tenant: str, job_id: str, attempt: int, submission_id: str) -> str:
    payload = json.dumps([job_id, attempt, submission_id], separators=(",", ":")).encode()
    body = base64.urlsafe_b64encode(payload).decode().rstrip("=")
    return f"{JOB_TOKEN_PREFIX}{body}.{job_token_mac(server_secret, tenant, job_id, attempt, submission_id)}"


def read_job_token(token: str) -> JobToken | None:
    """The token's fields, or None when it is not a job token at all."""
    if not token.startswith(JOB_TOKEN_PREFIX) or token.count(".") != 1:
        return None
    body, mac = token[len(JOB_TOKEN_PREFIX):].split(".")
    try:
        job_id, attempt, submission_id = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except Exception:
        return None
    if not (isinstance(job_id, str) and isinstance(attempt, int) and isinstance(submission_id, str)):
        return None
    return JobToken(job_id, attempt, submission_id, mac)
