"""The job lifecycle on the real stack, on one job (each job started costs this 2-core session tens of
seconds before its first step): it is paused, checkpoints and stops, and resumes from that
checkpoint; then its worker is killed, and the failed attempt is retried as a new attempt from
its last checkpoint, with attempts and checkpoints kept apart. Its model is what
test_deletes.py then deletes."""

from __future__ import annotations

import os
import signal

from doctune.store.objects import ObjectStore

from .conftest import QUEUED_S, ahead, in_background, outcome, own_client, poll, tiny_job

END = ("succeeded", "failed", "cancelled")
# The pause is asked for as soon as the driver runs, so it reaches the worker before its first step (it takes
# 10 s and more to start) and lands at step 1 or 2. After the resume, the worker is killed once a checkpoint of
# the resumed run is stored (every 5 steps) and it trained past it; the retry trains the rest. 40 steps: it must
# not have finished before the kill (a step can take 0.3 s). (A pause that waited for step 4 needed 200 steps
# to be sure the job still trained, and on a loaded CI machine took longer than the test allowed.)
JOB_STEPS = 40
CHECKPOINT_EVERY = 5


def _events(client, job_id):
    return client.request("GET", f"/v1/jobs/{job_id}/events", params={"limit": 1000})["events"]


@ahead("test_lifecycle", "test_deletes")
def paused_then_failed(request):
    """Started with the session's other jobs; paused, resumed, and its worker killed in the background when it
    gets there. One worker, no in-attempt restarts (max_failures 0), one retry."""
    stack, client_a = request.getfixturevalue("stack"), request.getfixturevalue("client_a")
    spec = tiny_job(request.getfixturevalue("bbc_dataset")["id"], max_steps=JOB_STEPS, num_workers=1,
                    checkpoint_interval=CHECKPOINT_EVERY, eval_interval=100, max_failures=0, retries=1)
    return client_a, in_background(pause_resume_then_fail, own_client(stack, client_a), client_a.submit_job(spec))


def lifecycle_job(jobs_ahead) -> tuple[int, dict]:
    """(the step the pause landed at, the job once it succeeded as the API shows it), once the scenario's
    assertions passed."""
    return outcome(jobs_ahead, "paused_then_failed")


def test_pause_then_resume_continues_from_the_pause_checkpoint(client_a, jobs_ahead):
    at, done = lifecycle_job(jobs_ahead)
    events = _events(client_a, done["id"])
    resumed = [e["data"]["step"] for e in events if e["kind"] == "resumed"]
    assert resumed[0] == at, resumed  # the resume started from the pause's checkpoint, not from step 0
    paused = [e["reason"] for e in events if e["kind"] == "status" and e["status"] == "paused"]
    assert len(paused) == 1 and paused[0].startswith(f"paused at step {at}; checkpoint "), paused


def test_failed_attempt_is_retried_from_its_last_checkpoint(stack, client_a, jobs_ahead):
    _, done = lifecycle_job(jobs_ahead)
    assert done["attempt"] == 2 and done["metrics"]["step"] == JOB_STEPS
    assert done["metrics"]["resumed_from_step"] >= CHECKPOINT_EVERY
    events = _events(client_a, done["id"])
    reasons = [e["reason"] for e in events if e["kind"] == "status"]
    assert any("attempt 1 failed; retrying as attempt 2 from checkpoint" in r for r in reasons), reasons
    statuses = [e["status"] for e in events if e["kind"] == "status"]
    assert statuses == ["queued", "starting", "running", "paused", "queued", "starting", "running",
                        "queued", "starting", "running", "succeeded"], statuses
    keys = list(ObjectStore(stack).list_keys(f"tenants/team-a/jobs/{done['id']}/checkpoints/"))
    assert any("/attempt-1/" in k for k in keys) and any("/attempt-2/" in k for k in keys)


def pause_resume_then_fail(client_a, job):
    """Pause once its driver runs, resume, kill its worker after a checkpoint of the resumed run; the retry
    finishes it. Returns (the step the pause landed at, the succeeded job) (read by the tests above, which fail with what failed here)."""
    def driver_running():
        j = client_a.get_job(job["id"])
        assert j["status"] not in END, j  # it must still be training when the pause comes
        return j["status"] == "running"

    poll(driver_running, QUEUED_S, "the job's driver to run", interval=0.5)
    assert client_a.request("POST", f"/v1/jobs/{job['id']}/pause")["pause_requested"] is True
    paused = poll(lambda: (j := client_a.get_job(job["id"]))["status"] in ("paused", *END) and j, 300, "the pause")
    assert paused["status"] == "paused", paused["error"]
    at = paused["progress"]["paused_at"]
    assert 1 <= at < CHECKPOINT_EVERY and paused["resume_from"]

    client_a.request("POST", f"/v1/jobs/{job['id']}/resume")
    _kill_the_worker_after_a_checkpoint(client_a, job["id"])
    done = poll(lambda: (j := client_a.get_job(job["id"]))["status"] in END and j, 900, "the retried job")
    assert done["status"] == "succeeded", done["error"]
    return at, done


def _kill_the_worker_after_a_checkpoint(client_a, job_id: str) -> None:
    def checkpointed():
        j = client_a.get_job(job_id)
        assert j["status"] not in END, j  # it must still be training when the worker is killed
        pr = j["progress"] or {}
        return (j["status"] == "running" and pr.get("last_checkpoint_step", 0) >= CHECKPOINT_EVERY
                and pr.get("step", 0) >= CHECKPOINT_EVERY + 2 and pr.get("worker_pids") and pr)

    progress = poll(checkpointed, 600, "a checkpoint of the resumed run", interval=0.5)
    os.kill(progress["worker_pids"]["0"], signal.SIGKILL)
