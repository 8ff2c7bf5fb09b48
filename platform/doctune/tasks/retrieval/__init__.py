"""Semantic search: fine-tune a bi-encoder on (query, document) pairs, serve top-k search.

Dataset format (JSONL, one positive pair per line)::

    {"query": "Ad sales boost Time Warner profit", "document": "Quarterly profits at US media giant ...",
     "doc_id": "bbc-business-001"}

``query`` and ``document`` are non-empty strings. Optional fields: ``doc_id``
(string or integer; the same id must always name the same text, and documents
without one are identified by a hash of their text), ``id`` (string or number),
``meta`` (object). Any other field is an error, so a misspelt ``quer`` is caught at
upload rather than at training. Several queries may share one document.

Training: one shared encoder (e.g. MiniLM) embeds queries (truncated to 64 tokens)
and documents (``max_seq_length``); an embedding is the mean of the token vectors,
L2-normalised. The loss is the cross-entropy of each query's cosine similarities to
every document of the batch (divided by a temperature of 0.05) against its own
document: the other documents of the batch are the negatives ("in-batch
negatives"), so larger micro-batches give harder training signal. Other copies of a
query's own document in the batch are not counted as negatives.

Metrics rank, for every query of a split, all the split's distinct documents by
cosine similarity (one relevant document per query): ``mrr_at_10``,
``ndcg_at_10``, ``recall_at_1/5/10`` (ties count against the query). The baseline
is the zero-shot base encoder (the loop evaluates the model before training).

The export is a plain transformers ``AutoModel`` plus ``collection.jsonl`` (every
distinct document of train/dev/test: ``{"doc_id", "text"}``) and ``index.npy``
(their normalised embeddings from the fine-tuned encoder; built when the replica
loads if absent). Serving takes ``{"query": "...", "k": 10}`` or
``{"queries": ["...", ...], "k": 10}`` (k from 1 to 100, default 10) and returns
per query ``{"results": [{"doc_id", "score", "text"}, ...]}``, best first, with
``text`` the document's first 300 characters.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from doctune.errors import DoctuneError
from doctune.tasks._records import check_fields
from doctune.tasks.retrieval import schemas
from doctune.tasks.retrieval.schemas import DEFAULT_K, MAX_K, SNIPPET

QUERY_MAX_LEN = 64  # tokens; queries are short, documents get max_seq_length
EMBED_BATCH = 32
COLLECTION_FILE, INDEX_FILE = "collection.jsonl", "index.npy"


def doc_key(record: dict[str, Any]) -> str:
    """A document's identity: its ``doc_id``, else ``sha1:`` and 16 hex digits of its text."""
    if record.get("doc_id") is not None:
        return str(record["doc_id"])
    return "sha1:" + hashlib.sha1(record["document"].encode("utf-8")).hexdigest()[:16]


def key_int(key: str) -> int:
    """A stable int64 for a document key (carried through the batch as a tensor)."""
    return int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:8], "big", signed=True)


def rank_metrics(ranks: list[int]) -> dict[str, float]:
    """MRR@10, nDCG@10 and Recall@1/5/10 for one relevant document per query at 1-based ``ranks``."""
    import math

    n = max(len(ranks), 1)
    return {
        "mrr_at_10": sum(1.0 / r for r in ranks if r <= 10) / n,
        "ndcg_at_10": sum(1.0 / math.log2(r + 1) for r in ranks if r <= 10) / n,
        "recall_at_1": sum(1 for r in ranks if r <= 1) / n,
        "recall_at_5": sum(1 for r in ranks if r <= 5) / n,
        "recall_at_10": sum(1 for r in ranks if r <= 10) / n,
    }


def _request_error(message: str, field: str) -> DoctuneError:
    return DoctuneError(
        f"{message}; the request body is "
        '{"query": "search text", "k": 10} or {"queries": ["search text", ...], "k": 10} (k from 1 to 100, default 10)',
        "invalid_request",
        field=field,
    )


class Retriever:
    """What a serving replica holds: the encoder and the document index (rows match ``doc_ids``)."""

    def __init__(self, encoder: Any, doc_ids: list[str], texts: list[str], index: Any) -> None:
        self.encoder, self.doc_ids, self.texts, self.index = encoder, doc_ids, texts, index

    def __len__(self) -> int:
        return len(self.doc_ids)


class RetrievalTask:
    name = "retrieval"
    peft_task_type = None  # a custom module: plain PeftModel, every keyword passes through
    primary_metric = "mrr_at_10"
    metric_names = ("mrr_at_10", "ndcg_at_10", "recall_at_1", "recall_at_5", "recall_at_10", "loss")
    metric_labels = {"mrr_at_10": "MRR@10", "ndcg_at_10": "nDCG@10", "recall_at_1": "recall@1", "recall_at_5": "recall@5",
                     "recall_at_10": "recall@10", "loss": "loss"}
    text_fields = ("query", "document")  # what the pre-flight plan counts: every query, then every document

    # serving schemas (doctune.serve.schemas documents the endpoint with them)
    request_model = schemas.RetrievalRequest
    response_model = schemas.RetrievalResponse
    endpoint_summary = schemas.SUMMARY
    endpoint_description = schemas.DESCRIPTION
    request_examples = schemas.EXAMPLES
    response_example = schemas.RESPONSE_EXAMPLE

    # serving capabilities (see doctune.tasks.check_can_serve)
    multiplexable = False
    multiplex_refusal = ("retrieval models cannot share a base model: each merges its adapter into the encoder when "
                         "it loads and carries its own document index; deploy it with multiplex: false")
    quantizable = False
    # the endpoint serves something other than the module the test split is evaluated with, so a
    # test-split number would not describe what int8 changes in what is served
    quantize_refusal = ("its endpoint ranks a document index embedded in fp32 at export; an int8 query encoder "
                        "would search fp32 document embeddings, which evaluating the test split does not measure")

    # -- data -----------------------------------------------------------
    def validate_record(self, record: dict[str, Any], where: str) -> dict[str, Any]:
        check_fields(record, where, self.name, ("query", "document"), ("doc_id", "id", "meta"),
                     '{"query": "rate rise fears", "document": "The Bank of England ...", "doc_id": "d1"}')
        for field in ("query", "document"):
            value = record[field]
            if not isinstance(value, str) or not value.strip():
                raise DoctuneError(
                    f"{where}: {field!r} must be a non-empty string; got {value!r}"[:300],
                    "invalid_dataset",
                    field=field,
                )
        out = {"query": record["query"], "document": record["document"]}
        doc_id = record.get("doc_id")
        if doc_id is not None:
            if isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)) or str(doc_id).strip() == "":
                raise DoctuneError(
                    f"{where}: 'doc_id' must be a non-empty string or integer; got {doc_id!r}. "
                    "Leave it out to identify the document by its text",
                    "invalid_dataset",
                    field="doc_id",
                )
            out["doc_id"] = str(doc_id).strip()
        return out

    def check_splits(self, splits: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
        texts: dict[str, tuple[str, str, int]] = {}  # doc key -> (text, split, record number)
        for split in ("train", "dev", "test"):
            records = splits.get(split) or []
            if not records:
                raise DoctuneError(
                    f"the {split} split is empty; retrieval needs query/document pairs in train, dev and test",
                    "invalid_dataset",
                    field=split,
                )
            for i, r in enumerate(records, 1):
                key = doc_key(r)
                seen = texts.setdefault(key, (r["document"], split, i))
                if seen[0] != r["document"]:
                    raise DoctuneError(
                        f"{split} record {i}: doc_id {key!r} names a different document text than "
                        f"{seen[1]} record {seen[2]}; give each distinct document its own doc_id "
                        "(or leave doc_id out to identify documents by their text)",
                        "invalid_dataset",
                        field="doc_id",
                    )
        return {
            "pairs": {s: len(splits[s]) for s in ("train", "dev", "test")},
            "documents": len(texts),
            "labels": None,
        }

    def stratify_key(self, record: dict[str, Any]) -> Any:
        return "all"  # nothing to stratify on: a plain seeded random split

    # -- model ----------------------------------------------------------
    def build_model(self, base_path: str, info: dict[str, Any], pretrained: bool = True) -> Any:
        from doctune.tasks.retrieval.model import BiEncoder, load_encoder

        return BiEncoder(load_encoder(base_path, pretrained))

    def head_modules(self) -> list[str]:
        return []  # no fresh head: the encoder itself is what is tuned

    def load_model(self, path: str) -> Retriever:
        import numpy as np

        from doctune.tasks.retrieval.model import BiEncoder, embed_texts, load_encoder

        root = Path(path)
        meta = json.loads((root / "doctune.json").read_text()) if (root / "doctune.json").exists() else {}
        if (root / "adapter_config.json").exists():  # an unmerged adapter over the base encoder
            import peft

            from doctune.base_models import resolve_base_model

            base = BiEncoder(load_encoder(resolve_base_model(meta["base_model"])))
            encoder = peft.PeftModel.from_pretrained(base, path).merge_and_unload()
        else:
            encoder = BiEncoder(load_encoder(path))
        encoder.eval()
        if not (root / COLLECTION_FILE).exists():
            raise DoctuneError(
                f"{path} has no {COLLECTION_FILE}: this retrieval model was exported without its document "
                "collection; retrain it with this doctune version",
                "internal",
            )
        rows = [json.loads(l) for l in (root / COLLECTION_FILE).read_text(encoding="utf-8").splitlines() if l.strip()]
        doc_ids, texts = [r["doc_id"] for r in rows], [r["text"] for r in rows]
        index = np.load(root / INDEX_FILE) if (root / INDEX_FILE).exists() else None
        if index is None or index.shape[0] != len(rows):  # ZeRO-3 exports skip it: index now
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(path)
            index = embed_texts(encoder, tokenizer, texts, int(meta.get("max_seq_length", 256)), EMBED_BATCH)
        return Retriever(encoder, doc_ids, texts, np.asarray(index, dtype=np.float32))

    def encode(self, records: list[dict[str, Any]], tokenizer: Any, info: dict[str, Any], max_len: int) -> list[dict[str, Any]]:
        q = tokenizer([r["query"] for r in records], truncation=True, max_length=min(QUERY_MAX_LEN, max_len))
        d = tokenizer([r["document"] for r in records], truncation=True, max_length=max_len)
        return [
            {
                "q_input_ids": q["input_ids"][i],
                "q_attention_mask": q["attention_mask"][i],
                "d_input_ids": d["input_ids"][i],
                "d_attention_mask": d["attention_mask"][i],
                "doc_key": key_int(doc_key(r)),
            }
            for i, r in enumerate(records)
        ]

    def collate(self, batch: list[dict[str, Any]], tokenizer: Any) -> dict[str, Any]:
        import torch

        out: dict[str, Any] = {}
        for side in ("q", "d"):
            feats = tokenizer.pad(
                [{"input_ids": b[f"{side}_input_ids"], "attention_mask": b[f"{side}_attention_mask"]} for b in batch],
                return_tensors="pt",
            )
            out[f"{side}_input_ids"] = feats["input_ids"].long()
            out[f"{side}_attention_mask"] = feats["attention_mask"].long()
        out["doc_key"] = torch.tensor([b["doc_key"] for b in batch], dtype=torch.long)
        # every token the step processes (queries and documents): the loop counts tokens from it;
        # the BiEncoder ignores it next to q_*/d_*
        out["attention_mask"] = torch.cat([out["q_attention_mask"], out["d_attention_mask"]], dim=1)
        return out

    def predictions(self, outputs: Any, batch: dict[str, Any]) -> tuple[list[Any], list[Any]]:
        q = outputs.q.detach().float().cpu().tolist()
        d = outputs.d.detach().float().cpu().tolist()
        keys = batch["doc_key"].cpu().tolist()
        return q, [(k, e) for k, e in zip(keys, d)]

    def metrics(self, predicted: list[Any], gold: list[Any], info: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        if not predicted:
            return {**rank_metrics([]), "pool_size": 0}
        where: dict[Any, int] = {}
        pool: list[Any] = []
        for key, emb in gold:
            if key not in where:
                where[key] = len(pool)
                pool.append(emb)
        docs = np.asarray(pool, dtype=np.float32)
        docs /= np.linalg.norm(docs, axis=1, keepdims=True).clip(min=1e-12)
        queries = np.asarray(predicted, dtype=np.float32)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True).clip(min=1e-12)
        target = np.array([where[key] for key, _ in gold])
        ranks: list[int] = []
        for i in range(0, len(queries), 1024):
            scores = queries[i : i + 1024] @ docs.T
            own = scores[np.arange(len(scores)), target[i : i + 1024]]
            # 1 + documents scoring at least as high as the relevant one (ties count against it)
            ranks += ((scores >= own[:, None]).sum(1)).tolist()
        return {**rank_metrics(ranks), "pool_size": len(pool)}

    def export_extras(self, model: Any, tokenizer: Any, info: dict[str, Any], splits: dict[str, list[dict[str, Any]]] | None,
                      max_len: int, out_dir: Any) -> dict[str, Any]:
        """Write ``collection.jsonl`` (every distinct document of the splits) and, unless the
        parameters are ZeRO-3 partitioned, ``index.npy`` (their embeddings, same order)."""
        import numpy as np

        from doctune.tasks.retrieval.model import embed_texts, unwrap

        out = Path(out_dir)
        docs: dict[str, str] = {}
        for split in ("train", "dev", "test"):
            for r in (splits or {}).get(split, []):
                docs.setdefault(doc_key(r), r["document"])
        with (out / COLLECTION_FILE).open("w", encoding="utf-8") as f:
            for key, text in docs.items():
                f.write(json.dumps({"doc_id": key, "text": text}, ensure_ascii=False) + "\n")
        bi = unwrap(model)
        index = None
        if not any(hasattr(p, "ds_id") for p in bi.parameters()):
            emb = embed_texts(bi, tokenizer, list(docs.values()), max_len, EMBED_BATCH)
            np.save(out / INDEX_FILE, emb)
            index = INDEX_FILE
        return {"collection_size": len(docs), "index": index, "query_max_length": min(QUERY_MAX_LEN, max_len)}

    # -- serving --------------------------------------------------------
    def parse_request(self, body: Any) -> list[dict[str, Any]]:
        if not isinstance(body, dict):
            raise _request_error(f"expected a JSON object, got {type(body).__name__}", "query")
        unknown = sorted(set(body) - {"query", "queries", "k"})
        if unknown:
            raise _request_error(f"unknown field(s) {unknown}", unknown[0])
        k = body.get("k", DEFAULT_K)
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise _request_error(f"'k' must be an integer from 1 to {MAX_K}; got {k!r}", "k")
        if ("query" in body) == ("queries" in body):
            raise _request_error("give exactly one of 'query' or 'queries'", "query")
        if "query" in body:
            q = body["query"]
            if not isinstance(q, str) or not q.strip():
                raise _request_error(f"'query' must be a non-empty string; got {q!r}"[:200], "query")
            return [{"query": q, "k": k}]
        qs = body["queries"]
        if not isinstance(qs, list) or not qs or not all(isinstance(q, str) and q.strip() for q in qs):
            raise _request_error("'queries' must be a list of 1 or more non-empty strings", "queries")
        return [{"query": q, "k": k} for q in qs]

    def predict(self, model: Any, tokenizer: Any, inputs: list[dict[str, Any]], info: dict[str, Any], max_len: int) -> list[dict[str, Any]]:
        import numpy as np

        from doctune.tasks.retrieval.model import embed_texts

        if not inputs:
            return []
        q_len = int(info.get("query_max_length") or min(QUERY_MAX_LEN, max_len))
        emb = embed_texts(model.encoder, tokenizer, [x["query"] for x in inputs], q_len, EMBED_BATCH)
        scores = emb @ model.index.T
        out = []
        for row, x in zip(scores, inputs):
            k = min(int(x.get("k", DEFAULT_K)), len(row))
            top = np.argpartition(-row, k - 1)[:k] if k < len(row) else np.arange(len(row))
            top = sorted(top.tolist(), key=lambda j: (-row[j], j))
            out.append({"results": [
                {"doc_id": model.doc_ids[j], "score": float(row[j]), "text": model.texts[j][:SNIPPET]} for j in top
            ]})
        return out


def bbc_headline_pairs(limit_per_class: int | None = None) -> list[dict[str, Any]]:
    """BBC News as retrieval pairs: query = an article's headline, document = its body.

    Uses :func:`doctune.data.bbc_articles` (one article per distinct headline).
    ``doc_id`` is ``bbc-<topic>-<first 10 hex of sha1(body)>`` (stable, and the same for
    the corpus's duplicated articles). A headline that already appeared is skipped (the
    corpus has a few re-published articles), so every query has one relevant document.
    ``limit_per_class`` keeps the first N articles of each topic.
    """
    from doctune.corpora import bbc_articles

    return [{"query": a["headline"], "document": a["body"],
             "doc_id": f"bbc-{a['topic']}-{hashlib.sha1(a['body'].encode('utf-8')).hexdigest()[:10]}"}
            for a in bbc_articles(limit_per_class)]


PLUGIN = RetrievalTask()
