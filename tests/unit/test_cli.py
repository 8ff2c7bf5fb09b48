"""The `doctune` command, driven as a user types it, against the real API app in this
process (SQLite, a real SeaweedFS S3 server, no Ray): every group lists its commands,
errors are one line with exit status 2, `-o table` renders lists with ids uncut, and
tenants, keys, datasets, jobs, sweeps, models and deployments answer end to end."""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.main import get_command
from typer.testing import CliRunner

from doctune.api.app import create_app
from doctune.cli import app, session
from doctune.cli.demo import EXAMPLES, demo_spec
from doctune.client import DoctuneClient
from doctune.config import Settings
from doctune.data import to_jsonl
from doctune.services import Platform, tenants
from doctune.spec import TenantSpec
from doctune.store.db import Dataset, Deployment, DeploymentRevision, Job, Model, Sweep

REPO = Path(__file__).resolve().parents[2]
CLI = REPO / "platform" / "doctune" / "cli"
RUNNER = CliRunner()

GROUPS = {
    "tenants": {"list", "show", "create", "quota", "settings", "usage", "ray-cluster"},
    "keys": {"list", "show", "create", "rotate", "revoke"},
    "datasets": {"list", "show", "upload", "append", "versions", "delete"},
    "jobs": {"list", "show", "get", "plan", "submit", "token", "logs", "pause", "resume", "cancel", "events", "report",
             "delete-checkpoints", "tensorboard"},
    "sweeps": {"list", "show", "submit", "leaderboard", "cancel"},
    "models": {"list", "get", "show", "download", "delete", "prepare", "upload", "base"},
    "deployments": {"list", "show", "create", "delete", "revisions", "rollback", "retrain-policy", "retrain-events"},
    "tasks": {"list"},
}
TOP_LEVEL = {"up", "down", "status", "demo", "deploy", "undeploy", "promote", "rollback", "revisions", *GROUPS}


# ------------------------------------------------------------------- the world
@pytest.fixture(scope="module")
def s3(weed_server, request):
    """The S3 settings of a bucket of the module's own on the unit session's real SeaweedFS server
    (tests/unit/conftest.py): a fresh, empty bucket per module, as a server per module gave before,
    without a server start (about 6 s) per module."""
    from doctune.store.objects import ObjectStore

    name = request.module.__name__.rsplit(".", 1)[-1].lower().replace("_", "-")
    fields = {**weed_server, "bucket": f"doctune-{name}"[:63]}
    ObjectStore(Settings(**fields)).ensure_bucket()
    return fields


def in_process_clients(api):
    """A CLI client factory whose clients call the FastAPI app ``api`` in this process."""
    def in_process(api_url: str, api_key: str | None) -> DoctuneClient:
        client = DoctuneClient(api_url, api_key)
        client.http = TestClient(api, base_url=api_url, raise_server_exceptions=False,
                                 headers={"Authorization": f"Bearer {api_key}"} if api_key else {})
        return client

    return in_process


@pytest.fixture(scope="module")
def world(tmp_path_factory, s3):
    """The API app on a Platform with tenants team-a and team-b; the CLI's clients talk to it in-process."""
    home = tmp_path_factory.mktemp("cli")
    p = Platform(Settings(home=str(home), database_url=f"sqlite:///{home / 'doctune.db'}", **s3))
    p.db.migrate()  # the API migrates in its lifespan, which a TestClient used without `with` does not run
    api = create_app(p)
    admin_key = tenants.create_admin_key(p)
    admin = tenants.authenticate(p, admin_key)
    _, key_a = tenants.create_tenant(p, admin, TenantSpec(name="team-a"))
    _, key_b = tenants.create_tenant(p, admin, TenantSpec(name="team-b"))

    previous = session.set_client_factory(in_process_clients(api))
    yield {"platform": p, "home": home, "admin": admin_key, "a": key_a, "b": key_b}
    session.set_client_factory(previous)
    p.db.dispose()


@pytest.fixture(autouse=True)
def env(monkeypatch, tmp_path):
    for var in [v for v in os.environ if v.startswith("DOCTUNE_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("DOCTUNE_HOME", str(tmp_path))
    monkeypatch.setenv("DOCTUNE_API_URL", "http://testserver")


def cli(key: str | None, *args: str):
    return RUNNER.invoke(app, list(args), env={"DOCTUNE_API_KEY": key} if key else {})


def ok(key: str | None, *args: str):
    out = cli(key, *args)
    assert out.exit_code == 0, (args, out.exit_code, out.stdout, out.stderr, out.exception)
    return out


def as_json(key: str | None, *args: str):
    return json.loads(ok(key, *args).stdout)


def add_rows(p: Platform, *rows) -> None:
    for row in rows:  # one commit each: foreign keys point at rows committed before
        with p.db.session() as s:
            s.add(row)


def _job(job_id: str, tenant: str = "team-a", status: str = "succeeded", task: str = "classification", **kw) -> Job:
    return Job(id=job_id, tenant_id=tenant, task=task, spec={"tenant": tenant, "task": task}, status=status, **kw)


# ------------------------------------------------------------------- the command tree
def test_root_help_lists_every_group_and_top_level_command():
    out = ok(None, "--help")
    assert all(re.search(rf"\b{name}\b", out.stdout) for name in TOP_LEVEL), out.stdout
    assert set(get_command(app).commands) == TOP_LEVEL


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_each_group_help_lists_its_commands(group):
    out = ok(None, group, "--help")
    for command in GROUPS[group]:
        assert re.search(rf"\b{command}\b", out.stdout), (group, command, out.stdout)
    assert set(get_command(app).commands[group].commands) == GROUPS[group]


def test_python_m_doctune_cli_is_the_same_command():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "platform"), str(REPO)])}
    out = subprocess.run([sys.executable, "-m", "doctune.cli", "deployments", "--help"], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "Usage: doctune deployments" in out.stdout and "rollback" in out.stdout


def _doc_commands():
    """Every `doctune ...` command in the README, the user guide (inline, and lines of code
    blocks) and the example specs' comments."""
    found = set()
    for path in [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md")), *sorted(EXAMPLES.glob("*.yaml"))]:
        in_code = path.suffix == ".yaml"
        for line in path.read_text().splitlines():
            if line.startswith("```"):
                in_code = not in_code
            found |= {m.group(1).strip() for m in re.finditer(r"`doctune ([^`]+)`", line)}
            m = re.match(r"^[\s#]*(?:Submit with:)?\s*doctune (.+?)\s*(?:#.*)?$", line) if in_code else None
            if m:
                found.add(m.group(1))
    return sorted(c for c in found if re.match(r"-o \w+ [a-z]|[a-z]", c))


@pytest.mark.parametrize("command", _doc_commands())
def test_every_documented_command_exists(command):
    """A command the docs show resolves to a group or command, and its options exist;
    in `group a ... | b ...`, b is a command of the same group."""
    parent = None
    for i, part in enumerate(command.split(" | ")):
        node = get_command(app) if i == 0 else parent
        words = shlex.split(re.sub(r"[\[\]]", " ", part))
        while words and hasattr(node, "commands"):
            word = words.pop(0)
            if word in ("-o", "--output"):
                words.pop(0)
                continue
            assert word in node.commands, (command, word, sorted(node.commands))
            parent, node = node, node.commands[word]
        options = {o for p in node.params for o in (*p.opts, *p.secondary_opts)}
        for word in words:
            if word.startswith("-") and word != "...":
                assert word.split("=")[0] in options, (command, word, sorted(options))


# ------------------------------------------------------------------- errors and output
def test_api_errors_print_one_line_and_exit_2(world):
    out = cli(world["a"], "jobs", "show", "job-nope")
    assert out.exit_code == 2 and out.stdout == ""
    assert len(out.stderr.strip().splitlines()) == 1 and out.stderr.startswith("error [not_found]") and "job-nope" in out.stderr
    bad_key = cli("dtk_000000000000_wrong", "keys", "list")
    assert bad_key.exit_code == 2 and len(bad_key.stderr.strip().splitlines()) == 1
    assert bad_key.stderr.startswith("error [unauthenticated]")


def test_local_errors_print_one_line_and_exit_2(world, tmp_path):
    missing = cli(world["a"], "jobs", "plan", str(tmp_path / "missing.yaml"))
    assert missing.exit_code == 2 and missing.stderr.startswith("error [invalid_spec] (field: spec): cannot read")
    upload = cli(world["a"], "datasets", "upload", "--name", "x", "--data", str(tmp_path / "none.jsonl"))
    assert upload.exit_code == 2 and upload.stderr.startswith("error [invalid_request] (field: data):")
    fmt = cli(world["a"], "-o", "yaml", "jobs", "list")
    assert fmt.exit_code == 2 and fmt.stderr.strip() == "error [invalid_request] (field: output): --output must be json or table; got 'yaml'"
    promote = cli(world["a"], "promote", "--endpoint", "e")
    assert promote.exit_code == 2 and promote.stderr.startswith("error [invalid_request] (field: model_id)")
    for out in (missing, upload, fmt, promote):
        assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.output


def test_no_api_or_an_unreachable_one_is_one_line(world, monkeypatch):
    monkeypatch.delenv("DOCTUNE_API_URL")
    out = cli(world["a"], "jobs", "list")
    assert out.exit_code == 2 and out.stderr.startswith("error [unavailable]: no API configured")
    from doctune.local import find_free_port_base

    monkeypatch.setenv("DOCTUNE_API_URL", f"http://127.0.0.1:{find_free_port_base(start=45000)}")
    previous = session.set_client_factory(lambda url, key: DoctuneClient(url, key, timeout=5))
    try:
        out = cli(world["a"], "jobs", "list")
    finally:
        session.set_client_factory(previous)
    assert out.exit_code == 2 and out.stderr.startswith("error [unavailable]: cannot reach http://127.0.0.1:")
    assert len(out.stderr.strip().splitlines()) == 1


def test_table_output_keeps_long_ids_whole_when_piped(world):
    p = world["platform"]
    long_id = "job-" + "x" * 90
    add_rows(p, _job(long_id, status="queued", progress={"step": 0, "total_steps": 40, "queue_reason": "waiting for a [quota]"}))
    out = ok(world["a"], "-o", "table", "jobs", "list")
    assert long_id in out.stdout and "waiting for a [quota]" in out.stdout
    header = next(line for line in out.stdout.splitlines() if "progress.total_steps" in line)
    assert all(c in header for c in ("id", "tenant", "task", "status", "progress.step", "model_id"))
    with p.db.session() as s:
        s.delete(s.get(Job, long_id))


# ------------------------------------------------------------------- tenants and keys
def test_admin_creates_shows_and_sets_quota_of_a_tenant(world):
    created = as_json(world["admin"], "tenants", "create", "team-c", "--display-name", "Team C")
    assert created["tenant"]["id"] == "team-c" and created["tenant"]["display_name"] == "Team C"
    assert created["api_key"].startswith("dtk_")
    shown = as_json(world["admin"], "tenants", "show", "team-c")
    assert shown["id"] == "team-c" and "max_concurrent_jobs" in shown["quota"]
    quota = as_json(world["admin"], "tenants", "quota", "team-c", "--max-jobs", "3", "--weight", "2")
    assert quota["quota"]["max_concurrent_jobs"] == 3 and quota["quota"]["weight"] == 2
    assert as_json(created["api_key"], "tenants", "show", "team-c")["quota"]["max_concurrent_jobs"] == 3
    denied = cli(created["api_key"], "tenants", "quota", "team-c", "--max-jobs", "99")
    assert denied.exit_code == 2 and denied.stderr.startswith("error [forbidden]")
    again = cli(world["admin"], "tenants", "create", "team-c")
    assert again.exit_code == 2 and again.stderr.startswith("error [conflict]")


def test_usage_lists_each_tenant_the_key_sees(world):
    rows = as_json(world["a"], "tenants", "usage")
    assert [r["tenant"] for r in rows] == ["team-a"] and rows[0]["storage_bytes"] is not None
    table = ok(world["admin"], "-o", "table", "tenants", "usage").stdout
    assert "team-a" in table and "team-b" in table and "trained_tokens" in table


def test_tenants_list(world):
    ids = [t["id"] for t in as_json(world["admin"], "tenants", "list")]
    assert {"team-a", "team-b"} <= set(ids)
    assert [t["id"] for t in as_json(world["a"], "tenants", "list")] == ["team-a"]
    assert "team-b" in ok(world["admin"], "-o", "table", "tenants", "list").stdout


def test_keys_create_list_rotate_and_revoke(world):
    made = as_json(world["a"], "keys", "create", "--role", "viewer")
    assert made["role"] == "viewer" and made["tenant"] == "team-a" and made["api_key"].startswith(f"dtk_{made['id']}_")
    listed = as_json(world["a"], "keys", "list")
    assert made["id"] in [k["id"] for k in listed] and all(k["tenant"] == "team-a" for k in listed)
    assert all("api_key" not in k for k in listed)
    assert made["id"] in [k["id"] for k in as_json(None, "keys", "list", "--api-key", world["a"])]
    assert made["id"] in ok(world["a"], "-o", "table", "keys", "list").stdout
    rotated = as_json(world["a"], "keys", "rotate", made["id"])
    assert rotated["id"] != made["id"] and rotated["role"] == "viewer"
    revoked = as_json(world["a"], "keys", "revoke", rotated["id"])
    assert revoked["revoked_at"]
    out = cli(rotated["api_key"], "keys", "list")
    assert out.exit_code == 2 and out.stderr.startswith("error [unauthenticated]")
    assert cli(world["b"], "keys", "revoke", made["id"]).stderr.startswith("error [not_found]")


def test_keys_show(world):
    made = as_json(world["a"], "keys", "create")
    shown = as_json(world["a"], "keys", "show", made["id"])
    assert shown["id"] == made["id"] and shown["role"] == "member" and "api_key" not in shown
    assert cli(world["b"], "keys", "show", made["id"]).exit_code == 2


# ------------------------------------------------------------------- datasets
@pytest.fixture(scope="module")
def dataset(world, tmp_path_factory):
    f = tmp_path_factory.mktemp("data") / "docs.jsonl"
    records = [{"text": f"document {i} about {label}", "label": label} for label in ("sport", "tech") for i in range(20)]
    f.write_bytes(to_jsonl(records))
    out = RUNNER.invoke(app, ["datasets", "upload", "--name", "cli-docs", "--data", str(f)], env={
        "DOCTUNE_API_KEY": world["a"], "DOCTUNE_HOME": str(world["home"]), "DOCTUNE_API_URL": "http://testserver"})
    assert out.exit_code == 0, out.output
    return json.loads(out.stdout), out.stderr


def test_upload_shows_progress_and_stores_the_dataset(world, dataset):
    ds, progress = dataset
    assert ds["id"].startswith("ds-") and ds["task"] == "classification"
    assert ds["info"]["sizes"]["train"] > 0 and sum(ds["info"]["sizes"].values()) == 40
    assert "upload" in progress and "100%" in progress
    assert as_json(world["a"], "datasets", "show", ds["id"])["info"] == ds["info"]
    assert cli(world["b"], "datasets", "show", ds["id"]).stderr.startswith("error [not_found]")


def test_datasets_list(world, dataset):
    ds, _ = dataset
    assert ds["id"] in [d["id"] for d in as_json(world["a"], "datasets", "list")]
    assert ds["id"] not in [d["id"] for d in as_json(world["b"], "datasets", "list")]
    table = ok(world["a"], "-o", "table", "datasets", "list").stdout
    assert ds["id"] in table and "info.sizes.train" in table


def test_datasets_list_by_task(world, dataset):
    ds, _ = dataset
    add_rows(world["platform"], Dataset(id="ds-ner-only", tenant_id="team-a", name="n", task="ner", uri="s3://doctune/x", info={}))
    assert [d["id"] for d in as_json(world["a"], "datasets", "list", "--task", "ner")] == ["ds-ner-only"]
    assert "ds-ner-only" not in [d["id"] for d in as_json(world["a"], "datasets", "list", "--task", "classification")]


def test_datasets_delete(world, tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_bytes(to_jsonl([{"text": f"t {i}", "label": "ab"[i % 2]} for i in range(20)]))
    ds = as_json(world["a"], "datasets", "upload", "--name", "to-delete", "--data", str(f))
    assert cli(world["b"], "datasets", "delete", ds["id"]).stderr.startswith("error [not_found]")
    ok(world["a"], "datasets", "delete", ds["id"])
    assert cli(world["a"], "datasets", "show", ds["id"]).stderr.startswith("error [not_found]")


# ------------------------------------------------------------------- jobs
def _metrics(primary: str = "macro_f1") -> dict:
    return {"step": 40, "primary_metric": primary, "test": {primary: 0.91, "accuracy": 0.93, "n": 45},
            "baseline": {"kind": "untrained_head", "test": {primary: 0.2, "accuracy": 0.25}}}


@pytest.fixture(scope="module")
def jobs(world):
    p = world["platform"]
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    add_rows(p, _job("job-old", created_at=t0, metrics=_metrics(), model_id="model-old"),
             _job("job-queued", status="queued", created_at=t0 + timedelta(minutes=1)),
             _job("job-ner", task="ner", created_at=t0 + timedelta(minutes=2), metrics=_metrics("f1")),
             _job("job-b", tenant="team-b", created_at=t0 + timedelta(minutes=3)))
    add_rows(p, Model(id="model-old", tenant_id="team-a", job_id="job-old", task="classification",
                      uri=f"s3://{p.settings.bucket}/tenants/team-a/models/model-old", metrics={"test": {"macro_f1": 0.91}}))
    return ["job-ner", "job-queued", "job-old"]


def test_jobs_list_and_show(world, jobs):
    listed = [j["id"] for j in as_json(world["a"], "jobs", "list")]
    assert [j for j in listed if j in jobs] == jobs and "job-b" not in listed  # newest first, own tenant only
    assert len(as_json(world["a"], "jobs", "list", "--limit", "2")) == 2
    shown = as_json(world["a"], "jobs", "show", "job-old")
    assert shown["id"] == "job-old" and shown["report"]["metrics"]["macro_f1"]["fine_tuned"] == 0.91
    assert as_json(world["a"], "jobs", "get", "job-old") == shown
    assert cli(world["b"], "jobs", "show", "job-old").stderr.startswith("error [not_found]")


def test_jobs_list_filters_by_state_and_task(world, jobs):
    assert [j["id"] for j in as_json(world["a"], "jobs", "list", "--state", "queued")] == ["job-queued"]
    assert [j["id"] for j in as_json(world["a"], "jobs", "list", "--task", "ner")] == ["job-ner"]


def test_jobs_list_rejects_an_unknown_state(world):
    out = cli(world["a"], "jobs", "list", "--state", "sleeping")
    assert out.exit_code == 2 and "sleeping" in out.output


def test_a_long_list_is_followed_to_its_end(world):
    p = world["platform"]
    _, key = tenants.create_tenant(p, tenants.authenticate(p, world["admin"]), TenantSpec(name="many-jobs"))
    t0 = datetime(2026, 2, 1, tzinfo=timezone.utc)
    with p.db.session() as s:
        s.add_all([_job(f"job-many-{i:03d}", tenant="many-jobs", created_at=t0 + timedelta(seconds=i)) for i in range(230)])
    listed = [j["id"] for j in as_json(key, "jobs", "list")]
    assert listed == [f"job-many-{i:03d}" for i in reversed(range(230))]  # more than one page, newest first
    assert [j["id"] for j in as_json(key, "jobs", "list", "--limit", "3")] == listed[:3]


class _PagedRoute:
    """A list route by the contract (``{"items", "next_cursor"}``, at most ``limit`` a page),
    recording the query of each request, until the API serves such pages itself."""

    def __init__(self, n: int) -> None:
        self.items, self.queries = [{"id": f"x-{i}"} for i in range(n)], []

    def request(self, method: str, path: str, params: dict) -> dict:
        self.queries.append(params)
        start = int(params.get("cursor", 0))
        end = start + params["limit"]
        return {"items": self.items[start:end], "next_cursor": str(end) if end < len(self.items) else None}


def test_list_items_follows_next_cursor_and_stops_at_limit():
    route = _PagedRoute(450)
    assert [x["id"] for x in session.list_items(route, "/v1/jobs", state="queued", task=None)] == [f"x-{i}" for i in range(450)]
    assert route.queries == [{"state": "queued", "limit": 200}, {"state": "queued", "limit": 200, "cursor": "200"},
                             {"state": "queued", "limit": 200, "cursor": "400"}]
    route = _PagedRoute(450)
    assert len(session.list_items(route, "/v1/jobs", limit=205)) == 205
    assert [q["limit"] for q in route.queries] == [200, 5]


def test_jobs_report_prints_test_metrics_beside_the_baseline(world, jobs):
    out = ok(world["a"], "-o", "table", "jobs", "report", "job-old")
    assert "job job-old succeeded after 40 steps (model model-old)" in out.stdout
    assert re.search(r"macro_f1\s+0\.200\s+0\.910", out.stdout) and re.search(r"accuracy\s+0\.250\s+0\.930", out.stdout)
    assert json.loads(ok(world["a"], "jobs", "report", "job-old").stdout)["report"]["primary_metric"] == "macro_f1"
    queued = cli(world["a"], "-o", "table", "jobs", "report", "job-queued")
    assert queued.exit_code == 1 and "job job-queued queued" in queued.stderr


def test_jobs_report_labels_the_metric_as_its_task_plugin_says(world, jobs):
    assert ok(world["a"], "-o", "table", "jobs", "report", "job-old").stdout.splitlines()[-1] == "macro-F1 0.91"


def test_submit_pause_resume_cancel_events_and_logs(world, dataset, tmp_path):
    ds, _ = dataset
    spec = tmp_path / "job.yaml"
    spec.write_text("task: classification\nbase_model: all-minilm-l6-v2\ndataset: {id: placeholder}\nmax_steps: 2\n")
    out = ok(world["a"], "jobs", "submit", str(spec), "--dataset", ds["id"], "--no-watch")
    job_id = out.stdout.split()[-1]
    assert out.stdout.startswith("submitted job-")
    assert as_json(world["a"], "jobs", "show", job_id)["spec"]["dataset"]["id"] == ds["id"]
    assert as_json(world["a"], "jobs", "pause", job_id)["status"] == "paused"
    assert as_json(world["a"], "jobs", "resume", job_id)["status"] == "queued"
    assert as_json(world["a"], "jobs", "cancel", job_id)["status"] == "cancelled"
    again = cli(world["a"], "jobs", "cancel", job_id)
    assert again.exit_code == 2 and again.stderr.startswith("error [conflict]")
    events = as_json(world["a"], "jobs", "events", job_id)["events"]
    assert [e["status"] for e in events if e["kind"] == "status"][-3:] == ["paused", "queued", "cancelled"]
    assert "cancelled" in ok(world["a"], "-o", "table", "jobs", "events", job_id).stdout
    first_two = as_json(world["a"], "jobs", "events", job_id, "--limit", "2")
    assert first_two["events"] == events[:2] and first_two["next_after"] == events[1]["id"]
    assert as_json(world["a"], "jobs", "events", job_id, "--after", str(events[0]["id"]))["events"] == events[1:]
    assert ok(world["a"], "jobs", "logs", job_id).stdout == ""  # it never reached the cluster


# ------------------------------------------------------------------- sweeps
def _sweep_spec(task: str) -> dict:
    job = {"tenant": "team-a", "task": task, "base_model": "all-minilm-l6-v2", "dataset": {"id": "ds-x"}, "max_steps": 2}
    return {"tenant": "team-a", "job": job, "search_space": {"learning_rate": {"type": "choice", "values": [1e-3]}}}


def test_sweeps_list_show_and_leaderboard(world, jobs):
    add_rows(world["platform"], Sweep(id="sweep-a", tenant_id="team-a", task="classification", status="succeeded",
                                      best_job_id="job-old", spec=_sweep_spec("classification")))
    assert "sweep-a" in [s["id"] for s in as_json(world["a"], "sweeps", "list")]
    assert as_json(world["a"], "sweeps", "show", "sweep-a")["best_job_id"] == "job-old"
    board = as_json(world["a"], "sweeps", "leaderboard", "sweep-a")
    assert board["status"] == "succeeded"
    by_task = as_json(world["a"], "sweeps", "leaderboard", "--task", "classification")
    assert "job-old" in [j["job_id"] for j in by_task["boards"][0]["jobs"]]
    assert "job-old" in ok(world["a"], "-o", "table", "sweeps", "leaderboard", "--task", "classification").stdout
    neither = cli(world["a"], "sweeps", "leaderboard")
    assert neither.exit_code == 2 and neither.stderr.startswith("error [invalid_request] (field: sweep_id)")


def test_sweeps_list_filters(world, jobs):
    add_rows(world["platform"], Sweep(id="sweep-ner", tenant_id="team-a", task="ner", status="running",
                                      spec=_sweep_spec("ner")))
    assert [s["id"] for s in as_json(world["a"], "sweeps", "list", "--task", "ner")] == ["sweep-ner"]
    assert [s["id"] for s in as_json(world["a"], "sweeps", "list", "--state", "running")] == ["sweep-ner"]


# ------------------------------------------------------------------- models and deployments
def test_models_get_and_show(world, jobs):
    got = as_json(world["a"], "models", "get", "model-old")
    assert got["id"] == "model-old" and got["job_id"] == "job-old"
    assert as_json(world["a"], "models", "show", "model-old") == got
    assert cli(world["b"], "models", "show", "model-old").stderr.startswith("error [not_found]")


def test_models_list_and_delete(world, jobs):
    assert "model-old" in [m["id"] for m in as_json(world["a"], "models", "list", "--task", "classification")]
    assert "model-old" in ok(world["a"], "-o", "table", "models", "list").stdout
    add_rows(world["platform"], _job("job-spare"), Model(id="model-spare", tenant_id="team-a", job_id="job-spare",
                                                        task="classification", uri=f"s3://{world['platform'].settings.bucket}/tenants/team-a/models/model-spare"))
    ok(world["a"], "models", "delete", "model-spare")
    assert cli(world["a"], "models", "show", "model-spare").stderr.startswith("error [not_found]")


@pytest.fixture(scope="module")
def deployment(world, jobs):
    add_rows(world["platform"],
             Deployment(id="dep-a", tenant_id="team-a", name="bbc", model_id="model-old", spec={"name": "bbc"},
                        route="/team-a/bbc", status="running", revision=1),
             DeploymentRevision(deployment_id="dep-a", revision=1, model_id="model-old", spec={"name": "bbc"},
                                reason="deployed"))
    return "dep-a"


def test_deployments_show_and_revisions(world, deployment):
    shown = as_json(world["a"], "deployments", "show", deployment)
    assert shown["status"] == "running" and shown["url"].endswith("/team-a/bbc/predict")
    revs = as_json(world["a"], "revisions", deployment)
    assert [(r["revision"], r["current"], r["model_id"]) for r in revs] == [(1, True, "model-old")]
    assert as_json(world["a"], "deployments", "revisions", deployment) == revs
    assert "model-old" in ok(world["a"], "-o", "table", "deployments", "revisions", deployment).stdout
    no_earlier = cli(world["a"], "deployments", "rollback", deployment)
    assert no_earlier.exit_code == 2 and no_earlier.stderr.startswith("error [")
    assert cli(world["b"], "deployments", "show", deployment).stderr.startswith("error [not_found]")


def test_deployments_list(world, deployment):
    assert [d["id"] for d in as_json(world["a"], "deployments", "list", "--state", "running")] == [deployment]
    assert as_json(world["a"], "deployments", "list", "--state", "deleted") == []
    assert [d["id"] for d in as_json(world["a"], "deployments", "list", "--task", "classification")] == [deployment]
    assert deployment in ok(world["a"], "-o", "table", "deployments", "list").stdout


# ------------------------------------------------------------------- tasks
def test_tasks_list_names_every_task_with_its_metrics(world):
    listed = {t["name"]: t for t in as_json(world["a"], "tasks", "list")}
    assert {"classification", "ner"} <= set(listed)
    assert listed["classification"]["primary_metric"] in listed["classification"]["metric_names"]
    assert "primary_metric" in ok(world["a"], "-o", "table", "tasks", "list").stdout


# ------------------------------------------------------------------- the demo and the package
def test_demo_spec_is_the_bbc_example_on_the_uploaded_dataset():
    spec = demo_spec("ds-123", max_steps=5)
    assert (EXAMPLES / "bbc-classification.yaml").exists()
    assert spec["dataset"] == {"id": "ds-123"} and spec["max_steps"] == 5 and "epochs" not in spec
    assert spec["task"] == "classification"


def test_no_cli_function_is_longer_than_80_lines():
    long = []
    for path in sorted(CLI.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 80:
                long.append(f"{path.name}:{node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not long


FORBIDDEN = ("doctune.tasks", "doctune.services", "doctune.drivers", "doctune.train", "doctune.serve", "doctune.runners",
             "doctune.store", "doctune.api", "doctune.console", "doctune.operators", "ray_jobs", "operators")


def test_the_cli_reaches_the_platform_only_through_the_rest_client():
    bad = []
    for path in sorted(CLI.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                private = any(part.startswith("_") and part != "__future__" for part in name.split(".")) and not name.startswith("doctune.cli")
                if name.startswith(FORBIDDEN) and not name.startswith("doctune.cli") or private:
                    bad.append(f"{path.name}: {name}")
    assert not bad
