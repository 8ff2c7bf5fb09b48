"""BIO word tagging, shared by the plugins that tag words (ner; extraction's key fields).

The first sub-token of each word carries the word's tag; every other position is labelled
:data:`IGNORE`, which the loss and the metrics skip. Metrics are span-level (seqeval): a span
counts only if its type and its exact extent are right.
"""

from __future__ import annotations

from typing import Any

IGNORE = -100  # label id the loss and the metrics skip (non-first sub-tokens, special tokens, padding)


def spans(tags: list[str]) -> list[tuple[str, int, int]]:
    """Entities in a BIO tag sequence as ``(type, first, last + 1)`` word indices.

    Lenient decoding: ``B-x`` starts an entity; ``I-x`` continues an entity of
    type ``x`` and otherwise (after ``O`` or another type) starts a new one.
    """
    out: list[tuple[str, int, int]] = []
    current: list[Any] | None = None
    for i, tag in enumerate(tags):
        if tag == "O":
            current = None
            continue
        prefix, kind = tag[0], tag[2:]
        if prefix == "I" and current is not None and current[0] == kind:
            current[2] = i + 1
            continue
        current = [kind, i, i + 1]
        out.append(current)  # type: ignore[arg-type]
    return [tuple(s) for s in out]  # type: ignore[misc]


def first_subtokens(word_ids: list[int | None]) -> dict[int, int]:
    """Word index -> position of its first sub-token, in word order. Words past truncation, or with
    no sub-token at all (e.g. a lone control character), are not in it."""
    first: dict[int, int] = {}
    for pos, w in enumerate(word_ids):
        if w is not None and w not in first:
            first[w] = pos
    return dict(sorted(first.items()))


def word_tags(word_ids: list[int | None], best_p: Any, best_id: Any, labels: list[str]) -> tuple[list[int], list[str], list[float]]:
    """Serving: each word's tag and score, read at its first sub-token (:func:`first_subtokens`)."""
    first = first_subtokens(word_ids)
    return list(first), [labels[int(best_id[p])] for p in first.values()], [float(best_p[p]) for p in first.values()]


def allowed_transitions(labels: list[str]) -> Any:
    """``allowed[i, j]``: whether tag ``j`` may follow tag ``i`` in BIO (``I-x`` only after ``B-x`` or
    ``I-x``); the last row is the start of a sentence (no ``I-`` first)."""
    import torch

    allowed = torch.ones(len(labels) + 1, len(labels), dtype=torch.bool)
    for j, tag in enumerate(labels):
        if tag.startswith("I-"):
            allowed[:, j] = False
            for i, prev in enumerate(labels):
                allowed[i, j] = prev[2:] == tag[2:] and prev[0] in "BI"
    return allowed


def viterbi_tags(log_probs: Any, allowed: Any) -> list[int]:
    """The most probable tag sequence (per-position ``log_probs``, shape words x tags) that is valid
    BIO: Viterbi decoding with the transitions ``allowed`` (:func:`allowed_transitions`) and no other
    transition cost. Argmax can tag ``O I-PER I-PER``; this picks the best valid sequence instead."""
    import torch

    if len(log_probs) == 0:
        return []
    forbid = torch.where(allowed, 0.0, float("-inf"))
    score = log_probs[0] + forbid[-1]
    back = []
    for row in log_probs[1:]:
        total = score[:, None] + forbid[:-1]  # previous tag x next tag
        best, arg = total.max(0)
        back.append(arg)
        score = best + row
    path = [int(score.argmax())]
    for arg in reversed(back):
        path.append(int(arg[path[-1]]))
    return path[::-1]


def valid_word_tags(word_ids: list[int | None], probs: Any, labels: list[str]) -> tuple[list[int], list[str], list[float]]:
    """Serving: like :func:`word_tags`, but the words' tags are the best valid BIO sequence
    (:func:`viterbi_tags` over the first sub-tokens' probabilities, shape tokens x tags); each
    score is the probability of the tag chosen."""
    first = first_subtokens(word_ids)
    words = list(first)
    rows = probs[list(first.values())] if words else probs[:0]
    path = viterbi_tags(rows.clamp_min(1e-12).log(), allowed_transitions(labels))
    return words, [labels[i] for i in path], [float(rows[k, i]) for k, i in enumerate(path)]


def bio_labels(count: int) -> list[str]:
    """Stand-in BIO labels for a head of ``count`` outputs laid out as the ner plugin lays them out
    (``O``, then ``B-t``, ``I-t`` per type): enough to tell which transitions are valid when only
    the model's outputs are at hand."""
    return ["O"] + [f"{p}-{t}" for t in range((count - 1) // 2) for p in "BI"]


def tag_types(labels: list[str]) -> list[str]:
    """The entity (or field) types of BIO ``labels``, in label order."""
    return [l[2:] for l in labels if l.startswith("B-")]


def collate_tags(batch: list[dict[str, Any]], tokenizer: Any) -> dict[str, Any]:
    """Pad a batch of tagged examples; labels are padded with IGNORE on the tokenizer's padding side."""
    import torch

    feats = tokenizer.pad([{k: b[k] for k in ("input_ids", "attention_mask")} for b in batch], return_tensors="pt")
    width = feats["input_ids"].shape[1]
    left = getattr(tokenizer, "padding_side", "right") == "left"
    labels = [
        [IGNORE] * (width - len(b["labels"])) + list(b["labels"]) if left else list(b["labels"]) + [IGNORE] * (width - len(b["labels"]))
        for b in batch
    ]
    feats["labels"] = torch.tensor(labels, dtype=torch.long)
    return {k: v.long() for k, v in feats.items()}

def tag_predictions(outputs: Any, batch: dict[str, Any], labels: list[str] | None = None) -> tuple[list[Any], list[Any]]:
    """(predicted, gold) label ids of each sequence, at its labelled positions only: the best valid
    BIO sequence (:func:`viterbi_tags`) when ``labels`` are given, else each position's argmax."""
    logits = outputs.logits.float().cpu()
    gold = batch["labels"].cpu()
    keep = gold != IGNORE
    if labels is None:
        predicted = [p[k].tolist() for p, k in zip(logits.argmax(-1), keep)]
    else:
        allowed = allowed_transitions(labels)
        predicted = [viterbi_tags(p[k].log_softmax(-1), allowed) for p, k in zip(logits, keep)]
    return predicted, [g[k].tolist() for g, k in zip(gold, keep)]

def tag_metrics(predicted: list[Any], gold: list[Any], labels: list[str]) -> dict[str, Any]:
    """Span-level (seqeval) precision, recall, F1, macro F1 and accuracy, and each type's scores
    (``per_type``), for label-id sequences over the BIO ``labels``."""
    from seqeval.metrics import accuracy_score, classification_report, f1_score, precision_score, recall_score

    y_pred = [[labels[i] for i in seq] for seq in predicted]
    y_true = [[labels[i] for i in seq] for seq in gold]
    types = tag_types(labels)
    if not any(y_true) and not any(y_pred):
        zero = {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
        return {"precision": 0.0, "recall": 0.0, "f1": 0.0, "macro_f1": 0.0, "accuracy": 0.0,
                "per_type": {t: dict(zero) for t in types}}
    report = classification_report(y_true, y_pred, output_dict=True, zero_division=0)
    per_type = {}
    for t in types:
        row = report.get(t, {})
        per_type[t] = {
            "precision": float(row.get("precision", 0.0)),
            "recall": float(row.get("recall", 0.0)),
            "f1": float(row.get("f1-score", 0.0)),
            "support": int(row.get("support", 0)),
        }
    return {
        "precision": float(precision_score(y_true, y_pred, zero_division=0)),
        "recall": float(recall_score(y_true, y_pred, zero_division=0)),
        "f1": float(f1_score(y_true, y_pred, zero_division=0)),
        # macro over the types seen in gold or predictions; also what the CLI's summary prints
        "macro_f1": float(report.get("macro avg", {}).get("f1-score", 0.0)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "per_type": per_type,
    }
