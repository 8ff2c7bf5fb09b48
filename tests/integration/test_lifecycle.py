"""The job lifecycle on the real stack: a paused job checkpoints and stops, and
resumes from that checkpoint; an attempt that fails outright is retried as a new
attempt from its last checkpoint, with attempts and checkpoints kept apart."""

from __future__ import annotations

import os
import signal

from doctune.store.objects import ObjectStore

from .conftest import poll, tiny_job

END = ("succeeded", "failed", "cancelled")


def _events(client, job_id):
    return client.request("GET", f"/v1/jobs/{job_id}/events", params={"limit": 1000})["events"]


def test_pause_then_resume_continues_from_the_pause_checkpoint(client_a, bbc_dataset):
    job = client_a.submit_job(tiny_job(bbc_dataset["id"], max_steps=30, checkpoint_interval=100, eval_interval=100))
    poll(lambda: client_a.get_job(job["id"])["progress"].get("step", 0) >= 4, 600, "training to reach step 4", interval=0.5)
    assert client_a.request("POST", f"/v1/jobs/{job['id']}/pause")["pause_requested"] is True
    paused = poll(lambda: (j := client_a.get_job(job["id"]))["status"] in ("paused", *END) and j, 300, "the pause")
    assert paused["status"] == "paused", paused["error"]
    at = paused["progress"]["paused_at"]
    assert 4 <= at < 30 and paused["resume_from"]

    client_a.request("POST", f"/v1/jobs/{job['id']}/resume")
    done = poll(lambda: (j := client_a.get_job(job["id"]))["status"] in END and j, 600, "the resumed job")
    assert done["status"] == "succeeded", done["error"]
    assert done["metrics"]["step"] == 30 and done["metrics"]["resumed_from_step"] == at
    statuses = [e["status"] for e in _events(client_a, job["id"]) if e["kind"] == "status"]
    assert statuses == ["queued", "starting", "running", "paused", "queued", "starting", "running", "succeeded"]


def test_failed_attempt_is_retried_from_its_last_checkpoint(stack, client_a, bbc_dataset):
    spec = tiny_job(bbc_dataset["id"], max_steps=20, checkpoint_interval=5, eval_interval=100, max_failures=0, retries=1)
    job = client_a.submit_job(spec)

    def checkpointed():
        pr = client_a.get_job(job["id"])["progress"]
        return pr.get("last_checkpoint_step", 0) >= 5 and pr.get("step", 0) >= 7 and len(pr.get("worker_pids", {})) == 2 and pr

    progress = poll(checkpointed, 600, "a checkpoint at step 5", interval=0.5)
    os.kill(progress["worker_pids"]["1"], signal.SIGKILL)
    done = poll(lambda: (j := client_a.get_job(job["id"]))["status"] in END and j, 900, "the retried job")
    assert done["status"] == "succeeded", done["error"]
    assert done["attempt"] == 2 and done["metrics"]["step"] == 20
    assert done["metrics"]["resumed_from_step"] >= 5
    reasons = [e["reason"] for e in _events(client_a, job["id"]) if e["kind"] == "status"]
    assert any("attempt 1 failed; retrying as attempt 2 from checkpoint" in r for r in reasons), reasons
    keys = list(ObjectStore(stack).list_keys(f"tenants/team-a/jobs/{job['id']}/checkpoints/"))
    assert any("/attempt-1/" in k for k in keys) and any("/attempt-2/" in k for k in keys)
