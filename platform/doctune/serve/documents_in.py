"""Document requests to an endpoint: ``POST .../predict`` with a multipart file (PDF, image, DOCX,
HTML, .eml) instead of JSON. The file's text (``doctune.documents``, in a child process with time
and memory limits) becomes the body ``{"text": ...}`` that the task plugin parses as it would a JSON
request, so which tasks take a document stays the plugin's knowledge; the other form fields are
JSON values (e.g. ``parameters``). The answer adds ``document``: the extracted text, its pages and
the extractor, and a ``page`` on every predicted character span.
"""

from __future__ import annotations

import asyncio
import email
import json
from email import policy
from typing import Any

from doctune.documents import Document, DocumentError, Limits, extract_isolated
from doctune.errors import DoctuneError

__all__ = ["document_body", "is_multipart", "with_document"]

LIMITS = Limits(timeout_s=60.0, workers=1)


def is_multipart(content_type: str | None) -> bool:
    return (content_type or "").lower().startswith("multipart/form-data")


async def document_body(raw: bytes, content_type: str) -> tuple[dict[str, Any], Document]:
    """The JSON-like body for the plugin and the extracted document; 400/422 naming the fix otherwise."""
    msg = email.message_from_bytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + raw, policy=policy.HTTP)
    fields: dict[str, Any] = {}
    upload = None
    for part in msg.iter_parts() if msg.is_multipart() else []:
        name = part.get_param("name", header="content-disposition")
        if name == "file":
            upload = (part.get_filename() or "document", part.get_payload(decode=True) or b"")
        elif name:
            value = part.get_payload(decode=True).decode("utf-8", "replace")
            try:
                fields[name] = json.loads(value)
            except json.JSONDecodeError:
                fields[name] = value
    if upload is None:
        raise DoctuneError("a multipart request to an endpoint needs a part named 'file' (PDF, image, DOCX, HTML or "
                           ".eml), e.g. curl -F file=@contract.pdf", "invalid_request", field="file")
    try:
        doc = await asyncio.to_thread(extract_isolated, upload[0], upload[1], LIMITS)
    except DocumentError as exc:
        raise DoctuneError(f"file {upload[0]!r}: {exc.message}", "invalid_request", field="file") from None
    return {**fields, "text": doc.text}, doc


def with_document(answer: dict[str, Any], doc: Document | None) -> dict[str, Any]:
    """``answer`` plus the document, and each predicted ``{"start", "end"}`` span's page."""
    if doc is None:
        return answer
    _add_pages(answer.get("predictions"), doc)
    answer["document"] = {"name": doc.name, "text": doc.text, "extractor": doc.extractor, "language": doc.language,
                          "pages": [{"page": p.page, "start": p.start, "end": p.end} for p in doc.pages]}
    return answer


def _add_pages(value: Any, doc: Document) -> None:
    if isinstance(value, dict):
        if isinstance(value.get("start"), int) and isinstance(value.get("end"), int):
            value["page"] = doc.page_of(value["start"])
        for v in value.values():
            _add_pages(v, doc)
    elif isinstance(value, list):
        for v in value:
            _add_pages(v, doc)
