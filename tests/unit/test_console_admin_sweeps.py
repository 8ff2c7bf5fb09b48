"""The console's admin and sweeps pages, driven through ``gradio_client`` as a browser's events are,
against the real API (uvicorn, SQLite, a real SeaweedFS S3 server; no Ray): the admin sees every
tenant with its weight and quotas and edits them, creates a viewer key that then signs in and revokes
it, sees the queue in fair-share order and a sentence (not a trace) where the cluster does not answer;
a member is refused the admin page's calls; a sweep launched with a bad job or search space gets the
field that is wrong; a sweep's leaderboard ranks its trials with their settings and plots the chosen
hyperparameter against the dev metric; a deploy the API refuses says why."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest
import uvicorn
from tests.e2e.console import console_client
from gradio_client.exceptions import AppError

from doctune.api.app import create_app
from doctune.config import Settings
from doctune.services import Platform, tenants
from doctune.spec import TenantSpec
from doctune.store.db import Job
from tests.unit.test_cli import s3  # noqa: F401  (the module's real S3 server)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve_api(p: Platform) -> tuple[uvicorn.Server, str]:
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(p), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def world(tmp_path_factory, s3):  # noqa: F811
    """The API with tenants team-a and team-b, and the console in this process, on free ports."""
    from doctune.console.app import build_console, queued

    home = tmp_path_factory.mktemp("console")
    p = Platform(Settings(home=str(home), database_url=f"sqlite:///{home / 'doctune.db'}", **s3))
    p.db.migrate()
    admin_key = tenants.create_admin_key(p)
    admin = tenants.authenticate(p, admin_key)
    _, key_a = tenants.create_tenant(p, admin, TenantSpec(name="team-a"))
    _, key_b = tenants.create_tenant(p, admin, TenantSpec(name="team-b"))
    server, api_url = _serve_api(p)
    blocks = queued(build_console(api_url))
    port = _free_port()
    blocks.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield {"platform": p, "api": api_url, "console": f"http://127.0.0.1:{port}/", "admin": admin_key, "a": key_a, "b": key_b}
    blocks.close()
    server.should_exit = True
    p.db.dispose()


def signed_in(world, key: str) -> Client:
    client = console_client(world["console"])
    client.predict(key, api_name="/do_sign_in")
    return client


def rows(table) -> list[dict]:
    """A Dataframe output as gradio_client returns it: {"headers", "data"}, as dicts."""
    return [dict(zip(table["headers"], row)) for row in table["data"]]


def refreshed(client: Client) -> dict:
    names = ["tenants", "tenant_choices", "key_tenant_choices", "keys", "key_choices", "queue", "cluster"]
    return dict(zip(names, client.predict(api_name="/admin_refresh")))


def test_the_admin_sees_tenants_keys_and_a_cluster_sentence(world):
    shown = refreshed(signed_in(world, world["admin"]))
    by_tenant = {r["tenant"]: r for r in rows(shown["tenants"])}
    assert {"team-a", "team-b"} <= set(by_tenant)
    assert by_tenant["team-a"]["weight"] == 1.0
    assert {r["tenant"] for r in rows(shown["keys"])} >= {"team-a", "team-b", "platform"}
    # no Ray here: the cluster's table is replaced by the API's message, the rest of the page still shows
    assert shown["cluster"].startswith("Cluster: ") and "doctune" in shown["cluster"]


def test_the_admin_edits_a_tenants_weight_and_quotas(world):
    client = signed_in(world, world["admin"])
    httpx.put(f"{world['api']}/v1/tenants/team-b/quota", json={"max_cpus": 4},
              headers={"Authorization": f"Bearer {world['admin']}"}).raise_for_status()
    fields = ["weight", "max_concurrent_jobs", "max_cpus", "max_gpus", "max_storage_bytes", "max_deployments",
              "max_trials", "max_queued_jobs", "max_keys"]
    values = {f: None for f in fields} | {"weight": 2.5, "max_concurrent_jobs": 3}
    out = client.predict("team-b", *[values[f] for f in fields], ["max_cpus"], api_name="/admin_set_quota")
    team_b = {r["tenant"]: r for r in rows(out[0])}["team-b"]
    assert team_b["weight"] == 2.5 and team_b["max_concurrent_jobs"] == 3 and team_b["max_cpus"] == "unlimited"
    quota = httpx.get(f"{world['api']}/v1/tenants/team-b", headers={"Authorization": f"Bearer {world['admin']}"}).json()["quota"]
    assert quota["weight"] == 2.5 and quota["max_concurrent_jobs"] == 3 and quota["max_cpus"] is None
    with pytest.raises(AppError, match="Nothing to change"):
        client.predict("team-b", *[None] * len(fields), [], api_name="/admin_set_quota")
    with pytest.raises(AppError, match="weight"):  # the API's field error, as a message
        client.predict("team-b", -1, *[None] * (len(fields) - 1), [], api_name="/admin_set_quota")


def test_a_key_created_on_the_admin_page_signs_in_until_revoked(world):
    client = signed_in(world, world["admin"])
    new_key, *_ = client.predict("team-a", "viewer", api_name="/admin_create_key")
    assert new_key.startswith("dtk_")
    who = httpx.get(f"{world['api']}/v1/whoami", headers={"Authorization": f"Bearer {new_key}"}).json()
    assert who["tenant"] == "team-a" and who["role"] == "viewer"
    signed_in(world, new_key)  # a viewer signs in
    out = client.predict(who["key_id"], api_name="/admin_revoke_key")
    revoked = {r["id"]: r for r in rows(out[3])}[who["key_id"]]
    assert revoked["revoked_at"]
    with pytest.raises(AppError, match="(?i)revoked|invalid|key"):
        signed_in(world, new_key)


def test_the_queue_is_shown_in_fair_share_order(world):
    p = world["platform"]
    spec = {"num_workers": 1, "resources_per_worker": {"cpu": 1}}
    for job_id, tenant, status in [("job-run-a", "team-a", "running"), ("job-q-a", "team-a", "queued"),
                                   ("job-q-b", "team-b", "queued")]:
        with p.db.session() as s:
            s.add(Job(id=job_id, tenant_id=tenant, task="classification", spec={"tenant": tenant, **spec}, status=status))
    try:
        queue = rows(refreshed(signed_in(world, world["admin"]))["queue"])
        # team-a already runs a job: team-b's waits less, whatever the submission order
        assert [(q["position"], q["job_id"]) for q in queue] == [(1, "job-q-b"), (2, "job-q-a")]
        assert queue[1]["tenant_share"] > queue[0]["tenant_share"]
    finally:
        with p.db.session() as s:
            for job_id in ("job-run-a", "job-q-a", "job-q-b"):
                s.delete(s.get(Job, job_id))


def test_a_member_is_refused_the_admin_calls_and_nobody_unsigned_gets_in(world):
    member = signed_in(world, world["a"])
    with pytest.raises(AppError, match="only a platform admin"):
        member.predict(api_name="/admin_refresh")
    with pytest.raises(AppError, match="Sign in with your API key"):
        console_client(world["console"]).predict(api_name="/sweeps_refresh")


JOB = "task: classification\nbase_model: all-minilm-l6-v2\ndataset: {id: ds-none}\nmax_steps: 10\n"


@pytest.mark.parametrize("job, space, field", [
    ("task: [unclosed", "learning_rate: {type: choice, values: [1.0e-4]}", "job"),
    (JOB, "- just a list", "search_space"),
    (JOB, "learning_rate: {type: uniform, low: 1.0e-3, high: 1.0e-4}", "learning_rate"),
    (JOB, "learning_rate: {type: sometimes, values: [1]}", "type"),
])
def test_a_sweep_with_a_bad_job_or_search_space_names_the_field(world, job, space, field):
    client = signed_in(world, world["a"])
    with pytest.raises(AppError, match=field):
        client.predict(job, space, "random", 2, 1, "", "", api_name="/sweeps_launch")
    assert rows(client.predict(api_name="/sweeps_refresh")[0]) == []  # nothing was queued


def _deploy_form(**changes) -> list:
    from doctune.spec import DeploymentSpec

    fields = {n: f.default for n, f in DeploymentSpec.model_fields.items() if n not in ("tenant", "model_id", "name")}
    return list((fields | changes).values())


@pytest.mark.parametrize("model_id, changes, said", [
    ("model-nope", {}, "model-nope"),
    ("model-nope", {"min_replicas": 3, "max_replicas": 1}, "min_replicas"),
    ("", {}, "Choose a model"),
])
def test_a_deploy_the_api_refuses_shows_why(world, model_id, changes, said):
    client = signed_in(world, world["a"])
    models, _, deployments, _ = client.predict(api_name="/models_refresh")
    assert rows(models) == [] and rows(deployments) == []
    with pytest.raises(AppError, match=said):
        client.predict(model_id, "bbc", *_deploy_form(**changes), api_name="/models_deploy")


def test_the_playground_asks_for_a_deployment_first(world):
    client = signed_in(world, world["a"])
    with pytest.raises(AppError, match="Choose a deployment"):
        client.predict("", "股市周一大跌", 5, True, api_name="/playground_predict")


def test_a_sweeps_leaderboard_and_its_plot_show_each_trial(world):
    from doctune.store.db import Sweep

    p = world["platform"]
    space = {"learning_rate": {"type": "loguniform", "low": 1e-4, "high": 1e-2},
             "tuning.lora.r": {"type": "choice", "values": [4, 8]}}
    with p.db.session() as s:
        s.add(Sweep(id="sweep-board", tenant_id="team-b", task="classification", status="running",
                    spec={"tenant": "team-b", "job": {"task": "classification"}, "search_space": space}))
    for i, (lr, r, dev) in enumerate([(1e-3, 8, 0.8), (1e-4, 4, 0.6), (5e-3, 4, 0.9)]):
        with p.db.session() as s:
            s.add(Job(id=f"job-trial-{i}", tenant_id="team-b", task="classification", sweep_id="sweep-board", status="succeeded",
                      spec={"tenant": "team-b", "learning_rate": lr, "tuning": {"lora": {"r": r}}},
                      metrics={"dev": {"macro_f1": dev}, "test": {"macro_f1": dev - 0.05}}))
    client = signed_in(world, world["b"])
    board, setting, plot = client.predict("sweep-board", api_name="/sweeps_leaderboard")
    ranked = rows(board)
    assert [(t["rank"], t["job_id"], t["dev"]) for t in ranked] == [(1, "job-trial-2", 0.9), (2, "job-trial-0", 0.8),
                                                                    (3, "job-trial-1", 0.6)]
    assert ranked[0]["learning_rate"] == 5e-3 and ranked[0]["tuning.lora.r"] == 4
    assert setting["value"] == "learning_rate" and set(setting["choices"][0]) <= {"learning_rate", "tuning.lora.r"}
    drawn = plot["value"]  # an update: the points with their columns, the axes and the title
    assert plot["x"] == "value" and plot["y"] == "dev" and "learning_rate" in plot["title"]
    points = [dict(zip(drawn["columns"], row)) for row in drawn["data"]]
    assert sorted((pt["value"], pt["dev"]) for pt in points) == [(1e-4, 0.6), (1e-3, 0.8), (5e-3, 0.9)]
    with pytest.raises(AppError, match="(?i)succeeded|finished|running"):  # a running sweep has no winner yet
        client.predict("sweep-board", "bbc", False, api_name="/sweeps_promote")
