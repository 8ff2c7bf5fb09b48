"""What extraction returns: one document's text with its pages, or a per-file error."""

from __future__ import annotations

import bisect
from dataclasses import asdict, dataclass, field
from typing import Any

PAGE_BREAK = "\f"  # pages of a document are joined with a form feed


@dataclass
class Limits:
    """The bounds one upload's extraction stays within; each breach is a per-file error."""

    timeout_s: float = 120.0  # one file's extraction, OCR included
    memory_bytes: int = 3 * 1024**3  # address space of the extraction process (RLIMIT_AS)
    max_files: int = 5000  # members of one archive
    max_total_bytes: int = 1024**3  # unpacked size of one archive
    max_file_bytes: int = 100 * 1024**2  # one unpacked member
    max_ratio: float = 200.0  # unpacked/packed size of one member (or of the whole archive)
    max_pages: int = 500  # pages of one document
    max_page_points: float = 14400.0  # a PDF page's side, in points (200 inches)
    max_image_pixels: int = 60_000_000  # one page image (a 600 dpi A3 scan is ~70 MP: downsample)
    max_depth: int = 3  # e-mail attachments inside attachments
    workers: int = 2  # files extracted at once


@dataclass
class Page:
    page: int  # 1-based
    start: int  # character offsets in the document's text, end exclusive
    end: int


@dataclass
class Document:
    """A document's text. ``pages`` map character offsets to page numbers; ``extractor`` names the
    library that read it (``pypdf``, ``pypdf+tesseract`` for a PDF with scanned pages, ``rapidocr``,
    ``python-docx``, ``trafilatura``, ``email``, ``text``)."""

    name: str
    text: str
    extractor: str
    language: str
    pages: list[Page] = field(default_factory=list)
    attachments: list[dict[str, Any]] = field(default_factory=list)
    ocr_pages: list[int] = field(default_factory=list)

    def page_of(self, offset: int) -> int:
        """The 1-based page holding character ``offset``."""
        starts = [p.start for p in self.pages]
        return self.pages[max(bisect.bisect_right(starts, offset) - 1, 0)].page if self.pages else 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Document":
        return cls(**{**d, "pages": [Page(**p) for p in d.get("pages", [])]})


class DocumentError(Exception):
    """A file that cannot be extracted: ``code`` is one of encrypted, corrupt, empty, unknown_format,
    oversized_page, too_large, zip_bomb, path_trick, timeout, out_of_memory, crashed."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return self.message


def join_pages(texts: list[str]) -> tuple[str, list[Page]]:
    """The pages' texts joined by form feeds, and each page's character range."""
    pages, parts, at = [], [], 0
    for n, text in enumerate(texts, 1):
        if n > 1:
            parts.append(PAGE_BREAK)
            at += 1
        pages.append(Page(n, at, at + len(text)))
        parts.append(text)
        at += len(text)
    return "".join(parts), pages
