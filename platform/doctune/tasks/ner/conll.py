"""Reading CoNLL-style NER files: one ``token tag`` pair per line, a blank line between sentences."""

from __future__ import annotations

from typing import Any, Callable


def read_conll(text: str, parse_line: Callable[[str, int], tuple[str, str]],
               convert_tags: Callable[[list[str]], list[str]] = list, limit: int | None = None) -> list[dict[str, Any]]:
    """Records ``{"tokens": [...], "tags": [...]}``, one per sentence; ``parse_line(line, number)``
    splits a non-blank line into (token, tag) or raises, ``convert_tags`` maps a sentence's tags
    (e.g. BMES to BIO), ``limit`` keeps the first N sentences."""
    records: list[dict[str, Any]] = []
    tokens: list[str] = []
    tags: list[str] = []
    for n, line in enumerate(text.splitlines(), 1):
        if limit is not None and len(records) >= limit:
            return records
        if line.strip():
            token, tag = parse_line(line, n)
            tokens.append(token)
            tags.append(tag)
        elif tokens:
            records.append({"tokens": tokens, "tags": convert_tags(tags)})
            tokens, tags = [], []
    if tokens and (limit is None or len(records) < limit):
        records.append({"tokens": tokens, "tags": convert_tags(tags)})
    return records
