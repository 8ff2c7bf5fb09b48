"""The cheap NER baseline a user would try first: a gazetteer of the train split's entities.

:meth:`NerTask.reference_baselines` calls :func:`gazetteer_baseline` at the start of every ner job;
the job report shows its dev and test metrics (``gazetteer``) beside the untrained head's and the
fine-tuned model's, scored by the plugin's own ``metrics`` (seqeval) on the same BIO labels.

The gazetteer maps every entity's exact word sequence seen in train (case-sensitive) to its most
frequent type there. Tagging walks each sentence left to right and takes the longest entry that
starts at the current word, so it finds only entities it has seen: its recall on new names is 0,
which is what fine-tuning has to beat. An entry is kept only if, matched over the train split
itself, it marks a gold entity of its type at least half the time (:func:`keep_precise_entries`):
without that, one-character names such as 中 (China, in MSRA) match inside every other word, and
the baseline's precision falls to 0.20, a bar too low to mean anything. It reads whole sentences
(the fine-tuned model is scored on the words inside its ``max_seq_length``; the two agree unless
sentences are truncated).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any, Callable

from doctune.tasks._tagging import spans

MAX_ENTITY_WORDS = 32  # longer train entities are left out: they bound the matching work and rarely recur
MIN_TRAIN_PRECISION = 0.5  # an entry must mark a gold entity in at least this share of its train matches

Gazetteer = dict[tuple[str, ...], str]
Metrics = Callable[[list[Any], list[Any], dict[str, Any]], dict[str, Any]]


def gazetteer_baseline(splits: dict[str, list[dict[str, Any]]], info: dict[str, Any],
                       metrics: Metrics) -> dict[str, Any]:
    """``{"dev": metrics, "test": metrics}`` of tagging dev and test with the train split's gazetteer.

    ``info["labels"]`` are the BIO labels ``check_splits`` returned; ``metrics`` is the plugin's,
    fed label-id sequences as ``predictions`` does.
    """
    gazetteer = keep_precise_entries(build_gazetteer(splits["train"]), splits["train"])
    longest = max(map(len, gazetteer), default=0)
    label2id = {label: i for i, label in enumerate(info["labels"])}
    out = {}
    for split in ("dev", "test"):
        rows = splits[split]
        predicted = [[label2id[t] for t in tag_with_gazetteer(r["tokens"], gazetteer, longest)] for r in rows]
        out[split] = metrics(predicted, [[label2id[t] for t in r["tags"]] for r in rows], info)
    return out


def build_gazetteer(records: list[dict[str, Any]]) -> Gazetteer:
    """Every entity's word sequence in ``records`` -> its most frequent type (ties: the first by name)."""
    types: defaultdict[tuple[str, ...], Counter[str]] = defaultdict(Counter)
    for r in records:
        for kind, first, end in spans(r["tags"]):
            if end - first <= MAX_ENTITY_WORDS:
                types[tuple(r["tokens"][first:end])][kind] += 1
    return {words: min(counts, key=lambda t: (-counts[t], t)) for words, counts in types.items()}


def keep_precise_entries(gazetteer: Gazetteer, records: list[dict[str, Any]]) -> Gazetteer:
    """The entries that, matched over ``records`` (train) by :func:`tag_with_gazetteer`, mark a gold
    entity of their type in at least :data:`MIN_TRAIN_PRECISION` of their matches."""
    longest = max(map(len, gazetteer), default=0)
    hits: Counter[tuple[str, ...]] = Counter()
    matches: Counter[tuple[str, ...]] = Counter()
    for r in records:
        gold = set(spans(r["tags"]))
        for kind, first, end in spans(tag_with_gazetteer(r["tokens"], gazetteer, longest)):
            words = tuple(r["tokens"][first:end])
            matches[words] += 1
            hits[words] += (kind, first, end) in gold
    return {w: kind for w, kind in gazetteer.items() if hits[w] >= MIN_TRAIN_PRECISION * matches[w]}


def tag_with_gazetteer(tokens: list[str], gazetteer: Gazetteer, longest: int) -> list[str]:
    """BIO tags for ``tokens``: greedy longest match, left to right, of entries up to ``longest`` words."""
    tags = ["O"] * len(tokens)
    i = 0
    while i < len(tokens):
        for n in range(min(longest, len(tokens) - i), 0, -1):
            kind = gazetteer.get(tuple(tokens[i:i + n]))
            if kind is not None:
                tags[i:i + n] = [f"B-{kind}"] + [f"I-{kind}"] * (n - 1)
                i += n
                break
        else:
            i += 1
    return tags
