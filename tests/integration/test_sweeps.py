"""Sweeps: Ray Tune runs trials of a job over a search space; every trial is a job of the
tenant on the same Ray Train + DeepSpeed + LoRA path; the leaderboard ranks them on dev and
the sweep records the winner; concurrent trials stay within the tenant's job quota."""

from __future__ import annotations

from datetime import datetime

import pytest

from doctune.data import load_bbc_news, to_jsonl
from doctune.errors import DoctuneError

from .conftest import new_tenant, poll, tiny_job

LRS = [1e-6, 2e-3, 4e-3]  # a learning rate too small to move the untrained head, and two that train


@pytest.fixture(scope="module")
def sweep_client(stack, admin):
    return new_tenant(stack, admin, "team-sweeps")  # default quota: 2 concurrent jobs


@pytest.fixture(scope="module")
def finished_sweep(sweep_client):
    ds = sweep_client.upload_dataset("bbc-sweep", "classification", {"data": to_jsonl(load_bbc_news(limit_per_class=16))},
                                     seed=3)
    job = tiny_job(ds["id"], max_steps=8, eval_interval=4, checkpoint_interval=100)
    job.pop("learning_rate")
    sweep = sweep_client.submit_sweep({"name": "lr search", "job": job, "algorithm": "grid", "max_concurrent_trials": 3,
                                       "search_space": {"learning_rate": {"type": "choice", "values": LRS}}})
    assert sweep["status"] in ("queued", "running")
    done = poll(lambda: (s := sweep_client.get_sweep(sweep["id"]))["status"] not in ("queued", "running") and s, 1200, "sweep")
    assert done["status"] == "succeeded", done["error"]
    return done


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


def test_asha_stops_weak_trials_early_and_still_picks_a_finished_winner(sweep_client, finished_sweep):
    job = sweep_client.get_job(finished_sweep["best_job_id"])["spec"]
    job.pop("tenant")
    job.update(max_steps=10, eval_interval=2)
    sweep = sweep_client.submit_sweep({"job": job, "algorithm": "asha", "num_samples": 3, "max_concurrent_trials": 2,
                                       "asha": {"grace_period": 1, "reduction_factor": 2},
                                       "search_space": {"learning_rate": {"type": "loguniform", "low": 1e-7, "high": 5e-3}}})
    done = poll(lambda: (s := sweep_client.get_sweep(sweep["id"]))["status"] not in ("queued", "running") and s, 1200, "asha")
    assert done["status"] == "succeeded", done["error"]
    trials = sweep_client.sweep_leaderboard(sweep["id"])["trials"]
    assert len(trials) == 3
    stopped = [t for t in trials if t["stopped_early"]]
    for t in stopped:  # stopped by ASHA: cancelled before the last step, with its evaluations kept
        j = sweep_client.get_job(t["job_id"])
        assert j["status"] == "cancelled" and j["error"]["code"] == "stopped_early" and t["dev"] is not None
        assert j["progress"]["step"] < 10
    assert all(t["status"] == "succeeded" for t in trials if not t["stopped_early"])
    finished = [t for t in trials if t["status"] == "succeeded"]
    assert done["best_job_id"] == finished[0]["job_id"] and finished[0]["dev"] == max(t["dev"] for t in finished)
