"""Driver tokens: the credential a driver on a tenant's dedicated Ray cluster records its work with.

Such a driver gets no database URL (its tenant can read everything a driver there is given); it
records through the API with one of these tokens instead:

- a **job token** (``dta_...``): one job, one attempt and the one Ray submission that runs it; the
  job's driver records that attempt (``/v1/jobs/{job_id}/attempt/...``, :mod:`doctune.services.attempts`).
- a **sweep token** (``dts_...``): one sweep and the Ray submission of its driver, which records the
  sweep's trials and outcome (``/v1/sweeps/{sweep_id}/driver/...``, :mod:`doctune.services.sweep_ledger`).

A token names its job or sweep, an attempt (a sweep has one driver: always 1) and a submission, and
carries an HMAC-SHA256 over those and the tenant, keyed by the platform's key secret
(:func:`doctune.store.keys.server_secret`) through a key of its own kind, so a job token never
passes as a sweep token: nothing is stored, and only the platform can make one. The API checks it
on every call, and only while that submission runs the job or sweep: when it ends, the token stops
working.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass

__all__ = ["JOB", "JOB_TOKEN_PREFIX", "SWEEP", "SWEEP_TOKEN_PREFIX", "DriverToken", "JobToken", "TokenKind",
           "driver_token_mac", "job_token_mac", "mint_driver_token", "mint_job_token", "mint_sweep_token",
           "read_driver_token", "read_job_token", "read_sweep_token", "sweep_token_mac"]

JOB_TOKEN_PREFIX = "dta_"
SWEEP_TOKEN_PREFIX = "dts_"


@dataclass(frozen=True)
class TokenKind:
    """What a token is for: its prefix, and the domain its HMAC key is derived under."""

    prefix: str
    domain: bytes


JOB = TokenKind(JOB_TOKEN_PREFIX, b"doctune-job-attempt-token")
SWEEP = TokenKind(SWEEP_TOKEN_PREFIX, b"doctune-sweep-driver-token")


@dataclass(frozen=True)
class DriverToken:
    """What a token says it is for (not yet checked: see :func:`driver_token_mac`)."""

    id: str  # the job's or the sweep's
    attempt: int
    submission_id: str
    mac: str

    @property
    def job_id(self) -> str:
        return self.id

    @property
    def sweep_id(self) -> str:
        return self.id


JobToken = DriverToken


def driver_token_mac(kind: TokenKind, server_secret: bytes, tenant: str, subject_id: str, attempt: int,
                     submission_id: str) -> str:
    key = hmac.new(server_secret, kind.domain, hashlib.sha256).digest()  # not the API keys' HMAC key itself
    message = json.dumps([tenant, subject_id, attempt, submission_id], separators=(",", ":")).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def mint_driver_token(kind: TokenKind, server_secret: bytes, tenant: str, subject_id: str, attempt: int,
                      submission_id: str) -> str:
    payload = json.dumps([subject_id, attempt, submission_id], separators=(",", ":")).encode()
    body = base64.urlsafe_b64encode(payload).decode().rstrip("=")
    return f"{kind.prefix}{body}.{driver_token_mac(kind, server_secret, tenant, subject_id, attempt, submission_id)}"


def read_driver_token(kind: TokenKind, token: str) -> DriverToken | None:
    """The token's fields, or None when it is not a token of this kind at all."""
    if not token.startswith(kind.prefix) or token.count(".") != 1:
        return None
    body, mac = token[len(kind.prefix):].split(".")
    try:
        subject_id, attempt, submission_id = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except Exception:
        return None
    if not (isinstance(subject_id, str) and isinstance(attempt, int) and isinstance(submission_id, str)):
        return None
    return DriverToken(subject_id, attempt, submission_id, mac)


# ------------------------------------------------------------------ a job's attempt
def job_token_mac(server_secret: bytes, tenant: str, job_id: str, attempt: int, submission_id: str) -> str:
    return driver_token_mac(JOB, server_secret, tenant, job_id, attempt, submission_id)


def mint_job_token(server_secret: bytes, tenant: str, job_id: str, attempt: int, submission_id: str) -> str:
    return mint_driver_token(JOB, server_secret, tenant, job_id, attempt, submission_id)


def read_job_token(token: str) -> DriverToken | None:
    return read_driver_token(JOB, token)


# ------------------------------------------------------------------ a sweep's driver
def sweep_token_mac(server_secret: bytes, tenant: str, sweep_id: str, submission_id: str) -> str:
    return driver_token_mac(SWEEP, server_secret, tenant, sweep_id, 1, submission_id)


def mint_sweep_token(server_secret: bytes, tenant: str, sweep_id: str, submission_id: str) -> str:
    return mint_driver_token(SWEEP, server_secret, tenant, sweep_id, 1, submission_id)


def read_sweep_token(token: str) -> DriverToken | None:
    return read_driver_token(SWEEP, token)
