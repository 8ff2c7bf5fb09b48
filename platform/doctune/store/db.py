"""Metadata: tenants (and their dedicated Ray clusters), API keys, datasets and their versions, jobs,
sweeps, models, deployments, their revisions and their retrain decisions.

SQLite under ``$DOCTUNE_HOME`` by default, PostgreSQL via ``DOCTUNE_DATABASE_URL``.
The schema is owned by Alembic (``doctune/store/migrations``); :meth:`Database.migrate`
brings any database to head and is run by ``doctune up``, the API at start-up and
tests.
"""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from sqlalchemy import (JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text,
                        UniqueConstraint, create_engine, event)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from doctune.states import DeploymentState, JobState, SweepState


def now() -> datetime:
    return datetime.now(timezone.utc)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class Base(DeclarativeBase):
    pass


class Tenant(Base):
    __tablename__ = "tenants"
    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    display_name: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    # quotas (None: unlimited) and the fair-share weight; see doctune.services.scheduler
    weight: Mapped[float] = mapped_column(Float, default=1.0, server_default="1.0")
    max_concurrent_jobs: Mapped[int | None] = mapped_column(Integer, default=2)
    max_cpus: Mapped[float | None] = mapped_column(Float)
    max_gpus: Mapped[float | None] = mapped_column(Float)
    max_storage_bytes: Mapped[int | None] = mapped_column(BigInteger)
    max_deployments: Mapped[int | None] = mapped_column(Integer, default=4)
    max_trials: Mapped[int | None] = mapped_column(Integer, default=16)  # trials one sweep may run
    max_queued_jobs: Mapped[int | None] = mapped_column(Integer, default=100, server_default="100")
    max_keys: Mapped[int | None] = mapped_column(Integer, default=50, server_default="50")  # live (unrevoked) keys
    # settings: redact_pii replaces personal data in every dataset the tenant uploads (doctune.services.redaction)
    redact_pii: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")


class RayCluster(Base):
    """A tenant's dedicated Ray cluster: the Jobs API address of its head and its Ray auth token.
    The tenant's jobs and sweeps are submitted there (``doctune.services.Platform.runner_for``).
    A replaced or removed cluster is retired, not deleted: the jobs submitted to it keep its address
    and token until they end. The token is stored as the platform's other secrets are
    (``platform_secrets``), readable by the services only; no API answer contains it."""

    __tablename__ = "ray_clusters"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    address: Mapped[str] = mapped_column(String(300))  # e.g. http://doctune-head-svc.<tenant>.svc:8265
    token: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    retired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # replaced or removed


class DispatchLock(Base):
    """One row; the dispatcher updates it first in its transaction, so only one
    dispatcher (of any API replica) decides at a time, on SQLite and PostgreSQL."""

    __tablename__ = "dispatch_lock"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class IdempotencyKey(Base):
    """A create request's ``Idempotency-Key``, per tenant (an admin's under ``"_admin"``): the first
    request records it with its body's hash and then its answer; a repeat gets that answer back."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("tenant_id", "key", name="uq_idempotency_keys_tenant_key"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(63))  # no foreign key: an admin's keys are stored under "_admin"
    key: Mapped[str] = mapped_column(String(255))
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(300))
    request_hash: Mapped[str] = mapped_column(String(64))  # sha256 of the request: the same key with another body is a 400
    status_code: Mapped[int | None] = mapped_column(Integer)  # None while the first request is still being answered
    response: Mapped[Any | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


def take_quota_lock(s: Session) -> None:
    """Take the dispatch lock row in session ``s`` (held until it commits): every decision that
    reads what a tenant holds and then adds to it (claiming jobs, recording a deployment,
    storing bytes) runs after this, so two racing requests cannot both pass one quota."""
    from sqlalchemy import update

    s.execute(update(DispatchLock).where(DispatchLock.id == 1).values(at=now()))


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # the public prefix of the key
    tenant_id: Mapped[str | None] = mapped_column(ForeignKey("tenants.id"), index=True)  # None: platform admin
    role: Mapped[str] = mapped_column(String(16))
    salt: Mapped[str] = mapped_column(String(64))  # scrypt's; "" for HMAC
    hash: Mapped[str] = mapped_column(String(128))
    hash_scheme: Mapped[str] = mapped_column(String(16), default="hmac-sha256", server_default="scrypt")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class PlatformSecret(Base):
    """Secrets the platform makes for itself: "api_key_hmac" keys API-key hashes when no
    DOCTUNE_KEY_SECRET is set (see ``doctune.store.keys``)."""

    __tablename__ = "platform_secrets"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(128))


class KeyRevocations(Base):
    """One row (id 1): ``epoch`` goes up on every key revocation; each process that caches
    verified keys re-reads it at most every second and drops its cache when it has moved."""

    __tablename__ = "key_revocations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    epoch: Mapped[int] = mapped_column(BigInteger, default=0)


class Dataset(Base):
    __tablename__ = "datasets"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    task: Mapped[str] = mapped_column(String(32))
    uri: Mapped[str] = mapped_column(Text)  # object-store prefix holding train/dev/test.jsonl
    info: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # as of its newest version
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")  # its newest DatasetVersion
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class DatasetVersion(Base):
    """One version of a dataset: version 1 is the upload, each append adds the next. A version's records
    are those of every version up to it, split by split, in order (its files hold only what it added,
    under ``info["uri"]``); its ``info`` has the dataset's info as of it, its counts (``sizes``, ``added``),
    its label distribution and the drift from the version before (``doctune.services.dataset_versions``)."""

    __tablename__ = "dataset_versions"
    __table_args__ = (UniqueConstraint("dataset_id", "version", name="uq_dataset_versions_version"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    info: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class Job(Base):
    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    task: Mapped[str] = mapped_column(String(32))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default=JobState.QUEUED, index=True)
    priority: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    attempt: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    control: Mapped[str | None] = mapped_column(String(16))  # "pause" while a pause is requested
    resume_from: Mapped[str | None] = mapped_column(Text)  # checkpoint path (bucket/key) the next run starts from
    ray_submission_id: Mapped[str | None] = mapped_column(String(128))
    # the tenant's cluster the current driver was submitted to; None: the shared cluster
    ray_cluster_id: Mapped[str | None] = mapped_column(ForeignKey("ray_clusters.id"))
    progress: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    model_id: Mapped[str | None] = mapped_column(String(64))
    sweep_id: Mapped[str | None] = mapped_column(ForeignKey("sweeps.id"), index=True)  # a sweep's trial
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


# each tenant's queue in the dispatcher's order (priority, then age): the dispatcher reads only its heads
Index("ix_jobs_queue", Job.status, Job.tenant_id, Job.priority.desc(), Job.created_at, Job.id)
# each tenant's jobs in the listing's order (newest first, keyset-paged on created_at, id)
Index("ix_jobs_tenant_listing", Job.tenant_id, Job.created_at.desc(), Job.id.desc())


class SubmissionToken(Base):
    """A one-time permission to submit one JobSpec through `ray job submit`: minted by a tenant's
    key (``POST /v1/jobs/tokens``), bound to the tenant and the spec's SHA-256, valid for minutes,
    and redeemed at most once (``redeemed_at`` is set by a compare-and-set). Only a hash of the
    token is stored."""

    __tablename__ = "submission_tokens"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex of the whole token
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    spec_sha256: Mapped[str] = mapped_column(String(64))
    created_by: Mapped[str] = mapped_column(String(64))  # the key id that minted it
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    redeemed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id"))  # the job its redemption queued


class Sweep(Base):
    """A search over a JobSpec's fields run by Ray Tune; its trials are jobs with ``sweep_id`` set."""

    __tablename__ = "sweeps"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    task: Mapped[str] = mapped_column(String(32))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default=SweepState.QUEUED, index=True)
    best_job_id: Mapped[str | None] = mapped_column(String(64))
    ray_submission_id: Mapped[str | None] = mapped_column(String(128))
    ray_cluster_id: Mapped[str | None] = mapped_column(ForeignKey("ray_clusters.id"))  # None: the shared cluster
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class JobEvent(Base):
    """One thing that happened to a job: a status transition (with its reason),
    progress, an evaluation, a checkpoint. Paged by id."""

    __tablename__ = "job_events"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str | None] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Model(Base):
    __tablename__ = "models"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"))
    task: Mapped[str] = mapped_column(String(32))
    uri: Mapped[str] = mapped_column(Text)
    merged: Mapped[bool] = mapped_column(Boolean, default=True)
    info: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class Deployment(Base):
    __tablename__ = "deployments"
    # one deployment per tenant and name: deploying a name again updates it (a new revision)
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_deployments_tenant_name"),)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(63))
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id"))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default=DeploymentState.DEPLOYING)
    route: Mapped[str] = mapped_column(String(200))
    message: Mapped[str | None] = mapped_column(Text)
    # what the deploy job measured, e.g. {"quantization": {...}}; None until measured, reset when the model changes
    info: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    revision: Mapped[int] = mapped_column(Integer, default=1, server_default="1")  # its newest DeploymentRevision
    # the driver (a Ray submission) doing the current deploy or undeploy; the reconciler asks about it
    ray_submission_id: Mapped[str | None] = mapped_column(String(128))
    # its retrain policy's bookkeeping (the policy itself is spec["retrain"]): the retrain job under way,
    # when the schedule last fired (doctune.services.retrain)
    retrain_state: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class DeploymentRevision(Base):
    """One version of a deployment, appended by every deploy, promotion and rollback: which
    model with which settings, why, and (a promotion) the comparison that decided it."""

    __tablename__ = "deployment_revisions"
    __table_args__ = (UniqueConstraint("deployment_id", "revision", name="uq_deployment_revisions_revision"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    deployment_id: Mapped[str] = mapped_column(ForeignKey("deployments.id"), index=True)
    revision: Mapped[int] = mapped_column(Integer)  # 1, 2, ... per deployment
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id"))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)  # the DeploymentSpec as deployed
    reason: Mapped[str] = mapped_column(Text)
    decision: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # a promotion's decision and both test metrics
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class RetrainEvent(Base):
    """One decision of a deployment's retrain policy: triggered (a job submitted), skipped, promoted,
    refused (the challenger was not better) or failed (its job did not succeed), with the numbers
    that decided it (growth, drift, both test metrics) in ``data``. Paged by id."""

    __tablename__ = "retrain_events"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    deployment_id: Mapped[str] = mapped_column(ForeignKey("deployments.id"), index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    decision: Mapped[str] = mapped_column(String(16))
    trigger: Mapped[str | None] = mapped_column(String(16))  # growth, drift, schedule; None for a job's outcome
    reason: Mapped[str] = mapped_column(Text)
    job_id: Mapped[str | None] = mapped_column(String(64))  # the retrain job, once there is one
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Database:
    """An engine plus a session factory; one per process."""

    def __init__(self, url: str) -> None:
        self.url = url
        kwargs: dict[str, Any] = {"pool_pre_ping": True}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
        else:  # the API runs up to 40 sync routes at once (its thread pool): keep that many connections open.
            # SQLAlchemy's default (5, overflow 10) opened and closed a connection per request under load,
            # and PostgreSQL forks a backend process for each one.
            kwargs.update(pool_size=20, max_overflow=20)
        self.engine = create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            @event.listens_for(self.engine, "connect")
            def _pragmas(dbapi_conn, _):  # WAL lets the API read while a job driver writes
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.close()
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as s:
            try:
                yield s
                s.commit()
            except BaseException:
                s.rollback()
                raise

    def migrate(self) -> None:
        from alembic import command

        command.upgrade(alembic_config(self.url), "head")

    def dispose(self) -> None:
        self.engine.dispose()


def alembic_config(url: str):
    from alembic.config import Config

    here = Path(__file__).parent
    cfg = Config()
    cfg.set_main_option("script_location", str(here / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["configure_logger"] = False
    return cfg
