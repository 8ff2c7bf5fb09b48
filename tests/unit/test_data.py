"""Dataset validation finds every problem before anything is stored, naming the
file, line and field; splits are seeded and stratified."""

import json
from collections import Counter

import pytest

from doctune.data import parse_jsonl, split_records, to_jsonl, validate_splits
from doctune.corpora import load_bbc_news
from doctune.errors import DoctuneError


def jl(*rows) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows).encode()


def test_empty_file():
    with pytest.raises(DoctuneError, match="train is empty") as e:
        parse_jsonl(b"  \n", "classification", "train")
    assert e.value.code == "invalid_dataset" and e.value.http_status == 422


def test_invalid_json_names_the_line():
    with pytest.raises(DoctuneError, match="line 3: invalid JSON"):
        parse_jsonl(jl({"text": "a", "label": "x"}, {"text": "b", "label": "y"}, '{"text": "c", "label"'), "classification", "data")


def test_missing_label_column():
    with pytest.raises(DoctuneError, match="line 2: missing 'label'") as e:
        parse_jsonl(jl({"text": "a", "label": "x"}, {"text": "b"}), "classification", "data")
    assert e.value.field == "label"


def test_unknown_field_in_record():
    with pytest.raises(DoctuneError, match=r"unknown field\(s\) \['lable'\]"):
        parse_jsonl(jl({"text": "a", "lable": "x"}), "classification", "data")


def test_not_utf8():
    with pytest.raises(DoctuneError, match="not valid UTF-8"):
        parse_jsonl(b'{"text": "caf\xe9", "label": "x"}\n', "classification", "data")


def test_label_in_test_never_seen_in_train():
    splits = {
        "train": [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}],
        "dev": [{"text": "c", "label": "x"}],
        "test": [{"text": "d", "label": "z"}],
    }
    with pytest.raises(DoctuneError, match="test record 1: label 'z' never appears in train"):
        validate_splits(splits, "classification")


def test_split_is_stratified_and_seeded():
    records = load_bbc_news(limit_per_class=40)
    a = split_records(records, "classification", seed=7)
    b = split_records(records, "classification", seed=7)
    c = split_records(records, "classification", seed=8)
    assert a == b and a != c
    for split, frac in (("dev", 0.1), ("test", 0.1)):
        counts = Counter(r["label"] for r in a[split])
        assert set(counts) == {r["label"] for r in records}
        assert all(v == round(40 * frac) for v in counts.values())
    assert sum(len(v) for v in a.values()) == len(records)


def test_bbc_news_is_the_real_corpus():
    records = load_bbc_news()
    assert len(records) == 2225
    assert Counter(r["label"] for r in records) == {"sports": 511, "business": 510, "politics": 417, "tech": 401, "entertainment": 386}


def test_round_trip_jsonl():
    rows = [{"text": "naïve café 中文", "label": "x"}]
    assert parse_jsonl(to_jsonl(rows), "classification", "data") == rows
