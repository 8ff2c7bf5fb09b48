"""Sweeps: Ray Tune runs trials of a job over a search space; every trial is a job of the
tenant on the same Ray Train + DeepSpeed + LoRA path; the leaderboard ranks them on dev and
the sweep records the winner; concurrent trials stay within the tenant's job quota.

Then the winner goes to an endpoint by champion/challenger promotion: a worse challenger
is not promoted, a forced one is, and a rollback brings the winner back, while a client
sending requests the whole time sees no failed request; the endpoint scales to 2
replicas under load and back to 1 after it."""

from __future__ import annotations

import threading
from datetime import datetime

import httpx
import pytest

from doctune.data import to_jsonl
from doctune.corpora import load_bbc_news
from doctune.errors import DoctuneError
from doctune.services import Platform

from .conftest import ahead, poll, tenant_client, tiny_job

# `make test-full` only: the sweep (3 trials), champion/challenger promotions, autoscaling under load and multiplexing
# (left out of `make test`, which CI runs, to keep it within 20 minutes)
pytestmark = pytest.mark.full

LRS = [1e-6, 2e-3, 4e-3]  # a learning rate too small to move the untrained head, and two that train


def _sweep_job(client, limit_per_class: int = 16, **overrides) -> dict:
    """A tiny job on a small BBC set, for trials of one worker each (sweeps are about searching, not sharding)."""
    ds = client.upload_dataset("bbc-sweep", "classification", {"data": to_jsonl(load_bbc_news(limit_per_class))}, seed=3)
    job = tiny_job(ds["id"], num_workers=1, checkpoint_interval=100, **overrides)
    job["tuning"]["merge_adapter"] = False  # the same models serve dedicated and multiplexed endpoints below
    return job


@ahead()
def grid_sweep(request):
    client = tenant_client(request, "team-sweeps")  # default quota: 2 concurrent jobs
    job = _sweep_job(client, max_steps=8, eval_interval=4)
    job.pop("learning_rate")
    sweep = client.submit_sweep({"name": "lr search", "job": job, "algorithm": "grid", "max_concurrent_trials": 3,
                                 "search_space": {"learning_rate": {"type": "choice", "values": LRS}}})
    assert sweep["status"] in ("queued", "running")
    return client, sweep


@ahead(tests=("test_asha_stops_weak_trials_early_and_still_picks_a_finished_winner",))
def asha_sweep(request):
    """Its own tenant, so that it runs beside the grid sweep without sharing its quota."""
    client = tenant_client(request, "team-asha")
    job = _sweep_job(client, max_steps=20, eval_interval=2)
    # seed 2 draws lr 4e-3, then 1e-7 twice; one trial at a time, so each weak trial meets the strong
    # one's dev loss at the same rung and is stopped there (loss: no ties, unlike F1 on a tiny dev set)
    return client, client.submit_sweep({"job": job, "algorithm": "asha", "num_samples": 3, "max_concurrent_trials": 1,
                                        "seed": 2, "metric": "loss", "mode": "min",
                                        "asha": {"grace_period": 1, "reduction_factor": 2},
                                        "search_space": {"learning_rate": {"type": "choice", "values": [1e-7, 4e-3]}}})


def sweep_done(jobs_ahead: dict, name: str) -> tuple:
    client, sweep = jobs_ahead[name]
    done = poll(lambda: (s := client.get_sweep(sweep["id"]))["status"] not in ("queued", "running") and s, 1200, name)
    assert done["status"] == "succeeded", done["error"]
    return client, done


@pytest.fixture(scope="module")
def sweep_client(jobs_ahead):
    return jobs_ahead["grid_sweep"][0]


@pytest.fixture(scope="module")
def finished_sweep(jobs_ahead):
    return sweep_done(jobs_ahead, "grid_sweep")[1]


def test_the_leaderboard_ranks_trials_and_the_winner_is_the_best_on_dev(sweep_client, finished_sweep):
    board = sweep_client.sweep_leaderboard(finished_sweep["id"])
    trials = board["trials"]
    assert board["metric"] == "dev macro_f1" and len(trials) == 3
    assert sorted(t["settings"]["learning_rate"] for t in trials) == LRS
    assert all(t["status"] == "succeeded" and t["model_id"] and t["cost_cpu_seconds"] > 0 for t in trials)
    devs = [t["dev"] for t in trials]
    assert devs == sorted(devs, reverse=True) and [t["rank"] for t in trials] == [1, 2, 3]
    best = trials[0]
    assert finished_sweep["best_job_id"] == best["job_id"]
    assert best["settings"]["learning_rate"] != 1e-6 and best["dev"] > trials[-1]["dev"]
    # a trial is an ordinary job of the tenant: its report and model are there
    job = sweep_client.get_job(best["job_id"])
    assert job["spec"]["learning_rate"] == best["settings"]["learning_rate"] and job["report"]["primary_metric"] == "macro_f1"
    assert sweep_client.get_model(best["model_id"])["job_id"] == best["job_id"]


def test_concurrent_trials_stay_within_the_tenant_quota(sweep_client, finished_sweep):
    board = sweep_client.sweep_leaderboard(finished_sweep["id"])
    spans = []
    for t in board["trials"]:
        j = sweep_client.get_job(t["job_id"])
        spans.append((datetime.fromisoformat(j["started_at"]), datetime.fromisoformat(j["finished_at"])))
    most = max(sum(a <= start < b for a, b in spans) for start, _ in spans)
    assert most <= 2  # asked for 3 at once; the tenant's quota is 2 concurrent jobs


def test_the_tenant_leaderboard_ranks_every_finished_job_of_a_task(sweep_client, finished_sweep):
    board = sweep_client.request("GET", "/v1/leaderboard", params={"task": "classification"})
    assert board["boards"][0]["jobs"][0]["job_id"] == finished_sweep["best_job_id"]
    every = sweep_client.request("GET", "/v1/leaderboard")  # one board per task the tenant has trained
    assert [b["task"] for b in every["boards"]] == ["classification"]
    with pytest.raises(DoctuneError) as e:
        sweep_client.request("GET", "/v1/leaderboard", params={"task": "classification", "metric": "bleu"})
    assert e.value.field == "metric"


def test_bad_sweeps_name_the_field(sweep_client, finished_sweep):
    job = sweep_client.get_job(finished_sweep["best_job_id"])["spec"]
    job.pop("tenant")
    cases = [
        ({"learnin_rate": {"type": "choice", "values": [1e-3]}}, "grid", "search_space.learnin_rate"),
        ({"learning_rate": {"type": "uniform", "low": 1e-3, "high": 1e-2}}, "grid", "search_space.learning_rate"),
        ({"learning_rate": {"type": "loguniform", "low": 0, "high": 1e-2}}, "random", "search_space.learning_rate"),
    ]
    for space, algorithm, field in cases:
        with pytest.raises(DoctuneError) as e:
            sweep_client.submit_sweep({"job": job, "search_space": space, "algorithm": algorithm})
        assert e.value.field == field, e.value.message
    with pytest.raises(DoctuneError) as e:
        sweep_client.submit_sweep({"job": {**job, "dataset": {"id": "ds-nope"}}, "algorithm": "random",
                                   "search_space": {"learning_rate": {"type": "choice", "values": [1e-3]}}})
    assert e.value.field == "dataset.id"


@pytest.mark.full  # a second sweep of 3 trials beside the grid sweep: `make test-full`
def test_asha_stops_weak_trials_early_and_still_picks_a_finished_winner(jobs_ahead):
    sweep_client, done = sweep_done(jobs_ahead, "asha_sweep")
    sweep = done
    trials = sweep_client.sweep_leaderboard(sweep["id"])["trials"]
    assert sorted(t["settings"]["learning_rate"] for t in trials) == [1e-7, 1e-7, 4e-3]
    stopped = [t for t in trials if t["stopped_early"]]
    assert {t["settings"]["learning_rate"] for t in stopped} == {1e-7} and len(stopped) == 2
    for t in stopped:  # stopped by ASHA: cancelled before the last step, with its evaluations kept
        j = sweep_client.get_job(t["job_id"])
        assert j["status"] == "cancelled" and j["error"]["code"] == "stopped_early" and t["dev"] is not None
        assert j["progress"]["step"] < 20
    [finished] = [t for t in trials if t["status"] == "succeeded"]
    assert finished["settings"]["learning_rate"] == 4e-3 and sweep_client.get_job(finished["job_id"])["metrics"]["step"] == 20
    assert done["best_job_id"] == finished["job_id"]


class Traffic(threading.Thread):
    """A client sending one request after another until stopped; records every answer's
    model_id and every failure (a non-200 status or a connection error)."""

    def __init__(self, url: str, key: str, doc: str) -> None:
        super().__init__(daemon=True)
        self.url, self.key, self.doc = url, key, doc
        self.seen: list[str] = []
        self.failures: list[str] = []
        self.done = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=120, headers={"Authorization": self.key}) as http:
            while not self.done.is_set():
                try:
                    r = http.post(self.url, json={"inputs": [self.doc]})
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                    continue
                if r.status_code == 200:
                    self.seen.append(r.json()["model_id"])
                else:
                    self.failures.append(f"{r.status_code} {r.text[:300]}")

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=180)


def _running(client, dep_id: str) -> dict:
    dep = poll(lambda: (d := client.get_deployment(dep_id))["status"] not in ("deploying",) and d, 600, "the deployment",
               interval=2)
    assert dep["status"] == "running", dep["message"]
    return dep


@pytest.fixture(scope="module")
def promoted(sweep_client, finished_sweep):
    """The sweep's winner promoted to a new endpoint (nothing to compare with: it is deployed)."""
    r = sweep_client.promote("news", sweep_id=finished_sweep["id"], min_replicas=1, max_replicas=2, num_cpus=0.25,
                             target_ongoing_requests=1, upscale_delay_s=2, downscale_delay_s=5)
    assert r["decision"] == "deployed" and r["champion"] is None
    yield r, _running(sweep_client, r["deployment"]["id"])
    sweep_client.delete_deployment(r["deployment"]["id"])
    poll(lambda: sweep_client.get_deployment(r["deployment"]["id"])["status"] == "deleted", 300, "undeploy")


def test_the_winner_is_promoted_a_worse_challenger_is_not_and_rollback_restores_it(sweep_client, finished_sweep, promoted):
    r, dep = promoted
    board = sweep_client.sweep_leaderboard(finished_sweep["id"])["trials"]
    best = board[0]
    # the challenger: the trial worst on test (promotion compares test metrics; on this tiny set dev
    # ties are broken by cost, so the last on the dev board need not be the worst on test)
    worst = min(board[1:], key=lambda t: t["test"])
    assert r["challenger"]["model_id"] == best["model_id"] == dep["model_id"] and dep["revision"] == 1
    assert worst["test"] <= best["test"], board  # a tie is not better either: the champion stays

    kept = sweep_client.promote("news", model_id=worst["model_id"])
    assert kept["decision"] == "kept" and kept["metric"] == "macro_f1"
    assert kept["champion"] == {"model_id": best["model_id"], "test": best["test"]}
    assert kept["challenger"]["model_id"] == worst["model_id"] and kept["challenger"]["test"] == worst["test"]
    same = sweep_client.get_deployment(dep["id"])
    assert same["model_id"] == best["model_id"] and same["revision"] == 1 and same["status"] == "running"

    doc = "The company's shares fell sharply after it reported a loss for the third quarter."
    clients = [Traffic(dep["url"], sweep_client.key, doc) for _ in range(2)]
    for c in clients:
        c.start()
    try:
        poll(lambda: all(c.seen for c in clients), 120, "answers before the update")
        forced = sweep_client.promote("news", model_id=worst["model_id"], force=True)  # a rolling update under traffic
        assert forced["decision"] == "forced"
        assert _running(sweep_client, dep["id"])["model_id"] == worst["model_id"]
        poll(lambda: all(c.seen[-1] == worst["model_id"] for c in clients), 300, "answers from the forced model")
        back = sweep_client.rollback(dep["id"])  # the previous version, one command away
        assert back["model_id"] == best["model_id"]
        assert _running(sweep_client, dep["id"])["revision"] == 3
        poll(lambda: all(c.seen[-1] == best["model_id"] for c in clients), 300, "answers from the rolled-back model")
    finally:
        for c in clients:
            c.stop()
    assert [c.failures for c in clients] == [[], []]
    for c in clients:  # the answers went winner -> forced -> winner, never mixed back
        order = [m for i, m in enumerate(c.seen) if i == 0 or c.seen[i - 1] != m]
        assert order == [best["model_id"], worst["model_id"], best["model_id"]], order
    history = sweep_client.deployment_revisions(dep["id"])
    assert [(h["revision"], h["model_id"]) for h in history] == [
        (1, best["model_id"]), (2, worst["model_id"]), (3, best["model_id"])]


def test_the_endpoint_scales_to_two_replicas_under_load_and_back_to_one(stack, sweep_client, promoted):
    _, dep = promoted
    app = dep["id"]  # its Serve application (doctune.serve.names.app_name)

    platform = Platform(stack)

    def replicas() -> int:
        deployments = platform.runner.applications()[app]["deployments"].values()
        return sum(1 for d in deployments for rep in d["replicas"] if rep["state"] == "RUNNING")

    assert poll(lambda: replicas() == 1, 120, "one replica at rest")
    doc = "The striker scored twice as the home side won the cup final."
    load = [Traffic(dep["url"], sweep_client.key, doc) for _ in range(6)]  # target: 1 request in flight per replica
    for c in load:
        c.start()
    try:
        poll(lambda: replicas() == 2, 300, "a second replica under load", interval=2)
    finally:
        for c in load:
            c.stop()
    assert [c.failures for c in load] == [[]] * 6
    poll(lambda: replicas() == 1, 300, "back to one replica after the load", interval=3)


def test_multiplexed_endpoints_serve_many_adapters_from_one_shared_base(stack, sweep_client, finished_sweep, promoted):
    """The sweep's three LoRA adapters behind two multiplexed endpoints: one shared replica holds the
    base model once; each request names its model version (default: the endpoint's model)."""
    from doctune.local import metrics_url

    _, dedicated = promoted
    models = [t["model_id"] for t in sweep_client.sweep_leaderboard(finished_sweep["id"])["trials"]]
    deps = [sweep_client.deploy(m, name, multiplex=True, min_replicas=1, max_replicas=1,
                                num_cpus=0.25) for m, name in zip(models, ("mux-a", "mux-b"))]
    deps = [_running(sweep_client, d["id"]) for d in deps]
    doc = "The chancellor said the budget would cut taxes for small firms."
    headers = {"Authorization": sweep_client.key}

    def ask(url: str, **extra) -> httpx.Response:
        return httpx.post(url, json={"inputs": [doc], **extra}, headers=headers, timeout=120)

    a, b = ask(deps[0]["url"]), ask(deps[1]["url"])
    assert a.status_code == b.status_code == 200, (a.text, b.text)
    assert a.json()["model_id"] == models[0] and b.json()["model_id"] == models[1]
    third = ask(deps[0]["url"], model=models[2])  # a version named in the request
    assert third.status_code == 200 and third.json()["model_id"] == models[2], third.text
    # the shared replica's adapter gives the winner's answer exactly as its dedicated endpoint does
    alone = ask(dedicated["url"]).json()
    assert alone["model_id"] == models[0]
    for label, p in alone["predictions"][0]["probabilities"].items():
        assert a.json()["predictions"][0]["probabilities"][label] == pytest.approx(p, abs=1e-4)
    api_doc = httpx.get(deps[0]["url"].removesuffix("/predict") + "/openapi.json", timeout=60).json()
    bodies = [schema for schema in api_doc["components"]["schemas"].values()
              if {"inputs", "text"} & set(schema.get("properties", {}))]
    assert bodies and all("model" in b["properties"] for b in bodies)  # the version field is documented on each body
    missing = ask(deps[0]["url"], model="model-nope")
    assert missing.status_code == 404 and missing.json()["error"]["field"] == "model"
    again = ask(deps[0]["url"])
    assert again.status_code == 200 and again.json()["model_id"] == models[0], again.text
    assert httpx.post(deps[0]["url"], json={"inputs": [doc]}).status_code == 401

    platform = Platform(stack)

    def apps() -> dict:
        return platform.runner.applications()

    shared = {name: app for name, app in apps().items() if name.startswith("lora_")}
    assert list(shared) == ["lora_classification_all-minilm-l6-v2"], list(shared)
    replicas = [rep for d in shared["lora_classification_all-minilm-l6-v2"]["deployments"].values()
                for rep in d["replicas"] if rep["state"] == "RUNNING"]
    assert len(replicas) == 1  # one copy of MiniLM for all three adapters

    def pool() -> dict:
        from prometheus_client.parser import text_string_to_metric_families

        text = httpx.get(metrics_url(stack), timeout=30).text
        got = {s.labels["kind"]: s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "ray_doctune_adapter_pool_bytes"}
        return got if got.get("adapters", 0) > 0 and got.get("shared", 0) > 0 else None

    got = poll(pool, 120, "the shared replica's adapter memory gauge", interval=3)
    assert got["adapters"] / 3 / got["shared"] <= 0.02, got  # each adapter costs under 2% of the base
    for d in deps:
        sweep_client.delete_deployment(d["id"])
    for d in deps:
        poll(lambda: sweep_client.get_deployment(d["id"])["status"] == "deleted", 300, "undeploy")
    # the last endpoint on it gone, the shared base application goes too
    poll(lambda: not [n for n in apps() if n.startswith("lora_")], 120, "the shared application's removal")
