"""A job the platform submits to a tenant's dedicated Ray cluster (whose token the tenant holds, and so
can read every job's runtime_env there) carries the tenant's own object-store key and never the root
key, the admin key or the database URL (a job's driver records its attempt through the API with a
token for that attempt: tests/unit/test_job_ledger.py; a sweep's driver its trials, with a token for
that sweep: tests/unit/test_sweep_ledger.py); that key, issued on the real embedded S3 server
(SeaweedFS ``weed``), reads, writes, lists and deletes under ``tenants/<tenant>/`` only. The shared
cluster's jobs keep the platform's keys (only the platform holds its token)."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from minio.error import S3Error

from doctune.config import Settings
from doctune.errors import DoctuneError
from doctune.runners import RayJobsRunner
from doctune.services import Platform, tenants
from doctune.services.ray_clusters import set_ray_cluster
from doctune.spec import RayClusterSpec, TenantSpec
from doctune.store.db import Job, Sweep
from doctune.store.job_tokens import read_job_token, read_sweep_token
from doctune.store.objects import ObjectStore
from doctune.store.tenant_keys import WeedTenantKeys, scoped_key

ROOT_ACCESS, ROOT_SECRET = "rootkey", "root-secret-0123456789"
ADDR_A = "http://doctune-head-svc.team-a.svc:8265"
TOKEN_A = "tenant-a-token-0123456789abcdef"
API_URL = "http://doctune-api.doctune.svc:8000"


@pytest.fixture(scope="module")
def weed(tmp_path_factory):
    """A real SeaweedFS server (S3 + filer + master) with one root identity, on free ports; yields the
    settings that reach it (root keys, S3 endpoint, master)."""
    from doctune.local import Ports, find_free_port_base

    home = tmp_path_factory.mktemp("weed-keys")
    ident = home / "identities.json"
    ident.write_text(json.dumps({"identities": [{"name": "root", "credentials": [
        {"accessKey": ROOT_ACCESS, "secretKey": ROOT_SECRET}], "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}))
    binary = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    start = 43000 + 500 * (os.getpid() % 7)
    for _ in range(5):
        ports = Ports(find_free_port_base(start=start))
        proc = subprocess.Popen(
            [binary, "server", f"-dir={home}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
             f"-master.port={ports.weed_master}", f"-volume.port={ports.volume}", "-master.volumeSizeLimitMB=64",
             "-volume.max=0", "-filer", f"-filer.port={ports.filer}", "-s3", f"-s3.port={ports.s3}",
             f"-s3.config={ident}", "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false"],
            stdout=open(home / "weed.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True)
        settings = Settings(s3_endpoint=f"http://127.0.0.1:{ports.s3}", s3_access_key=ROOT_ACCESS,
                            s3_secret_key=ROOT_SECRET, bucket="doctune", weed_master=f"127.0.0.1:{ports.weed_master}")
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                ObjectStore(settings).ensure_bucket()
                break
            except Exception:
                time.sleep(0.5)
        if proc.poll() is None and time.monotonic() < deadline:
            break
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        start = ports.base + 500
    else:
        raise AssertionError(f"weed did not start: {(home / 'weed.log').read_text()[-2000:]}")
    yield settings
    os.killpg(proc.pid, signal.SIGKILL)  # weed ignores SIGTERM for a while
    proc.wait(30)


class RecordingJobsApi:
    """Stands in for Ray's JobSubmissionClient: records what the runner submits."""

    def __init__(self) -> None:
        self.submitted: list[dict] = []

    def submit_job(self, **kw) -> str:
        self.submitted.append(kw)
        return kw.get("submission_id") or "raysubmit_1"


@pytest.fixture
def platform_with_cluster(weed, tmp_path):
    """A platform on the real S3 server; team-a has a dedicated cluster, team-b has not."""
    settings = Settings(**{**weed.__dict__, "home": str(tmp_path), "database_url": f"sqlite:///{tmp_path / 'd.db'}",
                           "admin_key": "dtk_admin_secret", "ray_dashboard_url": "http://127.0.0.1:8265",
                           "api_url": API_URL})
    p = Platform(settings)
    p.db.migrate()
    admin = tenants.authenticate(p, tenants.create_admin_key(p))
    for name in ("team-a", "team-b"):
        tenants.create_tenant(p, admin, TenantSpec(name=name))
    set_ray_cluster(p, admin, "team-a", RayClusterSpec(address=ADDR_A, token=TOKEN_A))
    with p.db.session() as s:
        s.add(Job(id="job-1", tenant_id="team-a", task="classification", spec={}, status="starting"))
        s.add(Job(id="job-b", tenant_id="team-b", task="classification", spec={}, status="starting"))
    yield p
    p.db.dispose()


def _submit(runner) -> dict[str, str]:
    jobs = RecordingJobsApi()
    runner._client = jobs
    runner.submit("ray_jobs.finetune", ["--job-id", "job-1"], submission_id="job-1-a1")
    return jobs.submitted[0]["runtime_env"]["env_vars"]


def test_a_job_on_a_tenants_cluster_carries_the_tenants_key_and_no_root_or_admin_key(platform_with_cluster):
    p = platform_with_cluster
    runner = p.runner_for("team-a")
    assert isinstance(runner, RayJobsRunner) and runner.dedicated
    env = _submit(runner)
    values = "\n".join(env.values())
    assert ROOT_SECRET not in values and ROOT_ACCESS not in values
    assert "dtk_admin_secret" not in values and "DOCTUNE_ADMIN_KEY" not in env and "DOCTUNE_WEED_MASTER" not in env
    key = scoped_key(p.settings, "team-a")
    assert (env["DOCTUNE_S3_ACCESS_KEY"], env["DOCTUNE_S3_SECRET_KEY"]) == (key.access_key, key.secret_key)
    # and the key it carries works, on team-a's prefix only
    store = ObjectStore(Settings(**{**p.settings.__dict__, "s3_access_key": env["DOCTUNE_S3_ACCESS_KEY"],
                                    "s3_secret_key": env["DOCTUNE_S3_SECRET_KEY"]}))
    store.client.put_object("doctune", "tenants/team-a/jobs/job-1/probe", io.BytesIO(b"ok"), 2)
    with pytest.raises(S3Error):
        store.client.put_object("doctune", "tenants/team-b/jobs/job-1/probe", io.BytesIO(b"no"), 2)


def test_the_shared_clusters_jobs_keep_the_platforms_keys(platform_with_cluster):
    env = _submit(platform_with_cluster.runner_for("team-b"))
    assert env["DOCTUNE_S3_ACCESS_KEY"] == ROOT_ACCESS and "DOCTUNE_DATABASE_URL" in env


def test_a_job_on_a_tenants_cluster_carries_no_database_url(platform_with_cluster):
    """Its driver records the attempt through the API instead, with a token for this attempt only."""
    p = platform_with_cluster
    env = _submit(p.runner_for("team-a"))
    assert "DOCTUNE_DATABASE_URL" not in env and p.settings.database_url not in "\n".join(env.values())
    assert env["DOCTUNE_JOB_LEDGER"] == "api" and env["DOCTUNE_API_URL"] == API_URL
    token = read_job_token(env["DOCTUNE_JOB_TOKEN"])
    assert (token.job_id, token.attempt, token.submission_id) == ("job-1", 1, "job-1-a1")


def test_a_sweep_on_a_tenants_cluster_carries_a_sweep_token_and_no_database_url(platform_with_cluster):
    """Its driver records the sweep and its trials through the API instead (tests/unit/test_sweep_ledger.py),
    with a token for this sweep and this submission only."""
    p = platform_with_cluster
    with p.db.session() as s:
        s.add(Sweep(id="sweep-1", tenant_id="team-a", task="classification", spec={}))
    runner = p.runner_for("team-a")
    runner._client = RecordingJobsApi()
    runner.submit("ray_jobs.sweep", ["--sweep-id", "sweep-1"], submission_id="sweep-1")
    env = runner._client.submitted[0]["runtime_env"]["env_vars"]
    assert "DOCTUNE_DATABASE_URL" not in env and p.settings.database_url not in "\n".join(env.values())
    assert ROOT_SECRET not in "\n".join(env.values()) and "DOCTUNE_JOB_TOKEN" not in env
    assert env["DOCTUNE_JOB_LEDGER"] == "api" and env["DOCTUNE_API_URL"] == API_URL
    token = read_sweep_token(env["DOCTUNE_SWEEP_TOKEN"])
    assert (token.sweep_id, token.submission_id) == ("sweep-1", "sweep-1")


def test_a_tenants_cluster_gets_no_job_or_sweep_of_another_tenant(platform_with_cluster):
    """No token is made for another tenant's job or sweep (nor one that does not exist), and nothing is submitted."""
    p = platform_with_cluster
    with p.db.session() as s:
        s.add(Sweep(id="sweep-b", tenant_id="team-b", task="classification", spec={}))
    runner = p.runner_for("team-a")
    runner._client = RecordingJobsApi()
    with pytest.raises(DoctuneError, match="not tenant team-a's"):
        runner.submit("ray_jobs.finetune", ["--job-id", "job-b"], submission_id="job-b")
    for sweep_id in ("sweep-b", "sweep-nope"):
        with pytest.raises(DoctuneError, match="not tenant team-a's"):
            runner.submit("ray_jobs.sweep", ["--sweep-id", sweep_id], submission_id=sweep_id)
    assert runner._client.submitted == []


def test_a_job_on_a_tenants_cluster_needs_an_api_it_can_report_to(platform_with_cluster):
    p = platform_with_cluster
    p.settings.api_url = ""
    runner = p.runner_for("team-a")
    runner._client = RecordingJobsApi()
    with pytest.raises(DoctuneError, match="DOCTUNE_API_URL"):
        runner.submit("ray_jobs.finetune", ["--job-id", "job-1"], submission_id="job-1")


def test_a_tenants_cluster_runner_without_credentials_submits_nothing(weed):
    runner = RayJobsRunner(Settings(**weed.__dict__), address=ADDR_A, token=TOKEN_A)
    runner._client = RecordingJobsApi()
    with pytest.raises(DoctuneError, match="tenant's"):
        runner.submit("ray_jobs.finetune", ["--job-id", "job-1"])
    assert runner._client.submitted == []


def test_a_tenant_key_reaches_its_own_prefix_and_nothing_else_on_the_real_s3_server(weed):
    root = ObjectStore(weed).client
    for tenant in ("team-a", "team-b"):
        root.put_object("doctune", f"tenants/{tenant}/datasets/d1/train.jsonl", io.BytesIO(b"{}"), 2)
    key = WeedTenantKeys(weed).issue("team-a")
    assert WeedTenantKeys(weed).issue("team-a") == key  # issuing again gives the same key
    a = ObjectStore(Settings(**{**weed.__dict__, "s3_access_key": key.access_key, "s3_secret_key": key.secret_key}))
    deadline = time.monotonic() + 30  # the S3 server takes the new identity from the filer
    while True:
        try:
            assert a.client.get_object("doctune", "tenants/team-a/datasets/d1/train.jsonl").read() == b"{}"
            break
        except S3Error:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    a.client.put_object("doctune", "tenants/team-a/models/m1/weights", io.BytesIO(b"w"), 1)
    names = [o.object_name for o in a.client.list_objects("doctune", prefix="tenants/team-a/", recursive=True)]
    assert "tenants/team-a/models/m1/weights" in names
    a.client.remove_object("doctune", "tenants/team-a/models/m1/weights")
    refused = [
        lambda: a.client.get_object("doctune", "tenants/team-b/datasets/d1/train.jsonl").read(),
        lambda: list(a.client.list_objects("doctune", prefix="tenants/team-b/", recursive=True)),
        lambda: list(a.client.list_objects("doctune", prefix="", recursive=True)),
        lambda: a.client.put_object("doctune", "tenants/team-b/datasets/d1/train.jsonl", io.BytesIO(b"x"), 1),
        lambda: a.client.remove_object("doctune", "tenants/team-b/datasets/d1/train.jsonl"),
        lambda: a.client.get_object("doctune", "tenants/team-ab/x").read(),  # a prefix of another name is not it
    ]
    for call in refused:
        with pytest.raises(S3Error) as err:
            call()
        assert err.value.code == "AccessDenied"
    assert root.get_object("doctune", "tenants/team-b/datasets/d1/train.jsonl").read() == b"{}"  # untouched


def test_ray_trains_checkpoint_filesystem_works_with_a_tenant_key_on_its_own_prefix(weed, tmp_path):
    """Ray Train writes checkpoints through pyarrow's S3 filesystem (``ObjectStore.pyarrow_fs``): with the
    tenant's key it makes folders, uploads a checkpoint folder and reads it back under the tenant's prefix."""
    import pyarrow.fs as pafs

    key = WeedTenantKeys(weed).issue("team-a")
    fs = ObjectStore(Settings(**{**weed.__dict__, "s3_access_key": key.access_key,
                                 "s3_secret_key": key.secret_key})).pyarrow_fs()
    local = tmp_path / "checkpoint_000001"
    local.mkdir()
    (local / "model.pt").write_bytes(b"weights")
    target = "doctune/tenants/team-a/jobs/job-1/checkpoints/a1/checkpoint_000001"
    deadline = time.monotonic() + 30
    while True:
        try:
            fs.create_dir(target)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    pafs.copy_files(str(local), target, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
    with fs.open_input_stream(f"{target}/model.pt") as f:
        assert f.read() == b"weights"
    with pytest.raises(OSError):
        with fs.open_output_stream("doctune/tenants/team-b/jobs/job-1/model.pt") as f:
            f.write(b"no")
