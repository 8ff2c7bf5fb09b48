"""When a training worker dies mid-run, Ray Train restarts the worker group and
the job continues from the last checkpoint in the object store: it finishes with
the full step count and does not start over from step 0."""

from __future__ import annotations

import os
import signal

import pytest

from .conftest import QUEUED_S, ahead, in_background, outcome, own_client, poll, tiny_job


# Ray Train's own restart of a killed worker; the platform's retry from a checkpoint runs in CI (test_lifecycle): `make test-full`
pytestmark = pytest.mark.full


@ahead()
def killed_worker(request):
    """Started with the session's other jobs; its worker killed in the background once it checkpointed."""
    stack, client_a = request.getfixturevalue("stack"), request.getfixturevalue("client_a")
    spec = tiny_job(request.getfixturevalue("bbc_dataset")["id"], max_steps=24, checkpoint_interval=6, eval_interval=100,
                    name="resume")
    return client_a, in_background(resumed_from_checkpoint, own_client(stack, client_a), client_a.submit_job(spec))


def test_killed_worker_resumes_from_last_checkpoint(jobs_ahead):
    outcome(jobs_ahead, "killed_worker")


def resumed_from_checkpoint(client_a, job):
    """Kill a worker once a checkpoint is stored and training went past it; the job resumes from it."""
    def checkpointed():
        j = client_a.get_job(job["id"])
        assert j["status"] not in ("failed", "succeeded"), j
        pr = j["progress"]
        return pr.get("last_checkpoint_step", 0) >= 6 and pr.get("step", 0) >= 8 and len(pr.get("worker_pids", {})) == 2 and pr

    progress = poll(checkpointed, QUEUED_S, "a checkpoint at step 6 and training past it", interval=0.5)
    saved_step = progress["last_checkpoint_step"]
    victim = progress["worker_pids"]["1"]
    os.kill(victim, signal.SIGKILL)

    done = poll(lambda: (j := client_a.get_job(job["id"]))["status"] in ("succeeded", "failed") and j, 900,
                "the resumed job to finish", interval=2)
    assert done["status"] == "succeeded", done["error"]
    m = done["metrics"]
    assert m["step"] == 24
    assert m["resumed_from_step"] >= saved_step > 0
    assert victim not in done["progress"]["worker_pids"].values()


def test_resume_picks_the_newest_complete_checkpoint(stack):
    """A checkpoint counts only when every rank's manifest and every file it lists are
    in the store; the newest such one wins over older or half-uploaded ones."""
    import json

    from doctune.store.objects import ObjectStore
    from doctune.train.checkpoints import MANIFEST_PREFIX, STATE_FILE, newest_complete_checkpoint

    store = ObjectStore(stack)
    prefix = "tenants/team-a/jobs/job-fake/checkpoints/attempt-1"

    def write(name, step, ranks, missing=()):
        d = f"{prefix}/checkpoint_{name}"
        files = {0: ["state/mp_rank_00_model_states.pt", "state/zero_pp_rank_0_optim.pt", STATE_FILE],
                 1: ["state/zero_pp_rank_1_optim.pt"]}
        for r in ranks:
            for f in files[r]:
                if f not in missing:
                    store.put_bytes(f"{d}/{f}", json.dumps({"checkpoint_step": step}).encode())
            store.put_bytes(f"{d}/{MANIFEST_PREFIX}{r}.json", json.dumps(files[r]).encode())
        return d

    assert newest_complete_checkpoint(store, prefix, 2) is None
    good = write("a", 6, ranks=(0, 1))
    write("b", 12, ranks=(0,))                                               # rank 1 never got there
    write("c", 18, ranks=(0, 1), missing=("state/zero_pp_rank_1_optim.pt",))  # died mid-upload
    assert newest_complete_checkpoint(store, prefix, 2) == good
    newer = write("d", 24, ranks=(0, 1))
    assert newest_complete_checkpoint(store, prefix, 2) == newer
    store.delete_prefix(prefix + "/")
