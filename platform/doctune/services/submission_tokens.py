"""One-time, job-scoped submission tokens: the credential of the `ray job submit` door.

A tenant mints a token for one spec (``doctune jobs token job.yaml`` → ``POST /v1/jobs/tokens``);
the token is bound to the tenant and to the SHA-256 of the spec's canonical form, expires after
:data:`TOKEN_TTL`, and only its hash is stored. ``python -m ray_jobs.finetune --spec job.yaml
--token T`` then sends the file's spec with the token (``POST /v1/jobs/direct``):
:func:`submit_with_token` checks both and redeems the token exactly once (a compare-and-set on
``redeemed_at``), and the job is queued like any other, under the tenant's quotas and fair share.
The redeemed token then lets its driver follow (and cancel) that one job, nothing else.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import select, update

from doctune.errors import DoctuneError
from doctune.services import Platform, Principal
from doctune.services.jobs import cancel_job, check_spec, create_job_record, get_job
from doctune.spec import JobSpec, parse_job_spec
from doctune.store.db import Job, SubmissionToken, new_id, now

__all__ = ["TOKEN_TTL", "cancel_with_token", "job_with_token", "mint_submission_token", "spec_sha256",
           "submit_with_token"]

TOKEN_TTL = timedelta(minutes=10)
TOKEN_PREFIX = "dtj_"
HOW_TO_GET_ONE = ("mint one with `doctune jobs token job.yaml` (it prints the `ray job submit` line to use), "
                  "or, as the platform admin, pass --as-admin with DOCTUNE_ADMIN_KEY in the job's environment")


def spec_sha256(spec: JobSpec) -> str:
    """The SHA-256 of a spec's canonical form: every field (defaults filled in) as sorted, compact JSON.
    Two files that mean the same job hash the same; any change to what would run changes it."""
    canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _aware(at: datetime) -> datetime:
    """SQLite hands datetimes back without a zone; every one we store is UTC."""
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


def mint_submission_token(p: Platform, caller: Principal, spec: JobSpec) -> tuple[dict[str, Any], str]:
    """A token that lets `ray job submit` queue exactly this spec once, for the spec's tenant, within
    TOKEN_TTL. The spec is checked now (tenant, dataset, base model), so a token is never minted for
    a job that would be refused. Returns (its public view, the token: shown once, stored hashed)."""
    check_spec(p, caller, spec)
    token = TOKEN_PREFIX + secrets.token_urlsafe(24)
    row = SubmissionToken(id=new_id("token"), token_hash=_token_hash(token), tenant_id=spec.tenant,
                          spec_sha256=spec_sha256(spec), created_by=caller.key_id, expires_at=now() + TOKEN_TTL)
    with p.db.session() as s:
        s.add(row)
    return token_view(row), token


def token_view(row: SubmissionToken) -> dict[str, Any]:
    return {"id": row.id, "tenant": row.tenant_id, "spec_sha256": row.spec_sha256,
            "expires_at": _aware(row.expires_at).isoformat(), "job_id": row.job_id,
            "redeemed_at": _aware(row.redeemed_at).isoformat() if row.redeemed_at else None}


def _find(p: Platform, token: str) -> SubmissionToken:
    with p.db.session() as s:
        row = s.execute(select(SubmissionToken).where(SubmissionToken.token_hash == _token_hash(token))).scalar_one_or_none()
    if row is None:
        raise DoctuneError(f"this submission token is not valid (mistyped, or never minted); {HOW_TO_GET_ONE}",
                           "unauthenticated", field="token")
    return row


def _check_spec_matches(row: SubmissionToken, body: Any) -> JobSpec:
    """The body as the JobSpec the token was minted for; 403 for another tenant's or a changed spec."""
    if not isinstance(body, dict):
        raise DoctuneError("spec must be a mapping of JobSpec fields", "invalid_spec", field="spec")
    body = {**body}
    body.setdefault("tenant", row.tenant_id)
    if body["tenant"] != row.tenant_id:
        raise DoctuneError(f"this token was minted for tenant {row.tenant_id!r}, but the spec names tenant "
                           f"{body['tenant']!r}; a token only submits its own tenant's job: {HOW_TO_GET_ONE}",
                           "forbidden", field="token")
    spec = parse_job_spec(body)
    digest = spec_sha256(spec)
    if digest != row.spec_sha256:
        raise DoctuneError(f"the spec is not the one this token was minted for (its sha256 is {digest[:12]}..., the "
                           f"token's {row.spec_sha256[:12]}...): the file changed after minting. Mint a token for "
                           "the file as it is now: `doctune jobs token job.yaml`", "forbidden", field="spec")
    return spec


def _redeem(p: Platform, row: SubmissionToken) -> None:
    """Mark the token used, exactly once: a compare-and-set, so two racing redemptions cannot both win."""
    if row.redeemed_at is not None:
        raise DoctuneError(f"this submission token was already used (for job {row.job_id}); tokens are one-time: "
                           f"{HOW_TO_GET_ONE}", "conflict", field="token")
    at = now()
    if _aware(row.expires_at) <= at:
        raise DoctuneError(f"this submission token expired at {_aware(row.expires_at):%Y-%m-%d %H:%M:%S} UTC (tokens "
                           f"live {TOKEN_TTL.seconds // 60} minutes); {HOW_TO_GET_ONE}", "unauthenticated", field="token")
    with p.db.session() as s:
        won = s.execute(update(SubmissionToken)
                        .where(SubmissionToken.id == row.id, SubmissionToken.redeemed_at.is_(None))
                        .values(redeemed_at=at)).rowcount
    if won != 1:
        raise DoctuneError(f"this submission token was already used; tokens are one-time: {HOW_TO_GET_ONE}",
                           "conflict", field="token")


def submit_with_token(p: Platform, token: str, body: Any) -> Job:
    """Redeem ``token`` for the spec ``body`` (a JobSpec mapping; its tenant defaults to the token's)
    and queue the job under the token's tenant. Every refusal happens before any work is recorded
    and says how to get a valid token."""
    row = _find(p, token)
    spec = _check_spec_matches(row, body)
    _redeem(p, row)
    who = Principal(key_id=f"{row.id} (ray job submit)", role="member", tenant_id=row.tenant_id)
    try:
        job = create_job_record(p, who, spec)
    except Exception:  # the spec no longer passes (say, its dataset was deleted): the token stays usable
        with p.db.session() as s:
            s.execute(update(SubmissionToken).where(SubmissionToken.id == row.id).values(redeemed_at=None))
        raise
    with p.db.session() as s:
        s.execute(update(SubmissionToken).where(SubmissionToken.id == row.id).values(job_id=job.id))
    if p.dispatcher is not None:
        p.dispatcher.wake()
    return job


def _job_principal(p: Platform, token: str, job_id: str) -> Principal:
    """Whom a redeemed token acts as: its tenant, for the one job it queued (anything else reads as 404)."""
    row = _find(p, token)
    if row.job_id is None or row.job_id != job_id:
        raise DoctuneError(f"job {job_id!r} not found", "not_found", field="job_id")
    return Principal(key_id=f"{row.id} (ray job submit)", role="member", tenant_id=row.tenant_id)


def job_with_token(p: Platform, token: str, job_id: str) -> Job:
    """The job a redeemed token queued, for its `ray job submit` driver to follow."""
    return get_job(p, _job_principal(p, token, job_id), job_id)


def cancel_with_token(p: Platform, token: str, job_id: str) -> Job:
    """Cancel the job a redeemed token queued (its driver was stopped with `ray job stop`)."""
    return cancel_job(p, _job_principal(p, token, job_id), job_id)
