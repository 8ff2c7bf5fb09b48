"""The API's ``/metrics`` tells Prometheus what an operator would want paged about, and the chart's
alerts read only what is exported: on the real API app and database (no Ray), a queued job shows in
the job counts, its state age and its tenant's queue wait, and leaves them when cancelled; a running
job's age since its last progress event is reported; the API counts its own requests by route
template; Prometheus needs no key and reads no secret; an unreadable database is a metric, not a
failed scrape; and every metric name in the chart's PrometheusRule is exported by the API or is one
of Ray Serve's endpoint metrics (doctune.serve.app)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from doctune.api.app import create_app
from doctune.config import Settings
from doctune.services import Platform, tenants
from doctune.spec import TenantSpec
from doctune.store.db import Dataset, Job, JobEvent

from tests.chart._render import CHART, render
from tests.chart._schemas import ROOT

SPEC = {"tenant": "team-a", "task": "classification", "dataset": {"id": "ds-a"}, "max_steps": 1}


def ago(minutes: float) -> datetime:
    return datetime.now(timezone.utc) - timedelta(minutes=minutes)


def add_job(p: Platform, job_id: str, status: str, *, changed_min: float, last_event_min: float | None = None) -> None:
    """A job that entered ``status`` ``changed_min`` minutes ago (a status event), with a progress
    event ``last_event_min`` minutes ago when given."""
    with p.db.session() as s:
        s.add(Job(id=job_id, tenant_id="team-a", task="classification", spec=SPEC, status=status, created_at=ago(300)))
        s.flush()
        s.add(JobEvent(job_id=job_id, kind="status", status="queued", at=ago(300)))
        s.add(JobEvent(job_id=job_id, kind="status", status=status, at=ago(changed_min)))
        if last_event_min is not None:
            s.add(JobEvent(job_id=job_id, kind="progress", data={"step": 1}, at=ago(last_event_min)))


@pytest.fixture
def world(database_url, tmp_path):
    p = Platform(Settings(home=str(tmp_path), database_url=database_url))
    p.db.migrate()
    admin = tenants.authenticate(p, tenants.create_admin_key(p))
    _, key = tenants.create_tenant(p, admin, TenantSpec(name="team-a"))
    with p.db.session() as s:
        s.add(Dataset(id="ds-a", tenant_id="team-a", name="a", task="classification",
                      uri="s3://doctune/tenants/team-a/datasets/ds-a", info={}))
    yield p, TestClient(create_app(p)), key
    p.db.dispose()


def scrape(client: TestClient) -> dict[tuple[str, frozenset], float]:
    """``{(sample name, labels): value}`` of one unauthenticated scrape."""
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain"), r.text
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(r.text) for s in fam.samples}


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def test_a_queued_job_shows_in_counts_state_age_and_queue_wait_until_cancelled(world):
    p, client, key = world
    add_job(p, "job-q", "queued", changed_min=20)
    add_job(p, "job-done", "succeeded", changed_min=5)
    m = scrape(client)
    assert value(m, "doctune_jobs", tenant="team-a", state="queued") == 1
    assert value(m, "doctune_jobs", tenant="team-a", state="succeeded") == 1
    age = value(m, "doctune_job_state_age_seconds", job_id="job-q", tenant="team-a", state="queued")
    assert 20 * 60 <= age < 25 * 60  # since it entered the queue, not since its first event
    assert value(m, "doctune_queued_jobs", tenant="team-a") == 1
    assert value(m, "doctune_queue_wait_seconds", tenant="team-a") == pytest.approx(age, abs=5)
    assert not [k for k in m if dict(k[1]).get("job_id") == "job-done"]  # finished jobs have no per-job series
    assert key.split("_", 2)[2] not in client.get("/metrics").text  # no credential in what Prometheus reads

    assert client.post("/v1/jobs/job-q/cancel", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    m = scrape(client)
    assert value(m, "doctune_jobs", tenant="team-a", state="queued") is None
    assert value(m, "doctune_jobs", tenant="team-a", state="cancelled") == 1
    assert value(m, "doctune_queued_jobs", tenant="team-a") == 0
    assert value(m, "doctune_queue_wait_seconds", tenant="team-a") == 0
    assert not [k for k in m if dict(k[1]).get("job_id") == "job-q"]


def test_a_running_job_reports_time_since_its_last_progress(world):
    p, client, _ = world
    add_job(p, "job-r", "running", changed_min=90, last_event_min=2)
    add_job(p, "job-silent", "running", changed_min=80)
    m = scrape(client)
    labels = {"tenant": "team-a", "state": "running"}
    assert value(m, "doctune_job_state_age_seconds", job_id="job-r", **labels) >= 90 * 60
    assert 2 * 60 <= value(m, "doctune_job_last_event_age_seconds", job_id="job-r", **labels) < 5 * 60
    assert value(m, "doctune_job_last_event_age_seconds", job_id="job-silent", **labels) >= 80 * 60
    assert value(m, "doctune_jobs", tenant="team-a", state="running") == 2


def test_the_api_counts_its_requests_by_route_template_and_status(world):
    p, client, key = world
    add_job(p, "job-q", "queued", changed_min=1)
    assert client.get("/v1/jobs/job-q", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert client.get("/v1/jobs/job-q").status_code == 401
    assert client.get("/no/such/path").status_code == 404
    m = scrape(client)
    route = {"method": "GET", "route": "/v1/jobs/{job_id}"}
    assert value(m, "doctune_api_requests_total", status_code="200", **route) == 1
    assert value(m, "doctune_api_requests_total", status_code="401", **route) == 1
    assert value(m, "doctune_api_requests_total", method="GET", route="<unmatched>", status_code="404") == 1
    assert value(m, "doctune_api_request_duration_seconds_count", **route) == 2
    assert not [k for k in m if "job-q" in dict(k[1]).get("route", "")]  # ids never become route labels


def test_an_unreadable_database_is_a_metric_not_a_failed_scrape(tmp_path):
    p = Platform(Settings(home=str(tmp_path), database_url=f"sqlite:///{tmp_path / 'not-migrated.db'}"))
    try:
        m = scrape(TestClient(create_app(p)))
    finally:
        p.db.dispose()
    assert value(m, "doctune_metrics_scrape_error") == 1
    assert not [k for k in m if k[0] == "doctune_jobs"]


# ------------------------------------------------------------------ the chart's alerts read real metrics
def serve_metric_names() -> set[str]:
    """The metrics the endpoint replicas declare (Ray exports them with a ``ray_`` prefix)."""
    source = (ROOT / "platform" / "doctune" / "serve" / "app.py").read_text()
    names = set(re.findall(r'metrics\.(?:Counter|Histogram|Gauge)\(\s*"(\w+)"', source))
    assert names, "no Ray Serve metric found in doctune/serve/app.py"
    return {f"ray_{n}" for n in names}


def alert_metric_names() -> dict[str, set[str]]:
    """``{alert: metric names its expr reads}`` of the rendered PrometheusRule."""
    (rule,) = [d for d in render(CHART / "ci" / "gpu-rayjob-values.yaml") if d["kind"] == "PrometheusRule"]
    out = {}
    for group in rule["spec"]["groups"]:
        for r in group["rules"]:
            expr = re.sub(r'"[^"]*"|\{[^}]*\}|\[[^\]]*\]', " ", r["expr"])  # strings, label matchers, ranges
            expr = re.sub(r"\b(by|without)\s*\([^)]*\)", " ", expr)  # grouping labels
            out[r["alert"]] = set(re.findall(r"\b(?:doctune|ray)_[a-zA-Z0-9_:]+", expr))
    return out


def test_every_metric_the_alerts_read_is_exported(world):
    p, client, _ = world
    for state in ("queued", "paused", "starting", "running", "failed"):  # every family gets samples
        add_job(p, f"job-{state}", state, changed_min=1, last_event_min=1)
    exported = {name for name, _ in scrape(client)}
    serve = serve_metric_names()
    alerts = alert_metric_names()
    assert set(alerts) == {"DoctuneJobStuck", "DoctuneQueueWaitHigh", "DoctuneEndpointErrorRate", "DoctuneEndpointLatencyP99"}
    for alert, names in alerts.items():
        assert names, f"{alert} reads no metric"
        for name in names:
            if name.startswith("ray_"):
                assert re.sub(r"_(bucket|count|sum)$", "", name) in serve, f"{alert}: {name} is not a Ray Serve metric of doctune"
            else:
                assert name in exported, f"{alert}: {name} is not exported by the API's /metrics"
