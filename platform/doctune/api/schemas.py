"""The public shapes of the REST API: one response model per resource, the two small request
models that are not specs (key creation, rollback), the error body, and ``Page[T]``.

Request bodies are the specs of :mod:`doctune.spec` themselves; these models are what the
API answers, so the OpenAPI document (and schemathesis, which checks every answer against
it) describes every response. ``X.of(row)`` builds a model from a metadata-store row.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt

from doctune.services import jobs as jobs_svc
from doctune.services.tenants import RowPage
from doctune.states import DeploymentState, JobState, SweepState

T = TypeVar("T")


def _utc(value: datetime) -> datetime:
    """Stored times are UTC; SQLite hands them back without a zone, so say which one it is."""
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


Timestamp = Annotated[datetime, AfterValidator(_utc)]


# ------------------------------------------------------------------ errors and pages
class FieldError(BaseModel):
    field: str = Field(description="Dotted path of the bad field, e.g. `tuning.lora.r`; `(root)` for the whole body.")
    message: str = Field(description="What is wrong and how to fix it.")


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable error code: invalid_spec, invalid_request, unauthenticated, forbidden, "
                                  "not_found, conflict, too_large, quota_exceeded, unavailable, internal.")
    message: str = Field(description="What went wrong and how to fix it.")
    field: str | None = Field(None, description="The field (or parameter) the error is about, if one.")
    errors: list[FieldError] | None = Field(None, description="Every bad field, when a body or spec has several.")
    tenant_error: bool = Field(description="True when the tenant's own input or settings caused it, not the platform.")


class ErrorOut(BaseModel):
    error: ErrorDetail


class Page(BaseModel, Generic[T]):
    """One page of a list, newest first (created_at, then id, descending)."""

    items: list[T]
    next_cursor: str | None = Field(description="Pass as `?cursor=` for the next page; null on the last page.")

    @classmethod
    def of(cls, page: RowPage, view) -> "Page[T]":
        return cls(items=[view(row) for row in page.items], next_cursor=page.next_cursor)


# ------------------------------------------------------------------ tenants, keys, callers
class Quota(BaseModel):
    weight: float = Field(description="Fair-share weight.")
    max_concurrent_jobs: int | None = Field(description="Jobs starting or running at once; null: unlimited.")
    max_cpus: float | None
    max_gpus: float | None
    max_storage_bytes: int | None
    max_deployments: int | None
    max_trials: int | None = Field(None, description="Trials one sweep may run (a larger grid is refused); null: unlimited.")
    max_queued_jobs: int | None = Field(None, description="Jobs waiting in the queue at once; null: unlimited.")
    max_keys: int | None = Field(None, description="Unrevoked API keys; null: unlimited.")


class TenantSettings(BaseModel):
    redact_pii: bool = Field(False, description="Personal data is replaced by typed placeholders (<EMAIL>, <PHONE>, "
                             "...) in every dataset the tenant uploads, before it is stored.")


class RayClusterOut(BaseModel):
    """A tenant's dedicated Ray cluster; its token is never shown."""

    address: str = Field(description="The head's Jobs API URL; the tenant's jobs and sweeps are submitted there.")
    registered_at: Timestamp | None = None


class TenantOut(BaseModel):
    id: str
    display_name: str | None
    quota: Quota
    settings: TenantSettings = Field(default_factory=TenantSettings, description="The tenant's settings (admin sets them).")
    created_at: Timestamp | None = None
    ray_cluster: RayClusterOut | None = Field(None, description="The tenant's dedicated Ray cluster, if it has one "
                                              "(GET of one tenant); null: its work runs on the shared cluster.")


class TenantCreated(BaseModel):
    tenant: TenantOut
    api_key: str = Field(description="The tenant's first member key; shown once, never stored in clear.")


class KeyOut(BaseModel):
    id: str = Field(description="The key's public prefix (dtk_<id>_...).")
    tenant: str | None = Field(description="The key's tenant; null for a platform-admin key.")
    role: Literal["admin", "member", "viewer"]
    created_at: Timestamp | None
    revoked_at: Timestamp | None


class KeyCreated(KeyOut):
    api_key: str = Field(description="The whole key; shown once, never stored in clear.")


class KeyCreate(BaseModel):
    """A new key for a tenant (default: the caller's)."""

    model_config = ConfigDict(extra="forbid")
    tenant: str = Field(description="Tenant the key is for; defaults to the caller's (an admin must name one).")
    role: Literal["member", "viewer"] = Field("member", description="member: read and write; viewer: read-only.")


class WhoAmI(BaseModel):
    tenant: str | None
    role: str
    key_id: str


class UsageRow(BaseModel):
    tenant: str
    jobs: int
    jobs_by_status: dict[str, int]
    trained_tokens: int | float
    worker_cpu_seconds: int | float
    worker_gpu_seconds: int | float
    storage_bytes: int | None = Field(description="Bytes under the tenant's prefix; null when the store did not answer.")


class TaskOut(BaseModel):
    name: str
    primary_metric: str = Field(description="The headline test metric (reports, leaderboards, promotion).")
    metric_names: list[str] = Field(description="Metrics early stopping, sweeps and leaderboards may use.")
    metric_labels: dict[str, str] = Field(description="How reports print each metric, e.g. macro_f1 -> macro-F1.")
    multiplexable: bool | None = Field(None, description="Whether adapter models can share one base-model application.")
    quantizable: bool | None = Field(None, description="Whether deployments may use quantize: int8.")
    text_fields: list[str] | None = Field(None, description="Record fields that hold the text the model reads.")


class Health(BaseModel):
    status: Literal["ok"]


# ------------------------------------------------------------------ datasets and models
class DatasetOut(BaseModel):
    id: str
    tenant: str
    name: str
    task: str
    uri: str
    info: dict[str, Any] = Field(description="Split sizes, labels, bytes and how it was split, as of its newest version.")
    version: int = Field(1, description="Its newest version: 1 is the upload, each append adds one "
                                        "(GET /v1/datasets/{id}/versions).")
    created_at: Timestamp | None

    @classmethod
    def of(cls, ds) -> "DatasetOut":
        return cls(id=ds.id, tenant=ds.tenant_id, name=ds.name, task=ds.task, uri=ds.uri, info=ds.info or {},
                   version=ds.version or 1, created_at=ds.created_at)


class DatasetVersionOut(BaseModel):
    """One version of a dataset: its counts, label distribution and drift from the version before."""

    dataset_id: str
    version: int
    sizes: dict[str, int] = Field(description="Records per split in this version (every version up to it).")
    added: dict[str, int] = Field(description="Records this version added to each split (version 1: all).")
    duplicates: int = Field(description="Added records identical to stored ones; each went to the split holding it.")
    records: int = Field(description="Records in this version, all splits.")
    drift: dict[str, Any] | None = Field(
        description="From the version before: records added, percent growth, tvd (total variation distance of the "
                    "label distributions, 0..1), new_labels, added_tvd (the added records alone). Null for version 1.")
    info: dict[str, Any] = Field(description="Everything recorded for this version (labels, distribution, ...).")
    created_at: Timestamp | None

    @classmethod
    def of(cls, row) -> "DatasetVersionOut":
        info = row.info or {}
        sizes = {k: int(v) for k, v in (info.get("sizes") or {}).items() if isinstance(v, int)}
        return cls(dataset_id=row.dataset_id, version=row.version, sizes=sizes,
                   added={k: int(v) for k, v in (info.get("added") or sizes).items() if isinstance(v, int)},
                   duplicates=int(info.get("duplicates") or 0), records=int(info.get("records") or sum(sizes.values())),
                   drift=info.get("drift"), info=info, created_at=row.created_at)


class RetrainEventOut(BaseModel):
    """One decision of a deployment's retrain policy."""

    id: int
    deployment_id: str
    at: Timestamp | None
    decision: Literal["triggered", "skipped", "promoted", "refused", "failed"]
    trigger: str | None = Field(description="growth, drift or schedule; null for a retrain job's outcome.")
    reason: str
    job_id: str | None = Field(description="The retrain job, once there is one.")
    data: dict[str, Any] = Field(description="dataset_id, version, served_version, growth, drift, metric, and the "
                                             "champion's and challenger's model_id and test metric.")

    @classmethod
    def of(cls, e) -> "RetrainEventOut":
        return cls(id=e.id, deployment_id=e.deployment_id, at=e.at, decision=e.decision, trigger=e.trigger,
                   reason=e.reason, job_id=e.job_id, data=e.data or {})


class DatasetAppended(BaseModel):
    dataset: DatasetOut
    version: DatasetVersionOut
    retrain: list[RetrainEventOut] = Field(description="What each endpoint's retrain policy decided on this append.")


class ModelOut(BaseModel):
    id: str
    tenant: str
    job_id: str
    task: str
    uri: str
    merged: bool = Field(description="True: a plain model; false: a LoRA-style adapter over its base model.")
    info: dict[str, Any]
    metrics: dict[str, Any] = Field(description="test, dev and baseline metrics.")
    created_at: Timestamp | None

    @classmethod
    def of(cls, m) -> "ModelOut":
        return cls(id=m.id, tenant=m.tenant_id, job_id=m.job_id, task=m.task, uri=m.uri, merged=m.merged,
                   info=m.info or {}, metrics=m.metrics or {}, created_at=m.created_at)


class ModelFileOut(BaseModel):
    path: str
    bytes: int
    url: str = Field(description="Presigned download URL.")
    expires_s: int


# ------------------------------------------------------------------ jobs
class MetricComparison(BaseModel):
    model_config = ConfigDict(extra="allow")  # plus one value per model-free reference baseline
    baseline: float | None
    fine_tuned: float | None


class BestBaseline(BaseModel):
    name: str = Field(description="The best baseline on the test split: the step-0 one (e.g. untrained_head) "
                                  "or a model-free reference (e.g. tfidf_logreg, gazetteer, lead_3).")
    metric: str = Field(description="The task's primary metric, on which the baselines were compared.")
    value: float = Field(description="That baseline's test value of the metric.")
    fine_tuned: float | None = Field(description="The fine-tuned model's test value of the metric.")
    margin: float | None = Field(description="fine_tuned - value: positive when fine-tuning beat the best baseline "
                                             "(for a lower-is-better metric such as loss, negative).")


class JobReport(BaseModel):
    split: str
    examples: int | None
    baseline: str = Field(description="What the step-0 evaluation measured, e.g. untrained_head.")
    primary_metric: str | None
    metrics: dict[str, MetricComparison]
    references: list[str]
    best_baseline: BestBaseline | None = Field(
        None, description="The best of the baseline and the references on the primary metric, and the "
                          "fine-tuned model's margin over it.")


class JobOut(BaseModel):
    id: str
    tenant: str
    task: str
    status: JobState
    spec: dict[str, Any] = Field(description="The JobSpec as submitted.")
    progress: dict[str, Any] = Field(description="step, total_steps, loss, tokens seen, ETA, dev history, queue_reason.")
    metrics: dict[str, Any]
    report: JobReport | None = Field(description="Test metrics beside the baseline's, once finished.")
    error: dict[str, Any] | None
    model_id: str | None
    sweep_id: str | None = Field(description="The sweep this job is a trial of, if any.")
    attempt: int
    pause_requested: bool
    resume_from: str | None
    created_at: Timestamp | None
    started_at: Timestamp | None
    finished_at: Timestamp | None

    @classmethod
    def of(cls, job) -> "JobOut":
        return cls(id=job.id, tenant=job.tenant_id, task=job.task, status=job.status, spec=job.spec,
                   progress=job.progress or {}, metrics=job.metrics or {}, report=jobs_svc.job_report(job),
                   error=job.error, model_id=job.model_id, sweep_id=job.sweep_id, attempt=job.attempt,
                   pause_requested=job.control == "pause", resume_from=job.resume_from, created_at=job.created_at,
                   started_at=job.started_at, finished_at=job.finished_at)


class SubmissionTokenOut(BaseModel):
    """A one-time token for `ray job submit` of one spec (see docs/security/ray-job-submit.md)."""

    id: str
    token: str = Field(description="The whole token (dtj_...); shown once, stored hashed. Pass it as "
                                   "`python -m ray_jobs.finetune --spec FILE --token TOKEN`.")
    tenant: str = Field(description="The tenant whose job the token may queue.")
    spec_sha256: str = Field(description="SHA-256 of the spec's canonical JSON; the submitted spec must match it.")
    expires_at: Timestamp = Field(description="After this the token is refused; it can be redeemed once before.")
    ray_address: str | None = Field(description="The Ray Jobs API address to submit to, when the API knows it.")


class DirectSubmission(BaseModel):
    """What `python -m ray_jobs.finetune --spec FILE --token TOKEN` sends: the token and the file's spec."""

    model_config = ConfigDict(extra="forbid")
    token: str = Field(min_length=1, max_length=200, description="A token from POST /v1/jobs/tokens.")
    spec: dict[str, Any] = Field(description="The JobSpec as in the file; its tenant defaults to the token's.")


class JobEvent(BaseModel):
    id: int
    at: Timestamp
    kind: str = Field(description="status, progress, eval, checkpoint, ...")
    status: str | None
    reason: str | None
    data: dict[str, Any]

    @classmethod
    def of(cls, e) -> "JobEvent":
        return cls(id=e.id, at=e.at, kind=e.kind, status=e.status, reason=e.reason, data=e.data or {})


class JobEventsPage(BaseModel):
    events: list[JobEvent]
    next_after: int = Field(description="Pass as `?after=` for the events after these.")


class CheckpointsDeleted(BaseModel):
    job_id: str
    deleted_objects: int = Field(description="Checkpoint files removed from the object store.")
    freed_bytes: int = Field(description="Bytes they took, no longer counted against the storage quota.")


class JobLogs(BaseModel):
    text: str
    offset: int = Field(description="Pass as `?offset=` for what is logged after this.")


class TensorBoardFileOut(BaseModel):
    """One of a job's TensorBoard event files (one per attempt)."""

    path: str = Field(description="The file's name within the job's TensorBoard folder.")
    bytes: int
    url: str = Field(description="Presigned download URL.")
    expires_s: int = Field(description="Seconds the URL stays valid.")


class PlanOut(BaseModel):
    """The pre-flight plan; nothing ran. The nested parts are open for new measurements."""

    model_config = ConfigDict(extra="allow")
    tenant: str
    task: str
    base_model: str
    dataset: dict[str, Any] = Field(description="id and split sizes.")
    model: dict[str, Any] = Field(description="parameters, trainable_parameters, trainable_fraction, method.")
    memory_per_worker_mb: dict[str, Any]
    workers: int
    tokens: dict[str, Any]
    steps: dict[str, Any] = Field(description="per_epoch, total, evaluations, examples_per_step.")
    expected_time: dict[str, Any] | None = Field(description="null until a comparable job has measured throughput.")
    fits: bool
    warnings: list[str]


# ------------------------------------------------------------------ sweeps and leaderboards
class SweepOut(BaseModel):
    id: str
    tenant: str
    task: str
    status: SweepState
    spec: dict[str, Any] = Field(description="The SweepSpec as submitted.")
    best_job_id: str | None = Field(description="The winner, once the sweep has succeeded.")
    error: dict[str, Any] | None
    created_at: Timestamp | None
    finished_at: Timestamp | None

    @classmethod
    def of(cls, sw) -> "SweepOut":
        return cls(id=sw.id, tenant=sw.tenant_id, task=sw.task, status=sw.status, spec=sw.spec,
                   best_job_id=sw.best_job_id, error=sw.error, created_at=sw.created_at, finished_at=sw.finished_at)


class LeaderboardRow(BaseModel):
    rank: int
    job_id: str
    sweep_id: str | None
    status: str
    model_id: str | None
    settings: dict[str, Any] = Field(description="The job's values of the ranked settings (a sweep: its search space).")
    dev: float | None
    test: float | None
    cost_cpu_seconds: float = Field(description="Worker CPU-seconds, a GPU-second counted as 8; ties go to the cheaper.")
    steps: int | None
    stopped_early: bool


class SweepLeaderboard(BaseModel):
    sweep_id: str
    metric: str
    mode: Literal["max", "min"]
    status: SweepState
    best_job_id: str | None
    trials: list[LeaderboardRow]


class TaskBoard(BaseModel):
    task: str
    metric: str
    mode: Literal["max", "min"]
    jobs: list[LeaderboardRow]


class TenantLeaderboard(BaseModel):
    tenant: str
    boards: list[TaskBoard]


# ------------------------------------------------------------------ deployments and promotions
class DeploymentOut(BaseModel):
    id: str
    tenant: str
    name: str
    model_id: str
    status: DeploymentState
    route: str
    url: str = Field(description="Where to POST predictions.")
    message: str | None
    spec: dict[str, Any] = Field(description="The DeploymentSpec as deployed.")
    quantization: dict[str, Any] | None = Field(
        description="int8 only, once measured: metric, fp32, int8, change, examples, seconds.")
    revision: int = Field(description="The current revision (see /revisions).")
    retrain: dict[str, Any] | None = Field(None, description="Its retrain policy (the spec's retrain); null: none.")
    retrain_job_id: str | None = Field(None, description="The retrain job under way, if any (see /retrain-events).")
    created_at: Timestamp | None

    @classmethod
    def of(cls, d, serve_url: str) -> "DeploymentOut":
        return cls(id=d.id, tenant=d.tenant_id, name=d.name, model_id=d.model_id, status=d.status, route=d.route,
                   url=f"{serve_url}{d.route}/predict", message=d.message, spec=d.spec,
                   quantization=(d.info or {}).get("quantization"), revision=d.revision,
                   retrain=(d.spec or {}).get("retrain"),
                   retrain_job_id=((d.retrain_state or {}).get("pending") or {}).get("job_id"), created_at=d.created_at)


class RevisionOut(BaseModel):
    revision: int
    current: bool
    model_id: str
    reason: str
    decision: dict[str, Any] | None = Field(description="A promotion's decision and both test metrics.")
    spec: dict[str, Any]
    created_at: Timestamp | None

    @classmethod
    def of(cls, r, current: int) -> "RevisionOut":
        return cls(revision=r.revision, current=r.revision == current, model_id=r.model_id, reason=r.reason,
                   decision=r.decision, spec=r.spec, created_at=r.created_at)


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    revision: StrictInt | None = Field(None, description="Revision to redeploy; default: the one before the current one.")


class ChampionOut(BaseModel):
    model_id: str
    test: float | None = Field(description="Its test value of the metric; null when it has none.")


class ChallengerOut(ChampionOut):
    job_id: str | None = Field(description="The job that trained it.")
    sweep_id: str | None = Field(description="The sweep that job was a trial of, if any.")


class PromotionOut(BaseModel):
    decision: Literal["deployed", "unchanged", "promoted", "forced", "kept"]
    test_split: dict[str, Any] | None = Field(
        None, description="When the two models were trained on different versions of their dataset: the version "
                          "whose test split both test values were measured on (dataset_id, version).")
    metric: str
    champion: ChampionOut | None = Field(description="The model served before; null when nothing was.")
    challenger: ChallengerOut
    summary: str
    endpoint: str
    deployment: DeploymentOut | None


# ------------------------------------------------------------------ the cluster (admin, read-only)
class ClusterOut(BaseModel):
    cpus: float = Field(description="Logical CPUs of the Ray cluster.")
    cpus_used: float
    cpus_free: float
    gpus: float
    gpus_used: float
    gpus_free: float
    memory_bytes: float = Field(description="Memory Ray may give tasks and actors.")


class QueuedJobOut(BaseModel):
    position: int = Field(description="1 starts first: weighted fair share, then priority, then age.")
    job_id: str
    tenant: str
    task: str
    priority: int
    cpus: float = Field(description="CPUs the job's workers reserve together.")
    gpus: float
    weight: float = Field(description="The tenant's fair-share weight.")
    tenant_share: float = Field(description="The tenant's running CPUs (+8 per GPU) divided by its weight, now.")
    created_at: Timestamp | None
    reason: str | None = Field(description="Why the job waits now, as the dispatcher last said.")


class EndpointMetricsOut(BaseModel):
    deployment_id: str
    endpoint: str
    requests: dict[str, int] = Field(description="POST /predict requests answered, by HTTP status code.")
    requests_total: int
    latency_count: int
    latency_mean_s: float | None
    latency_p50_s: float | None = Field(description="Upper bound of the latency bucket holding the median.")
    latency_p95_s: float | None
    mean_batch_size: float | None = Field(description="Inputs per model call (dynamic batching).")
    replicas: int = Field(description="Live replicas reporting.")


# ------------------------------------------------------------------ a job's attempt, as its driver records it
class AttemptOut(BaseModel):
    """One attempt of a job, for its driver on a tenant's dedicated cluster (which has no database)."""

    job_id: str
    tenant: str
    status: JobState
    attempt: int = Field(description="Which attempt of the job this is (1 = the first run).")
    resume_from: str | None = Field(description="The checkpoint (bucket/key) the attempt starts from, if any.")
    spec: dict[str, Any] = Field(description="The job's JobSpec.")
    metrics: dict[str, Any] = Field(description="What earlier attempts recorded (their usage).")
    dataset_uri: str | None
    dataset_info: dict[str, Any]


class AttemptRunning(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(max_length=2000, description="Why the job is running now (recorded with its status change).")


class AttemptProgress(BaseModel):
    """A progress snapshot of rank 0, and the one copied before it: what changed becomes job events."""

    model_config = ConfigDict(extra="forbid")
    prev: dict[str, Any] = Field(description="The snapshot copied before (empty for the first).")
    state: dict[str, Any] = Field(description="The snapshot now.")


class AttemptControl(BaseModel):
    stop: Literal["cancel", "pause"] | None = Field(description="Whether the attempt should stop: its job (or "
                                                                "sweep) was cancelled, or a pause was requested.")


class AttemptFailed(BaseModel):
    model_config = ConfigDict(extra="forbid")
    error: dict[str, Any]
    reason: str = Field(max_length=4000)
    metrics: dict[str, Any] | None = None
    progress: dict[str, Any] | None = None


class AttemptRequeued(BaseModel):
    """The attempt failed with retries left: the job is queued again as its next attempt."""

    model_config = ConfigDict(extra="forbid")
    resume_from: str | None = Field(max_length=2000,
                                    description="The job's own checkpoint the next attempt starts from.")
    usage: dict[str, Any]
    error: dict[str, Any]
    reason: str = Field(max_length=4000)


class AttemptPaused(BaseModel):
    model_config = ConfigDict(extra="forbid")
    resume_from: str | None = Field(max_length=2000, description="The job's own checkpoint it resumes from.")
    usage: dict[str, Any]
    progress: dict[str, Any]
    reason: str = Field(max_length=4000)


class ExportCheck(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    model_id: str = Field(max_length=64, description="The model id the driver exported under (model-<12 hex>).")


class ExportCheckOut(BaseModel):
    refusal: ErrorDetail | None = Field(description="Why the export is not kept (its files were removed), or null.")


class AttemptSucceeded(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    model_id: str = Field(max_length=64)
    metrics: dict[str, Any] = Field(description="The job's final metrics (test, dev, baseline, usage, ...).")
    final: dict[str, Any] = Field(description="The final evaluation: its test, dev and baseline go to the model.")
    progress: dict[str, Any]


class AttemptRecorded(BaseModel):
    recorded: bool = Field(description="False when the job had ended meanwhile (say, cancelled): nothing changed.")


# ------------------------------------------------------------------ a sweep, as its driver records it
class SweepDriverOut(BaseModel):
    """A sweep, for its driver on a tenant's dedicated cluster (which has no database)."""

    sweep_id: str
    tenant: str
    status: SweepState
    spec: dict[str, Any] = Field(description="The SweepSpec as submitted.")
    max_concurrent_jobs: int | None = Field(description="The tenant's concurrent-job quota: trials never run "
                                                        "more at once.")


class TrialRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    overrides: dict[str, Any] = Field(description="The trial's value of every field of the sweep's search space "
                                                  "(dotted JobSpec paths), each within its range.")


class TrialStarted(BaseModel):
    job_id: str = Field(description="The trial's job, recorded 'starting'.")
    job_token: str = Field(description="The job token the trial's attempt is recorded with "
                                       "(/v1/jobs/{job_id}/attempt, X-Job-Token).")


class SweepError(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str = Field(max_length=64, pattern=r"^[a-z_]+$", description="A stable code, e.g. sweep_failed.")
    message: str = Field(max_length=4000, description="What went wrong.")


class SweepFailed(BaseModel):
    """The search itself failed (not one trial)."""

    model_config = ConfigDict(extra="forbid")
    error: SweepError


class SweepRecorded(BaseModel):
    recorded: bool = Field(description="True: the record changed as asked, or already was so.")


class SweepOutcome(BaseModel):
    sweep_id: str
    winner: LeaderboardRow | None = Field(description="The best finished trial, now the sweep's best_job_id.")
    trials: list[LeaderboardRow] = Field(description="Every trial, ranked by the sweep's dev metric.")
    cancelled: bool = Field(description="True when the sweep had ended (cancelled) before its outcome: no winner.")
