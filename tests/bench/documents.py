"""Documents in (``BENCH_PARTS=documents``, no stack needed; ``documents_f1`` needs the stack):

- OCR character error rate per engine (Tesseract, RapidOCR) and language on rendered pages: clean
  renders (goal ≤ 2 %) and scans (salt-and-pepper noise 1 %, rotation 1°), BBC articles in English
  and Chinese news sentences; seconds per page;
- extraction throughput in pages/s per format (PDF text layer, DOCX, HTML, scanned PDF), through the
  isolated worker (``extract_many``, the path uploads take);
- BBC macro-F1 when the model trains on text extracted from PDFs vs on the original text (same
  split, same settings; goal: within 0.01).
"""

from __future__ import annotations

import json
import time

from doctune.corpora import bbc_articles, load_bbc_news
from doctune.documents import ENGINES, extract_many, ocr_image
from tests.document_samples import ZH_TEXT, cer, docx_bytes, html_bytes, pdf_bytes, scanned_page, scanned_pdf_bytes

ZH_PAGES = [ZH_TEXT, "国家统计局今天公布，十月份全国居民消费价格同比上涨百分之零点三。其中，城市上涨百分之零点四，农村持平。"
            "食品价格下降百分之二点一，非食品价格上涨百分之零点八。", "教育部发布通知，要求各地中小学减轻学生课业负担，"
            "保证学生每天校内体育活动时间不少于一小时，并加强心理健康教育。"]


def ocr_bench(pages_per_language: int = 3) -> list[dict]:
    en = [f"{a['headline']}. {a['body'][:500]}" for a in bbc_articles(limit_per_class=1)[:pages_per_language]]
    rows = []
    for language, texts, cjk in (("en", en, False), ("zh", ZH_PAGES[:pages_per_language], True)):
        for condition, noise, angle in (("clean", 0.0, 0.0), ("scan", 0.01, 1.0)):
            images = [scanned_page(t, cjk=cjk, noise=noise, angle=angle) for t in texts]
            for engine in ENGINES:
                ocr_image(images[0], language, engine)  # load the models first
                t, rates = time.monotonic(), []
                for text, image in zip(texts, images):
                    rates.append(cer(text, ocr_image(image, language, engine)[0]))
                rows.append({"language": language, "condition": condition, "engine": engine,
                             "cer": sum(rates) / len(rates), "s_per_page": (time.monotonic() - t) / len(texts),
                             "pages": len(texts)})
                print(f"ocr {language} {condition} {engine}: CER {rows[-1]['cer']:.4f}, "
                      f"{rows[-1]['s_per_page']:.2f} s/page", flush=True)
    return rows


def throughput_bench(n: int = 20) -> list[dict]:
    texts = [r["text"][:1500] for r in load_bbc_news(limit_per_class=4)][:n]
    makers = {"pdf (text layer)": lambda t: ("a.pdf", pdf_bytes([t[:750], t[750:]])),
              "docx": lambda t: ("a.docx", docx_bytes([t])), "html": lambda t: ("a.html", html_bytes("News", t)),
              "pdf (scanned, OCR)": lambda t: ("a.pdf", scanned_pdf_bytes([scanned_page(t[:400])]))}
    rows = []
    for fmt, make in makers.items():
        count = n if "OCR" not in fmt else max(n // 5, 2)
        files = [(f"{i}-{make(t)[0]}", make(t)[1]) for i, t in enumerate(texts[:count])]
        t = time.monotonic()
        results = extract_many(files)
        elapsed = time.monotonic() - t
        pages = sum(len(d.pages) for d in results.values() if hasattr(d, "pages"))
        rows.append({"format": fmt, "files": len(files), "pages": pages, "pages_per_s": pages / elapsed})
        print(f"extract {fmt}: {pages} pages in {elapsed:.1f} s", flush=True)
    return rows


def f1_bench(client, job_spec: dict) -> dict:
    """Macro-F1 of the same job on BBC text as JSONL and on the same articles as an archive of PDFs."""
    from doctune.data import to_jsonl
    from tests.document_samples import zip_bytes

    records = load_bbc_news(limit_per_class=60)
    files = {f"{i}.pdf": pdf_bytes([r["text"]]) for i, r in enumerate(records)}
    labels = "file,label\n" + "".join(f"{i}.pdf,{r['label']}\n" for i, r in enumerate(records))
    original = client.upload_dataset("bench-bbc-text", "classification", {"data": to_jsonl(records)}, seed=42)
    pdfs = client.upload_dataset("bench-bbc-pdf", "classification", {"documents": zip_bytes(files),
                                                                     "labels": labels.encode()}, seed=42)
    out = {}
    for kind, ds in (("original", original), ("pdf", pdfs)):
        job = client.submit_job({**job_spec, "dataset": {"id": ds["id"]}})
        while (job := client.get_job(job["id"]))["status"] not in ("succeeded", "failed", "cancelled"):
            time.sleep(5)
        if job["status"] != "succeeded":
            raise RuntimeError(f"{kind}: {job['error']}")
        out[kind] = job["report"]["metrics"]["macro_f1"]["fine_tuned"]
    print(f"documents f1: {json.dumps(out)}", flush=True)
    return out


def report_lines(r: dict) -> list[str]:
    lines = ["## Documents in", ""]
    if r.get("ocr"):
        lines += [f"OCR on rendered pages ({r.get('ocr_date', '')}): BBC articles (English) and Chinese news",
                  "sentences drawn with DejaVu Sans / Noto Sans CJK at ~200 dpi; *scan* adds 1 % salt-and-pepper",
                  "noise and a 1° rotation. Character error rate ignores whitespace. Goal ≤ 2 % on clean renders.",
                  "", "| language | page | engine | CER | s/page |", "| --- | --- | --- | --- | --- |",
                  *[f"| {o['language']} | {o['condition']} | {o['engine']} | {100 * o['cer']:.2f} % | {o['s_per_page']:.2f} |"
                    for o in r["ocr"]], ""]
    if r.get("throughput"):
        lines += ["Extraction throughput through the isolated worker (a child process per file, 2 at a time):", "",
                  "| format | files | pages | pages/s |", "| --- | --- | --- | --- |",
                  *[f"| {t['format']} | {t['files']} | {t['pages']} | {t['pages_per_s']:.2f} |" for t in r["throughput"]], ""]
    if r.get("f1"):
        f1 = r["f1"]
        lines += [f"BBC macro-F1, trained on PDF-extracted text {f1['pdf']:.3f} vs original text {f1['original']:.3f} "
                  f"(goal: within 0.01; {'met' if abs(f1['pdf'] - f1['original']) <= 0.01 else 'not met'}).", ""]
    else:
        lines += ["BBC macro-F1 on PDF-extracted vs original text: not measured yet (`BENCH_PARTS=documents_f1`).", ""]
    return lines
