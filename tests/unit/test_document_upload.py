"""An archive of documents with a labels file becomes a dataset through the real API (SQLite, a real
SeaweedFS S3 server, no Ray), from the CLI and over HTTP: classification labels as CSV, NER labels
as JSONL spans over the extracted text. A bad file stores nothing unless --skip-bad, and the upload
report (per file: status, extractor, language, pages; per record: spans that moved or no longer
match, and why) lands in the dataset's info."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from doctune.api.app import create_app
from doctune.corpora import load_bbc_news
from tests.document_samples import docx_bytes, encrypted_pdf_bytes, html_bytes, pdf_bytes, tar_gz_bytes, zip_bytes
from tests.unit.test_cli import cli, env, ok, s3, world  # noqa: F401  (fixtures: the API app on weed)


def _bbc_archive(per_class: int = 6):
    """BBC articles as PDFs, DOCX and HTML, two topics, and the CSV mapping each file to its topic."""
    rows = [r for r in load_bbc_news(limit_per_class=per_class) if r["label"] in ("business", "sports")]
    files, lines = {}, ["file,label"]
    for i, r in enumerate(rows):
        text = r["text"][:600]
        kind = ("pdf", "docx", "html")[i % 3]
        blob = pdf_bytes([text]) if kind == "pdf" else docx_bytes([text]) if kind == "docx" else html_bytes("News", text)
        files[f"docs/{r['label']}-{i}.{kind}"] = blob
        lines.append(f"docs/{r['label']}-{i}.{kind},{r['label']}")
    return files, "\n".join(lines) + "\n"


def _datasets(world, name):
    p = world["platform"]
    from doctune.store.db import Dataset
    with p.db.session() as s:
        return s.query(Dataset).filter(Dataset.name == name).all()


def test_cli_uploads_an_archive_and_refuses_bad_files_unless_skip_bad(world, tmp_path):
    files, labels = _bbc_archive()
    files["docs/locked.pdf"] = encrypted_pdf_bytes()
    labels += "docs/locked.pdf,business\n"
    (tmp_path / "docs.zip").write_bytes(zip_bytes(files))
    (tmp_path / "labels.csv").write_text(labels)
    args = ("datasets", "upload", "--name", "bbc-docs", "--documents", str(tmp_path / "docs.zip"),
            "--labels", str(tmp_path / "labels.csv"))
    refused = cli(world["a"], *args)
    assert refused.exit_code != 0 and "docs/locked.pdf" in refused.output and "encrypted" in refused.output
    assert "--skip-bad" in refused.output and not _datasets(world, "bbc-docs")

    shown = json.loads(ok(world["a"], *args, "--skip-bad").stdout)
    report = shown["info"]["documents"]
    by_file = {f["file"]: f for f in report["files"]}
    assert by_file["docs/locked.pdf"]["status"] == "error" and by_file["docs/locked.pdf"]["code"] == "encrypted"
    assert report["bad_files"] == 1 and report["records"]["kept"] == len(files) - 1
    assert set(report["extractors"]) == {"pypdf", "python-docx", "trafilatura"}
    assert all(f["language"] == "en" and f["pages"] == 1 and f["chars"] > 100 for f in by_file.values() if f["status"] == "ok")
    assert set(shown["info"]["labels"]) == {"business", "sports"}


def _api(world):
    client = TestClient(create_app(world["platform"]), raise_server_exceptions=False)
    return client, {"Authorization": f"Bearer {world['a']}"}


def test_ner_spans_are_checked_against_the_extracted_text(world):
    contract = "Lease between Acme Holdings and Jane Smith.\nRent is due monthly in London."
    files = {"c1.pdf": pdf_bytes([contract]), "c2.docx": docx_bytes([contract]), "c3.html": html_bytes("Lease", contract)}
    start = contract.index("Acme Holdings")
    good = {"start": start, "end": start + 13, "label": "org", "text": "Acme Holdings"}
    moved = {"start": start + 5, "end": start + 18, "label": "org", "text": "Acme Holdings"}  # offsets off by 5
    missing = {"start": 0, "end": 5, "label": "per", "text": "Zebedee"}
    lines = [{"file": "c1.pdf", "entities": [good]}, {"file": "c2.docx", "entities": [moved]},
             {"file": "c3.html", "entities": [missing]}] * 4
    labels = "\n".join(json.dumps(r) for r in lines).encode()
    client, hdr = _api(world)
    form = {"name": "leases", "task": "ner", "skip_bad": "true"}
    r = client.post("/v1/datasets", headers=hdr, data=form,
                    files={"documents": ("docs.tar.gz", tar_gz_bytes(files)), "labels": ("labels.jsonl", labels)})
    assert r.status_code == 201, r.text
    records = r.json()["info"]["documents"]["records"]
    assert records["kept"] == 8 and records["bad"] == 4
    assert all(b["file"] == "c3.html" and "Zebedee" in b["why"] for b in records["bad_records"])
    assert {(m["file"], m["page"]) for m in records["relocated_spans"]} == {("c2.docx", 1)}


def test_api_reports_path_tricks_and_bad_labels(world):
    client, hdr = _api(world)
    archive = tar_gz_bytes({"a.txt": b"a plain note about rates"}, links={"b.txt": "/etc/shadow"})
    r = client.post("/v1/datasets", headers=hdr, data={"name": "tricks", "task": "classification"},
                    files={"documents": ("d.tar.gz", archive), "labels": ("l.csv", b"file,label\na.txt,x\nb.txt,y\n")})
    assert r.status_code == 422, r.text
    errors = {e["field"]: e for e in r.json()["error"]["errors"]}
    assert errors["b.txt"]["code"] == "path_trick" and "/etc/shadow" in errors["b.txt"]["message"]
    r = client.post("/v1/datasets", headers=hdr, data={"name": "nolabels", "task": "classification"},
                    files={"documents": ("d.zip", zip_bytes({"a.txt": b"x"}))})
    assert r.status_code == 400 and r.json()["error"]["field"] == "labels"
    r = client.post("/v1/datasets", headers=hdr, data={"name": "badcsv", "task": "classification"},
                    files={"documents": ("d.zip", zip_bytes({"a.txt": b"x"})), "labels": ("l.csv", b"name,cls\na.txt,x\n")})
    assert r.status_code == 422 and "'file' and 'label'" in r.json()["error"]["message"]
    r = client.post("/v1/datasets", headers=hdr, data={"name": "notarchive", "task": "classification"},
                    files={"documents": ("d.zip", b"hello"), "labels": ("l.csv", b"file,label\na.txt,x\n")})
    assert r.status_code == 422 and ".zip or .tar.gz" in r.json()["error"]["message"]
