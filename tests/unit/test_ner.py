"""The ner task plugin: validation names the line and field, the real WNUT-16 data
loads and splits, word-piece labels line up with words, metrics are entity-level,
and served entities point at the right characters of the original text."""

import json
from collections import Counter
from functools import cache
from pathlib import Path

import pytest

from doctune.data import parse_jsonl, split_records, to_jsonl, validate_splits
from doctune.errors import DoctuneError
from doctune.spec import load_job_spec
from doctune.tasks import get_task, task_names, task_texts
from doctune.tasks.ner import load_wnut16

ROOT = Path(__file__).resolve().parents[2]
NER = get_task("ner")


def jl(*rows) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


@cache
def tokenizer():
    from transformers import AutoTokenizer

    from doctune.base_models import resolve_base_model

    return AutoTokenizer.from_pretrained(resolve_base_model("all-minilm-l6-v2"))


@cache
def wnut():
    return load_wnut16()


INFO = {"labels": ["O", "B-loc", "I-loc", "B-person", "I-person"]}


# -- validation -----------------------------------------------------------
def test_registered_by_folder():
    assert "ner" in task_names() and NER.name == "ner" and NER.peft_task_type == "TOKEN_CLS"


def test_length_mismatch_gives_both_lengths():
    good = {"tokens": ["Paris", "rocks"], "tags": ["B-loc", "O"]}
    with pytest.raises(DoctuneError, match=r"line 2: 'tags' has 1 item\(s\) but 'tokens' has 3") as e:
        parse_jsonl(jl(good, {"tokens": ["a", "b", "c"], "tags": ["O"]}), "ner", "data")
    assert e.value.field == "tags" and e.value.code == "invalid_dataset"


def test_bad_tag_names_index_and_tag():
    with pytest.raises(DoctuneError, match=r"line 1: tags\[1\] is 'B_person'") as e:
        parse_jsonl(jl({"tokens": ["Hi", "Bob"], "tags": ["O", "B_person"]}), "ner", "data")
    assert e.value.field == "tags"


def test_unknown_field_is_named():
    with pytest.raises(DoctuneError, match=r"unknown field\(s\) \['labels'\]") as e:
        parse_jsonl(jl({"tokens": ["Hi"], "labels": ["O"]}), "ner", "data")
    assert e.value.field == "labels"


def test_token_with_whitespace_and_missing_tags():
    with pytest.raises(DoctuneError, match=r"tokens\[0\] must be a non-empty string without whitespace") as e:
        parse_jsonl(jl({"tokens": ["New York"], "tags": ["B-loc"]}), "ner", "data")
    assert e.value.field == "tokens"
    with pytest.raises(DoctuneError, match="missing 'tags'") as e:
        parse_jsonl(jl({"tokens": ["Hi"]}), "ner", "data")
    assert e.value.field == "tags"


def test_valid_record_is_normalized():
    [r] = parse_jsonl(jl({"tokens": ["Hi", "Bob"], "tags": ["O", "B-person"], "id": 7, "meta": {}}), "ner", "data")
    assert r == {"tokens": ["Hi", "Bob"], "tags": ["O", "B-person"]}


def test_dev_type_unseen_in_train():
    splits = {
        "train": [{"tokens": ["Bob"], "tags": ["B-person"]}],
        "dev": [{"tokens": ["Bob"], "tags": ["B-person"]}, {"tokens": ["in", "Paris"], "tags": ["O", "B-loc"]}],
        "test": [{"tokens": ["Bob"], "tags": ["B-person"]}],
    }
    with pytest.raises(DoctuneError, match=r"dev record 2: entity type 'loc' \(tags\[1\] = 'B-loc'\) never appears in train") as e:
        validate_splits(splits, "ner")
    assert e.value.field == "tags"


def test_train_without_entities_is_rejected():
    only_o = [{"tokens": ["hi"], "tags": ["O"]}]
    with pytest.raises(DoctuneError, match="train split has no entities"):
        validate_splits({"train": only_o, "dev": only_o, "test": only_o}, "ner")


def test_info_labels_and_stratify_key():
    splits = {
        "train": [{"tokens": ["Bob", "in", "Paris"], "tags": ["B-person", "O", "I-loc"]}],  # I- after O still counts
        "dev": [{"tokens": ["x"], "tags": ["O"]}],
        "test": [{"tokens": ["x"], "tags": ["O"]}],
    }
    info = validate_splits(splits, "ner")
    assert info["labels"] == ["O", "B-loc", "I-loc", "B-person", "I-person"]
    assert info["entity_types"] == ["loc", "person"] and info["entity_counts"] == {"loc": 1, "person": 1}
    assert NER.stratify_key(splits["train"][0]) == "loc"  # tie -> alphabetical first
    assert NER.stratify_key({"tokens": ["a", "b", "c"], "tags": ["B-x", "B-y", "B-y"]}) == "y"
    assert NER.stratify_key({"tokens": ["a"], "tags": ["O"]}) == "O"


# -- the real data ----------------------------------------------------------
def test_wnut16_loads_2394_tweets_with_10_types():
    records = wnut()
    assert len(records) == 2394
    types = {t[2:] for r in records for t in r["tags"] if t != "O"}
    assert types == {"company", "facility", "geo-loc", "movie", "musicartist", "other", "person", "product", "sportsteam", "tvshow"}
    assert records[0]["tokens"][:2] == ["@paulwalk", "It"]
    assert ["Empire", "State", "Building"] == records[0]["tokens"][14:17]
    assert records[0]["tags"][14:17] == ["B-facility", "I-facility", "I-facility"]
    assert load_wnut16(limit=5) == records[:5]
    # the whole corpus survives the upload path (JSONL round trip + validation)
    assert parse_jsonl(to_jsonl(records), "ner", "wnut16.jsonl") == records


def test_wnut16_split_puts_every_type_in_train():
    splits = split_records(wnut(), "ner", seed=42)
    assert sum(map(len, splits.values())) == 2394
    info = validate_splits(splits, "ner")  # would raise if a dev/test type were missing from train
    assert len(info["entity_types"]) == 10 and len(info["labels"]) == 21 and info["labels"][0] == "O"
    assert all(n > 0 for n in info["entity_counts"].values())


# -- encoding ---------------------------------------------------------------
def test_first_word_piece_carries_the_tag():
    tok = tokenizer()
    words = ["Tchaikovsky", "unbelievably", "visited", "ESB"]
    tags = ["B-person", "O", "O", "B-loc"]
    [ex] = NER.encode([{"tokens": words, "tags": tags}], tok, INFO, 64)
    assert tok.tokenize("unbelievably") == ["un", "##bel", "##ie", "##va", "##bly"]  # split into 5 pieces
    pieces = tok.convert_ids_to_tokens(ex["input_ids"])
    labels = ex["labels"]
    assert len(labels) == len(ex["input_ids"]) == len(ex["attention_mask"])
    assert labels[0] == -100 and labels[-1] == -100  # [CLS], [SEP]
    at = pieces.index("un")
    assert labels[at] == INFO["labels"].index("O")
    assert labels[at + 1 : at + 5] == [-100] * 4
    es = pieces.index("es")
    assert pieces[es + 1] == "##b" and labels[es] == INFO["labels"].index("B-loc") and labels[es + 1] == -100
    assert [l for l in labels if l != -100] == [INFO["labels"].index(t) for t in tags]


def test_one_label_per_word_on_real_tweets_and_collate():
    tok = tokenizer()
    info = {"labels": validate_splits(split_records(wnut(), "ner"), "ner")["labels"]}
    records = wnut()[:32]
    examples = NER.encode(records, tok, info, 128)
    for r, ex in zip(records, examples):
        assert sum(l != -100 for l in ex["labels"]) == len(r["tokens"])
    batch = NER.collate(examples[:4], tok)
    width = max(len(e["input_ids"]) for e in examples[:4])
    assert batch["input_ids"].shape == batch["labels"].shape == (4, width)
    assert str(batch["labels"].dtype) == "torch.int64"
    short = min(range(4), key=lambda i: len(examples[i]["input_ids"]))
    n = len(examples[short]["input_ids"])
    assert batch["labels"][short, n:].tolist() == [-100] * (width - n)

    # predictions() keeps exactly one entry per word, gold equal to the word's tag
    import torch
    from types import SimpleNamespace

    logits = torch.zeros(*batch["labels"].shape, len(info["labels"]))
    pred, gold = NER.predictions(SimpleNamespace(logits=logits), batch)
    for r, p, g in zip(records[:4], pred, gold):
        assert len(p) == len(g) == len(r["tokens"]) and p == [0] * len(r["tokens"])
        assert [info["labels"][i] for i in g] == r["tags"]


def test_truncation_keeps_only_surviving_words():
    tok = tokenizer()
    words = ["word"] * 50
    [ex] = NER.encode([{"tokens": words, "tags": ["O"] * 50}], tok, INFO, 16)
    assert len(ex["input_ids"]) == 16 and sum(l != -100 for l in ex["labels"]) == 14


# -- metrics ----------------------------------------------------------------
def test_metrics_perfect_and_missed_entity():
    labels = INFO["labels"]
    ids = lambda tags: [labels.index(t) for t in tags]  # noqa: E731
    gold = [ids(["B-person", "I-person", "O", "B-loc"]), ids(["O", "B-loc", "I-loc"])]
    perfect = NER.metrics(gold, gold, INFO)
    assert perfect["f1"] == perfect["precision"] == perfect["recall"] == perfect["accuracy"] == 1.0
    assert perfect["per_type"]["loc"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2}
    assert perfect["per_type"]["person"]["support"] == 1

    missed = [ids(["B-person", "I-person", "O", "O"]), ids(["O", "B-loc", "I-loc"])]
    m = NER.metrics(missed, gold, INFO)
    assert m["precision"] == 1.0 and m["recall"] == pytest.approx(2 / 3) and m["f1"] < 1.0
    assert m["per_type"]["loc"]["recall"] == 0.5 and m["accuracy"] == pytest.approx(6 / 7)

    # a wrong span is a miss at entity level even though most tokens are right
    partial = [ids(["B-person", "O", "O", "B-loc"]), ids(["O", "B-loc", "I-loc"])]
    assert NER.metrics(partial, gold, INFO)["per_type"]["person"]["f1"] == 0.0
    json.dumps(m)  # plain JSON-ready values


# -- serving ----------------------------------------------------------------
def test_parse_request():
    assert NER.parse_request({"text": "Bob in Paris"}) == ["Bob in Paris"]
    assert NER.parse_request({"inputs": ["a b", "c"]}) == ["a b", "c"]
    for bad in ({"inputs": []}, {"inputs": ["ok", "  "]}, {"inputs": "text"}, ["x"], {"text": ""}):
        with pytest.raises(DoctuneError, match=r'\{"inputs": \["raw text"') as e:
            NER.parse_request(bad)
        assert e.value.field == "inputs" and e.value.code == "invalid_request"


def test_predict_entities_point_at_the_original_text():
    import torch

    from doctune.base_models import resolve_base_model

    tok = tokenizer()
    model = NER.build_model(resolve_base_model("all-minilm-l6-v2"), INFO).eval()
    assert model.config.id2label[1] == "B-loc" and model.num_labels == 5
    with torch.no_grad():  # make B-loc win on every word piece: every word is then its own entity
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([0.0, 5.0, 0.0, 0.0, 0.0]))
    texts = ["  Tim Cook\tvisited   Paris, France!", "unbelievably  @paulwalk said\nhi"]
    out = NER.predict(model, tok, texts, INFO, 64)
    assert len(out) == 2
    for text, pred in zip(texts, out):
        ents = pred["entities"]
        assert len(ents) == len(text.split())
        for e in ents:
            assert e["type"] == "loc" and e["text"] == text[e["start"] : e["end"]]
            assert 0.0 < e["score"] <= 1.0
        assert [e["text"] for e in ents] == text.split()
    assert out[0]["entities"][0] == {**out[0]["entities"][0], "text": "Tim", "start": 2, "end": 5}

    # B-loc then I-loc on every word: one entity spanning first to last word, exact substring
    with torch.no_grad():
        model.classifier.bias.copy_(torch.tensor([0.0, 0.0, 5.0, 0.0, 0.0]))
    [pred] = NER.predict(model, tok, ["  Tim Cook\tvisited   Paris "], INFO, 64)
    assert [(e["text"], e["start"], e["end"]) for e in pred["entities"]] == [("Tim Cook\tvisited   Paris", 2, 26)]

    # words cut off by truncation yield no entities
    long = " ".join(f"w{i}" for i in range(100))
    [pred] = NER.predict(model, tok, [long], INFO, 16)
    [e] = pred["entities"]
    assert e["start"] == 0 and long[e["start"] : e["end"]] == e["text"] and e["end"] < len(long)


def test_plan_builds_the_architecture_on_meta_and_counts_tokens():
    import torch

    from doctune.base_models import resolve_base_model

    with torch.device("meta"):
        model = NER.build_model(resolve_base_model("all-minilm-l6-v2"), INFO, pretrained=False)
    assert type(model).__name__.endswith("ForTokenClassification") and model.classifier.out_features == 5
    assert task_texts(NER, [{"tokens": ["Bob", "in", "Paris"], "tags": ["B-person", "O", "B-loc"]}]) == ["Bob in Paris"]


# -- the example job --------------------------------------------------------
def test_example_spec_validates():
    spec = load_job_spec(ROOT / "docs" / "examples" / "wnut-ner.yaml")
    assert spec.task == "ner" and spec.early_stopping.metric == "f1"
    assert spec.tuning.method == "lora" and spec.deepspeed.zero_stage == 2 and spec.num_workers == 2
    gold = [[1, 2, 0]]
    assert spec.early_stopping.metric in NER.metrics(gold, gold, INFO)  # the loop reads dev[metric]
    assert spec.max_seq_length == 64 and Counter(spec.tuning.lora.target_modules) == Counter(["query", "key", "value", "dense"])


def test_serving_splits_chinese_into_characters_like_chinese_ner_data():
    from doctune.tasks.ner import WORD

    assert WORD.findall("马化腾 founded Tencent, 在深圳") == ["马", "化", "腾", "founded", "Tencent,", "在", "深", "圳"]


def test_decoding_picks_the_best_valid_bio_sequence_not_each_positions_argmax():
    """Argmax can tag 'O I-PER O' (an entity with no beginning: seqeval then guesses its span);
    Viterbi over the valid transitions tags 'B-PER I-PER O'."""
    import torch

    from doctune.tasks._tagging import allowed_transitions, bio_labels, valid_word_tags, viterbi_tags

    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    probs = torch.tensor([[0.6, 0.1, 0.3, 0.0, 0.0], [0.1, 0.1, 0.8, 0.0, 0.0], [0.9, 0.05, 0.05, 0.0, 0.0]])
    assert probs.argmax(-1).tolist() == [0, 2, 0]
    assert viterbi_tags(probs.clamp_min(1e-12).log(), allowed_transitions(labels)) == [1, 2, 0]
    # I-LOC never follows B-PER, whatever the scores
    clash = torch.tensor([[0.0, 1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.1, 0.0, 0.9]]).clamp_min(1e-12).log()
    assert [labels[i] for i in viterbi_tags(clash, allowed_transitions(labels))] in (["B-PER", "I-PER"], ["B-PER", "B-LOC"])
    # serving reads each word at its first sub-token: word 0 has two sub-tokens, special tokens are None
    words, tags, scores = valid_word_tags([None, 0, 0, 1, 2, None], torch.cat([probs[:1], probs[:1], probs[:1], probs[1:], probs[:1]]), labels)
    assert words == [0, 1, 2] and tags == ["B-PER", "I-PER", "O"] and abs(scores[0] - 0.1) < 1e-6
    assert bio_labels(5) == ["O", "B-0", "I-0", "B-1", "I-1"]
