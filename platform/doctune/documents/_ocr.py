"""OCR of page images: Tesseract (through pytesseract) and RapidOCR (ONNX models shipped in
its wheel), with the engine per language chosen by ``docs/benchmarks.md``'s measurement.

Called by the PDF and image extractors, inside the extraction worker process.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from doctune.documents._language import detect_language

# the better engine per language on rendered pages (tests/bench/documents.py measures both)
DEFAULT_ENGINE = {"en": "tesseract", "zh": "rapidocr"}
TESSERACT_PACK = {"en": "eng", "zh": "chi_sim", "en+zh": "eng+chi_sim"}
ENGINES = ("tesseract", "rapidocr")
# Tesseract puts spaces between Chinese characters; these joins drop them
_CJK_SPACE = re.compile(r"(?<=[\u3000-\u303f\u3400-\u9fff\uff00-\uffef])[ \t]+(?=[\u3000-\u303f\u3400-\u9fff\uff00-\uffef])")


def ocr_image(image: Any, language: str | None = None, engine: str | None = None) -> tuple[str, str, str]:
    """(text, engine, language) of a PIL image. Without ``language`` a fast first pass decides it
    (Tesseract with the English and Chinese packs together, or RapidOCR, which reads both with one
    model, where Tesseract is missing); then the language's default engine reads the page unless
    ``engine`` names one. The first pass's text is kept when it came from that engine."""
    first, first_engine = None, None
    if language is None:
        first_engine = "tesseract" if tesseract_available() else "rapidocr"
        first = _tesseract(image, "en+zh") if first_engine == "tesseract" else _rapidocr(image)
        language = detect_language(first)
    engine = engine or DEFAULT_ENGINE[language]
    if engine not in ENGINES:
        raise ValueError(f"unknown OCR engine {engine!r}; use one of {ENGINES}")
    if engine == first_engine and (engine == "rapidocr" or language == "en"):
        return first, engine, language
    return (_rapidocr(image) if engine == "rapidocr" else _tesseract(image, language)), engine, language


def tesseract_available() -> bool:
    import shutil

    return shutil.which("tesseract") is not None


def _tesseract(image: Any, language: str) -> str:
    import pytesseract

    if not tesseract_available():
        raise RuntimeError("the tesseract program is not installed; run `make install` (it installs tesseract-ocr "
                           "and tesseract-ocr-chi-sim) or `apt-get install tesseract-ocr tesseract-ocr-chi-sim`")
    text = pytesseract.image_to_string(image, lang=TESSERACT_PACK[language])
    if "zh" in language:
        text = _CJK_SPACE.sub("", text)
    return _tidy(text)


@lru_cache(maxsize=1)
def _rapid_engine() -> Any:
    from rapidocr_onnxruntime import RapidOCR

    return RapidOCR()


def _rapidocr(image: Any) -> str:
    import numpy as np

    result, _ = _rapid_engine()(np.asarray(image.convert("RGB")))
    return _tidy("\n".join(_lines(result or [])))


def _lines(result: list[Any]) -> list[str]:
    """RapidOCR's boxes as lines in reading order: boxes whose vertical centres are within half a box
    height of each other are one line, read left to right."""
    boxes = sorted(((sum(p[1] for p in box) / 4, min(p[0] for p in box), abs(box[2][1] - box[0][1]), text)
                    for box, text, _score in result), key=lambda b: b[0])
    lines: list[list[tuple[float, float, float, str]]] = []
    for box in boxes:
        if lines and abs(box[0] - lines[-1][-1][0]) < max(box[2], 1) / 2:
            lines[-1].append(box)
        else:
            lines.append([box])
    out = []
    for line in lines:
        parts = [b[3] for b in sorted(line, key=lambda b: b[1])]
        out.append(_CJK_SPACE.sub("", " ".join(parts)))
    return out


def _tidy(text: str) -> str:
    lines = [line.rstrip() for line in text.replace("\f", "").splitlines()]
    return "\n".join(lines).strip()
