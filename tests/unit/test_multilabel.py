"""Multi-label classification: validation, multi-hot targets, BCE, thresholded predictions
and micro/macro-F1 with subset accuracy."""

from __future__ import annotations

import pytest
import torch

from doctune.data import parse_jsonl, split_records, validate_splits
from doctune.errors import DoctuneError
from doctune.tasks import get_task
from doctune.base_models import resolve_base_model

CLS = get_task("classification")


def docs(n=30):
    topics = ["sport", "politics", "tech"]
    return [{"text": f"document {i} about {topics[i % 3]}", "labels": [topics[i % 3]] + (["uk"] if i % 2 else [])}
            for i in range(n)]


def test_records_take_label_or_labels_not_both():
    assert CLS.validate_record({"text": "x", "labels": ["b", "a", "a"]}, "data line 1") == {"text": "x", "labels": ["a", "b"]}
    with pytest.raises(DoctuneError, match="only one of 'label'") as e:
        CLS.validate_record({"text": "x", "label": "a", "labels": ["a"]}, "data line 3")
    assert e.value.field == "labels"
    with pytest.raises(DoctuneError, match="line 2: 'labels' must be a list") as e:
        CLS.validate_record({"text": "x", "labels": "a,b"}, "data line 2")
    with pytest.raises(DoctuneError, match="missing 'label'"):
        CLS.validate_record({"text": "x"}, "data line 4")


def test_a_dataset_is_single_or_multi_label_throughout():
    splits = split_records(docs(), "classification", seed=1)
    info = validate_splits(splits, "classification")
    assert info["multi_label"] is True and info["labels"] == ["politics", "sport", "tech", "uk"]
    splits["dev"][0] = {"text": "odd one", "label": "sport"}
    with pytest.raises(DoctuneError, match="dev record 1: uses label but the dataset is multi-label"):
        validate_splits(splits, "classification")


def test_jsonl_upload_path_accepts_multi_label():
    data = b'{"text": "a", "labels": ["x"]}\n{"text": "b", "labels": []}\n'
    assert [r["labels"] for r in parse_jsonl(data, "classification", "data")] == [["x"], []]


def test_multi_hot_targets_bce_loss_and_thresholded_metrics():
    base = resolve_base_model("all-minilm-l6-v2")
    info = validate_splits(split_records(docs(), "classification", seed=1), "classification")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    ex = CLS.encode(docs(4), tok, info, 32)
    assert ex[1]["labels"] == [1.0, 0.0, 0.0, 1.0]  # politics + uk
    batch = CLS.collate(ex, tok)
    assert batch["labels"].dtype == torch.float32 and batch["labels"].shape == (4, 4)
    model = CLS.build_model(base, info)
    assert model.config.problem_type == "multi_label_classification"
    out = model(**batch)
    assert torch.isfinite(out.loss)
    pred, gold = CLS.predictions(out, batch)
    assert all(set(row) <= {0, 1} and len(row) == 4 for row in pred) and gold[1] == [1, 0, 0, 1]
    m = CLS.metrics([[0, 1, 0, 1], [1, 0, 0, 0]], [[0, 1, 0, 1], [1, 0, 0, 1]], info)
    assert m["accuracy"] == 0.5  # subset accuracy: the second document misses "uk"
    assert m["micro_f1"] == pytest.approx(2 * 3 / (2 * 3 + 1)) and 0 < m["macro_f1"] < 1
    [p] = CLS.predict(model.eval(), tok, ["a document"], {"labels": info["labels"]}, 32)
    assert set(p["probabilities"]) == set(info["labels"]) and set(p["labels"]) <= set(info["labels"])
