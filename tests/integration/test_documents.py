"""Documents through the real stack: a tenant's endpoint (Ray Serve, the session's trained BBC model)
answers a PDF sent as a multipart file with a label, the extracted text and its pages, and refuses an
encrypted PDF with a 400 naming ``file``."""

from __future__ import annotations

import httpx
import pytest

from doctune.data import split_records
from tests.document_samples import encrypted_pdf_bytes, pdf_bytes



@pytest.fixture(scope="module")
def endpoint(classification_endpoint):
    return classification_endpoint


def test_endpoint_reads_a_pdf(endpoint, tenant_a, bbc_small):
    text = split_records(bbc_small, "classification", seed=42)["test"][0]["text"]
    pdf = pdf_bytes([text[:700], text[700:1400] or "end"])
    r = httpx.post(endpoint["url"], files={"file": ("article.pdf", pdf)},
                   headers={"Authorization": f"Bearer {tenant_a}"}, timeout=120)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["predictions"][0]["label"] in {"business", "entertainment", "politics", "sports", "tech"}
    assert answer["document"]["extractor"] == "pypdf" and [p["page"] for p in answer["document"]["pages"]] == [1, 2]
    assert "".join(answer["document"]["text"].split())[:200] == "".join(text.split())[:200]


def test_endpoint_refuses_an_encrypted_pdf(endpoint, tenant_a):
    r = httpx.post(endpoint["url"], files={"file": ("locked.pdf", encrypted_pdf_bytes())},
                   headers={"Authorization": f"Bearer {tenant_a}"}, timeout=120)
    assert r.status_code == 400 and r.json()["error"]["field"] == "file" and "encrypted" in r.text
