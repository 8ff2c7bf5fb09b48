"""The typed descriptions of work: the single source of truth for every door.

The REST bodies, the CLI's YAML files, ``ray job submit`` entrypoints and (later)
the CRD schemas and console forms are all these pydantic models. Every field
has a description; every value that can be wrong has a validator; validation
reports every bad field at once (see :func:`parse_job_spec`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from doctune.errors import DoctuneError, from_validation_error

__all__ = [
    "DatasetRef",
    "DeepSpeedSpec",
    "DeploymentSpec",
    "EarlyStoppingSpec",
    "JobSpec",
    "LoraSpec",
    "PromotionSpec",
    "QuotaSpec",
    "RayClusterSpec",
    "ResourcesSpec",
    "RetrainPolicySpec",
    "SearchDimension",
    "SweepSpec",
    "TenantSettingsSpec",
    "TenantSpec",
    "TuningSpec",
    "load_job_spec",
    "read_spec_mapping",
    "parse_job_spec",
    "parse_sweep_spec",
]

SLUG = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def _slug(value: str, what: str) -> str:
    if not SLUG.match(value):
        raise ValueError(
            f"{what} must be 1-63 lowercase letters, digits or '-', starting and ending "
            f"with a letter or digit; got {value!r}"
        )
    return value


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


TARGET_MODULES_HELP = (
    "Names (suffixes) of the linear layers that get {what}, e.g. [query, value] for BERT, [q_proj, v_proj] "
    "for decoders, or [all-linear] for every linear layer but the head. Null (the default) follows the base "
    "model: its attention projections (query/key/value/dense on BERT-like encoders, q/k/v/o_proj on decoders).")


class LoraSpec(_Spec):
    r: int = Field(8, ge=1, le=256, description="LoRA rank: the inner dimension of the low-rank update. Typical 4..64.")
    alpha: float = Field(16.0, gt=0, description="LoRA scaling numerator; the update is scaled by alpha / r. Typical 2*r.")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA input, in [0, 1).")
    target_modules: list[str] | None = Field(
        None, min_length=1,
        description=TARGET_MODULES_HELP.format(what="LoRA adapters"),
    )


class AdaLoraSpec(_Spec):
    init_r: int = Field(12, ge=1, le=256, description="Starting rank of every adapter; AdaLoRA prunes ranks towards target_r.")
    target_r: int = Field(4, ge=1, le=256, description="Average rank left after pruning.")
    alpha: float = Field(16.0, gt=0, description="Scaling numerator, as in LoRA.")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the adapter input, in [0, 1).")
    target_modules: list[str] | None = Field(
        None, min_length=1, description=TARGET_MODULES_HELP.format(what="adapters"),
    )

    @model_validator(mode="after")
    def _ranks(self) -> "AdaLoraSpec":
        if self.target_r > self.init_r:
            raise ValueError(f"target_r ({self.target_r}) must be <= init_r ({self.init_r}); AdaLoRA only prunes ranks")
        return self


class PrefixSpec(_Spec):
    num_virtual_tokens: int = Field(20, ge=1, le=512, description="Trainable key/value prefix length prepended in every layer.")


class Ia3Spec(_Spec):
    target_modules: list[str] | None = Field(
        None, description="Layers whose activations get learned scaling vectors; null: peft's default for the architecture.")
    feedforward_modules: list[str] | None = Field(
        None, description="Which of target_modules are feed-forward layers (scaled on their input); null: peft's default.")


class FreezeSpec(_Spec):
    trainable_layers: int = Field(
        2, ge=0, le=1000,
        description="Train only the top N transformer layers (plus what follows them, e.g. the pooler, and the task head); "
        "everything below, embeddings included, stays frozen.",
    )


class TuningSpec(_Spec):
    method: Literal["full", "lora", "adalora", "prefix", "ia3", "freeze"] = Field(
        "lora",
        description="'full' trains every weight; 'lora', 'adalora', 'prefix' (prefix tuning) and 'ia3' train peft "
        "adapters plus the task head; 'freeze' trains only the top N layers and the head.",
    )
    lora: LoraSpec = Field(default_factory=LoraSpec, description="LoRA settings, used when method is 'lora'.")
    adalora: AdaLoraSpec = Field(default_factory=AdaLoraSpec, description="AdaLoRA settings, used when method is 'adalora'.")
    prefix: PrefixSpec = Field(default_factory=PrefixSpec, description="Prefix-tuning settings, used when method is 'prefix'.")
    ia3: Ia3Spec = Field(default_factory=Ia3Spec, description="IA3 settings, used when method is 'ia3'.")
    freeze: FreezeSpec = Field(default_factory=FreezeSpec, description="Settings for method 'freeze'.")
    merge_adapter: bool = Field(
        True,
        description="On export, merge adapter weights into the base model (a plain transformers model) instead of keeping "
        "them as a separate adapter. Prefix tuning cannot be merged and is always exported as an adapter.",
    )


class DeepSpeedSpec(_Spec):
    zero_stage: int = Field(2, ge=0, le=3, description="ZeRO stage: 0 off, 1 shards optimizer state, 2 also gradients, 3 also parameters.")
    offload_optimizer: bool = Field(False, description="Keep optimizer state in CPU memory (ZeRO stage >= 1).")
    offload_params: bool = Field(False, description="Keep parameters in CPU memory (ZeRO stage 3 only).")

    @model_validator(mode="after")
    def _offload_needs_stage(self) -> "DeepSpeedSpec":
        if self.offload_params and self.zero_stage != 3:
            raise ValueError(f"offload_params needs zero_stage 3; got zero_stage {self.zero_stage}. Set zero_stage: 3 or offload_params: false")
        if self.offload_optimizer and self.zero_stage == 0:
            raise ValueError("offload_optimizer needs zero_stage >= 1; set zero_stage: 2 or offload_optimizer: false")
        return self


class EarlyStoppingSpec(_Spec):
    metric: str = Field("macro_f1", description="Dev-set metric to watch: one of the task's metrics, e.g. macro_f1 "
                        "(classification), f1 (ner), loss. Checked against the task at submission.")
    mode: Literal["max", "min"] = Field("max", description="'max' if larger is better (f1, accuracy), 'min' for loss.")
    patience: int = Field(3, ge=1, le=1000, description="Stop after this many evaluations without improvement.")
    min_delta: float = Field(0.0, ge=0.0, description="An improvement smaller than this does not count.")
    target: float | None = Field(
        None, description="Stop as soon as the dev metric reaches this value (at least it for mode 'max', at most "
        "it for 'min'): time to a good-enough model rather than to the best one. Omit to stop on patience only.")


class TrackingSpec(_Spec):
    mlflow: bool = Field(
        True, description="Also log the job to the platform's MLflow tracking store, when it has one "
        "(DOCTUNE_MLFLOW_URI): its settings, metrics and exported model. false: TensorBoard files only, which every "
        "job writes.")


class ResourcesSpec(_Spec):
    cpu: float = Field(1.0, gt=0, le=256, description="Logical CPUs per training worker (fractions allowed).")
    gpu: float = Field(0.0, ge=0, le=16, description="GPUs per training worker; 0 trains on the CPU.")
    threads: int | None = Field(None, ge=1, le=256, description="torch intra-op threads per worker; default max(1, floor(cpu)).")
    memory_gb: float | None = Field(
        None, gt=0, le=4096,
        description="Memory reserved per training worker, in GiB (Ray schedules on it); `doctune jobs plan` "
        "estimates what a job needs and warns when this is too small.",
    )


class DatasetRef(_Spec):
    id: str = Field(..., min_length=1, max_length=64, description="Id of a dataset uploaded to the tenant (see `doctune datasets upload`).")
    version: int | None = Field(
        None, ge=1, le=1_000_000,
        description="The dataset version to train and evaluate on (1 is the upload, each `doctune datasets append` "
        "adds one; see `doctune datasets versions`). Default: the newest when the job is submitted; the job "
        "records the version it used.")
    compare_version: int | None = Field(
        None, ge=1, le=1_000_000,
        description="Also measure the test metrics on this earlier version's test split (reported as the job's "
        "test_by_version), so that the model can be compared with one tested on that version: an append never "
        "moves a record to another split, so that split is the first records of this one's. A retrain sets it "
        "to the served model's version.")

    @model_validator(mode="after")
    def _compare_earlier(self) -> "DatasetRef":
        if self.compare_version is not None and self.version is not None and self.compare_version > self.version:
            raise ValueError(f"compare_version ({self.compare_version}) must be at most version ({self.version}): "
                             "it names an earlier version whose test split the job also measures")
        return self


class JobSpec(_Spec):
    """One fine-tuning job: what to train, on what, how, and with what resources."""

    tenant: str = Field(..., description="Tenant that owns the job (slug).")
    name: str | None = Field(None, max_length=100, description="Optional human-readable name.")
    task: str = Field(
        ...,
        description="A registered task plugin's name, e.g. classification, ner, extraction, summarization, generation "
        "or retrieval (the built-in ones) or one named in DOCTUNE_TASK_PLUGINS. Checked against the registered "
        "tasks at submission.")
    base_model: str = Field(
        "all-minilm-l6-v2",
        description="A catalog name (all-minilm-l6-v2: English encoder; gemma-3-270m: multilingual decoder, covers "
        "Chinese), or a model the job's tenant owns: s3://<bucket>/tenants/<tenant>/... (one it uploaded with "
        "`doctune models upload --name NAME DIR`, listed by GET /v1/base-models, or one of its registered models). "
        "A local directory in Hugging Face format is for the platform admin only.",
    )
    dataset: DatasetRef = Field(..., description="The dataset to train and evaluate on.")
    tuning: TuningSpec = Field(default_factory=TuningSpec, description="Full fine-tuning or LoRA.")
    deepspeed: DeepSpeedSpec = Field(default_factory=DeepSpeedSpec, description="DeepSpeed ZeRO settings.")
    micro_batch_size: int = Field(8, ge=1, le=4096, description="Examples per worker per forward pass.")
    gradient_accumulation_steps: int = Field(1, ge=1, le=1024, description="Micro-batches accumulated before each optimizer step.")
    epochs: float | None = Field(None, gt=0, le=1000, description="Passes over the training split; set this or max_steps.")
    max_steps: int | None = Field(None, ge=1, le=10_000_000, description="Optimizer steps to run; set this or epochs.")
    learning_rate: float = Field(5e-4, description="Peak learning rate. Typical 1e-5..5e-5 for full tuning, 1e-4..1e-3 for LoRA.")
    warmup_ratio: float = Field(0.1, ge=0.0, lt=1.0, description="Fraction of steps spent warming the LR up linearly from 0.")
    weight_decay: float = Field(0.01, ge=0.0, le=1.0, description="AdamW weight decay.")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="Numeric precision of training and evaluation. auto: bf16 where the hardware multiplies bf16 "
        "natively (a GPU; a CPU with Intel AMX or AVX-512 BF16, under autocast with fp32 weights), fp32 elsewhere. "
        "fp32 or bf16 force one (bf16 on a CPU without those units is emulated and slow).")
    max_seq_length: int = Field(128, ge=8, le=8192, description="Tokens per document after truncation.")
    early_stopping: EarlyStoppingSpec | None = Field(None, description="Stop when a dev metric stops improving; omit to train to the end.")
    tracking: TrackingSpec = Field(default_factory=TrackingSpec, description="Experiment tracking (docs/tracking.md).")
    eval_interval: int = Field(50, ge=1, description="Evaluate on the dev split every this many optimizer steps (and at the end).")
    checkpoint_interval: int = Field(50, ge=1, description="Save a checkpoint to the object store every this many optimizer steps.")
    num_workers: int = Field(2, ge=1, le=1024, description="Ray Train workers (data-parallel ranks).")
    resources_per_worker: ResourcesSpec = Field(default_factory=ResourcesSpec, description="Resources each worker reserves.")
    max_failures: int = Field(2, ge=0, le=100, description="Worker failures Ray Train recovers from within one attempt, restarting the workers from the last checkpoint.")
    retries: int = Field(1, ge=0, le=10, description="Times a failed attempt is re-queued as a new attempt that resumes from its last checkpoint.")
    seed: int = Field(42, ge=0, le=2**32 - 1, description="Seed for weight init, data order and dropout.")

    @field_validator("tenant")
    @classmethod
    def _tenant_slug(cls, v: str) -> str:
        return _slug(v, "tenant")

    @field_validator("learning_rate")
    @classmethod
    def _lr_positive(cls, v: float) -> float:
        if not v > 0 or v > 1:
            raise ValueError(f"learning_rate must be > 0 and <= 1; got {v}. Typical values are 1e-5 .. 5e-4")
        return v

    @model_validator(mode="after")
    def _length(self) -> "JobSpec":
        if (self.epochs is None) == (self.max_steps is None):
            raise ValueError("set exactly one of epochs or max_steps (e.g. epochs: 3 or max_steps: 200)")
        return self


class RetrainPolicySpec(_Spec):
    """When an endpoint's model is trained again on its dataset's newest version. The retrain job is the
    served model's own job spec on that version; its model replaces the served one only if its test metric
    is better on the served model's test split (champion/challenger). Set at least one trigger."""

    min_new_records: int | None = Field(
        None, ge=1, le=100_000_000,
        description="Retrain once the dataset holds at least this many records more than the version the served "
        "model was trained on (checked at each append).")
    min_growth_percent: float | None = Field(
        None, gt=0, le=100_000,
        description="Retrain once the dataset has grown by at least this percent since the version the served "
        "model was trained on, e.g. 20 (checked at each append).")
    max_label_drift: float | None = Field(
        None, gt=0, lt=1,
        description="Retrain once the label distribution (the task's stratify key: the label for classification) "
        "of the newest version is farther than this from that of the served model's version, in total variation "
        "distance (0: the same distribution, 1: disjoint), e.g. 0.1 (checked at each append).")
    schedule: str | None = Field(
        None, max_length=100,
        description="A cron expression (five fields, UTC), e.g. '0 3 * * 1' for Mondays at 03:00: retrain then "
        "if the dataset has a version newer than the served model's (checked by the API server every few seconds).")
    metric: str | None = Field(
        None, description="Test metric the retrained and the served model are compared on (default: the task's "
        "primary metric); higher is better except for loss and perplexity.")

    @field_validator("schedule")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from croniter import croniter

        v = " ".join(v.split())
        try:
            valid = len(v.split()) == 5 and croniter.is_valid(v)
        except Exception:  # croniter raises more than its own error for some malformed input
            valid = False
        if not valid:
            raise ValueError(f"schedule must be a cron expression of five fields (minute hour day-of-month month "
                             f"day-of-week, UTC), e.g. '0 3 * * 1' for Mondays at 03:00; got {v!r}")
        return v

    @model_validator(mode="after")
    def _some_trigger(self) -> "RetrainPolicySpec":
        if all(getattr(self, k) is None for k in ("min_new_records", "min_growth_percent", "max_label_drift",
                                                   "schedule")):
            raise ValueError("set at least one trigger: min_new_records, min_growth_percent, max_label_drift or "
                             "schedule (to stop retraining, remove the policy)")
        return self


class DeploymentSpec(_Spec):
    """Serve a registered model behind an autoscaled, authenticated HTTP endpoint."""

    tenant: str = Field(..., description="Tenant that owns the deployment (slug).")
    model_id: str = Field(..., min_length=1, max_length=64, description="Registered model to serve.")
    name: str = Field(..., description="Endpoint name (slug); the route is /<tenant>/<name>.")
    min_replicas: int = Field(1, ge=0, le=100, description="Fewest replicas the autoscaler keeps.")
    max_replicas: int = Field(2, ge=1, le=100, description="Most replicas the autoscaler starts.")
    target_ongoing_requests: float = Field(2.0, gt=0, description="Requests in flight per replica the autoscaler aims for.")
    num_cpus: float = Field(0.5, gt=0, le=64, description="Logical CPUs each replica reserves.")
    upscale_delay_s: float = Field(
        5.0, ge=0, le=3600,
        description="Seconds the load must stay above target_ongoing_requests per replica before a replica is added.")
    downscale_delay_s: float = Field(
        60.0, ge=0, le=3600,
        description="Seconds the load must stay below target before a replica is removed (back towards min_replicas).")
    max_batch_size: int = Field(
        8, ge=1, le=1024,
        description="Most requests one replica answers with one model call (dynamic batching; each request "
        "holds at most 64 inputs). Larger batches raise throughput under load at some cost in latency.",
    )
    batch_wait_timeout_s: float = Field(
        0.01, ge=0.0, le=1.0,
        description="Seconds a replica waits for more requests to fill a batch after the first one arrives, "
        "0 .. 1. 0 answers at once with whatever has queued; typical 0.005 .. 0.1.",
    )
    quantize: Literal["none", "int8"] = Field(
        "none",
        description="'int8': replicas serve the model with int8 dynamic quantization of its linear layers "
        "(smaller and usually faster on CPU). The deployment first evaluates the model both ways on its test "
        "split and reports the metric change as the deployment's 'quantization'. Only for tasks whose accuracy "
        "change can be measured (e.g. classification, ner, extraction); refused for the others.",
    )
    multiplex: bool = Field(
        False,
        description="Serve a LoRA adapter model from the shared base-model application: each of its replicas holds "
        "one copy of the base model and many adapters of the same task and base (Ray Serve model multiplexing), "
        "and a request may name another of the tenant's adapter models in the body field 'model'. The model must "
        "have been exported with tuning.merge_adapter: false, of a task whose models can share a base (not "
        "retrieval), and not with quantize: int8. The shared application's own settings (its replicas, adapters per "
        "replica and per tenant) are the platform's; this deployment's replica settings apply to its router.",
    )
    retrain: RetrainPolicySpec | None = Field(
        None,
        description="Retrain the served model on its dataset's newest version when the dataset grows or drifts "
        "enough, or on a schedule, and serve the retrained model only if it is better (see docs/lifecycle.md). "
        "Omit for none.")

    @model_validator(mode="before")
    @classmethod
    def _platform_settings(cls, data: Any) -> Any:
        if isinstance(data, dict) and "max_adapters_per_replica" in data:
            raise ValueError(
                "max_adapters_per_replica is the platform's setting now (DOCTUNE_SHARED_MAX_ADAPTERS_PER_REPLICA), the "
                "same for every tenant sharing a base model; remove it from the deployment")
        return data

    @classmethod
    def from_stored(cls, data: dict[str, Any] | None) -> "DeploymentSpec":
        """A DeploymentSpec as stored with a deployment: fields it no longer has are dropped,
        fields added since get their defaults (specs outlive schema changes)."""
        return cls.model_validate({k: v for k, v in (data or {}).items() if k in cls.model_fields})

    @field_validator("tenant", "name")
    @classmethod
    def _slugs(cls, v: str) -> str:
        return _slug(v, "name")

    @model_validator(mode="after")
    def _replicas(self) -> "DeploymentSpec":
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) must be <= max_replicas ({self.max_replicas})")
        return self


class PromotionSpec(_Spec):
    """Champion/challenger: put a model (or a sweep's winner) behind an endpoint only if its
    test metric beats the model served there now, on the same test split (or if forced)."""

    tenant: str = Field(..., description="Tenant that owns the endpoint and the challenger (slug).")
    endpoint: str = Field(..., description="Endpoint (deployment) name (slug); the route is /<tenant>/<endpoint>.")
    model_id: str | None = Field(
        None, min_length=1, max_length=64, description="The challenger: a registered model. Set this or sweep_id.")
    sweep_id: str | None = Field(
        None, min_length=1, max_length=64,
        description="The challenger is this sweep's winner (the sweep must have succeeded). Set this or model_id.")
    metric: str | None = Field(
        None, description="Test metric the two models are compared on (default: the task's primary metric); "
        "higher is better except for loss and perplexity.")
    force: bool = Field(
        False, description="Promote even when the challenger is not better, or when the two models were tested "
        "on different datasets and cannot be compared.")
    deployment: dict[str, Any] | None = Field(
        None, description="DeploymentSpec settings (min_replicas, max_replicas, num_cpus, ...) for an endpoint that "
        "does not exist yet; an existing endpoint keeps its settings (change them with `doctune deploy`).")

    @field_validator("tenant", "endpoint")
    @classmethod
    def _slugs(cls, v: str, info) -> str:
        return _slug(v, info.field_name)

    @field_validator("deployment")
    @classmethod
    def _deployment_fields(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is None:
            return v
        taken = sorted(set(v) & {"tenant", "name", "model_id"})
        if taken:
            raise ValueError(f"{', '.join(taken)} come from the promotion itself (tenant, endpoint, model_id or "
                             "sweep_id); remove them from deployment")
        try:
            DeploymentSpec.model_validate({**v, "tenant": "t", "name": "n", "model_id": "m"})
        except ValidationError as exc:
            bad = from_validation_error(exc).errors
            raise ValueError("; ".join(f"{e['field']}: {e['message']}" for e in bad)) from None
        return v

    @model_validator(mode="after")
    def _one_challenger(self) -> "PromotionSpec":
        if (self.model_id is None) == (self.sweep_id is None):
            raise ValueError("set exactly one of model_id or sweep_id: model_id promotes that model, sweep_id "
                             "promotes the sweep's winner")
        return self


class TenantSpec(_Spec):
    name: str = Field(..., description="Tenant id (slug), e.g. 'legal-team'.")
    display_name: str | None = Field(None, max_length=200, description="Human-readable name.")

    @field_validator("name")
    @classmethod
    def _name_slug(cls, v: str) -> str:
        return _slug(v, "name")


class QuotaSpec(_Spec):
    """A tenant's limits and fair-share weight. A field left out keeps its current value;
    null means unlimited."""

    weight: float | None = Field(None, gt=0, le=1000, description="Fair-share weight: a tenant with weight 2 gets twice the share of one with 1.")
    max_concurrent_jobs: int | None = Field(None, ge=0, le=10_000, description="Jobs starting or running at once.")
    max_cpus: float | None = Field(None, ge=0, description="Logical CPUs the tenant's running jobs may hold together.")
    max_gpus: float | None = Field(None, ge=0, description="GPUs the tenant's running jobs may hold together.")
    max_storage_bytes: int | None = Field(None, ge=0, description="Bytes the tenant may keep in the object store (datasets, checkpoints, models).")
    max_deployments: int | None = Field(None, ge=0, le=10_000, description="Deployments (endpoints) the tenant may have.")
    max_trials: int | None = Field(None, ge=1, le=10_000, description="Trials one sweep may run; a larger grid (or num_samples) is refused when submitted.")
    max_queued_jobs: int | None = Field(None, ge=0, le=100_000, description="Jobs waiting in the queue at once; a submission past it is a 429.")
    max_keys: int | None = Field(None, ge=0, le=10_000, description="Unrevoked API keys the tenant may hold; a new key past it is a 429.")


class TenantSettingsSpec(_Spec):
    """A tenant's settings (admin). A field left out keeps its current value."""

    redact_pii: bool | None = Field(
        None, description="Replace personal data (emails, phone, card, IBAN and national ID numbers, person names "
        "after a title) with typed placeholders such as <EMAIL> in every dataset the tenant uploads, before it is "
        "stored; an upload's own redact_pii cannot turn it off (docs/security.md, PII redaction).")


class RayClusterSpec(_Spec):
    """A tenant's dedicated Ray cluster: where its head's Jobs API answers, and the Ray auth token
    that head takes. The tenant's jobs and sweeps then run there; deployments stay on the shared
    cluster's Serve."""

    address: str = Field(..., min_length=8, max_length=300, description=(
        "The head's Jobs API (dashboard) URL, http(s), e.g. http://doctune-head-svc.legal-team.svc:8265 "
        "(a KubeRay RayCluster's head Service, port 8265)."))
    token: str = Field(..., min_length=16, max_length=512, description=(
        "The Ray auth token the cluster's head takes (RAY_AUTH_TOKEN); stored, never shown again."))

    @field_validator("address")
    @classmethod
    def _http_address(cls, v: str) -> str:
        from urllib.parse import urlsplit

        parts = urlsplit(v.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ValueError(f"address must be the head's http(s) dashboard URL, e.g. "
                             f"http://doctune-head-svc.<namespace>.svc:8265; got {v!r}")
        return v.strip().rstrip("/")

    @field_validator("token")
    @classmethod
    def _token_chars(cls, v: str) -> str:
        if not v.isprintable() or any(c.isspace() for c in v):
            raise ValueError("token must be printable with no spaces (the value of RAY_AUTH_TOKEN)")
        return v


def parse_job_spec(data: Any) -> JobSpec:
    """Validate a mapping as a JobSpec, raising one DoctuneError that lists every bad field."""
    if not isinstance(data, dict):
        raise DoctuneError(f"a job spec must be a mapping of fields; got {type(data).__name__}", "invalid_spec")
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        raise from_validation_error(exc) from None


def read_spec_mapping(path: str | Path) -> dict[str, Any]:
    """A YAML (or JSON) spec file's top-level mapping, unvalidated (what the CLI sends to the API);
    an unreadable or non-mapping file is a DoctuneError naming ``spec``."""
    try:
        body = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise DoctuneError(f"cannot read {path}: {exc}", "invalid_spec", field="spec") from None
    if not isinstance(body, dict):
        raise DoctuneError(f"{path} must hold a YAML mapping of JobSpec fields", "invalid_spec", field="spec")
    return body


def load_job_spec(path: str | Path, **overrides: Any) -> JobSpec:
    """Read a YAML (or JSON) job spec file; ``overrides`` replace top-level fields."""
    p = Path(path)
    if not p.exists():
        raise DoctuneError(f"spec file {p} does not exist", "invalid_request", field="spec")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise DoctuneError(f"{p} is not valid YAML: {exc}", "invalid_spec", field="spec") from None
    if isinstance(data, dict):
        data.update({k: v for k, v in overrides.items() if v is not None})
    return parse_job_spec(data)


class SearchDimension(_Spec):
    """One field's range in a sweep: ``choice`` of values, or ``uniform`` / ``loguniform`` in [low, high]."""

    type: Literal["choice", "uniform", "loguniform"] = Field(..., description="How trial values are drawn.")
    values: list[Any] | None = Field(None, min_length=1, max_length=100, description="choice: the values to try.")
    low: float | None = Field(None, description="uniform/loguniform: the smallest value.")
    high: float | None = Field(None, description="uniform/loguniform: the largest value.")

    @model_validator(mode="after")
    def _shape(self) -> "SearchDimension":
        if self.type == "choice":
            if not self.values or self.low is not None or self.high is not None:
                raise ValueError("a 'choice' dimension takes 'values' (a non-empty list), not low/high")
        else:
            if self.low is None or self.high is None or self.values is not None:
                raise ValueError(f"a '{self.type}' dimension takes 'low' and 'high', not values")
            if not self.low < self.high:
                raise ValueError(f"low ({self.low}) must be below high ({self.high})")
            if self.type == "loguniform" and self.low <= 0:
                raise ValueError(f"a 'loguniform' dimension needs low > 0; got {self.low}")
        return self


class AshaSpec(_Spec):
    grace_period: int = Field(1, ge=1, le=1000, description="Evaluations every trial gets before ASHA may stop it.")
    reduction_factor: float = Field(2.0, gt=1, le=10, description="Only the best 1/reduction_factor of trials go on at each rung.")


class SweepSpec(_Spec):
    """A JobSpec plus a search space over its fields, searched by Ray Tune."""

    tenant: str = Field(..., description="Tenant that owns the sweep and its trials (slug).")
    name: str | None = Field(None, max_length=200, description="Human-readable sweep name.")
    job: dict[str, Any] = Field(..., description="The JobSpec every trial starts from (its tenant is the sweep's).")
    search_space: dict[str, SearchDimension] = Field(
        ..., min_length=1, max_length=20,
        description="Dotted JobSpec field paths (e.g. learning_rate, tuning.lora.r) to their ranges.")
    algorithm: Literal["grid", "random", "asha"] = Field(
        "random", description="grid: every combination of 'choice' values; random: num_samples draws; "
                              "asha: random draws, weak trials stopped early (Async Successive Halving).")
    num_samples: int = Field(4, ge=1, le=100, description="Trials to draw (random, asha); grid runs each combination once.")
    max_concurrent_trials: int = Field(2, ge=1, le=32, description="Trials running at once (never above the tenant's job quota).")
    metric: str | None = Field(None, description="Dev metric that ranks trials (default: the task's primary metric).")
    mode: Literal["max", "min"] = Field("max", description="Whether a larger metric is better.")
    asha: AshaSpec | None = Field(None, description="ASHA settings (algorithm asha).")
    seed: int | None = Field(
        None, ge=0, le=2**31 - 1,
        description="Seed of the random draws (random, asha): the same seed draws the same trials in the same order.")

    @field_validator("tenant")
    @classmethod
    def _tenant_slug(cls, v: str) -> str:
        return _slug(v, "tenant")


    def trial_count(self) -> int:
        if self.algorithm != "grid":
            return self.num_samples
        n = 1
        for d in self.search_space.values():
            n *= len(d.values or [])
        return n


def set_path(data: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``data`` with the dotted ``path`` set to ``value`` (intermediate mappings created)."""
    import copy

    out = copy.deepcopy(data)
    node = out
    *parents, leaf = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise DoctuneError(f"search_space.{path}: {key} is not a group of fields", "invalid_spec", field=f"search_space.{path}")
    node[leaf] = value
    return out


def parse_sweep_spec(data: Any) -> SweepSpec:
    """Validate a sweep: its own fields, its job as a JobSpec (errors under ``job.``), and every
    search-space path with a sample value set into the job (errors under ``search_space.``)."""
    if not isinstance(data, dict):
        raise DoctuneError(f"a sweep spec must be a mapping of fields; got {type(data).__name__}", "invalid_spec")
    try:
        sweep = SweepSpec.model_validate(data)
    except ValidationError as exc:
        raise from_validation_error(exc) from None
    if sweep.algorithm == "grid":
        for path, d in sweep.search_space.items():
            if d.type != "choice":
                raise DoctuneError(f"search_space.{path}: grid search takes only 'choice' dimensions; this one is {d.type} "
                                   "(list its values, or use algorithm random or asha)", "invalid_spec",
                                   field=f"search_space.{path}")
    if sweep.asha is not None and sweep.algorithm != "asha":
        raise DoctuneError("'asha' settings are only for algorithm: asha", "invalid_spec", field="asha")
    job = {**sweep.job, "tenant": sweep.tenant}
    try:
        JobSpec.model_validate(job)
    except ValidationError as exc:
        err = from_validation_error(exc)
        raise DoctuneError(f"job: {err.message}", "invalid_spec", field=f"job.{err.field}" if err.field else "job") from None
    for path, dim in sweep.search_space.items():
        samples = dim.values if dim.type == "choice" else [dim.low, dim.high]
        for value in samples:
            try:
                JobSpec.model_validate(set_path(job, path, value))
            except ValidationError as exc:
                err = from_validation_error(exc)
                raise DoctuneError(f"search_space.{path}: value {value!r} makes the job invalid: {err.message}",
                                   "invalid_spec", field=f"search_space.{path}") from None
    return sweep
