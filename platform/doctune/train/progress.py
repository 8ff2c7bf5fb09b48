"""The channel between a job's driver and its rank-0 training worker.

:func:`progress_actor` starts a small Ray actor in the driver's process tree: rank 0
sends it progress (step, loss, evaluations, the final result), the driver reads it and
copies it into the job record, and the driver sets its stop flag to pause the run.

The actor also keeps every training message (loss, learning rate, steps/s, tokens seen, rank 0's
memory) until the driver takes them (``take_series``), for its experiment tracking
(:mod:`doctune.drivers.tracking`): the state alone holds only the newest.

:class:`ProgressReporter` is the workers' side, used by the worker loop
(:mod:`doctune.train.loop`) on every rank: only rank 0 talks to the actor, at most every
:data:`PROGRESS_EVERY_S` (so a step pays no round trip), with the loss and the rate/ETA
over the last :data:`RATE_WINDOW` steps, and polls the stop flag without blocking.
"""

from __future__ import annotations

import os
import time
from collections import deque
from typing import Any

__all__ = ["PROGRESS_EVERY_S", "RATE_WINDOW", "ProgressReporter", "progress_actor"]

RATE_WINDOW = 20  # steps/s and the ETA are measured over this many steps: steady state, not warm-up
PROGRESS_EVERY_S = 1.0  # rank 0 talks to the progress actor at most this often, not on every step
# what the actor keeps of each training message for the driver's experiment tracking, and how many
# messages at most (the driver takes them every couple of seconds: this is hours of headroom)
SERIES_FIELDS = ("step", "loss", "lr", "steps_per_s", "tokens_seen", "memory_mb")
SERIES_KEPT = 10_000


def progress_actor() -> Any:
    """A new ProgressActor handle (``num_cpus=0``: it holds no training resources)."""
    import ray

    @ray.remote(num_cpus=0)
    class ProgressActor:
        """Collects rank 0's progress and carries a stop request from the driver to rank 0."""

        def __init__(self) -> None:
            self.state: dict[str, Any] = {"worker_pids": {}}
            self.version = 0
            self.stop_requested: str | None = None  # "pause" or "cancel"
            # every training message since the driver last took them (its experiment tracking
            # plots each one: the state above keeps only the newest)
            self.series: deque[dict[str, Any]] = deque(maxlen=SERIES_KEPT)

        def update(self, fields: dict[str, Any]) -> None:
            self.state.update(fields)
            self.version += 1
            if fields.get("phase") == "training" and "loss" in fields:
                self.series.append({k: fields.get(k) for k in SERIES_FIELDS})

        def take_series(self) -> list[dict[str, Any]]:
            """The training messages since the last call, oldest first (and forget them)."""
            taken, self.series = list(self.series), deque(maxlen=SERIES_KEPT)
            return taken

        def register_worker(self, rank: int, pid: int) -> None:
            self.state["worker_pids"] = {**self.state["worker_pids"], str(rank): pid}
            self.version += 1

        def get(self) -> tuple[int, dict[str, Any]]:
            return self.version, self.state

        def request_stop(self, kind: str = "pause") -> None:
            """``pause``: checkpoint and stop; ``cancel``: stop at once (the job was cancelled)."""
            self.stop_requested = kind

        def should_stop(self) -> str | None:
            return self.stop_requested

    return ProgressActor.remote()


class ProgressReporter:
    """A training worker's side of the progress channel (every rank has one; only rank 0's
    talks to the actor). ``actor`` None (no driver listening) makes every call a no-op.

    Rank 0's pause flag is read here (:meth:`poll_pause`) but reaches the other ranks
    through the loop's per-step all-reduce, never through the actor."""

    def __init__(self, actor: Any, rank: int) -> None:
        self.actor, self.rank = actor, rank
        self.lead = actor is not None and rank == 0
        self.pause_requested = False
        self.stop_kind: str | None = None  # what the driver asked for: "pause" or "cancel"
        self._stop_ref: Any = None
        self._step_times: deque[float] = deque(maxlen=RATE_WINDOW + 1)
        self._losses: list[float] = []
        self._last_talk = 0.0
        self._timeline: dict[str, float] = {}

    def mark(self, milestone: str, at: float | None = None) -> None:
        """Record when a start-up milestone was reached (wall-clock ``time.time()``, default now) in
        the progress's ``timeline`` (rank 0 only): where a job's time to its first step goes."""
        if self.lead:
            self._timeline[milestone] = time.time() if at is None else at
            self.send(timeline=dict(self._timeline))

    def register_worker(self) -> None:
        """Tell the driver this rank's process id (every rank)."""
        if self.actor is not None:
            self.actor.register_worker.remote(self.rank, os.getpid())

    def send(self, **fields: Any) -> None:
        """Fire-and-forget update of the driver's progress (rank 0 only)."""
        if self.lead:
            self.actor.update.remote(fields)

    def deliver(self, fields: dict[str, Any]) -> None:
        """An update the driver must have before this worker returns (pause, final result)."""
        if self.lead:
            import ray

            ray.get(self.actor.update.remote(fields))

    def start_training(self, now: float) -> None:
        """Start the rate window at ``now`` and start watching the driver's stop flag."""
        self._step_times = deque([now], maxlen=RATE_WINDOW + 1)
        self._losses, self._last_talk = [], 0.0
        self._stop_ref = self.actor.should_stop.remote() if self.lead else None

    def add_loss(self, loss: float) -> None:
        """One micro-batch's loss, for the mean loss of the next training message."""
        self._losses.append(loss)

    def due(self, step: int, total_steps: int, eval_interval: int, now: float) -> bool:
        """Whether this optimizer step talks to the driver: when PROGRESS_EVERY_S has passed,
        at every evaluation step and at the last step."""
        return now - self._last_talk >= PROGRESS_EVERY_S or step >= total_steps or step % eval_interval == 0

    def poll_pause(self) -> bool:
        """Rank 0: pick up the driver's stop flag (a pause or a cancel) if its answer has arrived
        (never waits)."""
        import ray

        if self._stop_ref is not None and ray.wait([self._stop_ref], timeout=0)[0]:
            kind = ray.get(self._stop_ref)
            self.stop_kind = "pause" if kind is True else (kind or None)
            self.pause_requested = self.stop_kind is not None
            self._stop_ref = None if self.pause_requested else self.actor.should_stop.remote()
        return self.pause_requested

    def step_done(self, now: float) -> None:
        """An optimizer step finished at ``now`` (feeds the rate window)."""
        self._step_times.append(now)

    def send_training(self, *, step: int, epoch: int, tokens_seen: int, lr: float, total_steps: int,
                      now: float, memory_mb: float | None = None) -> None:
        """The training message: mean loss since the last one, learning rate, steps/s, ETA and
        ``memory_mb``, rank 0's resident memory now."""
        times = self._step_times
        rate = (len(times) - 1) / max(times[-1] - times[0], 1e-6)
        self.send(
            phase="training",
            step=step,
            epoch=epoch,
            tokens_seen=tokens_seen,
            loss=sum(self._losses) / len(self._losses),  # mean over the steps since the last message
            lr=lr,
            steps_per_s=rate,
            eta_s=(total_steps - step) / rate if rate > 0 else None,
            memory_mb=memory_mb,
        )
        self._losses, self._last_talk = [], now
