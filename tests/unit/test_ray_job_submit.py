"""The `ray job submit` door, attacked (SQLite, a real SeaweedFS S3 server, the API in this
process, no Ray): a job file runs only with a one-time submission token that `doctune jobs token`
minted for that tenant and that exact file in the last 10 minutes. No token, a reused one, an
expired one, another tenant's, a file changed after minting, and the admin key without
`--as-admin` are each refused before any job is recorded, with a message saying how to get a
token; a good token queues the job under its tenant's quota (queued, not failed, when the tenant
is at its limit)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import yaml
from fastapi.testclient import TestClient

from doctune.api.app import create_app
from doctune.drivers.direct import submit_spec_file
from doctune.services.scheduler import Demand, claim_jobs
from doctune.store.db import Job, SubmissionToken, Tenant, now

from tests.unit.test_cli import RUNNER, app, dataset, s3, world  # noqa: F401  (fixtures)

HOW = "doctune jobs token"


@pytest.fixture(autouse=True)
def env(monkeypatch, tmp_path):
    """As test_cli's: no DOCTUNE_* settings of the caller's, the API in this process; the test
    database's URL stays for the tests that run on PostgreSQL too."""
    import os

    for var in [v for v in os.environ if v.startswith("DOCTUNE_") and v != "DOCTUNE_TEST_DATABASE_URL"]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("DOCTUNE_HOME", str(tmp_path))
    monkeypatch.setenv("DOCTUNE_API_URL", "http://testserver")


@pytest.fixture
def api(world):
    return TestClient(create_app(world["platform"]), raise_server_exceptions=False)


@pytest.fixture
def job_file(dataset, tmp_path, monkeypatch):
    """job.yaml of tenant team-a (its tenant left out, as a user writes it) in the current folder."""
    monkeypatch.chdir(tmp_path)
    spec = {"task": "classification", "base_model": "all-minilm-l6-v2", "dataset": {"id": dataset[0]["id"]},
            "max_steps": 2, "name": f"direct-{tmp_path.name}"}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(spec))
    return tmp_path / "job.yaml"


def mint(world, key: str = "a", *args: str) -> dict:
    out = RUNNER.invoke(app, ["jobs", "token", "job.yaml", *args], env={"DOCTUNE_API_KEY": world[key]})
    assert out.exit_code == 0, (out.stdout, out.stderr)
    return json.loads(out.stdout) if not args else out.stdout.strip()


def direct(api, token: str, spec_file) -> tuple[int, dict]:
    r = api.post("/v1/jobs/direct", json={"token": token, "spec": yaml.safe_load(spec_file.read_text())})
    return r.status_code, r.json()


def jobs_named(world, name: str) -> list[Job]:
    with world["platform"].db.session() as s:
        return [j for j in s.query(Job).all() if j.spec.get("name") == name]


def test_jobs_token_prints_the_token_and_the_exact_ray_job_submit_line(world, job_file):
    minted = mint(world)
    assert minted["token"].startswith("dtj_") and minted["tenant"] == "team-a" and len(minted["spec_sha256"]) == 64
    assert minted["command"] == ("ray job submit --working-dir . -- python -m ray_jobs.finetune --spec job.yaml "
                                 f"--token {minted['token']}")
    quiet = mint(world, "a", "--quiet")
    assert quiet.startswith("dtj_") and "\n" not in quiet and quiet != minted["token"]
    with world["platform"].db.session() as s:  # stored hashed only
        assert all(quiet not in (row.token_hash, row.id) for row in s.query(SubmissionToken).all())


def test_a_token_queues_its_spec_once_and_a_reused_token_is_refused(world, api, job_file):
    token = mint(world)["token"]
    status, job = direct(api, token, job_file)
    assert status == 201 and job["status"] == "queued" and job["tenant"] == "team-a"
    status, again = direct(api, token, job_file)
    assert status == 409 and "already used" in again["error"]["message"] and HOW in again["error"]["message"]
    assert len(jobs_named(world, job["spec"]["name"])) == 1
    # the token follows its own job, and no other
    assert api.get(f"/v1/jobs/direct/{job['id']}", headers={"X-Submission-Token": token}).json()["id"] == job["id"]
    other = mint(world)["token"]
    assert api.get(f"/v1/jobs/direct/{job['id']}", headers={"X-Submission-Token": other}).status_code == 404


def test_no_token_is_refused_before_any_work_with_how_to_get_one(world, api, job_file, capsys):
    assert submit_spec_file("job.yaml", None, False) == 2
    err = capsys.readouterr().err
    assert "error [unauthenticated]" in err and f"{HOW} job.yaml" in err
    status, body = direct(api, "dtj_made-up", job_file)
    assert status == 401 and HOW in body["error"]["message"]
    assert jobs_named(world, yaml.safe_load(job_file.read_text())["name"]) == []


def test_an_expired_token_is_refused(world, api, job_file):
    minted = mint(world)
    with world["platform"].db.session() as s:  # eleven minutes later
        s.get(SubmissionToken, minted["id"]).expires_at = now() - timedelta(minutes=1)
    status, body = direct(api, minted["token"], job_file)
    assert status == 401 and "expired" in body["error"]["message"] and HOW in body["error"]["message"]
    assert jobs_named(world, yaml.safe_load(job_file.read_text())["name"]) == []


def test_another_tenants_token_is_refused(world, api, job_file):
    token_a = mint(world)["token"]
    spec = yaml.safe_load(job_file.read_text())
    r = api.post("/v1/jobs/direct", json={"token": token_a, "spec": {**spec, "tenant": "team-b"}})
    assert r.status_code == 403 and "minted for tenant 'team-a'" in r.json()["error"]["message"]
    # team-b cannot mint a token for team-a's job either
    r = api.post("/v1/jobs/tokens", json={**spec, "tenant": "team-a"}, headers={"Authorization": f"Bearer {world['b']}"})
    assert r.status_code == 403
    assert jobs_named(world, spec["name"]) == []


def test_a_spec_changed_after_minting_is_refused_and_the_token_still_fits_the_original(world, api, job_file):
    token = mint(world)["token"]
    original = job_file.read_text()
    job_file.write_text(yaml.safe_dump({**yaml.safe_load(original), "max_steps": 2000}))
    status, body = direct(api, token, job_file)
    assert status == 403 and "changed after minting" in body["error"]["message"] and body["error"]["field"] == "spec"
    assert jobs_named(world, yaml.safe_load(original)["name"]) == []
    job_file.write_text(original)
    assert direct(api, token, job_file)[0] == 201


def test_the_admin_key_without_as_admin_is_refused(world, job_file, monkeypatch, capsys):
    monkeypatch.setenv("DOCTUNE_ADMIN_KEY", world["admin"])
    assert submit_spec_file("job.yaml", None, False) == 2
    assert f"{HOW} job.yaml" in capsys.readouterr().err
    monkeypatch.delenv("DOCTUNE_ADMIN_KEY")
    assert submit_spec_file("job.yaml", None, True) == 2
    err = capsys.readouterr().err
    assert "error [forbidden]" in err and "DOCTUNE_ADMIN_KEY" in err
    assert jobs_named(world, yaml.safe_load(job_file.read_text())["name"]) == []


def test_a_direct_submission_over_the_quota_is_queued_not_failed(world, api, job_file):
    p = world["platform"]
    end_active_jobs(p)  # the earlier tests' queued jobs would be first in line
    with p.db.session() as s:
        s.get(Tenant, "team-a").max_concurrent_jobs = 1
        s.add(Job(id="job-busy", tenant_id="team-a", task="classification", status="running",
                  spec={"tenant": "team-a", "num_workers": 1, "resources_per_worker": {"cpu": 1}}))
    try:
        status, job = direct(api, mint(world)["token"], job_file)
        assert status == 201 and job["status"] == "queued"
        assert job["id"] not in [j.id for j in claim_jobs(p, Demand(cpus=100))]
        with p.db.session() as s:
            assert s.get(Job, job["id"]).status == "queued"
            s.get(Job, "job-busy").status = "succeeded"
        assert job["id"] in [j.id for j in claim_jobs(p, Demand(cpus=100))]
    finally:
        end_active_jobs(p)
        with p.db.session() as s:
            s.get(Tenant, "team-a").max_concurrent_jobs = 2


def end_active_jobs(p) -> None:
    with p.db.session() as s:
        for j in s.query(Job).filter(Job.status.in_(("queued", "starting", "running"))).all():
            j.status = "cancelled"


# ------------------------------------------------------------------- scoped credentials in Ray processes
def test_ray_processes_get_no_credential_and_the_platforms_python(tmp_path, monkeypatch):
    """The Ray head's environment (inherited by every driver, worker and replica) names no credential,
    even when the shell that ran `doctune up` exported keys; its `python` is the platform's."""
    import os
    import sys
    from pathlib import Path

    from doctune.config import Settings
    from doctune.local import LocalStack

    monkeypatch.setenv("DOCTUNE_API_KEY", "dtk_someones_key")
    s = Settings(home=str(tmp_path), database_url="postgresql+psycopg://u:pw@db/doctune", s3_access_key="root",
                 s3_secret_key="root-secret", admin_key="dtk_admin_secret", api_url="http://127.0.0.1:1",
                 s3_endpoint="http://127.0.0.1:2", mlflow_uri="postgresql+psycopg://ml:pw@db/mlflow")
    env = LocalStack(home=tmp_path, base=30000)._ray_env(s)
    assert not {"DOCTUNE_ADMIN_KEY", "DOCTUNE_API_KEY", "DOCTUNE_DATABASE_URL", "DOCTUNE_S3_SECRET_KEY",
                "DOCTUNE_S3_ACCESS_KEY", "DOCTUNE_MLFLOW_URI"} & set(env)
    assert not any(secret in value for value in env.values() for secret in ("root-secret", "dtk_admin_secret", "pw@"))
    assert env["DOCTUNE_API_URL"] == "http://127.0.0.1:1" and env["DOCTUNE_CREDENTIALS_FROM_ENV"] == "1"
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    # what the runner gives each job it submits: the stores' credentials, never the admin key
    assert s.job_env() == {"DOCTUNE_DATABASE_URL": s.database_url, "DOCTUNE_S3_ACCESS_KEY": "root",
                           "DOCTUNE_S3_SECRET_KEY": "root-secret", "DOCTUNE_MLFLOW_URI": s.mlflow_uri}
    # a tenant's dedicated cluster (its token is the tenant's) never learns the platform's MLflow store
    assert "DOCTUNE_MLFLOW_URI" not in {**s.ray_process_env(), **s.tenant_job_env("ak", "sk", "dta_token")}


def test_a_ray_process_reads_no_credential_from_the_stack_file(tmp_path, monkeypatch):
    from doctune.config import Settings, load_settings, save_settings

    monkeypatch.delenv("DOCTUNE_API_URL")
    save_settings(Settings(home=str(tmp_path), database_url="sqlite:///x.db", s3_access_key="root",
                           s3_secret_key="root-secret", admin_key="dtk_admin_secret", api_url="http://127.0.0.1:1"))
    assert load_settings(tmp_path).admin_key == "dtk_admin_secret"  # the CLI on the stack's machine
    monkeypatch.setenv("DOCTUNE_CREDENTIALS_FROM_ENV", "1")
    scoped = load_settings(tmp_path)
    assert (scoped.admin_key, scoped.s3_secret_key, scoped.s3_access_key, scoped.database_url) == ("", "", "", "")
    assert scoped.api_url == "http://127.0.0.1:1"
    monkeypatch.setenv("DOCTUNE_DATABASE_URL", "sqlite:///job.db")  # given to its job by the runner
    assert load_settings(tmp_path).database_url == "sqlite:///job.db"


def test_an_unreachable_api_is_one_clear_line_not_a_traceback(world, job_file, monkeypatch, capsys):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("DOCTUNE_API_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setattr("doctune.drivers.direct.time.sleep", lambda _s: None)  # no waiting between retries
    assert submit_spec_file("job.yaml", "dtj_whatever", False) == 2
    err = capsys.readouterr().err
    assert "error [unavailable]: cannot reach the doctune API" in err and "Traceback" not in err


def test_racing_redemptions_of_one_token_let_exactly_one_through(platform):
    """Eight drivers redeem one token at once (SQLite, and PostgreSQL when configured): one wins,
    the rest get 'already used' (the compare-and-set on redeemed_at)."""
    import threading

    from doctune.errors import DoctuneError
    from doctune.services import submission_tokens as tokens_svc
    from doctune.services import tenants
    from doctune.spec import TenantSpec

    admin = tenants.authenticate(platform, tenants.create_admin_key(platform))
    tenants.create_tenant(platform, admin, TenantSpec(name="team-r"))
    with platform.db.session() as s:
        s.add(SubmissionToken(id="token-race", token_hash="0" * 64, tenant_id="team-r", spec_sha256="1" * 64,
                              created_by="test", expires_at=now() + timedelta(minutes=10)))
    with platform.db.session() as s:
        row = s.get(SubmissionToken, "token-race")
    outcomes: list[str] = []
    start = threading.Barrier(8)

    def redeem() -> None:
        start.wait()
        try:
            tokens_svc._redeem(platform, row)
            outcomes.append("won")
        except DoctuneError as exc:
            outcomes.append(exc.code)

    threads = [threading.Thread(target=redeem) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["conflict"] * 7 + ["won"]
