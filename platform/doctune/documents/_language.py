"""Which language a document is in: English or Chinese, by the share of CJK ideographs.

doctune's tasks and OCR packs cover English and Chinese only, so the question is binary.
A ratio of Han characters among letters answers it offline, in microseconds, for text of any
length; general language identifiers (langdetect, lingua, fastText lid) need profiles or model
files and are unreliable on the short, number-heavy text of invoices and forms.
"""

from __future__ import annotations

# Han ideographs (CJK Unified Ideographs and extension A, compatibility ideographs)
_HAN = ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF))
ZH_RATIO = 0.2  # a document is Chinese when at least this share of its letters are Han characters


def is_han(ch: str) -> bool:
    code = ord(ch)
    return any(lo <= code <= hi for lo, hi in _HAN)


def detect_language(text: str, default: str = "en") -> str:
    """``"zh"`` or ``"en"`` (``default`` when the text has no letters at all)."""
    han = letters = 0
    for ch in text:
        if ch.isalpha():
            letters += 1
            han += is_han(ch)
    if not letters:
        return default
    return "zh" if han / letters >= ZH_RATIO else "en"
