"""Where doctune's components are, for every process that needs them.

`doctune up` writes ``$DOCTUNE_HOME/stack.json`` (mode 0600) describing the
embedded stack it started; every other process — the CLI, the API server, a Ray
job driver, a Serve replica — calls :func:`load_settings`, which reads that file
and lets ``DOCTUNE_*`` environment variables override each entry. In a cluster
(Helm) there is no stack file and the environment says everything.

Ray processes are scoped: the Ray head starts with :meth:`Settings.ray_process_env`, which
names no credential and sets ``DOCTUNE_CREDENTIALS_FROM_ENV=1``, so :func:`load_settings` there
takes the database URL and the object-store keys only from the environment, which the runner
gives each job it submits (:meth:`Settings.job_env`). No Ray process gets the admin key.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path


def doctune_home() -> Path:
    return Path(os.environ.get("DOCTUNE_HOME", Path.home() / ".doctune")).expanduser().resolve()


@dataclass
class Settings:
    home: str = ""
    database_url: str = ""
    s3_endpoint: str = ""
    s3_access_key: str = ""
    s3_secret_key: str = ""
    s3_region: str = "us-east-1"
    # the embedded SeaweedFS master (host:port; `doctune up` sets it): where tenant-scoped S3 keys are
    # added (doctune.store.tenant_keys); "" = the object store is MinIO, whose admin API adds them
    weed_master: str = ""
    bucket: str = "doctune"
    ray_dashboard_url: str = ""
    ray_gcs_address: str = ""
    ray_token_path: str = ""
    api_url: str = ""
    serve_url: str = ""
    serve_port: int = 0
    admin_key: str = ""
    runner: str = "shared"  # how jobs reach the cluster: "shared" = the Ray Jobs API of one Ray head,
    # "rayjob" = one KubeRay RayJob (with its own Ray cluster) per run (doctune.runners.kuberay)
    kube_namespace: str = ""  # where the rayjob runner makes RayJobs ("" = the pod's own namespace, or "default")
    rayjob_image: str = ""  # the doctune image every RayJob's Ray pods run
    rayjob_queue: str = ""  # a Kueue LocalQueue: RayJobs carry kueue.x-k8s.io/queue-name and start suspended
    rayjob_ttl_s: int = 300  # seconds KubeRay keeps a finished RayJob (and its log) before deleting it
    rayjob_backoff_limit: int = 0  # retries of a failed RayJob by KubeRay (doctune's own attempts retry jobs)
    rayjob_max_workers: int = 4  # most worker pods one RayJob's cluster autoscales to
    rayjob_worker_cpus: float = 2.0  # CPUs (and threads) of each worker pod
    rayjob_worker_memory: str = "8Gi"
    rayjob_worker_gpus: int = 0  # nvidia.com/gpu of each worker pod
    rayjob_env_secret: str = ""  # a Secret with the job credentials (DOCTUNE_DATABASE_URL, DOCTUNE_S3_*), as envFrom
    rayjob_owner: str = ""  # "<group>/<version>/<plural>/<name>" in kube_namespace that owns every RayJob (e.g. the API's Deployment)
    max_upload_bytes: int = 200 * 1024 * 1024  # a multipart upload (a dataset's files)
    max_json_bytes: int = 1024 * 1024  # any other request body to the API
    endpoint_max_body_bytes: int = 8 * 1024 * 1024  # a request to an endpoint (up to 64 documents)
    max_dataset_rows: int = 1_000_000  # records in one uploaded dataset
    max_labels: int = 1000  # distinct labels (classes, entity types) in one dataset
    # requests per period ("N/second|minute|hour"; "" = no limit), counted per API key and per
    # client address, by each API process and each endpoint replica (rate_limit_storage
    # "redis://..." shares the counts between processes)
    rate_limit_per_key: str = "1200/minute"
    rate_limit_per_address: str = "2400/minute"
    endpoint_rate_limit_per_key: str = "6000/minute"
    endpoint_rate_limit_per_address: str = "12000/minute"
    rate_limit_storage: str = "memory://"
    # keys API keys' HMAC-SHA256 hashes; `doctune up` makes one. "" = the secret the
    # database keeps (made by its migration), so that every process of a cluster agrees
    key_secret: str = ""
    max_base_model_bytes: int = 4 * 1024 * 1024 * 1024  # one uploaded base model, as sent and as unpacked
    # the shared applications of multiplexed endpoints (one per task and base model), set by the platform
    # for every tenant's adapters alike (doctune.serve.multiplex.SharedServing); no deployment changes them
    shared_min_replicas: int = 1
    shared_max_replicas: int = 2
    shared_num_cpus: float = 0.5
    shared_max_adapters_per_replica: int = 8
    shared_adapters_per_tenant: int = 4  # a tenant holding this many loaded adapters recycles its own
    shared_max_batch_size: int = 8
    shared_batch_wait_timeout_s: float = 0.01
    # the API's reconciler (doctune.services.reconcile): how often it compares every unfinished job,
    # sweep and deployment with the cluster, and how long a claim or a deploy may go unrecorded first
    reconcile_interval_s: float = 15.0
    reconcile_grace_s: float = 60.0
    # experiment tracking (docs/tracking.md): every job and sweep on the shared cluster also logs to this
    # MLflow tracking store ("" = none; e.g. http://mlflow:5000, sqlite:////srv/mlflow.db). The runner gives
    # it to each job it submits, like the stores' credentials (it may carry one, and it holds every
    # tenant's runs), so a tenant's dedicated cluster never learns it
    mlflow_uri: str = ""
    # where new MLflow experiments keep artifacts (the exported models); "" = the tracking server's
    # default, or a folder ``mlartifacts`` beside a ``sqlite:///`` store's file
    mlflow_artifact_uri: str = ""

    def ray_env(self) -> dict[str, str]:
        """Environment a Ray client needs to talk to our token-protected head."""
        env = {"RAY_AUTH_MODE": "token"}
        if self.ray_token_path:
            env["RAY_AUTH_TOKEN_PATH"] = self.ray_token_path
        return env

    def ray_process_env(self) -> dict[str, str]:
        """What every process of the Ray cluster gets (the head's environment, which Ray passes on to
        drivers, workers and replicas): where the components are, and no credential at all."""
        env = {k: v for k, v in self.to_env().items() if k not in CREDENTIAL_VARS}
        env[CREDENTIALS_FROM_ENV] = "1"
        return env

    def job_env(self) -> dict[str, str]:
        """The credentials the runner passes to one job it submits (its Ray runtime_env), which its
        workers and Serve replicas inherit: the metadata store, the object store and the MLflow
        tracking store (when one is set). Never the admin key."""
        wanted = {"database_url", "s3_access_key", "s3_secret_key", "mlflow_uri"}
        return {f"DOCTUNE_{name.upper()}": getattr(self, name) for name in sorted(wanted) if getattr(self, name)}

    def tenant_job_env(self, access_key: str, secret_key: str, job_token: str = "",
                       sweep_token: str = "") -> dict[str, str]:
        """The credentials of one job on a tenant's dedicated Ray cluster (whose token the tenant holds,
        so it can read them): the tenant's own object-store key (doctune.store.tenant_keys), never the
        root key, and never the database URL. A fine-tuning job's driver records its attempt through
        the API (``DOCTUNE_API_URL``, which :meth:`ray_process_env` names) with ``job_token``, valid for
        that one attempt only, and a sweep's driver its trials with ``sweep_token``, valid for that
        sweep only (doctune.store.job_tokens); ``DOCTUNE_JOB_LEDGER=api`` tells either so."""
        env = {"DOCTUNE_S3_ACCESS_KEY": access_key, "DOCTUNE_S3_SECRET_KEY": secret_key}
        for var, token in ((JOB_TOKEN_VAR, job_token), (SWEEP_TOKEN_VAR, sweep_token)):
            if token:
                env[JOB_LEDGER_VAR] = "api"
                env[var] = token
        return env

    def ray_token(self) -> str:
        if os.environ.get("RAY_AUTH_TOKEN"):
            return os.environ["RAY_AUTH_TOKEN"]
        if self.ray_token_path and Path(self.ray_token_path).exists():
            return Path(self.ray_token_path).read_text().strip()
        return ""

    def to_env(self) -> dict[str, str]:
        """The same settings as DOCTUNE_* variables, for processes we launch."""
        out = {"DOCTUNE_HOME": self.home}
        for f in fields(self):
            if f.name == "home":
                continue
            value = getattr(self, f.name)
            if value not in ("", 0, None):
                out[f"DOCTUNE_{f.name.upper()}"] = str(value)
        return out


# credentials that no Ray process finds in its environment unless its job was given them; the
# API key variables too, in case the shell that ran `doctune up` had them exported
# (and the SeaweedFS master, through which S3 identities are added, and the MLflow tracking store, which
# holds every tenant's runs)
CREDENTIAL_FIELDS = ("admin_key", "database_url", "s3_access_key", "s3_secret_key", "weed_master", "mlflow_uri")
CREDENTIAL_VARS = frozenset({f"DOCTUNE_{f.upper()}" for f in CREDENTIAL_FIELDS} | {"DOCTUNE_API_KEY"})
CREDENTIALS_FROM_ENV = "DOCTUNE_CREDENTIALS_FROM_ENV"
# how a job's driver records its attempt (doctune.drivers.ledger), and a sweep's driver its trials
# (doctune.drivers.sweep_ledger): unset = in the database (the shared cluster), "api" = through the API at
# DOCTUNE_API_URL with the job token, or the sweep token (a tenant's dedicated cluster)
JOB_LEDGER_VAR = "DOCTUNE_JOB_LEDGER"
JOB_TOKEN_VAR = "DOCTUNE_JOB_TOKEN"
SWEEP_TOKEN_VAR = "DOCTUNE_SWEEP_TOKEN"


def stack_file(home: Path | None = None) -> Path:
    return (home or doctune_home()) / "stack.json"


def load_settings(home: Path | None = None) -> Settings:
    home = home or doctune_home()
    data: dict = {}
    sf = stack_file(home)
    if sf.exists():
        try:
            data = json.loads(sf.read_text())
        except json.JSONDecodeError:
            data = {}
    s = Settings(home=str(home))
    scoped = os.environ.get(CREDENTIALS_FROM_ENV) == "1"  # a Ray process: credentials come per job
    for f in fields(s):
        if f.name == "home":
            continue
        if f.name in data and not (scoped and f.name in CREDENTIAL_FIELDS):
            setattr(s, f.name, type(getattr(s, f.name))(data[f.name]))
        env = os.environ.get(f"DOCTUNE_{f.name.upper()}")
        if env:
            setattr(s, f.name, type(getattr(s, f.name))(env))
    if not s.database_url and not scoped:
        s.database_url = f"sqlite:///{home / 'doctune.db'}"
    return s


def save_settings(s: Settings) -> Path:
    home = Path(s.home)
    home.mkdir(parents=True, exist_ok=True)
    sf = stack_file(home)
    data = {k: v for k, v in asdict(s).items() if k != "home"}
    tmp = sf.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.chmod(tmp, 0o600)
    tmp.replace(sf)
    return sf
