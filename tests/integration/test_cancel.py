"""Cancels stop work on the real stack: a sweep's trial (which has no Ray job of its own to stop)
that is cancelled while it trains stops at its next progress report — a few steps, not the
hundreds it had left — and registers no model; cancelling the sweep then cancels the rest of it."""

from __future__ import annotations

import math

import pytest

from doctune.corpora import load_bbc_news
from doctune.data import to_jsonl
from doctune.drivers.job import PUMP_EVERY_S
from doctune.train.progress import PROGRESS_EVERY_S

from .conftest import QUEUED_S, ahead, in_background, new_tenant, outcome, own_client, poll, tiny_job

ENDED = ("succeeded", "failed", "cancelled")


# a third sweep, whose trial must reach its third step while the session's jobs train: `make test-full`
# (CI's run cancels running jobs through the API in test_quotas and through the operator in test_operator)
pytestmark = pytest.mark.full


@ahead()
def cancelled_trial(request):
    """Submitted with the session's other jobs; its trial is cancelled in the background as soon as it trains."""
    stack = request.getfixturevalue("stack")
    client = new_tenant(stack, request.getfixturevalue("admin"), "team-cancel")
    ds = client.upload_dataset("bbc-cancel", "classification", {"data": to_jsonl(load_bbc_news(8))}, seed=5)
    job = tiny_job(ds["id"], num_workers=1, max_steps=50000, eval_interval=100000, checkpoint_interval=100000)
    job.pop("learning_rate")
    sweep = client.submit_sweep({"job": job, "algorithm": "grid", "max_concurrent_trials": 1,
                                 "search_space": {"learning_rate": {"type": "choice", "values": [1e-3, 2e-3]}}})
    return client, in_background(cancel_a_training_trial, own_client(stack, client), sweep, job)


def test_a_cancelled_trial_stops_at_its_next_progress_report_and_its_sweep_cancels(jobs_ahead):
    outcome(jobs_ahead, "cancelled_trial")


def cancel_a_training_trial(client, sweep, job):
    """Cancel a sweep's trial 3 steps into training, then the sweep (read by the test above)."""
    def a_trial_training():
        for row in client.sweep_leaderboard(sweep["id"])["trials"]:
            trial = client.get_job(row["job_id"])
            if trial["status"] == "running" and trial["progress"].get("phase") == "training" \
                    and trial["progress"].get("step", 0) >= 3:
                return trial
        return None

    trial = poll(a_trial_training, QUEUED_S, "a trial to train a few steps", interval=0.5)
    cancelled = client.cancel_job(trial["id"])
    assert cancelled["status"] == "cancelled"
    at_cancel = cancelled["progress"]["step"]
    rate = cancelled["progress"].get("steps_per_s") or 1.0
    stopped = poll(lambda: (j := client.get_job(trial["id"]))["progress"].get("phase") == "cancelled" and j,
                   120, "the trial's workers to stop", interval=0.5)
    # the cancel reaches rank 0 through the driver's next copy of progress and rank 0's next report
    allowance = math.ceil(rate * (PUMP_EVERY_S + PROGRESS_EVERY_S + 2)) + 2
    assert stopped["progress"]["step"] - at_cancel <= allowance, (at_cancel, stopped["progress"], allowance)
    assert stopped["progress"]["step"] < job["max_steps"] and stopped["status"] == "cancelled"

    client.cancel_sweep(sweep["id"])
    ended = poll(lambda: (b := client.sweep_leaderboard(sweep["id"]))["status"] == "cancelled"
                 and all(t["status"] in ENDED for t in b["trials"]) and b, 120, "the sweep and its trials to end")
    assert {t["status"] for t in ended["trials"]} == {"cancelled"}
    assert all(t["model_id"] is None for t in ended["trials"])
    assert client.list_models() == []  # no trial registered a model
