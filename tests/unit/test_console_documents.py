"""Documents in the console, driven through gradio_client as a browser would call it, against the real
API behind uvicorn (SQLite, a real SeaweedFS S3 server, no Ray): on the Datasets page an archive of
PDFs, DOCX and HTML with a labels CSV becomes a dataset and the upload report shows one row per file
(status, extractor, language, pages, error); a bad file refuses the upload unless "skip bad files" is
ticked. The Playground sends a dropped document as the multipart part ``file``, parsed by the
serving code's own ``document_body`` (a one-route app stands in for a Ray Serve replica), and shows
the extracted text and pages with the prediction."""

from __future__ import annotations

import threading
import time

import pytest
from fastapi import Request  # at module level: the route's annotation is resolved from here
from gradio_client import handle_file

from tests.document_samples import docx_bytes, encrypted_pdf_bytes, html_bytes, pdf_bytes, zip_bytes
from tests.unit.test_cli import s3  # noqa: F401  (the real S3 server fixture)
from tests.unit.test_console_workflow import _free_port, _plot_rows, signed_in, stack  # noqa: F401  (the console on the API)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
TOPICS = {"sport": "The match ended two to one after a late goal in the second half.",
          "business": "Shares rose after the company reported higher quarterly profits and sales."}


def _archive(tmp_path, bad: bool, n: int = 10, name: str = "news-docs"):
    files, lines = {}, ["file,label"]
    for i in range(n):  # 10: enough for a stratified dev and test split
        for label, text in TOPICS.items():
            kind = ("pdf", "docx", "html")[i % 3]
            body = f"{text} Story {i}."
            blob = pdf_bytes([body]) if kind == "pdf" else docx_bytes([body]) if kind == "docx" else html_bytes("News", body)
            files[f"docs/{label}-{i}.{kind}"] = blob
            lines.append(f"docs/{label}-{i}.{kind},{label}")
    if bad:
        files["docs/locked.pdf"] = encrypted_pdf_bytes()
        lines.append("docs/locked.pdf,sport")
    archive, labels = tmp_path / f"{name}.zip", tmp_path / f"{name}-labels.csv"
    archive.write_bytes(zip_bytes(files))
    labels.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return archive, labels


def test_an_archive_upload_shows_the_report_per_file_and_skip_bad_keeps_the_good(stack, tmp_path):  # noqa: F811
    small, small_labels = _archive(tmp_path, bad=True, n=2, name="few-docs")  # refused whole: a few files show it
    client = signed_in(stack, stack["member"])
    status, report, _, _, _ = client.predict("classification", "docs-refused", handle_file(str(small)),
                                             handle_file(str(small_labels)), False, api_name="/upload_documents")
    assert "Not uploaded" in status and "skip_bad" in status, status
    assert [r[0] for r in report["data"]] == ["docs/locked.pdf"] and report["data"][0][1] == "error"
    archive, labels = _archive(tmp_path, bad=True)
    status, report, balance, listed, _ = client.predict("classification", "docs-kept", handle_file(str(archive)),
                                                        handle_file(str(labels)), True, api_name="/upload_documents")
    assert "Uploaded **docs-kept**" in status and "2 labels" in status, status
    assert report["headers"] == ["file", "status", "extractor", "language", "pages", "error"]
    rows = {r[0]: r for r in report["data"]}
    assert rows["docs/locked.pdf"][1] == "error" and rows["docs/locked.pdf"][5]
    assert rows["docs/sport-0.pdf"][1:5] == ["ok", "pypdf", "en", 1], rows["docs/sport-0.pdf"]
    assert rows["docs/sport-1.docx"][2] == "python-docx" and rows["docs/sport-2.html"][2] == "trafilatura"
    assert any(r[1] == "docs-kept" for r in listed["data"])
    assert {row["label"] for row in _plot_rows(balance)} == set(TOPICS)


def _fake_endpoint():
    """One route that parses a multipart predict as a replica does (serve.documents_in) and answers a
    classification whose label depends on the extracted text."""
    import uvicorn
    from fastapi import FastAPI

    from doctune.serve.documents_in import document_body, with_document

    app = FastAPI()

    @app.post("/team-c/docs/predict")
    async def predict(request: Request):
        body, doc = await document_body(await request.body(), request.headers["content-type"])
        label = "sport" if "match" in body["text"] else "business"
        answer = {"predictions": [{"label": label, "probabilities": {label: 0.9}, "explained": body.get("explain")}]}
        return with_document(answer, doc)

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=_free_port(), log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    return server


def test_the_playground_sends_a_dropped_document_as_file_and_shows_its_pages(tmp_path):
    from doctune.console.pages.playground import call_endpoint_with_file, document_markdown, render

    server = _fake_endpoint()
    try:
        path = tmp_path / "contract.pdf"
        path.write_bytes(pdf_bytes([TOPICS["sport"], "第二页：比赛结束。"], cjk=True))
        url = f"http://127.0.0.1:{server.config.port}/team-c/docs/predict"
        answer = call_endpoint_with_file(url, "Bearer dtk_x", str(path), {"explain": True})
    finally:
        server.should_exit = True
    doc = answer["document"]
    assert answer["predictions"][0]["label"] == "sport" and answer["predictions"][0]["explained"] is True
    assert doc["extractor"] == "pypdf" and len(doc["pages"]) == 2 and "比赛" in doc["text"]
    shown = document_markdown(doc)
    assert "contract.pdf" in shown and "2 page(s)" in shown and "`pypdf`" in shown and "p2:" in shown
    assert render("classification", doc["text"], answer["predictions"][0])["labels"] == {"sport": 0.9}
