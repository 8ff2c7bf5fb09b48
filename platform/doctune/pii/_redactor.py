"""Finding personal data in text and replacing it: in a string, in a list of words, in text with spans."""

from __future__ import annotations

import re
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

PII_TYPES = ("EMAIL", "PHONE", "CARD", "IBAN", "NATIONAL_ID", "PERSON")
# when detections of two types overlap and score the same, the first type here names the region
_PRIORITY = {t: i for i, t in enumerate(("NATIONAL_ID", "IBAN", "CARD", "EMAIL", "PHONE", "PERSON"))}

# CJK characters, kana, hangul, CJK punctuation and full-width forms (but full-width ASCII, which is
# turned into ASCII): spaces in the copy the Latin-script recognizers read, so that a number or an
# address right next to Chinese text ("电话13812345678") has a word boundary, and "邮箱a@b.com" is
# not read as the address "邮箱a@b.com". One character for one: offsets stay those of the text.
_CJK = re.compile(r"[\u2e80-\uff00\uff5f-\uffef]")
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_FULLWIDTH_ASCII = {c: c - 0xFEE0 for c in range(0xFF01, 0xFF5F)}

_analyzer = None
_analyzer_lock = threading.Lock()


@dataclass(frozen=True)
class Finding:
    """One piece of personal data: ``text[start:end]`` is of ``type`` (one of :data:`PII_TYPES`)."""

    start: int
    end: int
    type: str
    score: float


def placeholder(pii_type: str) -> str:
    """What replaces personal data of ``pii_type``: ``<EMAIL>``, ``<PHONE>``, ..."""
    return f"<{pii_type}>"


def _engine():
    global _analyzer
    with _analyzer_lock:
        if _analyzer is None:
            from doctune.pii._presidio import build_analyzer

            _analyzer = build_analyzer()
        return _analyzer


def latin_view(text: str) -> str:
    """``text`` with CJK characters as spaces and full-width ASCII as ASCII, character for character."""
    return _CJK.sub(" ", text.translate(_FULLWIDTH_ASCII))


def find_pii(text: str) -> list[Finding]:
    """The personal data in ``text``: sorted, never overlapping (detections that overlap are joined
    into one region, named by the most certain of them)."""
    if not text or not text.strip():
        return []
    from doctune.pii._presidio import DOCTUNE_TYPE

    engine = _engine()
    results = list(engine.analyze(latin_view(text), language="en"))
    if _HAN.search(text):
        results += engine.analyze(text, language="zh")
    found = sorted((Finding(r.start, r.end, DOCTUNE_TYPE[r.entity_type], r.score) for r in results
                    if r.entity_type in DOCTUNE_TYPE and r.end > r.start),
                   key=lambda f: (f.start, -f.end))
    merged: list[Finding] = []
    for f in found:
        last = merged[-1] if merged else None
        if last is None or f.start >= last.end:
            merged.append(f)
            continue
        best = min((last, f), key=lambda x: (-x.score, _PRIORITY[x.type]))
        merged[-1] = Finding(last.start, max(last.end, f.end), best.type, best.score)
    return merged


def replace_findings(text: str, findings: list[Finding]) -> str:
    out, at = [], 0
    for f in findings:
        out += [text[at:f.start], placeholder(f.type)]
        at = f.end
    return "".join(out) + text[at:]


class Redactor:
    """Replaces personal data with typed placeholders and counts what it replaced, by type.

    One per dataset upload: ``counts`` adds up every replacement in every field it was handed. A
    text seen before (a retrieval document that several queries share) is looked up, not analysed
    again, and counted again: the counts are the replacements in the stored records.
    """

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._seen: dict[str, tuple[str, Counter[str]]] = {}
        self._replaced: dict[str, str] = {}  # each piece of personal data replaced so far -> its type
        self._known: tuple[int, re.Pattern[str]] | None = None  # self._replaced as one pattern, and its size

    def _find(self, text: str) -> list[Finding]:
        findings = find_pii(text)
        self._replaced.update((text[f.start:f.end], f.type) for f in findings)
        return findings

    def text(self, text: str) -> str:
        """``text`` with each piece of personal data replaced by its placeholder."""
        hit = self._seen.get(text)
        if hit is None:
            findings = self._find(text)
            hit = self._seen[text] = (replace_findings(text, findings), Counter(f.type for f in findings))
        self.counts.update(hit[1])
        return hit[0]

    def quoted(self, text: str) -> str:
        """``text`` that quotes the redacted records (an upload report): every piece of personal data this
        redactor replaced in them is replaced here too, wherever it appears, as is what :func:`find_pii`
        finds in ``text`` itself. Not counted."""
        if self._replaced:
            if self._known is None or self._known[0] != len(self._replaced):
                alternatives = "|".join(re.escape(k) for k in sorted(self._replaced, key=len, reverse=True))
                self._known = (len(self._replaced), re.compile(alternatives))
            text = self._known[1].sub(lambda m: placeholder(self._replaced[m.group()]), text)
        return replace_findings(text, find_pii(text))

    def value(self, value: Any) -> Any:
        """A field value: a string is redacted; a number becomes its redacted text when it is personal
        data (a phone or card number written as a JSON number) and stays a number otherwise; a list,
        item by item; booleans and null stay."""
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            as_text = str(value)
            redacted = self.text(as_text)
            return value if redacted == as_text else redacted
        return value

    def tokens(self, tokens: list[str]) -> list[str]:
        """Words (an NER record's ``tokens``) with personal data replaced word by word: the list keeps
        its length, so tags stay aligned. The words are read as one text, joined by spaces, or with
        nothing between them when most are single characters (Chinese split into characters), so
        that a phone number spread over several words is still found. Every word that a finding
        covers becomes its placeholder; the part of a word outside a finding stays."""
        chars = sum(len(t) == 1 for t in tokens) >= 0.8 * len(tokens)
        sep = "" if chars else " "
        text = sep.join(tokens)
        findings = self._find(text)
        if not findings:
            return list(tokens)
        self.counts.update(f.type for f in findings)
        out, pos = [], 0
        for token in tokens:
            start, end = pos, pos + len(token)
            pos = end + len(sep)
            parts, at = [], start
            for f in findings:
                if f.start < end and f.end > start:
                    parts += [text[at:max(f.start, start)], placeholder(f.type)]
                    at = min(f.end, end)
            out.append("".join(parts) + text[at:end])
        return out

    def text_with_spans(self, text: str, spans: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
        """``text`` redacted, and ``spans`` (``{"start", "end", ...}`` character offsets into it, end
        exclusive) moved onto the same characters of the redacted text. A finding that a span's start
        or end falls inside is replaced piece by piece, cut at that boundary, so each span still
        begins and ends where it did (a span over part of a name covers that part's placeholder)."""
        findings = self._find(text)
        self.counts.update(f.type for f in findings)
        cuts = sorted({s["start"] for s in spans} | {s["end"] for s in spans})
        pieces: list[tuple[int, int, str]] = []
        for f in findings:
            bounds = [f.start, *(c for c in cuts if f.start < c < f.end), f.end]
            for a, b in zip(bounds, bounds[1:]):
                while a < b and text[a].isspace():
                    a += 1
                while b > a and text[b - 1].isspace():
                    b -= 1
                if a < b:
                    pieces.append((a, b, placeholder(f.type)))

        def moved(x: int) -> int:
            return x + sum(len(p) - (b - a) for a, b, p in pieces if b <= x)

        out, at = [], 0
        for a, b, p in pieces:
            out += [text[at:a], p]
            at = b
        new_spans = [{**s, "start": moved(s["start"]), "end": moved(s["end"])} for s in spans]
        return "".join(out) + text[at:], new_spans

    def report(self) -> dict[str, Any]:
        """``{"counts": {type: replacements, ...}, "total": n}``, every type listed."""
        counts = {t: self.counts.get(t, 0) for t in PII_TYPES}
        return {"counts": counts, "total": sum(counts.values())}
