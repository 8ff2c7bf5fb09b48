"""Checkpoints of a training run in the object store: save layout, completeness, restore.

Every rank writes its DeepSpeed shard plus a manifest (``doctune_rank<r>.json``) listing
its files; rank 0 also writes the loop's state (``doctune_state.json``). A checkpoint is
complete once every rank's manifest and every file they list exist (S3 objects appear
whole), and :func:`newest_complete_checkpoint` finds the newest such one: what a resumed
or retried attempt starts from. :func:`restored_checkpoint` gives every rank a local copy.

The worker loop (:mod:`doctune.train.loop`) saves with :func:`save_checkpoint` and, when
an attempt starts, restores with :func:`restore_checkpoint`; the job driver
(``doctune.drivers.job``) and the resume tests look checkpoints up with
:func:`newest_complete_checkpoint`.
"""

from __future__ import annotations

import json
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from doctune.store.paths import private_dir, scratch_dir

__all__ = [
    "CKPT_TAG",
    "MANIFEST_PREFIX",
    "STATE_FILE",
    "checkpoint_to_restore",
    "newest_complete_checkpoint",
    "restore_checkpoint",
    "restored_checkpoint",
    "save_checkpoint",
    "upload_checkpoint_with_retry",
]

STATE_FILE = "doctune_state.json"
MANIFEST_PREFIX = "doctune_rank"
CKPT_TAG = "state"


def newest_complete_checkpoint(store, prefix: str | None, world: int) -> str | None:
    """Key prefix of the newest checkpoint under ``prefix`` whose every rank manifest and
    every file those manifests list exist (S3 objects appear whole, so that is complete)."""
    if not prefix:
        return None
    by_dir: dict[str, set[str]] = {}
    for key in store.list_keys(prefix.rstrip("/") + "/"):
        if "/checkpoint_" not in key:
            continue
        head, rest = key.split("/checkpoint_", 1)
        ckpt_dir = f"{head}/checkpoint_{rest.split('/', 1)[0]}"
        by_dir.setdefault(ckpt_dir, set()).add(key[len(ckpt_dir) + 1 :])
    best: tuple[int, str] | None = None
    for ckpt_dir, names in by_dir.items():
        if STATE_FILE not in names or any(f"{MANIFEST_PREFIX}{r}.json" not in names for r in range(world)):
            continue
        listed = set()
        for r in range(world):
            listed.update(json.loads(store.get_bytes(f"{ckpt_dir}/{MANIFEST_PREFIX}{r}.json")))
        if not listed <= names:
            continue
        step = json.loads(store.get_bytes(f"{ckpt_dir}/{STATE_FILE}")).get("checkpoint_step", -1)
        if best is None or step > best[0]:
            best = (step, ckpt_dir)
    return best[1] if best else None


def save_checkpoint(engine: Any, state: dict[str, Any], metrics: dict[str, Any], *, rank: int, dist: Any) -> None:
    """Save the engine (every rank its own shard) and the loop's ``state`` (rank 0, as
    :data:`STATE_FILE`) as one checkpoint, and report it to Ray Train with ``metrics``.

    A collective call: every rank makes it at the same step. ``state`` must carry
    ``checkpoint_step`` (the engine's step): :func:`newest_complete_checkpoint` orders by
    it. Returns once every rank's upload is done."""
    import ray.train

    with tempfile.TemporaryDirectory(prefix="doctune-checkpoint-", dir=scratch_dir()) as tmp:
        engine.save_checkpoint(tmp, tag=CKPT_TAG, exclude_frozen_parameters=True)
        if rank == 0:
            (Path(tmp) / STATE_FILE).write_text(json.dumps(state))
        # this rank's manifest: the checkpoint is complete once every rank's files exist
        files = sorted(str(f.relative_to(tmp)) for f in Path(tmp).rglob("*") if f.is_file())
        (Path(tmp) / f"{MANIFEST_PREFIX}{rank}.json").write_text(json.dumps(files))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp),
                         checkpoint_upload_fn=upload_checkpoint_with_retry)
    dist.barrier()  # every rank's upload is done before anyone calls this checkpoint saved


def upload_checkpoint_with_retry(checkpoint: Any, checkpoint_dir_name: str) -> Any:
    """Ray Train's own upload of a reported checkpoint to the run's storage, retried with
    exponential backoff for up to a minute (:func:`doctune.store.objects.retrying_upload`): an
    S3 server that is down for a while (restarting) pauses training instead of failing the attempt.
    A retry copies every file again, so a half-finished copy is completed."""
    import ray.train

    from doctune.store.objects import retrying_upload

    storage = ray.train.get_context().get_storage()
    for attempt in retrying_upload(f"checkpoint {checkpoint_dir_name}"):
        with attempt:
            return storage.persist_current_checkpoint(checkpoint, checkpoint_dir_name)


def checkpoint_to_restore(store: Any, prefix: str | None, world: int, resume_from: Any = None) -> Any:
    """The checkpoint an attempt starts from, or None for a fresh start.

    The newest *complete* checkpoint this attempt wrote beats Ray's registered one: a
    worker killed right after ``report()`` can leave a newer checkpoint Ray never
    registered. Then Ray's, then ``resume_from`` (a paused or retried job's checkpoint)."""
    import ray.train

    newest = newest_complete_checkpoint(store, prefix, world)
    if newest:
        return ray.train.Checkpoint(path=f"{store.bucket}/{newest}", filesystem=store.pyarrow_fs())
    return ray.train.get_checkpoint() or resume_from


def restore_checkpoint(engine: Any, store: Any, prefix: str | None, world: int, resume_from: Any,
                       dist: Any) -> dict[str, Any] | None:
    """Load the checkpoint :func:`checkpoint_to_restore` picks into ``engine`` (every rank)
    and return the loop state saved with it; None (engine untouched) when there is none."""
    ckpt = checkpoint_to_restore(store, prefix, world, resume_from)
    if ckpt is None:
        return None
    with restored_checkpoint(ckpt, dist) as d:
        engine.load_checkpoint(d, tag=CKPT_TAG, load_module_strict=False, load_lr_scheduler_states=True)
        return json.loads((Path(d) / STATE_FILE).read_text())


@contextmanager
def restored_checkpoint(ckpt: Any, dist: Any) -> Iterator[str]:
    """A local copy of ``ckpt`` for every rank: the first rank on each node downloads it, the
    others wait at a barrier, and it is deleted once every rank has loaded it. (Ray's
    ``Checkpoint.as_directory`` shares one copy per node too, but its cleanup can delete the
    copy while another worker on the node is still about to read it.)"""
    import hashlib
    import shutil

    import ray.train

    local = private_dir("cache", "restore") / hashlib.sha1(str(ckpt.path).encode()).hexdigest()[:16]
    first = ray.train.get_context().get_local_rank() == 0
    if first:
        shutil.rmtree(local, ignore_errors=True)  # a copy a crashed attempt left behind
        ckpt.to_directory(str(local))
    dist.barrier()
    try:
        yield str(local)
    finally:
        dist.barrier()
        if first:
            shutil.rmtree(local, ignore_errors=True)
