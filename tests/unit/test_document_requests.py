"""An endpoint takes a document as well as JSON, without a Ray cluster: a multipart ``file`` (PDF, DOCX,
scanned image) becomes the ``{"text": ...}`` body the task plugin parses as a JSON request would be,
the other form fields stay JSON values, a bad or missing file is a 400 naming ``file``, and the answer
carries the extracted text, its pages and each predicted span's page."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from doctune.errors import DoctuneError
from doctune.serve.documents_in import document_body, is_multipart, with_document
from doctune.tasks import get_task
from tests.document_samples import EN_TEXT, docx_bytes, encrypted_pdf_bytes, image_bytes, pdf_bytes, scanned_page


def multipart(files: dict, data: dict | None = None) -> tuple[bytes, str]:
    request = httpx.Request("POST", "http://endpoint/predict", files=files, data=data or {})
    return request.read(), request.headers["content-type"]


def test_a_pdf_becomes_the_plugins_text_and_spans_get_their_page():
    raw, ctype = multipart({"file": ("contract.pdf", pdf_bytes(["Cover page of the lease.", EN_TEXT]))},
                           {"parameters": '{"max_new_tokens": 16}'})
    assert is_multipart(ctype)
    body, doc = asyncio.run(document_body(raw, ctype))
    assert body["parameters"] == {"max_new_tokens": 16} and body["text"] == doc.text
    assert get_task("ner").parse_request(body) == [doc.text]
    start = doc.text.index("Bank of England")
    answer = with_document({"predictions": [{"entities": [{"type": "org", "start": start, "end": start + 15}]}]}, doc)
    assert answer["predictions"][0]["entities"][0]["page"] == 2
    assert [p["page"] for p in answer["document"]["pages"]] == [1, 2] and answer["document"]["extractor"] == "pypdf"


@pytest.mark.parametrize("name, blob, extractor", [
    ("report.docx", docx_bytes([EN_TEXT]), "python-docx"),
    ("scan.png", image_bytes(scanned_page(EN_TEXT)), "tesseract"),
])
def test_docx_and_scans_are_read(name, blob, extractor):
    raw, ctype = multipart({"file": (name, blob)})
    body, doc = asyncio.run(document_body(raw, ctype))
    assert doc.extractor == extractor and "interest rates" in body["text"]


def test_bad_or_missing_files_are_400s_naming_file():
    raw, ctype = multipart({"file": ("locked.pdf", encrypted_pdf_bytes())})
    with pytest.raises(DoctuneError, match="locked.pdf.*encrypted") as err:
        asyncio.run(document_body(raw, ctype))
    assert err.value.http_status == 400 and err.value.field == "file"
    raw, ctype = multipart({"doc": ("a.pdf", pdf_bytes([EN_TEXT]))})
    with pytest.raises(DoctuneError, match="part named 'file'") as err:
        asyncio.run(document_body(raw, ctype))
    assert err.value.field == "file"
