"""Faults on the real stack: the platform converges, loses no job and strands no quota.

- The API process is killed (SIGKILL) while a job trains, then started again; then the Ray head
  is restarted: the cluster forgets the job's driver, and the API's reconciler retries the job
  from its last checkpoint; it succeeds, and never stays `running`. The session's endpoint, gone
  with the head's Serve applications, is redeployed by the reconciler and answers again.
- The S3 server (weed) is stopped for 20 s while a job checkpoints every other step: the uploads
  wait and retry (tenacity), the job finishes in its first attempt.
- A Serve replica is killed under traffic: Serve starts another, requests after recovery succeed,
  and the errors during the outage are counted and reported.

After each, the tenant has no job left starting or running, so its concurrency quota is whole.
These tests disturb the stack that every other test shares, so they run last
(``pytest_collection_modifyitems`` in conftest.py)."""

from __future__ import annotations

import os
import signal
import threading
import time

import httpx
import pytest

from doctune.data import to_jsonl

from .conftest import END, new_tenant, poll, session_classification, tiny_job

OUTAGE_S = 20
TRAINED: dict[str, dict] = {}  # jobs that succeeded here, whose models a later test may serve


@pytest.fixture(scope="module")
def local(stack):
    from doctune.local import LocalStack
    from doctune.services import Platform

    cpus = Platform(stack).runner.resources().cpus  # a restarted head gets the CPUs the session's had
    return LocalStack.of(stack, num_cpus=int(cpus))


@pytest.fixture(scope="module")
def tenant(stack, admin, bbc_small):
    client = new_tenant(stack, admin, "team-faults")
    dataset = client.upload_dataset("bbc-faults", "classification", {"data": to_jsonl(bbc_small)}, seed=42)
    return client, dataset


@pytest.fixture(scope="module")
def store(stack):
    """The metadata store as the drivers see it: read while the API is down."""
    from doctune.services import Platform

    p = Platform(stack)
    yield p
    p.db.dispose()


def small_job(dataset_id: str, name: str, **overrides) -> dict:
    """One worker on half a logical CPU: it and the Serve replicas fit the 2-CPU test cluster."""
    return tiny_job(dataset_id, name=name, num_workers=1, resources_per_worker={"cpu": 0.5, "threads": 1},
                    eval_interval=100, **overrides)


def db_job(store, job_id: str):
    from doctune.store.db import Job

    with store.db.session() as s:
        return s.get(Job, job_id)


def wait_until_training(client, job_id: str, step: int = 1, **progress) -> dict:
    def ready():
        j = client.get_job(job_id)
        assert j["status"] not in END, j
        pr = j["progress"] or {}
        return (j["status"] == "running" and pr.get("step", 0) >= step
                and all(pr.get(k, -1) >= v for k, v in progress.items()) and j)

    return poll(ready, 900, f"job {job_id} to train past step {step}", interval=0.5)


def wait_until_ended(client, job_id: str, deadline_s: float = 900) -> dict:
    return poll(lambda: (j := client.get_job(job_id))["status"] in END and j, deadline_s, f"job {job_id} to end",
                interval=2)


def assert_no_quota_leaked(client) -> None:
    """No job of the tenant holds its concurrency quota any longer (what the dispatcher counts)."""
    held = [j["id"] for state in ("starting", "running") for j in client.list_jobs(state=state)]
    assert held == [], f"jobs still holding the tenant's quota: {held}"


def events(client, job_id: str) -> list[dict]:
    return client.request("GET", f"/v1/jobs/{job_id}/events", params={"limit": 1000})["events"]


def status_reasons(client, job_id: str) -> list[str]:
    return [e["reason"] or "" for e in events(client, job_id) if e["kind"] == "status"]


def test_the_api_killed_then_the_ray_head_restarted_while_a_job_trains_loses_nothing(local, stack, tenant, store,
                                                                                     request):
    """One job trains through both faults in turn (one job for both, and one rather than two: each job
    started costs this session tens of seconds of its 2 cores before its first step)."""
    client, dataset = tenant
    client_a, endpoint, key_a = _session_endpoint(request)  # running before the faults: the head restart takes it away
    job = client.submit_job(small_job(dataset["id"], "faults", max_steps=48, checkpoint_interval=6))
    wait_until_training(client, job["id"])
    _api_killed_while_jobs_train(local, stack, store, [job["id"]])
    saved = wait_until_training(client, job["id"], step=7, last_checkpoint_step=6)["progress"]["last_checkpoint_step"]
    local.restart("ray")  # every driver and worker of the old head is gone; the new one knows none of them
    # first the endpoint, while the job is retried: its "restoring" state lasts only as long as the redeploy
    _restored_after_the_restart(client_a, endpoint, key_a)
    _retried_from_its_checkpoint(client, job["id"], saved)
    assert_no_quota_leaked(client)


def _api_killed_while_jobs_train(local, stack, store, job_ids: list[str]) -> None:
    """With no API the drivers still train and write their progress to the metadata store; the API
    started again answers."""
    local.kill("api")
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{stack.api_url}/healthz", timeout=5)
    before = {i: (db_job(store, i).progress or {}).get("step", 0) for i in job_ids}
    poll(lambda: all((j := db_job(store, i)).status in END or (j.progress or {}).get("step", 0) > s
                     for i, s in before.items()), 300, "progress of the job while the API is down")
    local.restart("api")
    assert httpx.get(f"{stack.api_url}/healthz", timeout=30).status_code == 200


def _retried_from_its_checkpoint(client, job_id: str, saved: int) -> None:
    """The reconciler found the job's driver gone with the old head and retried it from its last checkpoint:
    it succeeds in its second attempt, never stays ``running``."""
    done = wait_until_ended(client, job_id, deadline_s=1200)
    reasons = status_reasons(client, job_id)
    assert any("no longer knows" in r for r in reasons), reasons
    assert done["status"] == "succeeded" and done["attempt"] == 2, (done["error"], reasons)
    assert done["metrics"]["step"] == 48 and done["model_id"]
    assert done["metrics"].get("resumed_from_step", 0) >= saved, done["metrics"]  # from its checkpoint, not step 0
    TRAINED[job_id] = done


def _session_endpoint(request) -> tuple:
    """(team-a's client, the session's running classification endpoint of conftest.py, team-a's key); trained
    and deployed here when this module runs alone."""
    endpoint = session_classification(request, "classification_endpoint")
    return request.getfixturevalue("client_a"), endpoint, request.getfixturevalue("tenant_a")


def _restored_after_the_restart(client_a, endpoint: dict, key: str) -> None:
    """Serve applications go with the Ray head; the API's reconciler (at start and every reconcile_interval_s,
    with no call from anyone) redeploys every deployment recorded as running, and it answers again."""
    poll(lambda: (d := client_a.get_deployment(endpoint["id"]))["status"] == "deploying"
         and "restoring" in (d["message"] or ""), 300, "the reconciler to notice the lost application", interval=0.5)
    dep = poll(lambda: (d := client_a.get_deployment(endpoint["id"]))["status"] != "deploying" and d, 600, "the redeploy",
               interval=2)
    assert dep["status"] == "running", dep["message"]
    r = httpx.post(endpoint["url"], json={"inputs": ["Shares rose."]}, headers={"Authorization": f"Bearer {key}"},
                   timeout=60)
    assert r.status_code == 200 and r.json()["predictions"][0]["label"]


@pytest.mark.full  # 40 steps checkpointing every 2 while S3 is down 20 s: `make test-full` (CI keeps to 20 minutes)
def test_the_s3_server_down_for_20s_during_checkpoint_uploads_costs_a_pause_not_the_job(local, tenant, store):
    client, dataset = tenant
    job = client.submit_job(small_job(dataset["id"], "s3-outage", max_steps=40, checkpoint_interval=2))
    # stop it once a checkpoint is stored and training runs on toward the next (every other step)
    at_stop = wait_until_training(client, job["id"], step=5, last_checkpoint_step=4)["progress"]
    began = time.monotonic()
    local.stop("weed")
    seen = [at_stop["step"]]
    while time.monotonic() < began + OUTAGE_S:  # meanwhile, watch where training stands
        seen.append((db_job(store, job["id"]).progress or {}).get("step", 0))
        time.sleep(1)
    local.restart("weed")
    outage = time.monotonic() - began
    print(f"\nS3 outage of {outage:.0f}s: job {job['id']} at step {at_stop['step']} when it began (checkpoint at step "
          f"{at_stop['last_checkpoint_step']}), at most at step {max(seen)} during it (checkpoints every 2 steps)")
    # training (about a step a second here) stalled at its next checkpoint: the upload waited for the server
    assert max(seen) <= at_stop["last_checkpoint_step"] + 4, seen
    done = wait_until_ended(client, job["id"])
    reasons = status_reasons(client, job["id"])
    assert done["status"] == "succeeded", (done["error"], reasons)
    assert done["attempt"] == 1, (done["error"], reasons)  # no attempt failed: the uploads waited
    assert done["metrics"]["step"] == 40
    checkpoints = [e["data"]["step"] for e in events(client, job["id"]) if e["kind"] == "checkpoint"]
    assert max(checkpoints) > max(seen), checkpoints  # checkpointing went on after it
    TRAINED[job["id"]] = done
    assert_no_quota_leaked(client)


@pytest.fixture
def served(tenant, stack):
    """A model trained by a test above (else a tiny one, when this test runs alone) on one replica."""
    client, dataset = tenant
    job = next(iter(TRAINED.values()), None)
    if job is None:
        job = wait_until_ended(client, client.submit_job(small_job(dataset["id"], "serve-fault", max_steps=10))["id"])
        assert job["status"] == "succeeded", job["error"]
    dep = client.deploy(job["model_id"], "replica-fault", min_replicas=1, max_replicas=1, num_cpus=0.25)
    dep = poll(lambda: (d := client.get_deployment(dep["id"]))["status"] != "deploying" and d, 600, "the deployment",
               interval=2)
    assert dep["status"] == "running", dep["message"]
    yield client, dep
    # asked, not waited for (about 20 s here): these tests run last, and the stack goes down after them
    assert client.delete_deployment(dep["id"])["status"] in ("deleting", "deleted")


def replica_pids(stack, route: str) -> list[int]:
    """The pids of the running replicas of the Serve application at ``route``, as Serve reports them."""
    r = httpx.get(f"{stack.ray_dashboard_url}/api/serve/applications/",
                  headers={"Authorization": f"Bearer {stack.ray_token()}"}, timeout=30)
    r.raise_for_status()
    pids = []
    for app in (r.json().get("applications") or {}).values():
        if app.get("route_prefix") == route:
            for deployment in (app.get("deployments") or {}).values():
                pids += [rep["pid"] for rep in deployment.get("replicas") or [] if rep.get("state") == "RUNNING"]
    return pids


def test_a_serve_replica_killed_under_traffic_recovers_and_its_errors_are_counted(served, stack,
                                                                                 record_testsuite_property):
    client, dep = served
    headers = {"Authorization": client.key}
    body = {"inputs": ["Shares in the bank rose after its profits beat forecasts."]}

    slowest = [0.0]

    def ask() -> bool:
        started = time.monotonic()
        try:
            return httpx.post(dep["url"], json=body, headers=headers, timeout=30).status_code == 200
        except httpx.HTTPError:
            return False
        finally:
            slowest[0] = max(slowest[0], time.monotonic() - started)

    assert ask()
    victims = poll(lambda: replica_pids(stack, dep["route"]), 60, "Serve to list the replica")
    outcomes: list[bool] = []
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            outcomes.append(ask())
            time.sleep(0.2)

    sender = threading.Thread(target=traffic, daemon=True)
    sender.start()
    time.sleep(2)  # traffic flows before the fault
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    killed_at = len(outcomes)

    def recovered() -> bool:
        pids = replica_pids(stack, dep["route"])
        return bool(pids) and not set(pids) & set(victims) and len(outcomes) > killed_at and outcomes[-1]

    poll(recovered, 300, "Serve to replace the killed replica", interval=1)
    stop.set()
    sender.join(60)
    errors = outcomes.count(False)
    print(f"\nServe replica killed under traffic: {errors} of {len(outcomes)} requests failed during the outage; "
          f"the slowest took {slowest[0]:.1f}s")
    record_testsuite_property("serve_replica_outage_errors", errors)  # in the JUnit report (--junitxml)
    record_testsuite_property("serve_replica_outage_requests", len(outcomes))
    record_testsuite_property("serve_replica_outage_slowest_s", round(slowest[0], 1))
    assert all(ask() for _ in range(5))  # after recovery every request succeeds
    assert client.get_deployment(dep["id"])["status"] == "running"
