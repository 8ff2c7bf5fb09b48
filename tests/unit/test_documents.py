"""Text comes out of the documents tenants hold, and bad documents fail one by one with a reason:
PDFs written from BBC articles keep their pages and reading order (English and Chinese), scanned
pages (rendered with noise and a slight rotation) are read by OCR in the right language, DOCX,
HTML and e-mail (with an attached PDF) give their text; encrypted, corrupt, empty, oversized and
unknown files, zip bombs and path tricks in archives each get their own error, and a file that
runs past the time or memory limit stops its child process only."""

from __future__ import annotations

import io
import zipfile

import pytest

from doctune.corpora import bbc_articles
from doctune.documents import (Document, DocumentError, Limits, extract_bytes, extract_isolated, extract_many,
                               read_archive)
from tests.document_samples import (EN_TEXT, ZH_TEXT, cer, docx_bytes, eml_bytes, encrypted_pdf_bytes, html_bytes,
                                    image_bytes, pdf_bytes, scanned_page, scanned_pdf_bytes, tar_gz_bytes, zip_bytes)


def squash(text: str) -> str:
    return "".join(text.split())


@pytest.fixture(scope="module")
def article():
    return bbc_articles(limit_per_class=1)[0]


def test_pdf_text_layer_keeps_pages_in_order(article):
    body = article["body"]
    doc = extract_bytes("a.pdf", pdf_bytes([article["headline"], body[:1500]]))
    assert doc.extractor == "pypdf" and doc.language == "en" and len(doc.pages) == 2
    first, second = doc.pages
    assert doc.text[first.start:first.end].strip() == article["headline"]
    assert doc.text[second.start - 1] == "\f"
    assert squash(doc.text[second.start:second.end]) == squash(body[:1500])
    assert doc.page_of(second.start + 10) == 2 and doc.page_of(0) == 1


def test_chinese_pdf_is_detected_as_chinese():
    doc = extract_bytes("zh.pdf", pdf_bytes([ZH_TEXT], cjk=True))
    assert doc.language == "zh" and squash(doc.text) == squash(ZH_TEXT)


def test_scanned_pdf_page_is_read_by_ocr():
    doc = extract_bytes("scan.pdf", scanned_pdf_bytes([scanned_page(EN_TEXT, noise=0.01, angle=1.0)]))
    assert doc.ocr_pages == [1] and doc.extractor == "pypdf+tesseract" and doc.language == "en"
    assert cer(EN_TEXT, doc.text) < 0.05, doc.text


def test_chinese_scan_uses_the_chinese_engine():
    doc = extract_bytes("zh.png", image_bytes(scanned_page(ZH_TEXT, cjk=True, noise=0.005, angle=0.8)))
    assert doc.language == "zh" and doc.extractor == "rapidocr"
    assert cer(ZH_TEXT, doc.text) < 0.05, doc.text


def test_docx_keeps_paragraphs_tables_and_page_breaks():
    doc = extract_bytes("r.docx", docx_bytes(["First page.", "Second page."], page_break_after=0,
                                             table=[["item", "price"], ["tea", "3"]]))
    assert doc.extractor == "python-docx" and len(doc.pages) == 2
    assert doc.text.split("\f") == ["First page.", "Second page.\nitem\tprice\ntea\t3"]


def test_html_keeps_the_article_and_drops_navigation():
    doc = extract_bytes("p.html", html_bytes("Rates held", EN_TEXT))
    assert doc.extractor == "trafilatura" and "interest rates on hold" in doc.text
    assert "Home" not in doc.text and "Copyright" not in doc.text


def test_email_body_and_attachments():
    blob = eml_bytes("Invoice 42", "Please find the invoice attached.",
                     {"invoice.pdf": pdf_bytes(["Invoice number 42, total 100 pounds"]), "blob.bin": b"\x00\x01"})
    doc = extract_bytes("m.eml", blob)
    assert doc.extractor == "email" and "Subject: Invoice 42" in doc.text and len(doc.pages) == 2
    assert "Invoice number 42" in doc.text.split("\f")[1]
    assert [(a["file"], a["status"]) for a in doc.attachments] == [("invoice.pdf", "ok"), ("blob.bin", "error")]


@pytest.mark.parametrize("name, blob, code", [
    ("enc.pdf", encrypted_pdf_bytes(), "encrypted"),
    ("broken.pdf", b"%PDF-1.7\n1 0 obj << /Type /Catalog >>\ngarbage", "corrupt"),
    ("blank.pdf", pdf_bytes([""]), "empty"),
    ("zero.pdf", b"", "empty"),
    ("notes.xyz", b"some bytes", "unknown_format"),
    ("fake.pdf.docx", b"not a zip at all", "unknown_format"),
    ("bad.png", b"\x89PNG\r\n\x1a\nbroken", "corrupt"),
])
def test_bad_documents_get_their_own_error(name, blob, code):
    with pytest.raises(DocumentError) as err:
        extract_bytes(name, blob)
    assert err.value.code == code and err.value.message


def test_oversized_pages_are_refused():
    from fpdf import FPDF

    pdf = FPDF(format=(20000, 300), unit="pt")
    pdf.add_page()
    with pytest.raises(DocumentError, match="points on a side") as err:
        extract_bytes("huge.pdf", bytes(pdf.output()))
    assert err.value.code == "oversized_page"
    with pytest.raises(DocumentError, match="pixels") as err:
        extract_bytes("huge.png", image_bytes(scanned_page("x", width=3000)), Limits(max_image_pixels=1_000_000))
    assert err.value.code == "oversized_page"


def test_archive_path_tricks_and_links_are_per_file_errors():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ok/a.txt", "fine")
        zf.writestr("../escape.txt", "x")
        zf.writestr("/etc/passwd", "x")
        link = zipfile.ZipInfo("link.txt")
        link.external_attr = (0o120777 << 16)
        zf.writestr(link, "/etc/passwd")
    files, errors = read_archive(buf.getvalue())
    assert set(files) == {"ok/a.txt"}
    assert {k: e.code for k, e in errors.items()} == {"../escape.txt": "path_trick", "/etc/passwd": "path_trick",
                                                      "link.txt": "path_trick"}
    files, errors = read_archive(tar_gz_bytes({"a.txt": b"fine"}, links={"b.txt": "/etc/shadow"}))
    assert set(files) == {"a.txt"} and errors["b.txt"].code == "path_trick" and "/etc/shadow" in errors["b.txt"].message


def test_zip_bombs_are_refused():
    bomb = zip_bytes({"zeros.txt": b"\0" * (20 * 1024**2)})
    with pytest.raises(DocumentError, match="zip bomb") as err:
        read_archive(bomb)
    assert err.value.code == "zip_bomb"
    files, errors = read_archive(zip_bytes({"big.txt": b"a" * 5000, "small.txt": b"b"}), Limits(max_file_bytes=1000))
    assert set(files) == {"small.txt"} and errors["big.txt"].code == "zip_bomb"
    with pytest.raises(DocumentError, match="more than 3 files"):
        read_archive(zip_bytes({f"{i}.txt": b"x" for i in range(4)}), Limits(max_files=3))
    with pytest.raises(DocumentError, match="not a .zip or .tar.gz"):
        read_archive(b"just text")


def test_limits_stop_the_child_process_only():
    scan = image_bytes(scanned_page(EN_TEXT))
    with pytest.raises(DocumentError) as err:
        extract_isolated("slow.png", scan, Limits(timeout_s=0.05))
    assert err.value.code == "timeout"
    with pytest.raises(DocumentError) as err:
        extract_isolated("big.png", scan, Limits(memory_bytes=200 * 1024**2))
    assert err.value.code in ("out_of_memory", "crashed", "corrupt"), err.value
    results = extract_many([("a.html", html_bytes("t", EN_TEXT)), ("b.xyz", b"?")])
    assert isinstance(results["a.html"], Document) and results["b.xyz"].code == "unknown_format"


def test_a_multi_page_tiff_is_one_page_per_frame():
    first, second = scanned_page("First page of the scanned letter."), scanned_page("Second page, signed by the tenant.")
    import io as _io

    buf = _io.BytesIO()
    first.save(buf, format="TIFF", save_all=True, append_images=[second])
    doc = extract_bytes("letter.tiff", buf.getvalue())
    assert len(doc.pages) == 2 and doc.ocr_pages == [1, 2]
    assert "First page" in doc.text.split("\f")[0] and "Second page" in doc.text.split("\f")[1]
