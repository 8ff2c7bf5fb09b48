"""`doctune jobs plan` predicts the time to an early-stopping target from how far into the tenant's
earlier runs on the same dataset (same task, base model and method) the dev metric first reached it."""

from __future__ import annotations

from datetime import timedelta

from doctune.config import Settings
from doctune.services import Platform
from doctune.services.plans import reached_at, target_fraction, time_to_target
from doctune.spec import parse_job_spec
from doctune.states import JobState
from doctune.store.db import Job, Tenant, now

SPEC = {"tenant": "team-a", "task": "classification", "dataset": {"id": "ds-bbc"}, "base_model": "all-minilm-l6-v2",
        "tuning": {"method": "lora"}, "epochs": 3, "early_stopping": {"metric": "macro_f1", "target": 0.97}}


def _history(*values: float, every: int = 10) -> list[dict]:
    return [{"step": every * (i + 1), "macro_f1": v} for i, v in enumerate(values)]


def test_the_first_evaluation_at_or_past_the_target_is_where_it_was_reached():
    history = _history(0.5, 0.96, 0.971, 0.95, 0.98)
    assert reached_at(history, "macro_f1", 0.97, "max") == 30
    assert reached_at(history, "macro_f1", 0.99, "max") is None
    assert reached_at([{"step": 5, "loss": 0.4}], "loss", 0.5, "min") == 5


def test_the_plan_scales_the_expected_time_by_where_earlier_runs_reached_the_target(tmp_path, database_url):
    p = Platform(Settings(home=str(tmp_path), database_url=database_url))
    p.db.migrate()
    finished = now()
    runs = [  # (dataset, history, total steps): 40/80 and 60/80 reached it; the other dataset does not count
        ("ds-bbc", _history(0.9, 0.95, 0.96, 0.97, 0.98), 80),
        ("ds-bbc", _history(0.9, 0.95, 0.96, 0.965, 0.969, 0.972), 80),
        ("ds-other", _history(0.99), 80),
    ]
    with p.db.session() as s:
        s.add(Tenant(id="team-a"))
    with p.db.session() as s:
        for i, (ds, history, total) in enumerate(runs):
            s.add(Job(id=f"job-{i}", tenant_id="team-a", task="classification", status=JobState.SUCCEEDED,
                      spec={**SPEC, "dataset": {"id": ds}}, finished_at=finished - timedelta(minutes=i),
                      metrics={"history": history, "total_steps": total, "step": total}))
    spec = parse_job_spec(SPEC)
    found = target_fraction(p, spec)
    assert found == {"fraction": 0.625, "jobs": 2, "reached": 2}  # the median of 0.5 and 0.75
    estimate = time_to_target(p, spec, {"fixed_s": 40, "train_s": 300, "eval_s": 60, "total_s": 400})
    assert estimate["total_s"] == 40 + round(360 * 0.625) and "reached 0.97 in 2 of the 2" in estimate["basis"]
    without = parse_job_spec({**SPEC, "early_stopping": {"metric": "macro_f1"}})
    assert time_to_target(p, without, {"fixed_s": 40, "train_s": 300, "eval_s": 60}) is None
    p.db.dispose()
