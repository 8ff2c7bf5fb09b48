"""Sweep specs are checked field by field; leaderboards rank by the dev metric with ties
broken by cost; a trial stopped early is ranked by its best evaluation."""

from __future__ import annotations

import pytest

from doctune.errors import DoctuneError
from doctune.services.sweeps import rank, trial_spec, winner
from doctune.spec import parse_sweep_spec
from doctune.store.db import Job

JOB = {"task": "classification", "dataset": {"id": "ds-1"}, "max_steps": 10}


def sweep(**kw):
    return parse_sweep_spec({"tenant": "t", "job": JOB, "search_space": {"learning_rate": {"type": "choice", "values": [1e-3]}},
                             **kw})


def test_grid_counts_every_combination_and_trials_apply_dotted_paths():
    s = sweep(algorithm="grid", search_space={"learning_rate": {"type": "choice", "values": [1e-3, 2e-3]},
                                              "tuning.lora.r": {"type": "choice", "values": [4, 8, 16]}})
    assert s.trial_count() == 6
    spec = trial_spec(s, {"learning_rate": 2e-3, "tuning.lora.r": 16})
    assert (spec.tenant, spec.learning_rate, spec.tuning.lora.r) == ("t", 2e-3, 16)
    assert sweep(algorithm="random", num_samples=5).trial_count() == 5


@pytest.mark.parametrize(
    "kw, field",
    [
        ({"search_space": {"learnin_rate": {"type": "choice", "values": [1e-3]}}}, "search_space.learnin_rate"),
        ({"search_space": {"learning_rate": {"type": "choice", "values": [-1]}}}, "search_space.learning_rate"),
        ({"search_space": {"learning_rate": {"type": "uniform", "low": 1e-2, "high": 1e-3}}}, "search_space.learning_rate"),
        ({"search_space": {"learning_rate": {"type": "uniform", "low": 1e-3, "high": 1e-2}}, "algorithm": "grid"},
         "search_space.learning_rate"),
        ({"asha": {"grace_period": 2}, "algorithm": "random"}, "asha"),
        ({"job": {**JOB, "max_steps": 0}}, "job.max_steps"),
        ({"algorithm": "bayes"}, "algorithm"),
    ],
)
def test_bad_sweeps_name_the_field(kw, field):
    with pytest.raises(DoctuneError) as e:
        sweep(**kw)
    assert e.value.field == field, e.value.message


def _job(i, status, dev=None, cpu=10.0, history=None, model=True):
    metrics = {"usage": {"worker_cpu_seconds": cpu}}
    if dev is not None:
        metrics["dev"] = {"macro_f1": dev}
    return Job(id=f"job-{i}", tenant_id="t", task="classification", status=status, sweep_id="sweep-1",
               spec={**JOB, "learning_rate": i / 1000}, metrics=metrics, progress={"history": history or []},
               model_id=f"model-{i}" if model and status == "succeeded" else None, error=None)


def test_rank_by_dev_then_cost_and_the_winner_is_a_finished_trial():
    jobs = [
        _job(1, "succeeded", dev=0.80, cpu=30),
        _job(2, "succeeded", dev=0.90, cpu=50),
        _job(3, "succeeded", dev=0.90, cpu=20),  # ties with job 2, cheaper
        _job(4, "cancelled", history=[{"step": 4, "macro_f1": 0.95}, {"step": 8, "macro_f1": 0.2}]),  # stopped early
        _job(5, "failed"),
    ]
    rows = rank(jobs, "macro_f1", "max", ("learning_rate",))
    assert [r["job_id"] for r in rows] == ["job-4", "job-3", "job-2", "job-1", "job-5"]
    assert rows[0]["dev"] == 0.95 and rows[-1]["dev"] is None and rows[1]["settings"] == {"learning_rate": 0.003}
    assert winner(rows)["job_id"] == "job-3"  # the stopped trial has no model: it cannot win
    lowest = rank(jobs[:2], "macro_f1", "min")
    assert lowest[0]["job_id"] == "job-1"


def test_a_metric_the_task_does_not_report_is_refused_by_name():
    from doctune.tasks import check_metric, get_task

    check_metric(get_task("ner"), "f1", "early_stopping.metric")
    with pytest.raises(DoctuneError) as e:
        check_metric(get_task("summarization"), "macro_f1", "early_stopping.metric")
    assert e.value.field == "early_stopping.metric" and "rougeL" in e.value.message
