"""The job lifecycle on the real stack: a paused job checkpoints and stops, and
resumes from that checkpoint; an attempt that fails outright is retried as a new
attempt from its last checkpoint, with attempts and checkpoints kept apart."""

from __future__ import annotations

import os
import signal

from doctune.store.objects import ObjectStore

from .conftest import QUEUED_S, ahead, in_background, outcome, own_client, poll, tiny_job

END = ("succeeded", "failed", "cancelled")
# the pause is asked for as soon as the driver runs, so it reaches the workers before their first step (they
# take 10 s and more to start) and lands at step 1 or 2; a few steps more are left for the resumed attempt.
# (It used to wait for step 4 and needed 200 steps to be sure it was still training: 196 steps after the
# resume, which on a loaded CI machine took longer than the 600 s the test allowed.)
PAUSED_JOB_STEPS = 12


def _events(client, job_id):
    return client.request("GET", f"/v1/jobs/{job_id}/events", params={"limit": 1000})["events"]


@ahead()
def pause_resume(request):
    """Started with the session's other jobs; paused and resumed in the background when it gets there."""
    stack, client_a = request.getfixturevalue("stack"), request.getfixturevalue("client_a")
    job = client_a.submit_job(tiny_job(request.getfixturevalue("bbc_dataset")["id"], max_steps=PAUSED_JOB_STEPS,
                                       num_workers=1, checkpoint_interval=100, eval_interval=100))
    return client_a, in_background(pause_then_resume, own_client(stack, client_a), job)


def test_pause_then_resume_continues_from_the_pause_checkpoint(jobs_ahead):
    outcome(jobs_ahead, "pause_resume")


def pause_then_resume(client_a, job):
    """Pause once its driver runs, resume from the pause's checkpoint: the test above reads what failed here."""
    def driver_running():
        j = client_a.get_job(job["id"])
        assert j["status"] not in END, j  # it must still be training when the pause comes
        return j["status"] == "running"

    poll(driver_running, QUEUED_S, "the job's driver to run", interval=0.5)
    assert client_a.request("POST", f"/v1/jobs/{job['id']}/pause")["pause_requested"] is True
    paused = poll(lambda: (j := client_a.get_job(job["id"]))["status"] in ("paused", *END) and j, 300, "the pause")
    assert paused["status"] == "paused", paused["error"]
    at = paused["progress"]["paused_at"]
    assert 1 <= at < PAUSED_JOB_STEPS and paused["resume_from"]

    client_a.request("POST", f"/v1/jobs/{job['id']}/resume")
    done = poll(lambda: (j := client_a.get_job(job["id"]))["status"] in END and j, 600, "the resumed job")
    assert done["status"] == "succeeded", done["error"]
    assert done["metrics"]["step"] == PAUSED_JOB_STEPS and done["metrics"]["resumed_from_step"] == at
    statuses = [e["status"] for e in _events(client_a, job["id"]) if e["kind"] == "status"]
    assert statuses == ["queued", "starting", "running", "paused", "queued", "starting", "running", "succeeded"]


@ahead()
def failed_attempt(request):
    """Started with the session's other jobs; a worker killed in the background once it checkpointed."""
    stack, client_a = request.getfixturevalue("stack"), request.getfixturevalue("client_a")
    # one worker, 40 steps: killed at step 7 or so, it must not have finished first (a step can take 0.3 s)
    spec = tiny_job(request.getfixturevalue("bbc_dataset")["id"], max_steps=40, checkpoint_interval=5, eval_interval=100,
                    num_workers=1, max_failures=0, retries=1)
    return client_a, in_background(retried_from_checkpoint, stack, own_client(stack, client_a), client_a.submit_job(spec))


def test_failed_attempt_is_retried_from_its_last_checkpoint(jobs_ahead):
    outcome(jobs_ahead, "failed_attempt")


def retried_from_checkpoint(stack, client_a, job):
    """Kill a worker once a checkpoint is stored; the retry resumes from it (read by the test above)."""
    def checkpointed():
        j = client_a.get_job(job["id"])
        assert j["status"] not in END, j  # it must still be training when the worker is killed
        pr = j["progress"]
        return pr.get("last_checkpoint_step", 0) >= 5 and pr.get("step", 0) >= 7 and pr.get("worker_pids") and pr

    progress = poll(checkpointed, QUEUED_S, "a checkpoint at step 5", interval=0.5)
    os.kill(progress["worker_pids"]["0"], signal.SIGKILL)
    done = poll(lambda: (j := client_a.get_job(job["id"]))["status"] in END and j, 900, "the retried job")
    assert done["status"] == "succeeded", done["error"]
    assert done["attempt"] == 2 and done["metrics"]["step"] == 40
    assert done["metrics"]["resumed_from_step"] >= 5
    reasons = [e["reason"] for e in _events(client_a, job["id"]) if e["kind"] == "status"]
    assert any("attempt 1 failed; retrying as attempt 2 from checkpoint" in r for r in reasons), reasons
    keys = list(ObjectStore(stack).list_keys(f"tenants/team-a/jobs/{job['id']}/checkpoints/"))
    assert any("/attempt-1/" in k for k in keys) and any("/attempt-2/" in k for k in keys)
