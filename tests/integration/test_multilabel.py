"""A multi-label job end to end on real BBC articles: each article's topic plus a second,
independent label ("uk" when it mentions Britain), trained through Ray with binary
cross-entropy; the report carries micro- and macro-F1 beside the baseline."""

from __future__ import annotations

import pytest

from doctune.data import to_jsonl

from .conftest import ahead, finished, tenant_client, tiny_job


# multi-label classification, a variant of the classification job CI trains: `make test-full`
pytestmark = pytest.mark.full


@ahead()
def multilabel_training(request):
    client = tenant_client(request, "team-multi")
    rows = [{"text": r["text"], "labels": [r["label"]] + (["uk"] if any(w in r["text"] for w in ("UK", "Britain", "British")) else [])}
            for r in request.getfixturevalue("bbc_small")]
    ds = client.upload_dataset("bbc-multi", "classification", {"data": to_jsonl(rows)}, seed=42)
    return client, client.submit_job(tiny_job(ds["id"], num_workers=1, micro_batch_size=8, max_steps=12, eval_interval=12, checkpoint_interval=100)), ds


def test_multi_label_job_reports_micro_and_macro_f1(jobs_ahead):
    _, job, ds = finished(jobs_ahead, "multilabel_training")
    assert ds["info"]["multi_label"] is True and "uk" in ds["info"]["labels"]
    metrics = job["report"]["metrics"]
    assert {"micro_f1", "macro_f1", "accuracy"} <= set(metrics)
    # binary cross-entropy on the test split falls from the untrained head's
    assert metrics["loss"]["fine_tuned"] < metrics["loss"]["baseline"]
    assert set(job["metrics"]["test"]["per_class"]) == set(ds["info"]["labels"])
