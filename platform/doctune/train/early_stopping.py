"""Early stopping of a training run on its dev metrics, and the reason it stopped.

:class:`EarlyStopper` applies a JobSpec's ``early_stopping`` rule (metric, mode,
patience, min_delta) to each dev evaluation the worker loop (:mod:`doctune.train.loop`)
runs, on every rank alike. Its counters travel in the checkpoint's state file
(``best`` and ``bad_evals`` of ``doctune_state.json``), so a resumed run carries on
counting where it left off. When it stops, :attr:`EarlyStopper.reason` says why, in
words and as plain data (:class:`EarlyStopReason`) for the driver to record.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

from doctune.spec import EarlyStoppingSpec

__all__ = ["EarlyStopReason", "EarlyStopper"]


@dataclass(frozen=True)
class EarlyStopReason:
    """Why a run stopped early: its dev ``metric`` did not beat ``best`` by more than
    ``min_delta`` for ``patience`` evaluations in a row, the last one at ``step``."""

    metric: str
    mode: str
    best: float
    last: float
    patience: int
    min_delta: float
    step: int | None = None
    target: float | None = None

    def __str__(self) -> str:
        at = f" (stopped at step {self.step})" if self.step is not None else ""
        if self.target is not None:
            reached = "at least" if self.mode == "max" else "at most"
            return f"dev {self.metric} reached its target: {self.last:.6g}, {reached} {self.target:g}{at}"
        direction = "rise above" if self.mode == "max" else "fall below"
        margin = f" by more than {self.min_delta:g}" if self.min_delta else ""
        return (f"dev {self.metric} did not {direction} its best {self.best:.6g}{margin} for "
                f"{self.patience} evaluation{'s' if self.patience != 1 else ''} in a row; "
                f"last {self.last:.6g}{at}")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "message": str(self)}


class EarlyStopper:
    """Counts dev evaluations without improvement and says when to stop.

    ``rule`` None (no early stopping in the spec) never stops and leaves its counters
    as they were, so they round-trip through checkpoints untouched.
    """

    def __init__(self, rule: EarlyStoppingSpec | None, best: float | None = None, bad_evals: int = 0) -> None:
        self.rule = rule
        self.best = best
        self.bad_evals = bad_evals
        self.reason: EarlyStopReason | None = None

    @classmethod
    def from_state(cls, rule: EarlyStoppingSpec | None, state: Mapping[str, Any]) -> EarlyStopper:
        """The stopper a checkpoint's state (as :meth:`state` wrote it) describes."""
        return cls(rule, best=state.get("best"), bad_evals=state.get("bad_evals", 0))

    def state(self) -> dict[str, Any]:
        """The counters a checkpoint carries (JSON-serializable)."""
        return {"best": self.best, "bad_evals": self.bad_evals}

    @property
    def stopped(self) -> bool:
        return self.reason is not None

    def is_improvement(self, value: float) -> bool:
        rule = self.rule
        if rule is None or self.best is None:
            return True
        return value > self.best + rule.min_delta if rule.mode == "max" else value < self.best - rule.min_delta

    def reaches_target(self, value: float) -> bool:
        rule = self.rule
        if rule is None or rule.target is None:
            return False
        return value >= rule.target if rule.mode == "max" else value <= rule.target

    def observe(self, dev: Mapping[str, Any], step: int | None = None) -> bool:
        """Take one dev evaluation's metrics; True when the run should stop now: the metric
        reached the rule's ``target``, or did not improve for ``patience`` evaluations."""
        rule = self.rule
        if rule is None:
            return False
        value = dev[rule.metric]
        if self.is_improvement(value):
            self.best, self.bad_evals = value, 0
        else:
            self.bad_evals += 1
        target_met = self.reaches_target(value)
        if target_met or self.bad_evals >= rule.patience:
            self.reason = EarlyStopReason(metric=rule.metric, mode=rule.mode, best=self.best, last=value,
                                          patience=rule.patience, min_delta=rule.min_delta, step=step,
                                          target=rule.target if target_met else None)
            return True
        return False
