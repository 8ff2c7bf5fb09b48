"""EarlyStopper stops a run after `patience` dev evaluations without an improvement larger
than `min_delta` (in either direction), keeps counting across a checkpoint round-trip
exactly as an uninterrupted run would, and says why it stopped."""

from __future__ import annotations

import json

import pytest

from doctune.spec import EarlyStoppingSpec
from doctune.train.early_stopping import EarlyStopper
from doctune.train.loop import TrainingState


def _stops_at(stopper: EarlyStopper, values: list[float], metric: str) -> int | None:
    """The 1-based evaluation at which ``stopper`` says stop, or None."""
    for i, v in enumerate(values, start=1):
        if stopper.observe({metric: v, "loss": 0.0}, step=i * 10):
            return i
    return None


def test_max_mode_stops_after_patience_evaluations_without_a_new_best():
    stopper = EarlyStopper(EarlyStoppingSpec(metric="macro_f1", mode="max", patience=2))
    assert _stops_at(stopper, [0.5, 0.6, 0.59, 0.7, 0.7, 0.65], "macro_f1") == 6
    assert stopper.best == 0.7 and stopper.bad_evals == 2 and stopper.stopped


def test_min_mode_counts_a_rise_as_no_improvement():
    stopper = EarlyStopper(EarlyStoppingSpec(metric="loss", mode="min", patience=3))
    values = [2.0, 1.5, 1.6, 1.4, 1.45, 1.5, 1.41]
    for v in values:
        stopped = stopper.observe({"loss": v})
    assert stopped and stopper.best == 1.4 and stopper.bad_evals == 3


@pytest.mark.parametrize(("mode", "values", "expected"), [
    ("max", [0.50, 0.505, 0.509, 0.52], 3),  # +0.005 and +0.009 are within min_delta=0.01 of 0.50
    ("min", [1.00, 0.995, 0.99, 0.98], 3),   # -0.005, -0.01: not more than min_delta below 1.00
])
def test_min_delta_ignores_small_improvements(mode, values, expected):
    stopper = EarlyStopper(EarlyStoppingSpec(metric="m", mode=mode, patience=2, min_delta=0.01))
    assert _stops_at(stopper, values, "m") == expected
    assert stopper.best == values[0]


def test_an_improvement_resets_the_count():
    stopper = EarlyStopper(EarlyStoppingSpec(metric="f1", mode="max", patience=2))
    assert _stops_at(stopper, [0.3, 0.2, 0.4, 0.1, 0.35], "f1") == 5
    assert stopper.best == 0.4


def test_without_a_rule_it_never_stops_and_keeps_its_counters():
    stopper = EarlyStopper(None, best=0.8, bad_evals=1)
    assert _stops_at(stopper, [0.1] * 10, "macro_f1") is None
    assert stopper.state() == {"best": 0.8, "bad_evals": 1} and stopper.reason is None


def test_state_round_trips_through_a_checkpoint_and_counting_continues():
    """A run checkpointed mid-way (state → JSON → state) stops at the same evaluation as an
    uninterrupted one."""
    rule = EarlyStoppingSpec(metric="macro_f1", mode="max", patience=3, min_delta=0.001)
    values = [0.4, 0.5, 0.49, 0.5005, 0.6, 0.59, 0.58, 0.6, 0.61]
    uninterrupted = _stops_at(EarlyStopper(rule), values, "macro_f1")

    first = EarlyStopper(rule)
    assert _stops_at(first, values[:4], "macro_f1") is None
    saved = TrainingState(stopper=first, history=[{"step": 40}], checkpoint_step=40, tokens_seen=1234).to_dict()
    assert list(saved) == ["history", "best", "bad_evals", "baseline", "checkpoint_step", "tokens_seen"]
    assert (saved["best"], saved["bad_evals"]) == (0.5, 2)
    restored = TrainingState.from_dict(json.loads(json.dumps(saved)), rule)
    assert restored.to_dict() == saved
    later = _stops_at(restored.stopper, values[4:], "macro_f1")
    assert uninterrupted == 8 and later is not None and 4 + later == uninterrupted


def test_state_from_a_fresh_checkpoint_without_counters():
    restored = EarlyStopper.from_state(EarlyStoppingSpec(metric="f1"), {"history": []})
    assert (restored.best, restored.bad_evals) == (None, 0)


def test_the_reason_names_the_metric_its_best_value_and_the_patience():
    stopper = EarlyStopper(EarlyStoppingSpec(metric="macro_f1", mode="max", patience=2, min_delta=0.01))
    assert stopper.reason is None
    _stops_at(stopper, [0.8, 0.805, 0.79], "macro_f1")
    reason = stopper.reason
    assert reason is not None
    assert (reason.metric, reason.mode, reason.best, reason.last, reason.patience, reason.min_delta, reason.step) == (
        "macro_f1", "max", 0.8, 0.79, 2, 0.01, 30)
    text = str(reason)
    assert "macro_f1" in text and "0.8" in text and "2 evaluations" in text and "step 30" in text
    assert json.loads(json.dumps(reason.to_dict()))["message"] == text


def test_a_missing_metric_is_an_error_not_a_silent_no_stop():
    stopper = EarlyStopper(EarlyStoppingSpec(metric="macro_f1"))
    with pytest.raises(KeyError):
        stopper.observe({"loss": 0.3})


@pytest.mark.parametrize(("mode", "values", "expected"), [
    ("max", [0.80, 0.93, 0.97, 0.99], 3),  # stops on the first evaluation at or above 0.97
    ("min", [0.9, 0.5, 0.2, 0.1], 3),      # stops on the first loss at or below 0.2
])
def test_a_target_stops_the_run_as_soon_as_the_dev_metric_reaches_it(mode, values, expected):
    target = 0.97 if mode == "max" else 0.2
    stopper = EarlyStopper(EarlyStoppingSpec(metric="m", mode=mode, patience=100, target=target))
    assert _stops_at(stopper, values, "m") == expected
    assert "reached its target" in str(stopper.reason) and stopper.reason.to_dict()["target"] == target


def test_without_reaching_its_target_patience_still_stops_the_run():
    stopper = EarlyStopper(EarlyStoppingSpec(metric="f1", mode="max", patience=2, target=0.99))
    assert _stops_at(stopper, [0.5, 0.6, 0.55, 0.58], "f1") == 4
    assert "did not rise above" in str(stopper.reason) and stopper.reason.target is None
