"""The retrieval task plugin: validation names the line and field, pairs encode and
collate into query/document tensors, the bi-encoder's in-batch-negatives loss trains,
ranking metrics have the textbook values, and an export (collection + index) serves
top-k search with the right document first."""

import json
import math
from functools import cache
from pathlib import Path

import pytest

from doctune.data import parse_jsonl, split_records, to_jsonl, validate_splits
from doctune.errors import DoctuneError
from doctune.spec import JobSpec, load_job_spec
from doctune.tasks import get_task, task_names, task_texts
from doctune.tasks.retrieval import bbc_headline_pairs, doc_key, key_int

ROOT = Path(__file__).resolve().parents[2]
RET = get_task("retrieval")
PAIRS = [
    {"query": "cat on a mat", "document": "The cat sat on the mat all afternoon.", "doc_id": "d-cat"},
    {"query": "stock market falls", "document": "Shares fell sharply on Wall Street on Monday."},
    {"query": "football final", "document": "United won the cup final after extra time."},
    {"query": "rain tomorrow", "document": "Forecasters expect heavy rain across the north tomorrow."},
]


def jl(*rows) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


@cache
def minilm() -> str:
    from doctune.base_models import resolve_base_model

    return resolve_base_model("all-minilm-l6-v2")


@cache
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm())


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    """A 1-layer, 32-wide BERT with MiniLM's vocabulary: trains and encodes in milliseconds."""
    import torch
    from transformers import BertConfig, BertModel

    d = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=tokenizer().vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=128)).save_pretrained(d)
    tokenizer().save_pretrained(d)
    return str(d)


@pytest.fixture
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- validation -----------------------------------------------------------
def test_registered_by_folder():
    assert "retrieval" in task_names()
    assert (RET.name, RET.peft_task_type, RET.primary_metric) == ("retrieval", None, "mrr_at_10")
    assert RET.primary_metric in RET.metric_names and "loss" in RET.metric_names
    assert RET.head_modules() == []


def test_unknown_field_is_named():
    with pytest.raises(DoctuneError, match=r"line 2: unknown field\(s\) \['doc'\]") as e:
        parse_jsonl(jl(PAIRS[0], {"query": "q", "doc": "d"}), "retrieval", "data")
    assert e.value.field == "doc" and e.value.code == "invalid_dataset"


def test_missing_and_empty_fields_are_named():
    with pytest.raises(DoctuneError, match="line 1: missing 'document'") as e:
        parse_jsonl(jl({"query": "q"}), "retrieval", "data")
    assert e.value.field == "document"
    with pytest.raises(DoctuneError, match="line 1: 'query' must be a non-empty string") as e:
        parse_jsonl(jl({"query": "  ", "document": "d"}), "retrieval", "data")
    assert e.value.field == "query"
    with pytest.raises(DoctuneError, match="line 1: 'doc_id' must be a non-empty string or integer") as e:
        parse_jsonl(jl({"query": "q", "document": "d", "doc_id": True}), "retrieval", "data")
    assert e.value.field == "doc_id"


def test_valid_record_is_normalized():
    [a, b] = parse_jsonl(jl({"query": "q", "document": "d", "doc_id": 7, "id": 1, "meta": {}},
                            {"query": "q", "document": "d"}), "retrieval", "data")
    assert a == {"query": "q", "document": "d", "doc_id": "7"}
    assert b == {"query": "q", "document": "d"}
    assert doc_key(a) == "7" and doc_key(b).startswith("sha1:") and doc_key(b) == doc_key({"document": "d"})


def test_check_splits_counts_documents_and_catches_a_reused_doc_id():
    splits = {"train": PAIRS[:2], "dev": [PAIRS[2], {**PAIRS[0], "query": "kitten"}], "test": [PAIRS[3]]}
    info = RET.check_splits(splits)
    assert info == {"pairs": {"train": 2, "dev": 2, "test": 1}, "documents": 4, "labels": None}
    clash = {"query": "dog", "document": "A different text.", "doc_id": "d-cat"}
    with pytest.raises(DoctuneError, match=r"test record 1: doc_id 'd-cat' names a different document text than train record 1") as e:
        RET.check_splits({**splits, "test": [clash]})
    assert e.value.field == "doc_id"
    with pytest.raises(DoctuneError, match="the dev split is empty") as e:
        RET.check_splits({**splits, "dev": []})
    assert e.value.field == "dev"


def test_single_file_is_split_at_random():
    records = parse_jsonl(to_jsonl(bbc_headline_pairs(limit_per_class=10)), "retrieval", "data")
    splits = split_records(records, "retrieval")
    info = validate_splits(splits, "retrieval")
    assert info["sizes"] == {"train": 40, "dev": 5, "test": 5} and info["documents"] == 50
    assert {RET.stratify_key(r) for r in records} == {"all"}
    texts = task_texts(RET, splits["train"])  # what the plan counts: every query, then every document
    assert len(texts) == 80 and texts[0] == splits["train"][0]["query"] and texts[40] == splits["train"][0]["document"]


# -- encoding -------------------------------------------------------------
def test_encode_truncates_queries_at_64_and_documents_at_max_len():
    long = {"query": "word " * 200, "document": "word " * 400}
    ex = RET.encode([long, PAIRS[0]], tokenizer(), {}, 100)
    assert len(ex[0]["q_input_ids"]) == 64 and len(ex[0]["d_input_ids"]) == 100
    assert len(ex[1]["q_input_ids"]) == len(ex[1]["q_attention_mask"]) < 64
    assert RET.encode([long], tokenizer(), {}, 32)[0]["q_input_ids"].__len__() == 32  # min(64, max_len)
    assert ex[1]["doc_key"] == key_int("d-cat") and ex[0]["doc_key"] == key_int(doc_key(long))
    assert -(2**63) <= ex[0]["doc_key"] < 2**63


def test_collate_pads_queries_and_documents_separately():
    import torch

    ex = RET.encode(PAIRS, tokenizer(), {}, 64)
    b = RET.collate(ex, tokenizer())
    assert set(b) == {"q_input_ids", "q_attention_mask", "d_input_ids", "d_attention_mask", "doc_key", "attention_mask"}
    assert all(isinstance(v, torch.Tensor) and v.dtype == torch.long for v in b.values())
    q_w = max(len(e["q_input_ids"]) for e in ex)
    d_w = max(len(e["d_input_ids"]) for e in ex)
    assert b["q_input_ids"].shape == b["q_attention_mask"].shape == (4, q_w)
    assert b["d_input_ids"].shape == (4, d_w) and q_w != d_w
    assert b["q_attention_mask"].sum(1).tolist() == [len(e["q_input_ids"]) for e in ex]
    # the loop counts the step's tokens from attention_mask: queries and documents
    assert int(b["attention_mask"].sum()) == sum(len(e["q_input_ids"]) + len(e["d_input_ids"]) for e in ex)
    assert b["doc_key"].tolist() == [e["doc_key"] for e in ex]


# -- the model ------------------------------------------------------------
def test_loss_is_finite_and_falls_with_training(tiny_base, one_thread):
    import torch

    torch.manual_seed(0)
    model = RET.build_model(tiny_base, {})
    assert model.config.hidden_size == 32 and getattr(model.encoder, "pooler", None) is None  # mean pooling only
    batch = RET.collate(RET.encode(PAIRS, tokenizer(), {}, 32), tokenizer())
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(10):
        out = model(**batch)
        assert torch.isfinite(out.loss)
        losses.append(out.loss.item())
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    assert out.q.shape == out.d.shape == (4, 32)
    assert torch.allclose(out.q.norm(dim=-1), torch.ones(4), atol=1e-5)
    assert losses[-1] < 0.5 * losses[0], losses


def test_other_copies_of_the_own_document_are_not_negatives(tiny_base):
    import torch

    model = RET.build_model(tiny_base, {}).eval()
    batch = RET.collate(RET.encode([PAIRS[0], PAIRS[0]], tokenizer(), {}, 32), tokenizer())
    with torch.no_grad():
        masked = float(model(**batch).loss)
        batch.pop("doc_key")
        unmasked = float(model(**batch).loss)
    assert masked == pytest.approx(0.0, abs=1e-6) and unmasked == pytest.approx(math.log(2), abs=1e-4)


def test_predictions_give_embeddings_and_doc_keys(tiny_base):
    import torch

    model = RET.build_model(tiny_base, {}).eval()
    batch = RET.collate(RET.encode(PAIRS, tokenizer(), {}, 32), tokenizer())
    with torch.no_grad():
        pred, gold = RET.predictions(model(**batch), batch)
    assert len(pred) == len(gold) == 4 and len(pred[0]) == 32
    assert gold[0][0] == key_int("d-cat") and len(gold[0][1]) == 32
    m = RET.metrics(pred, gold, {})
    assert set(RET.metric_names) - {"loss"} <= set(m) and m["pool_size"] == 4
    assert all(isinstance(m[k], float) and 0 <= m[k] <= 1 for k in RET.metric_names if k != "loss")


# -- metrics --------------------------------------------------------------
def test_metrics_perfect_matches():
    docs = [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    m = RET.metrics([[2, 0, 0], [0, 1, 0.1], [0, 0.1, 1]], [(i, d) for i, d in enumerate(docs)], {})
    assert {k: m[k] for k in ("mrr_at_10", "ndcg_at_10", "recall_at_1", "recall_at_5", "recall_at_10")} == {
        "mrr_at_10": 1.0, "ndcg_at_10": 1.0, "recall_at_1": 1.0, "recall_at_5": 1.0, "recall_at_10": 1.0}


def test_metrics_gold_at_rank_two_and_shared_documents():
    a, b = [1.0, 0.0], [0.0, 1.0]
    # query 1's document is b but it is closer to a (rank 2); query 2 shares document a (rank 1)
    pred = [[0.9, 0.4], [1.0, 0.0]]
    gold = [(20, b), (10, a)]
    m = RET.metrics(pred[:1], gold[:1], {})  # alone: a one-document pool, rank 1
    assert m["mrr_at_10"] == 1.0 and m["pool_size"] == 1
    m = RET.metrics(pred + [[0.0, 1.0]], gold + [(10, a)], {})  # pool {b, a}; third query (gold a) at rank 2
    assert m["pool_size"] == 2
    assert m["mrr_at_10"] == pytest.approx((0.5 + 1 + 0.5) / 3)
    assert m["ndcg_at_10"] == pytest.approx((1 / math.log2(3) + 1 + 1 / math.log2(3)) / 3)
    assert (m["recall_at_1"], m["recall_at_5"]) == (pytest.approx(1 / 3), 1.0)


def test_metrics_beyond_ten_and_ties():
    import numpy as np

    eye = np.eye(12).tolist()
    # every query is closest to document 0; document 11 is the gold of the last query: rank 12
    pred = [[1.0] + [0.0] * 11, [1.0] + [0.0] * 10 + [0.5]]
    gold = [(i, eye[i]) for i in range(12)]
    m = RET.metrics(pred, [gold[0], gold[11]], {})
    assert m["pool_size"] == 2  # only the split's documents are ranked
    m = RET.metrics([pred[0]] * 11 + [pred[1]], gold, {})
    assert m["pool_size"] == 12
    # query 0 rank 1; queries 1..10 score 0 for their gold: document 0 above, 10 ties: rank 12; query 11 rank 2
    assert m["mrr_at_10"] == pytest.approx((1 + 0.5) / 12)
    assert m["recall_at_10"] == pytest.approx(2 / 12)
    # a collapsed encoder (all embeddings equal) ranks nothing first: ties count against
    flat = RET.metrics([[1.0, 1.0]] * 3, [(i, [1.0, 1.0]) for i in range(3)], {})
    assert flat["recall_at_1"] == 0.0 and flat["mrr_at_10"] == pytest.approx(1 / 3)


# -- export and serving ---------------------------------------------------
def _export(model, tmp_path, splits, max_len=48):
    model.save_pretrained(tmp_path, safe_serialization=True)
    tokenizer().save_pretrained(tmp_path)
    meta = {"task": "retrieval", "labels": None, "max_seq_length": max_len, "base_model": "all-minilm-l6-v2"}
    meta.update(RET.export_extras(model, tokenizer(), {}, splits, max_len, tmp_path) or {})
    (tmp_path / "doctune.json").write_text(json.dumps(meta))
    return meta


def test_export_load_and_search_round_trip(tiny_base, tmp_path):
    import numpy as np
    import transformers

    model = RET.build_model(tiny_base, {})
    splits = {"train": PAIRS[:2], "dev": [PAIRS[2], {**PAIRS[0], "query": "kitten"}], "test": [PAIRS[3]]}
    meta = _export(model, tmp_path, splits)
    assert (meta["collection_size"], meta["index"]) == (4, "index.npy")
    rows = [json.loads(l) for l in (tmp_path / "collection.jsonl").read_text().splitlines()]
    assert [r["doc_id"] for r in rows] == ["d-cat", doc_key(PAIRS[1]), doc_key(PAIRS[2]), doc_key(PAIRS[3])]
    assert rows[3]["text"] == PAIRS[3]["document"]
    assert np.load(tmp_path / "index.npy").shape == (4, 32)
    assert type(transformers.AutoModel.from_pretrained(tmp_path)).__name__ == "BertModel"  # a plain export

    served = RET.load_model(str(tmp_path))
    assert len(served) == 4
    inputs = RET.parse_request({"queries": [PAIRS[3]["document"], PAIRS[0]["document"]], "k": 3})
    out = RET.predict(served, tokenizer(), inputs, meta, meta["max_seq_length"])
    assert len(out) == 2 and all(len(o["results"]) == 3 for o in out)
    first = out[0]["results"]
    assert first[0]["doc_id"] == doc_key(PAIRS[3]) and first[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert [r["score"] for r in first] == sorted((r["score"] for r in first), reverse=True)
    assert out[1]["results"][0]["doc_id"] == "d-cat" and out[1]["results"][0]["text"] == PAIRS[0]["document"]
    big = RET.predict(served, tokenizer(), RET.parse_request({"query": "rain", "k": 100}), meta, 48)
    assert len(big[0]["results"]) == 4  # k beyond the collection: all of it

    # without index.npy (a ZeRO-3 export) the replica indexes the collection when it loads
    (tmp_path / "index.npy").unlink()
    rebuilt = RET.load_model(str(tmp_path))
    assert np.allclose(rebuilt.index, served.index, atol=1e-5)
    assert RET.predict(rebuilt, tokenizer(), inputs, meta, 48)[0]["results"][0]["doc_id"] == doc_key(PAIRS[3])


def test_zero3_partitioned_export_skips_the_index_and_snippets_are_cut(tiny_base, tmp_path):
    model = RET.build_model(tiny_base, {})
    next(model.parameters()).ds_id = 0  # what DeepSpeed ZeRO-3 marks its partitioned parameters with
    long_doc = {"query": "long", "document": "x" * 1000}
    meta = _export(model, tmp_path, {"train": [long_doc], "dev": [], "test": []})
    assert (meta["collection_size"], meta["index"]) == (1, None) and not (tmp_path / "index.npy").exists()
    del next(model.parameters()).ds_id
    served = RET.load_model(str(tmp_path))
    [res] = RET.predict(served, tokenizer(), [{"query": "long", "k": 10}], meta, 48)
    assert len(res["results"]) == 1 and len(res["results"][0]["text"]) == 300


def test_parse_request():
    assert RET.parse_request({"query": "rates"}) == [{"query": "rates", "k": 10}]
    assert RET.parse_request({"queries": ["a", "b"], "k": 3}) == [{"query": "a", "k": 3}, {"query": "b", "k": 3}]
    for body, field, needle in [
        ({"query": "a", "k": 0}, "k", "'k' must be an integer from 1 to 100; got 0"),
        ({"query": "a", "k": 101}, "k", "got 101"),
        ({"query": "a", "k": "5"}, "k", "got '5'"),
        ({"query": "a", "k": True}, "k", "got True"),
        ({"query": ""}, "query", "'query' must be a non-empty string"),
        ({"queries": []}, "queries", "'queries' must be a list of 1 or more"),
        ({"queries": ["a", 3]}, "queries", "'queries' must be a list"),
        ({"query": "a", "queries": ["b"]}, "query", "exactly one of 'query' or 'queries'"),
        ({"k": 3}, "query", "exactly one of"),
        ({"inputs": ["a"]}, "inputs", "unknown field(s) ['inputs']"),
        (["a"], "query", "expected a JSON object"),
    ]:
        with pytest.raises(DoctuneError) as e:
            RET.parse_request(body)
        assert e.value.code == "invalid_request" and e.value.field == field, body
        assert needle in e.value.message and '{"query": "search text", "k": 10}' in e.value.message


# -- plan, example, data --------------------------------------------------
def test_plan_model_shape_with_lora():
    from doctune.train.plan import model_shape

    base = {"tenant": "a", "task": "retrieval", "dataset": {"id": "d"}, "max_steps": 10}
    full = model_shape(JobSpec.model_validate({**base, "tuning": {"method": "full"}}), RET, minilm(), {})
    lora = model_shape(JobSpec.model_validate({**base, "tuning": {"method": "lora", "lora": {
        "r": 8, "target_modules": ["query", "key", "value", "dense"]}}}), RET, minilm(), {})
    assert (full.hidden, full.layers, full.heads, full.vocab) == (384, 6, 12, 30522)
    assert 22_000_000 < full.params_total < 23_000_000 and full.params_trainable == full.params_total
    assert 0 < lora.params_trainable < 0.02 * lora.params_total
    # no pooler: adapters on query, key, value and the three dense layers of each layer only
    assert lora.adapter_inputs == 4 * 384 + 384 + 1536 and not lora.lm_head


def test_example_job_validates():
    path = ROOT / "docs" / "examples" / "bbc-retrieval.yaml"
    spec = load_job_spec(path)
    assert (spec.task, spec.base_model, spec.tuning.method, spec.deepspeed.zero_stage) == (
        "retrieval", "all-minilm-l6-v2", "lora", 2)
    assert (spec.num_workers, spec.micro_batch_size, spec.gradient_accumulation_steps, spec.max_seq_length) == (2, 16, 1, 128)
    assert spec.tuning.lora.target_modules == ["query", "key", "value", "dense"]
    assert spec.early_stopping.metric == "mrr_at_10" and spec.early_stopping.metric in RET.metric_names


def test_bbc_headline_pairs():
    pairs = bbc_headline_pairs(limit_per_class=20)
    assert 95 <= len(pairs) <= 100  # 20 articles from each of 5 topics, less re-published headlines
    assert all(p["query"].strip() and p["document"].strip() for p in pairs)
    first = pairs[0]
    assert first["query"] == "Ad sales boost Time Warner profit"
    assert first["document"].startswith("Quarterly profits at US media giant TimeWarner")
    assert first["doc_id"].startswith("bbc-business-") and first["doc_id"] == bbc_headline_pairs(limit_per_class=1)[0]["doc_id"]
    assert len({p["doc_id"] for p in pairs}) == len(pairs) and len({p["query"] for p in pairs}) == len(pairs)
    assert all(not p["document"].startswith(p["query"]) for p in pairs)
    assert [RET.validate_record(p, "bbc") for p in pairs] == pairs
