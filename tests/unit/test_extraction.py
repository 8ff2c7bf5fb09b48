"""The extraction task plugin: validation names the line and field, entity markers survive
truncation, relation metrics leave no_relation out, field spans decode to the right
characters, the hand-made BBC sets are exact, and both kinds train under LoRA on MiniLM."""

import json
import re
from collections import Counter
from functools import cache
from pathlib import Path
from types import SimpleNamespace

import pytest

from doctune.data import parse_jsonl, split_records, to_jsonl, validate_splits
from doctune.errors import DoctuneError
from doctune.spec import load_job_spec
from doctune.tasks import get_task, task_names, task_texts
from doctune.tasks.extraction import (
    keep_tokens,
    load_bbc_quote_fields,
    load_bbc_relations,
    mark,
    relation_inputs,
    relation_scores,
)

ROOT = Path(__file__).resolve().parents[2]
EXT = get_task("extraction")
TEXT = "Tim Cook runs Apple."
PAIR = {"text": TEXT, "head": {"start": 0, "end": 8}, "tail": {"start": 14, "end": 19}, "relation": "leads"}
QUOTE = '"Numbers are good," said David Naude, economist at Deutsche Bank.'
FIELDS = {"text": QUOTE, "fields": {"speaker": [{"start": 25, "end": 36}], "role": [{"start": 38, "end": 47}],
                                    "organisation": [{"start": 51, "end": 64}]}}
REL_INFO = {"kind": "relation", "labels": ["no_relation", "founded", "leads", "works_for"]}
FIELD_INFO = {"kind": "fields", "labels": ["O", "B-organisation", "I-organisation", "B-role", "I-role", "B-speaker",
                                           "I-speaker"]}


def jl(*rows) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def with_(record, **changes):
    return {**record, **changes}


@cache
def base_path():
    from doctune.base_models import resolve_base_model

    return resolve_base_model("all-minilm-l6-v2")


@cache
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(base_path())


def rejected(*rows, match: str, field: str):
    with pytest.raises(DoctuneError, match=match) as e:
        parse_jsonl(jl(*rows), "extraction", "data")
    assert e.value.field == field and e.value.code == "invalid_dataset"


# -- validation -----------------------------------------------------------
def test_registered_by_folder():
    assert "extraction" in task_names() and EXT.name == "extraction"
    assert (EXT.peft_task_type, EXT.primary_metric) == (None, "f1") and "f1" in EXT.metric_names


def test_valid_records_are_normalized():
    typed = with_(PAIR, head={"start": 0, "end": 8, "type": "person"}, relation=" leads ", id=3, meta={"a": 1})
    fields = with_(FIELDS, fields={"role": [], "speaker": [{"start": 51, "end": 64}, {"start": 25, "end": 36}]})
    assert parse_jsonl(jl(typed, fields), "extraction", "data") == [
        {"text": TEXT, "head": {"start": 0, "end": 8}, "tail": {"start": 14, "end": 19}, "relation": "leads"},
        {"text": QUOTE, "fields": {"role": [], "speaker": [{"start": 25, "end": 36}, {"start": 51, "end": 64}]}},
    ]


@pytest.mark.parametrize("head, needle", [
    ({"start": 0, "end": 99}, r"'head' is \[0, 99\) but needs 0 <= start < end <= 20"),
    ({"start": 8, "end": 8}, r"'head' is \[8, 8\) but needs 0 <= start < end"),
    ({"start": -1, "end": 3}, r"'head' is \[-1, 3\)"),
    ({"start": 0.0, "end": 8}, "'head' needs integer 'start' and 'end'"),
    ({"start": True, "end": 8}, "'head' needs integer 'start' and 'end'"),
    ({"start": 3, "end": 4}, r"'head' \[3, 4\) covers only whitespace"),
    ({"begin": 0, "end": 8}, r"'head' has unknown key\(s\) \['begin'\]"),
    ({"start": 0, "end": 8, "type": ""}, "'head'.type must be a non-empty string"),
    ([0, 8], "'head' must be an object"),
])
def test_bad_head_span_names_line_and_field(head, needle):
    rejected(PAIR, with_(PAIR, head=head), match=rf"data line 2: {needle}", field="head")


def test_overlapping_entities_and_bad_relation():
    rejected(with_(PAIR, tail={"start": 4, "end": 13}), match=r"line 1: 'head' \[0, 8\) and 'tail' \[4, 13\) overlap",
             field="tail")
    rejected(with_(PAIR, relation="  "), match="line 1: 'relation' must be a non-empty string", field="relation")
    rejected(with_(PAIR, relation=3), match="'relation' must be a non-empty string", field="relation")


def test_missing_unknown_and_mixed_fields():
    rejected({"text": TEXT, "head": PAIR["head"], "relation": "leads"}, match="line 1: missing 'tail'", field="tail")
    rejected(with_(PAIR, label="x"), match=r"unknown field\(s\) \['label'\]; an extraction relation record", field="label")
    rejected({"text": TEXT}, match="missing 'head', 'tail' and 'relation' .* or 'fields'", field="relation")
    rejected(with_(FIELDS, relation="leads"), match=r"line 1: has 'fields' .* and \['relation'\]", field="fields")
    rejected(with_(PAIR, text=""), match="'text' must be a non-empty string", field="text")


@pytest.mark.parametrize("fields, needle", [
    ({"speaker": [{"start": 25, "end": 40}], "role": [{"start": 38, "end": 47}]},
     r"fields\['role'\]\[0\] \[38, 47\) overlaps fields\['speaker'\]\[0\] \[25, 40\)"),
    ({"speaker": [{"start": 25, "end": 36}, {"start": 60, "end": 99}]}, r"fields\['speaker'\]\[1\] is \[60, 99\)"),
    ({"speaker": {"start": 25, "end": 36}}, r"fields\['speaker'\] must be a list of spans"),
    ({"due date": []}, "field name 'due date' must be non-empty without whitespace"),
    (["speaker"], "'fields' must be an object"),
])
def test_bad_fields_name_line_and_span(fields, needle):
    rejected(FIELDS, with_(FIELDS, fields=fields), match=rf"line 2: {needle}", field="fields")


# -- splits ---------------------------------------------------------------
def test_mixed_kinds_name_the_record():
    splits = {"train": [PAIR, PAIR], "dev": [PAIR, FIELDS], "test": [PAIR]}
    expected = f"dev record 2 (text {QUOTE[:40]!r}): is a key-field record ('fields') but train record 1 is a relation record"
    with pytest.raises(DoctuneError, match=re.escape(expected)) as e:
        validate_splits(splits, "extraction")
    assert e.value.field == "fields"


def test_relation_unseen_in_train_and_no_relation_always_allowed():
    none = with_(PAIR, relation="no_relation")
    splits = {"train": [PAIR], "dev": [none, with_(PAIR, relation="founded")], "test": [PAIR]}
    with pytest.raises(DoctuneError, match=r"dev record 2: relation 'founded' never appears in train; .*"
                                           r"\(train relations: \['leads'\], plus 'no_relation'\)") as e:
        validate_splits(splits, "extraction")
    assert e.value.field == "relation"
    info = validate_splits({"train": [PAIR], "dev": [none], "test": [PAIR]}, "extraction")
    assert info["labels"] == ["no_relation", "leads"] and info["relation_counts"] == {"no_relation": 0, "leads": 1}
    with pytest.raises(DoctuneError, match="train split has no relation other than 'no_relation'"):
        validate_splits({"train": [none], "dev": [none], "test": [none]}, "extraction")


def test_fields_info_and_unseen_field():
    empty = with_(FIELDS, fields={"speaker": []})
    info = validate_splits({"train": [FIELDS, empty], "dev": [empty], "test": [FIELDS]}, "extraction")
    assert info["kind"] == "fields" and info["labels"] == FIELD_INFO["labels"]
    assert info["field_counts"] == {"organisation": 1, "role": 1, "speaker": 1}
    dated = with_(FIELDS, fields={"date": [{"start": 0, "end": 8}]})
    with pytest.raises(DoctuneError, match=r"test record 1: field 'date' has spans but none in train") as e:
        validate_splits({"train": [FIELDS], "dev": [empty], "test": [dated]}, "extraction")
    assert e.value.field == "fields"
    with pytest.raises(DoctuneError, match="train split has no field spans"):
        validate_splits({"train": [empty], "dev": [empty], "test": [empty]}, "extraction")


def test_stratify_keys():
    assert EXT.stratify_key(PAIR) == "leads"
    two_speakers = {"speaker": [{"start": 0, "end": 1}, {"start": 2, "end": 3}], "role": [{"start": 4, "end": 5}]}
    assert EXT.stratify_key({"text": "a b c", "fields": two_speakers}) == "speaker"
    assert EXT.stratify_key(FIELDS) == "organisation"  # a tie: alphabetical first
    assert EXT.stratify_key({"text": "x", "fields": {"speaker": []}}) == "(none)"


# -- markers and truncation -------------------------------------------------
def test_markers_go_around_head_and_tail_in_either_order():
    marked, regions = mark(TEXT, PAIR["head"], PAIR["tail"])
    assert marked == "@ Tim Cook @ runs # Apple #."
    assert [marked[a:b] for a, b in regions] == ["@ Tim Cook @", "# Apple #"]
    marked, regions = mark(TEXT, PAIR["tail"], PAIR["head"])  # head after tail
    assert marked == "# Tim Cook # runs @ Apple @." and [marked[a:b] for a, b in regions] == ["@ Apple @", "# Tim Cook #"]
    marked, _ = mark("AppleInc", {"start": 0, "end": 5}, {"start": 5, "end": 8})  # adjacent spans
    assert marked == "@ Apple @# Inc #"
    assert task_texts(EXT, [PAIR, FIELDS]) == ["@ Tim Cook @ runs # Apple #.", QUOTE]  # what the plan counts


def test_truncation_keeps_the_markers_and_the_entities():
    tok = tokenizer()
    filler = " ".join(["word"] * 60)
    text = f"{filler} Tim Cook {filler} runs Apple {filler}."
    head, tail = text.index("Tim Cook"), text.index("Apple")
    item = {"text": text, "head": {"start": head, "end": head + 8}, "tail": {"start": tail, "end": tail + 5}}
    [ids] = relation_inputs([item], tok, 16)
    pieces = tok.convert_ids_to_tokens(ids)
    assert len(ids) == 16 and pieces[0] == "[CLS]" and pieces[-1] == "[SEP]"
    assert pieces.count("@") == 2 and pieces.count("#") == 2
    at, hash_ = pieces.index("@"), pieces.index("#")
    assert pieces[at : at + 4] == ["@", "tim", "cook", "@"] and pieces[hash_ : hash_ + 3] == ["#", "apple", "#"]
    # the context kept is the nearest to each entity: a window around each of the two
    assert pieces[at - 1] == "word" and pieces[at + 4] == "word" and pieces[hash_ - 1] == "runs"

    # an entity longer than the budget is shortened from its end; its markers stay
    long_head = {"start": 0, "end": len(filler)}
    [ids] = relation_inputs([{**item, "head": long_head}], tok, 12)
    pieces = tok.convert_ids_to_tokens(ids)
    assert len(ids) == 12 and pieces.count("@") == 2 and pieces.count("#") == 2 and "apple" in pieces

    # short enough: nothing is cut
    [ids] = relation_inputs([PAIR], tok, 64)
    assert tok.convert_ids_to_tokens(ids) == ["[CLS]", "@", "tim", "cook", "@", "runs", "#", "apple", "#", ".", "[SEP]"]


def test_keep_tokens_prefers_markers_then_entities_then_nearest_context():
    # tokens: [CLS] a b @ x y @ c d [SEP]   (one entity "x y" at chars 4..7 of "a b @ x y @ c d")
    offsets = [(0, 0), (0, 1), (2, 3), (4, 5), (6, 7), (8, 9), (10, 11), (12, 13), (14, 15), (0, 0)]
    special = [1, 0, 0, 0, 0, 0, 0, 0, 0, 1]
    regions = [(4, 11), (12, 13)]  # "@ x y @", and "c" standing in for a second marked region
    assert keep_tokens(offsets, special, regions, 10) == list(range(10))
    assert keep_tokens(offsets, special, regions, 7) == [0, 3, 4, 5, 6, 7, 9]
    assert keep_tokens(offsets, special, regions, 8) == [0, 2, 3, 4, 5, 6, 7, 9]  # then the nearest context


def test_encode_and_collate_relations():
    tok = tokenizer()
    examples = EXT.encode([PAIR, with_(PAIR, relation="no_relation")], tok, REL_INFO, 64)
    assert [e["labels"] for e in examples] == [2, 0]
    batch = EXT.collate(examples, tok)
    assert batch["labels"].tolist() == [2, 0] and batch["input_ids"].shape == batch["attention_mask"].shape
    import torch

    logits = torch.tensor([[0.0, 0.0, 3.0, 0.0], [0.0, 3.0, 0.0, 0.0]])
    assert EXT.predictions(SimpleNamespace(logits=logits), batch) == ([2, 1], [2, 0])


# -- metrics ----------------------------------------------------------------
def test_relation_metrics_leave_no_relation_out():
    labels = ["no_relation", "leads", "works_for"]
    # gold [leads, leads, works_for, no_relation]; predicted [leads, works_for, no_relation, leads]
    m = EXT.metrics([1, 2, 0, 1], [1, 1, 2, 0], {"kind": "relation", "labels": labels})
    assert (m["precision"], m["recall"], m["f1"]) == (pytest.approx(1 / 3), pytest.approx(1 / 3), pytest.approx(1 / 3))
    assert m["accuracy"] == 0.25
    assert m["per_relation"]["leads"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert m["per_relation"]["works_for"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert m["macro_f1"] == 0.25 and "no_relation" not in m["per_relation"]
    json.dumps(m)

    # no_relation right everywhere counts for accuracy only
    m = relation_scores([0, 0, 1], [0, 0, 1], labels)
    assert (m["precision"], m["recall"], m["f1"], m["accuracy"]) == (1.0, 1.0, 1.0, 1.0)
    m = relation_scores([0, 0, 0], [0, 0, 1], labels)
    assert (m["precision"], m["recall"], m["f1"], m["accuracy"]) == (0.0, 0.0, 0.0, pytest.approx(2 / 3))
    # an untrained head that says "leads" to everything: precision = share of leads among all pairs
    m = relation_scores([1, 1, 1, 1], [1, 2, 0, 0], labels)
    assert (m["precision"], m["recall"], m["f1"]) == (0.25, 0.5, pytest.approx(1 / 3))


def test_field_metrics_are_span_level():
    labels = FIELD_INFO["labels"]
    ids = lambda tags: [labels.index(t) for t in tags]  # noqa: E731
    gold = [ids(["O", "B-speaker", "I-speaker", "O", "B-role", "O", "B-organisation"])]
    perfect = EXT.metrics(gold, gold, FIELD_INFO)
    assert perfect["f1"] == perfect["accuracy"] == 1.0 and perfect["per_field"]["speaker"]["support"] == 1
    partial = [ids(["O", "B-speaker", "O", "O", "B-role", "O", "B-organisation"])]  # speaker cut short: a miss
    m = EXT.metrics(partial, gold, FIELD_INFO)
    assert (m["precision"], m["recall"]) == (pytest.approx(2 / 3), pytest.approx(2 / 3))
    assert m["per_field"]["speaker"]["f1"] == 0.0 and m["per_field"]["role"]["f1"] == 1.0
    assert "per_type" not in m


# -- key-field encoding and serving -------------------------------------------
def test_field_tags_go_on_the_first_piece_of_each_word():
    tok = tokenizer()
    rec = {"text": "said Rick Egelton, deputy chief economist at BMO Financial Group.",
           "fields": {"speaker": [{"start": 5, "end": 17}], "role": [{"start": 19, "end": 41}],
                      "organisation": [{"start": 45, "end": 64}]}}
    [ex] = EXT.encode([rec], tok, FIELD_INFO, 64)
    pieces = tok.convert_ids_to_tokens(ex["input_ids"])
    tags = [FIELD_INFO["labels"][l] if l != -100 else None for l in ex["labels"]]
    assert list(zip(pieces, tags)) == [
        ("[CLS]", None), ("said", "O"), ("rick", "B-speaker"), ("e", "I-speaker"), ("##gel", None), ("##ton", None),
        (",", "O"), ("deputy", "B-role"), ("chief", "I-role"), ("economist", "I-role"), ("at", "O"),
        ("b", "B-organisation"), ("##mo", None), ("financial", "I-organisation"), ("group", "I-organisation"),
        (".", "O"), ("[SEP]", None)]
    batch = EXT.collate(EXT.encode([rec, FIELDS], tok, FIELD_INFO, 64), tok)
    assert batch["labels"].shape == batch["input_ids"].shape and batch["labels"].dim() == 2


def _forced(model, label_index: int):
    import torch

    head = model.classifier
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[label_index] = 5.0
    return model.eval()


def test_predict_fields_point_at_the_original_text():
    tok = tokenizer()
    model = _forced(EXT.build_model(base_path(), FIELD_INFO), FIELD_INFO["labels"].index("I-speaker"))
    texts = ["  Tim Cook,\tvisited   Paris!", "x"]
    out = EXT.predict(model, tok, texts, FIELD_INFO, 64)
    # I-speaker on every word: one speaker span from the first word to the last, exact characters
    assert out[0] == {"fields": {"organisation": [], "role": [], "speaker": [
        {**out[0]["fields"]["speaker"][0], "text": "Tim Cook,\tvisited   Paris!", "start": 2, "end": 28}]}}
    assert 0 < out[0]["fields"]["speaker"][0]["score"] <= 1
    assert out[1]["fields"]["speaker"][0]["text"] == "x"

    model = _forced(model, FIELD_INFO["labels"].index("B-role"))  # every word its own span
    [pred] = EXT.predict(model, tok, ["said Bob, economist."], FIELD_INFO, 64)
    assert [(s["text"], s["start"], s["end"]) for s in pred["fields"]["role"]] == [
        ("said", 0, 4), ("Bob", 5, 8), (",", 8, 9), ("economist", 10, 19), (".", 19, 20)]
    model = _forced(model, 0)  # all O: every known field present, empty
    assert EXT.predict(model, tok, ["nothing"], FIELD_INFO, 64) == [{"fields": {"organisation": [], "role": [],
                                                                               "speaker": []}}]


def test_predict_relations_and_kind_mismatch():
    tok = tokenizer()
    model = _forced(EXT.build_model(base_path(), REL_INFO), REL_INFO["labels"].index("founded"))
    [item] = EXT.parse_request({"inputs": [{k: PAIR[k] for k in ("text", "head", "tail")}]})
    [pred] = EXT.predict(model, tok, [item], REL_INFO, 64)
    assert pred["relation"] == "founded" and pred["score"] == max(pred["scores"].values())
    assert set(pred["scores"]) == set(REL_INFO["labels"]) and sum(pred["scores"].values()) == pytest.approx(1.0)
    assert pred["head"] == {"start": 0, "end": 8, "text": "Tim Cook"} and pred["tail"]["text"] == "Apple"
    with pytest.raises(DoctuneError, match="serves a relation extraction model: 'inputs' must be objects") as e:
        EXT.predict(model, tok, ["raw text"], REL_INFO, 64)
    assert e.value.field == "inputs" and e.value.code == "invalid_request"
    with pytest.raises(DoctuneError, match="serves a key-field extraction model: 'inputs' must be raw text"):
        EXT.predict(model, tok, [item], FIELD_INFO, 64)


def test_parse_request():
    pair = {k: PAIR[k] for k in ("text", "head", "tail")}
    assert EXT.parse_request({"text": "Bob in Paris"}) == ["Bob in Paris"]
    assert EXT.parse_request({"inputs": ["a b", "c"]}) == ["a b", "c"]
    typed = {**pair, "head": {**pair["head"], "type": "person"}}
    assert EXT.parse_request({"inputs": [typed]}) == [pair]
    cases = [
        ({"inputs": []}, "'inputs' must be a non-empty list"),
        ({"inputs": "text"}, "'inputs' must be a non-empty list"),
        (["x"], "'inputs' must be a non-empty list"),
        ({"text": ""}, "'inputs' must be a non-empty list"),
        ({"inputs": ["ok", "  "]}, "all non-empty strings or all objects"),
        ({"inputs": ["ok", pair]}, "all non-empty strings or all objects"),
        ({"inputs": [pair, {**pair, "relation": "x"}]}, r"inputs\[1\]: has keys .* exactly 'text', 'head' and 'tail'"),
        ({"inputs": [{**pair, "tail": {"start": 14, "end": 40}}]}, r"inputs\[0\]: 'tail' is \[14, 40\)"),
        ({"inputs": [{**pair, "tail": {"start": 2, "end": 12}}]}, r"inputs\[0\]: 'head' and 'tail' overlap"),
        ({"inputs": [{**pair, "text": 5}]}, r"inputs\[0\]: 'text' must be a non-empty string"),
    ]
    for body, needle in cases:
        with pytest.raises(DoctuneError, match=needle) as e:
            EXT.parse_request(body)
        assert e.value.field == "inputs" and e.value.code == "invalid_request"
        assert '{"inputs": [{"text": "Tim Cook runs Apple", "head"' in e.value.message  # says the expected shape


# -- the hand-made data -------------------------------------------------------
def test_bbc_relations_load_validate_and_split():
    records = load_bbc_relations()
    assert len(records) == 223 and len({r["text"] for r in records}) == 168
    assert Counter(r["relation"] for r in records) == {
        "leads": 45, "works_for": 43, "member_of": 47, "founded": 34, "no_relation": 54}
    parsed = parse_jsonl(to_jsonl(records), "extraction", "bbc-relations.jsonl")
    info = validate_splits(split_records(parsed, "extraction", seed=42), "extraction")
    assert info["labels"] == ["no_relation", "founded", "leads", "member_of", "works_for"]
    assert all(n >= 25 for n in info["relation_counts"].values())
    assert all(r["head"]["type"] == "person" and r["tail"]["type"] == "organisation" for r in records)


def test_hand_made_sets_are_exactly_what_the_generator_writes():
    """Every sentence is verbatim in its BBC article and every span is the labelled string."""
    import importlib.util

    script = Path(__file__).resolve().parents[2] / "platform" / "tools" / "make_bbc_datasets.py"
    loader = importlib.util.spec_from_file_location("make_bbc_datasets", script)
    gen = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(gen)

    assert gen.relation_records() == load_bbc_relations()
    assert gen.field_records() == load_bbc_quote_fields()
    pairs = [(person, org) for _, _, rows in gen.RELATIONS for person, org, _ in rows]
    for record, (person, org) in zip(load_bbc_relations(), pairs):
        text = record["text"]
        assert text[record["head"]["start"] : record["head"]["end"]] == (person if isinstance(person, str) else person[0])
        assert text[record["tail"]["start"] : record["tail"]["end"]] == (org if isinstance(org, str) else org[0])
        assert text in gen.article(record["meta"]["source"].split("bbcnews/data/")[1])
    for record, (_, _, fields) in zip(load_bbc_quote_fields(), gen.QUOTES):
        assert {k: [record["text"][s["start"] : s["end"]] for s in v] for k, v in record["fields"].items()} == fields


def test_bbc_quote_fields_load_and_validate():
    records = load_bbc_quote_fields()
    assert len(records) == 41
    parsed = parse_jsonl(to_jsonl(records), "extraction", "bbc-quotes.jsonl")
    info = validate_splits(split_records(parsed, "extraction", seed=42), "extraction")
    assert info["field_names"] == ["organisation", "role", "speaker"]
    assert sum(1 for r in records if not r["fields"]["organisation"]) == 8  # quotes that name no organisation


# -- the example job ----------------------------------------------------------
def test_example_spec_validates():
    spec = load_job_spec(ROOT / "docs" / "examples" / "bbc-relations.yaml")
    assert spec.task == "extraction" and spec.early_stopping.metric == "f1"
    assert (spec.base_model, spec.tuning.method, spec.deepspeed.zero_stage, spec.num_workers) == (
        "all-minilm-l6-v2", "lora", 2, 2)
    assert spec.early_stopping.metric in EXT.metrics([1], [1], REL_INFO)  # the loop reads dev[metric]


# -- training under LoRA, export and serving ------------------------------------
def test_plan_builds_both_architectures_on_meta():
    import torch

    with torch.device("meta"):
        rel = EXT.build_model(base_path(), REL_INFO, pretrained=False)
        fields = EXT.build_model(base_path(), FIELD_INFO, pretrained=False)
    assert type(rel).__name__.endswith("ForSequenceClassification") and rel.classifier.out_features == 4
    assert type(fields).__name__.endswith("ForTokenClassification") and fields.classifier.out_features == 7



@pytest.mark.parametrize("info, records", [(REL_INFO, [PAIR, with_(PAIR, relation="no_relation")]),
                                           (FIELD_INFO, [FIELDS, with_(FIELDS, fields={"speaker": []})])],
                         ids=["relation", "fields"])
def test_lora_forward_backward_export_and_serve(info, records, tmp_path):
    """peft_task_type None: a plain PeftModel passes labels through to either head, the head
    trains in full, and both the merged and the adapter export load for serving."""
    from doctune.train.tuning import apply_tuning

    tok = tokenizer()
    spec = load_job_spec(ROOT / "docs" / "examples" / "bbc-relations.yaml")
    model = apply_tuning(EXT.build_model(base_path(), info), spec, EXT)
    assert type(model).__name__ == "PeftModel"
    batch = EXT.collate(EXT.encode(records, tok, info, 32), tok)
    out = model(**batch)
    assert out.loss.isfinite() and out.logits.shape[0] == 2
    out.loss.backward()
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in trained) and any("classifier.modules_to_save" in n for n in trained)
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad and "lora_B" in n)
    assert not any("embeddings" in n for n in trained)  # the base stays frozen

    meta = {"task": "extraction", "labels": info["labels"], "max_seq_length": 32}
    meta.update(EXT.export_extras(model, tok, info, None, 32, tmp_path))
    assert meta["kind"] == info["kind"]
    inputs = [{k: PAIR[k] for k in ("text", "head", "tail")}] if info["kind"] == "relation" else [QUOTE]
    served = []
    for name in ("adapter", "merged"):  # merging last: it folds the adapter into the model in place
        path = tmp_path / name
        (model if name == "adapter" else model.merge_and_unload()).save_pretrained(path, safe_serialization=True)
        tok.save_pretrained(path)
        (path / "doctune.json").write_text(json.dumps(meta))
        [pred] = EXT.predict(EXT.load_model(str(path)), tok, inputs, meta, 32)
        served.append(pred)
    adapter, merged = served
    if info["kind"] == "relation":
        assert adapter["relation"] == merged["relation"] and adapter["score"] == pytest.approx(merged["score"], abs=1e-4)
    else:
        assert set(adapter["fields"]) == set(merged["fields"]) == {"organisation", "role", "speaker"}
