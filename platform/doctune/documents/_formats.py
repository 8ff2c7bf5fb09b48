"""Text extraction per format, run inside the extraction worker process (``_pool``).

PDF text layers with pypdf (pages in order, joined by form feeds); pages without a text layer
(scans) and images with OCR (``_ocr``); DOCX with python-docx (paragraphs and tables in body
order, explicit page breaks kept); HTML with trafilatura; e-mail with the standard library's
``email`` package, its attachments extracted in turn.
"""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import PurePosixPath
from typing import Any, Callable

from doctune.documents._language import detect_language
from doctune.documents._model import Document, DocumentError, Limits, Page, join_pages
from doctune.documents._ocr import ocr_image

FORMATS = ("pdf", "png", "jpeg", "tiff", "docx", "html", "eml", "txt")
_SUFFIX = {".pdf": "pdf", ".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".tif": "tiff", ".tiff": "tiff",
           ".docx": "docx", ".html": "html", ".htm": "html", ".eml": "eml", ".txt": "txt", ".md": "txt"}
MIN_TEXT_LAYER = 16  # a PDF page with fewer characters than this is treated as a scan and read by OCR
# control characters some PDF fonts map glyphs to (NUL before each CJK glyph), never text
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")


def detect_format(name: str, blob: bytes) -> str:
    """The format of a file from its first bytes, then its name; DocumentError(unknown_format) otherwise."""
    head = blob[:8]
    if head.startswith(b"%PDF"):
        return "pdf"
    if head.startswith(b"\x89PNG"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    suffix = _SUFFIX.get(PurePosixPath(name.lower()).suffix)
    if head.startswith(b"PK\x03\x04") and suffix == "docx":
        return "docx"
    if suffix in ("html", "eml", "txt"):
        return suffix
    if blob[:512].lstrip().lower().startswith((b"<!doctype html", b"<html")):
        return "html"
    what = f"a {suffix.upper()} file that is not one" if suffix else "a file of unknown type"
    raise DocumentError("unknown_format", f"{what}; doctune reads PDF, PNG, JPEG, TIFF, DOCX, HTML, .eml and .txt")


def extract_bytes(name: str, blob: bytes, limits: Limits | None = None, language: str | None = None,
                  depth: int = 0) -> Document:
    """One file's text; DocumentError saying what is wrong with it otherwise."""
    limits = limits or Limits()
    if not blob.strip():
        raise DocumentError("empty", "the file is empty")
    fmt = detect_format(name, blob)
    reader: Callable[..., Document] = _READERS[fmt]
    doc = reader(name, blob, limits, language, depth)
    if not doc.text.strip():
        raise DocumentError("empty", f"no text found in this {fmt.upper()} (blank pages, or an image OCR could not read)")
    return doc


def _pdf(name: str, blob: bytes, limits: Limits, language: str | None, depth: int) -> Document:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        pdf = PdfReader(io.BytesIO(blob))
        if pdf.is_encrypted and not pdf.decrypt(""):
            raise DocumentError("encrypted", "the PDF is encrypted with a password; upload it unencrypted")
        pages = list(pdf.pages)
    except DocumentError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as exc:
        raise DocumentError("corrupt", f"the PDF cannot be read ({type(exc).__name__}: {str(exc)[:120]}); "
                                       "re-save or re-export it") from None
    if "/Encrypt" in pdf.trailer and not pages:
        raise DocumentError("encrypted", "the PDF is encrypted; upload it unencrypted")
    if not pages:
        raise DocumentError("empty", "the PDF has no pages")
    if len(pages) > limits.max_pages:
        raise DocumentError("too_large", f"the PDF has {len(pages)} pages, over the limit of {limits.max_pages}; split it")
    texts, ocr_pages, engines = [], [], set()
    for n, page in enumerate(pages, 1):
        side = max(float(page.mediabox.width), float(page.mediabox.height))
        if side > limits.max_page_points:
            raise DocumentError("oversized_page", f"page {n} is {side:.0f} points on a side, over the limit of "
                                                  f"{limits.max_page_points:.0f} (200 inches); fix the page size")
        try:
            text = page.extract_text() or ""
        except Exception as exc:  # pypdf raises many types on broken content streams
            raise DocumentError("corrupt", f"page {n} cannot be read ({type(exc).__name__}); re-save the PDF") from None
        if len(text.strip()) < MIN_TEXT_LAYER:
            scanned = _ocr_pdf_page(page, n, limits, language)
            if scanned is not None:
                text, engine, language = scanned
                ocr_pages.append(n)
                engines.add(engine)
        texts.append(_clean(text))
    text, page_list = join_pages(texts)
    extractor = "+".join(["pypdf", *sorted(engines)])
    return Document(name, text, extractor, language or detect_language(text), page_list, ocr_pages=ocr_pages)


def _ocr_pdf_page(page: Any, n: int, limits: Limits, language: str | None) -> tuple[str, str, str] | None:
    """OCR of the largest image on a page without a text layer; None when it has no image."""
    try:
        images = list(page.images)
    except Exception:
        return None
    if not images:
        return None
    best = max(images, key=lambda im: len(im.data))
    image = _open_image(best.data, f"page {n}'s image", limits)
    return ocr_image(image, language)


def _image(name: str, blob: bytes, limits: Limits, language: str | None, depth: int) -> Document:
    from PIL import ImageSequence

    image = _open_image(blob, "the image", limits)
    texts, engines = [], set()
    for n, frame in enumerate(ImageSequence.Iterator(image), 1):  # a multi-page TIFF is a scanned document
        if n > limits.max_pages:
            raise DocumentError("too_large", f"the image has over {limits.max_pages} pages; split it")
        _check_pixels(frame, f"page {n} of the image", limits)
        text, engine, language = ocr_image(frame.convert("RGB"), language)
        texts.append(text)
        engines.add(engine)
    text, pages = join_pages(texts)
    return Document(name, text, "+".join(sorted(engines)), language or detect_language(text), pages,
                    ocr_pages=[p.page for p in pages])


def _open_image(blob: bytes, what: str, limits: Limits) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(blob))
    except Image.DecompressionBombError as exc:
        raise DocumentError("oversized_page", f"{what} is too large to decode safely ({exc})") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DocumentError("corrupt", f"{what} cannot be decoded ({str(exc)[:120]})") from None
    _check_pixels(image, what, limits)
    try:
        image.load()
    except (OSError, ValueError, SyntaxError) as exc:
        raise DocumentError("corrupt", f"{what} is truncated or damaged ({str(exc)[:120]})") from None
    return image


def _check_pixels(image: Any, what: str, limits: Limits) -> None:
    w, h = image.size
    if w * h > limits.max_image_pixels:
        raise DocumentError("oversized_page", f"{what} is {w}x{h} pixels, over the limit of {limits.max_image_pixels}; "
                                              "scan at 300 dpi or downsample it")


def _docx(name: str, blob: bytes, limits: Limits, language: str | None, depth: int) -> Document:
    import docx
    from docx.oxml.ns import qn

    _check_zip_size(blob, limits)
    try:
        document = docx.Document(io.BytesIO(blob))
    except Exception as exc:  # python-docx raises KeyError, BadZipFile, lxml errors, PackageNotFoundError
        raise DocumentError("corrupt", f"the DOCX cannot be read ({type(exc).__name__}); re-save it from Word") from None
    pages: list[list[str]] = [[]]
    for block in document.element.body.iterchildren():
        if block.tag == qn("w:p"):
            _docx_paragraph(block, pages, qn)
        elif block.tag == qn("w:tbl"):
            for row in block.iter(qn("w:tr")):
                cells = ["".join(t.text or "" for t in cell.iter(qn("w:t"))) for cell in row.iter(qn("w:tc"))]
                pages[-1].append("\t".join(cells))
    text, page_list = join_pages(["\n".join(lines).strip("\n") for lines in pages])
    return Document(name, text, "python-docx", language or detect_language(text), page_list)


def _docx_paragraph(p: Any, pages: list[list[str]], qn: Callable[[str], str]) -> None:
    line = []
    for node in p.iter(qn("w:t"), qn("w:br"), qn("w:tab")):
        if node.tag == qn("w:t"):
            line.append(node.text or "")
        elif node.tag == qn("w:tab"):
            line.append("\t")
        elif node.get(qn("w:type")) == "page":
            pages[-1].append("".join(line))
            pages.append([])
            line = []
        else:
            line.append("\n")
    pages[-1].append("".join(line))


def _check_zip_size(blob: bytes, limits: Limits) -> None:
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as zf:
            total = sum(i.file_size for i in zf.infolist())
    except zipfile.BadZipFile:
        raise DocumentError("corrupt", "the DOCX is not a valid ZIP package; re-save it from Word") from None
    if total > limits.max_file_bytes or total > limits.max_ratio * max(len(blob), 1) and total > 10 * 1024**2:
        raise DocumentError("zip_bomb", f"the DOCX unpacks to {total} bytes from {len(blob)}; over the limits")


def _html(name: str, blob: bytes, limits: Limits, language: str | None, depth: int) -> Document:
    import trafilatura

    html = _decode(blob)
    text = trafilatura.extract(html, include_comments=False, include_tables=True, favor_recall=True) or ""
    if not text.strip():  # a page trafilatura finds no main content in: all its text
        text = trafilatura.html2txt(html) or ""
    text, pages = join_pages([_clean(text)])
    return Document(name, text, "trafilatura", language or detect_language(text), pages)


def _text(name: str, blob: bytes, limits: Limits, language: str | None, depth: int) -> Document:
    text, pages = join_pages([_clean(_decode(blob))])
    return Document(name, text, "text", language or detect_language(text), pages)


def _eml(name: str, blob: bytes, limits: Limits, language: str | None, depth: int) -> Document:
    """Headers (From, To, Date, Subject), the body (plain text, else HTML through trafilatura), then
    each attachment's text as further pages; an attachment that fails is listed, not fatal."""
    import email
    from email import policy

    msg = email.message_from_bytes(blob, policy=policy.default)
    if not any(msg.get(h) for h in ("From", "To", "Subject", "Date")):
        raise DocumentError("corrupt", "the .eml has no From, To, Subject or Date header; is it an e-mail?")
    head = "\n".join(f"{h}: {msg[h]}" for h in ("From", "To", "Date", "Subject") if msg.get(h))
    body_part = msg.get_body(preferencelist=("plain", "html"))
    body = ""
    if body_part is not None:
        content = body_part.get_content()
        body = _html("body.html", content.encode(), limits, language, depth).text if \
            body_part.get_content_subtype() == "html" and content.strip() else content
    texts, attachments = [_clean(f"{head}\n\n{body}")], []
    for part in msg.iter_attachments():
        texts_added = _attachment(part, limits, language, depth, attachments)
        texts.extend(texts_added)
    text, pages = join_pages(texts)
    return Document(name, text, "email", language or detect_language(text), pages, attachments=attachments)


def _attachment(part: Any, limits: Limits, language: str | None, depth: int,
                attachments: list[dict[str, Any]]) -> list[str]:
    filename = part.get_filename() or "attachment"
    payload = part.get_payload(decode=True) or b""
    if depth + 1 > limits.max_depth:
        attachments.append({"file": filename, "status": "error", "error": "attachments nest deeper than "
                            f"{limits.max_depth} levels; not read"})
        return []
    try:
        doc = extract_bytes(filename, payload, limits, language, depth + 1)
    except DocumentError as exc:
        attachments.append({"file": filename, "status": "error", "code": exc.code, "error": exc.message})
        return []
    attachments.append({"file": filename, "status": "ok", "extractor": doc.extractor, "pages": len(doc.pages)})
    return doc.text.split("\f")


def _decode(blob: bytes) -> str:
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return blob.decode(encoding)
        except UnicodeDecodeError:
            continue
    return blob.decode("latin-1")


def _clean(text: str) -> str:
    """Line ends normalised and trailing spaces dropped; a form feed inside a page would read as a page break."""
    text = _CONTROL.sub("", text)
    lines = text.replace("\r\n", "\n").replace("\r", "\n").replace("\f", "\n").split("\n")
    return "\n".join(line.rstrip() for line in lines).strip("\n")


_READERS: dict[str, Callable[..., Document]] = {"pdf": _pdf, "png": _image, "jpeg": _image, "tiff": _image,
                                                "docx": _docx, "html": _html, "eml": _eml, "txt": _text}
__all__ = ["FORMATS", "Page", "detect_format", "extract_bytes"]
