"""What the datasets and jobs pages make of the API's answers, without a server: a file's preview (CSV
and JSONL, Chinese intact), the class balance a task reported, a job's header with why it waits, its
loss and dev curves from its events, where its TensorBoard logs and MLflow run are, and its report with
per-class metrics and confusion matrix."""

from __future__ import annotations

import json

from doctune.console.pages import datasets, jobs

JOB = {
    "id": "job_1", "task": "classification", "status": "succeeded", "spec": {"name": "news"}, "error": None,
    "model_id": "m_1", "progress": {"step": 40, "total_steps": 40, "loss": 0.25},
    "report": {"baseline": "untrained_head", "metrics": {"macro_f1": {"baseline": 0.2, "fine_tuned": 0.9}}},
    "metrics": {"test": {"macro_f1": 0.9, "per_class": {"体育": {"f1": 0.95, "support": 4}, "财经": {"f1": 0.85, "support": 3}},
                         "confusion_matrix": {"labels": ["体育", "财经"], "matrix": [[4, 0], [1, 2]]}}},
}
EVENTS = [
    {"at": "2026-01-01T00:00:00", "kind": "status", "status": "queued", "reason": "submitted", "data": {}},
    {"at": "2026-01-01T00:00:05", "kind": "progress", "status": None, "reason": None, "data": {"step": 10, "loss": 1.2}},
    {"at": "2026-01-01T00:00:09", "kind": "progress", "status": None, "reason": None, "data": {"step": 20, "loss": 0.6}},
    {"at": "2026-01-01T00:00:10", "kind": "eval", "status": None, "reason": None,
     "data": {"step": 20, "macro_f1": 0.7, "accuracy": 0.75, "loss": 0.5}},
]


def test_preview_reads_the_first_rows_of_csv_and_jsonl_with_chinese_intact(tmp_path):
    csv_file = tmp_path / "news.csv"
    csv_file.write_text('text,label\n"中文新闻, 第一条",体育\nsecond,财经\n', encoding="utf-8")
    frame = datasets.preview_rows(csv_file)
    assert list(frame.columns) == ["text", "label"] and frame.iloc[0]["text"] == "中文新闻, 第一条"
    jsonl = tmp_path / "ner.jsonl"
    jsonl.write_text("".join(json.dumps({"tokens": ["张三", "来了"], "tags": ["B-PER", "O"]}, ensure_ascii=False) + "\n"
                             for _ in range(15)), encoding="utf-8")
    frame = datasets.preview_rows(jsonl)
    assert len(frame) == datasets.PREVIEW_ROWS and json.loads(frame.iloc[0]["tokens"]) == ["张三", "来了"]


def test_the_class_balance_is_whatever_counts_the_task_reported():
    assert datasets._balance({"label_counts": {"sport": 5, "tech": 2}}).to_dict("list") == {"label": ["sport", "tech"], "count": [5, 2]}
    assert datasets._balance({"entity_counts": {"PER": 3}}).to_dict("list") == {"label": ["PER"], "count": [3]}
    assert datasets._balance({"language": "zh"}).empty
    assert datasets._name_from(datasets.Path("/tmp/My News 2024.jsonl")) == "my-news-2024"


def test_a_queued_job_says_why_it_waits():
    queued = {**JOB, "status": "queued", "progress": {"queue_reason": "team-a is at its quota of 1 concurrent job"}}
    assert "waiting: team-a is at its quota" in jobs.header(queued)
    row = jobs.jobs_frame([queued]).iloc[0]
    assert row["status"] == "queued" and row["waiting because"].startswith("team-a is at its quota")


def test_curves_come_from_progress_and_eval_events():
    assert jobs.loss_frame(EVENTS).to_dict("list") == {"step": [10, 20], "loss": [1.2, 0.6]}
    dev = jobs.dev_frame(EVENTS)
    assert set(dev["metric"]) == {"macro_f1", "accuracy"} and "loss" not in set(dev["metric"])
    timeline = jobs.events_frame(EVENTS)
    assert timeline.iloc[0]["kind"] == "eval" and timeline.iloc[-1]["reason"] == "submitted"  # newest first


def test_the_report_puts_baseline_beside_fine_tuned_with_per_class_and_confusion_matrix():
    compare, per_class, confusion = jobs.report_frames(JOB)
    assert compare.values.tolist() == [["macro_f1", 0.2, 0.9]]
    assert per_class[""].tolist() == ["体育", "财经"] and per_class["f1"].tolist() == [0.95, 0.85]
    assert list(confusion.columns) == ["gold \\ predicted", "体育", "财经"]
    assert confusion.values.tolist() == [["体育", 4, 0], ["财经", 1, 2]]
    assert "step 40/40 (100%)" in jobs.header(JOB) and "m_1" in jobs.header(JOB)


def test_the_job_view_says_how_to_see_its_tensorboard_logs_and_names_its_mlflow_run():
    text = jobs.tracking(JOB)
    assert "`doctune jobs tensorboard job_1`" in text and "MLflow" not in text
    logged = {**JOB, "metrics": {**JOB["metrics"], "mlflow": {"run_id": "r123", "experiment": "doctune/team-a"}}}
    assert "run `r123` in experiment `doctune/team-a`" in jobs.tracking(logged)
    assert jobs.tracking({**JOB, "status": "queued"}) == ""  # nothing is logged before the job starts
