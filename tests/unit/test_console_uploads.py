"""The files a tenant uploads from the console (or the CLI): CSV in each task's format becomes the same
records as JSONL, and a bad file reports every bad line at once, each with its line and field."""

from __future__ import annotations

import csv
import io
import json

import pytest

from doctune.data import MAX_REPORTED_ERRORS, parse_jsonl
from doctune.errors import DoctuneError


def _csv(*rows: list[str]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    return buf.getvalue().encode()


def test_csv_becomes_the_same_records_as_jsonl():
    assert parse_jsonl(_csv(["text", "label"], ["股市上涨, 今天", "财经"], ["goal!", "sport"]), "classification", "data",
                       fmt="csv") == [{"text": "股市上涨, 今天", "label": "财经"}, {"text": "goal!", "label": "sport"}]
    multi = parse_jsonl(_csv(["text", "labels"], ["a", '["x", "y"]']), "classification", "data", fmt="csv")
    assert multi == [{"text": "a", "labels": ["x", "y"]}]
    ner = parse_jsonl(_csv(["tokens", "tags"], [json.dumps(["Ann", "ran"]), json.dumps(["B-PER", "O"])]), "ner", "data", fmt="csv")
    assert ner == [{"tokens": ["Ann", "ran"], "tags": ["B-PER", "O"]}]


def test_every_bad_line_is_reported_with_its_line_and_field():
    lines = [{"text": "ok", "label": "a"}, {"text": "no label"}, {"text": "", "label": "b"}, {"text": "ok", "label": "c"}]
    data = ("".join(json.dumps(r) + "\n" for r in lines) + "{oops\n").encode()
    with pytest.raises(DoctuneError) as err:
        parse_jsonl(data, "classification", "data")
    e = err.value
    assert e.code == "invalid_dataset" and e.message.startswith("data line 2: missing 'label'")
    assert [(x["line"], x["field"]) for x in e.errors] == [(2, "label"), (3, "text"), (5, "data")]
    assert "other bad lines in data: 3 (text), 5 (data)" in e.message  # the CLI prints the message alone


def test_a_csv_row_with_too_many_cells_or_broken_json_names_its_line():
    with pytest.raises(DoctuneError) as err:
        parse_jsonl(b'text,label\na,b,c\n"x","[broken"\n', "classification", "data", fmt="csv")
    assert [(x["line"], x["field"]) for x in err.value.errors] == [(2, "data"), (3, "label")]
    assert "quote cells that hold commas" in err.value.errors[0]["message"]


def test_only_the_first_bad_lines_are_listed():
    data = "".join(json.dumps({"text": "no label"}) + "\n" for _ in range(3 * MAX_REPORTED_ERRORS)).encode()
    with pytest.raises(DoctuneError) as err:
        parse_jsonl(data, "classification", "data")
    assert len(err.value.errors) == MAX_REPORTED_ERRORS and "and more" in err.value.message
