"""The metadata store on SQLite and PostgreSQL: the Alembic migration builds the
schema the models describe; keys authenticate; tenants see only their own rows;
a finished job's status cannot be overwritten."""

import pytest
from sqlalchemy import inspect

from doctune.errors import DoctuneError
from doctune.services import jobs as jobs_svc
from doctune.services import tenants
from doctune.spec import TenantSpec
from doctune.store.db import Base, Job

pytestmark = pytest.mark.both_databases  # the store itself: on PostgreSQL too




def test_migration_matches_models(platform):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with platform.db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == []
        assert set(inspect(conn).get_table_names()) >= {"tenants", "api_keys", "datasets", "jobs", "models", "deployments"}


def test_migrate_twice_is_harmless(platform):
    platform.db.migrate()


def test_keys_authenticate_and_scope(platform):
    admin = tenants.authenticate(platform, tenants.create_admin_key(platform))
    assert admin.is_admin
    _, key_a = tenants.create_tenant(platform, admin, TenantSpec(name="team-a"))
    _, key_b = tenants.create_tenant(platform, admin, TenantSpec(name="team-b"))
    a = tenants.authenticate(platform, f"Bearer {key_a}")
    assert (a.tenant_id, a.role) == ("team-a", "member")
    with pytest.raises(DoctuneError) as e:
        tenants.check_tenant_access(a, "team-b")
    assert e.value.http_status == 403
    with pytest.raises(DoctuneError) as e:
        tenants.create_tenant(platform, a, TenantSpec(name="team-c"))
    assert e.value.code == "forbidden"
    with pytest.raises(DoctuneError) as e:
        tenants.create_tenant(platform, admin, TenantSpec(name="team-a"))
    assert e.value.code == "conflict"


@pytest.mark.parametrize("key", [None, "", "Bearer nonsense", "dtk_000000000000_wrong"])
def test_bad_keys_are_unauthenticated(platform, key):
    with pytest.raises(DoctuneError) as e:
        tenants.authenticate(platform, key)
    assert e.value.http_status == 401


def test_other_tenants_jobs_are_not_found(platform):
    admin = tenants.authenticate(platform, tenants.create_admin_key(platform))
    tenants.create_tenant(platform, admin, TenantSpec(name="team-a"))
    _, key_b = tenants.create_tenant(platform, admin, TenantSpec(name="team-b"))
    with platform.db.session() as s:
        s.add(Job(id="job-a1", tenant_id="team-a", task="classification", spec={}, status="running"))
    b = tenants.authenticate(platform, key_b)
    with pytest.raises(DoctuneError) as e:
        jobs_svc.get_job(platform, b, "job-a1")
    assert e.value.http_status == 404
    assert jobs_svc.list_jobs(platform, b).items == []
    assert [j.id for j in jobs_svc.list_jobs(platform, admin).items] == ["job-a1"]


def test_terminal_status_is_sticky(platform):
    admin = tenants.authenticate(platform, tenants.create_admin_key(platform))
    tenants.create_tenant(platform, admin, TenantSpec(name="team-a"))
    with platform.db.session() as s:
        s.add(Job(id="job-x", tenant_id="team-a", task="classification", spec={}))
    jobs_svc.update_job(platform, "job-x", status="running")
    jobs_svc.update_job(platform, "job-x", status="cancelled")
    job = jobs_svc.update_job(platform, "job-x", status="succeeded")
    assert job.status == "cancelled" and job.finished_at is not None and job.started_at is not None


def test_status_changes_are_events_with_reasons(platform):
    admin = tenants.authenticate(platform, tenants.create_admin_key(platform))
    tenants.create_tenant(platform, admin, TenantSpec(name="team-a"))
    with platform.db.session() as s:
        s.add(Job(id="job-e", tenant_id="team-a", task="classification", spec={}))
    jobs_svc.update_job(platform, "job-e", status="running", reason="driver started")
    jobs_svc.update_job(platform, "job-e", progress={"step": 3})  # not a transition: no status event
    for step in range(5):
        jobs_svc.add_event(platform, "job-e", "progress", {"step": step})
    jobs_svc.update_job(platform, "job-e", status="failed", error={"code": "training_failed", "message": "OOM on rank 1"})
    page1 = jobs_svc.list_events(platform, admin, "job-e", limit=4)
    page2 = jobs_svc.list_events(platform, admin, "job-e", after=page1[-1].id, limit=100)
    events = page1 + page2
    assert [e.id for e in events] == sorted({e.id for e in events})
    statuses = [(e.status, e.reason) for e in events if e.kind == "status"]
    assert statuses == [("running", "driver started"), ("failed", "OOM on rank 1")]
    assert [e.data["step"] for e in events if e.kind == "progress"] == [0, 1, 2, 3, 4]
    with pytest.raises(DoctuneError):
        jobs_svc.list_events(platform, admin, "job-e", limit=0)


def test_pause_and_resume_a_queued_job(platform):
    admin = tenants.authenticate(platform, tenants.create_admin_key(platform))
    _, key = tenants.create_tenant(platform, admin, TenantSpec(name="team-a"))
    member = tenants.authenticate(platform, key)
    with platform.db.session() as s:
        s.add(Job(id="job-q", tenant_id="team-a", task="classification", spec={}))
    assert jobs_svc.pause_job(platform, member, "job-q").status == "paused"
    with pytest.raises(DoctuneError) as e:
        jobs_svc.pause_job(platform, member, "job-q")
    assert e.value.code == "conflict"
    assert jobs_svc.resume_job(platform, member, "job-q").status == "queued"
    with pytest.raises(DoctuneError):
        jobs_svc.resume_job(platform, member, "job-q")
    assert jobs_svc.cancel_job(platform, member, "job-q").status == "cancelled"
