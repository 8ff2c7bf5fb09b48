"""Documents the tests and benches make for themselves: PDFs from BBC articles (fpdf2, with a
Noto CJK font for Chinese), scanned pages (Pillow renders text with a Debian font, adds noise and a
slight rotation), DOCX (python-docx), HTML and .eml as text, and archives of them."""

from __future__ import annotations

import io
import random
import tarfile
import textwrap
import zipfile
from email.message import EmailMessage
from pathlib import Path

FONT_EN = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
FONT_CJK = "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"
FONT_CJK_TTF = "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc"
ZH_TEXT = ("央行宣布下调存款准备金率零点五个百分点，释放长期资金约一万亿元。"
           "分析人士认为，此举有助于降低企业融资成本，支持实体经济发展。"
           "上海证券交易所的股票指数当天上涨百分之一点二。")
EN_TEXT = ("The Bank of England kept interest rates on hold at 4.75% on Thursday. "
           "Analysts said the decision reflected worries about slowing growth and rising prices.")


def pdf_bytes(pages: list[str], cjk: bool = False) -> bytes:
    """A PDF with a text layer, one string per page (Chinese through the Noto CJK font)."""
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(False)
    font = FONT_CJK if cjk else FONT_EN
    pdf.add_font("body", fname=font)
    pdf.set_font("body", size=11)
    for text in pages:
        pdf.add_page()
        pdf.set_xy(15, 15)
        pdf.multi_cell(180, 6, text)
    return bytes(pdf.output())


def scanned_page(text: str, cjk: bool = False, noise: float = 0.0, angle: float = 0.0, width: int = 1700) -> "Image":
    """A page image of ``text`` at ~200 dpi, with salt-and-pepper ``noise`` (share of pixels) and a
    rotation of ``angle`` degrees, as a scanner would produce."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(FONT_CJK if cjk else FONT_EN, 34)
    per_line = 40 if cjk else 70
    lines = [l for para in text.split("\n") for l in (textwrap.wrap(para, per_line) if not cjk else
                                                      [para[i:i + per_line] for i in range(0, len(para), per_line)])]
    height = 120 + 56 * len(lines)
    image = Image.new("L", (width, max(height, 400)), 255)
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((80, 60 + 56 * i), line, font=font, fill=0)
    if angle:
        image = image.rotate(angle, expand=True, fillcolor=255, resample=Image.BICUBIC)
    if noise:
        rng = random.Random(7)
        px = image.load()
        w, h = image.size
        for _ in range(int(w * h * noise)):
            px[rng.randrange(w), rng.randrange(h)] = rng.choice((0, 255))
    return image


def image_bytes(image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def scanned_pdf_bytes(images: list) -> bytes:
    """A PDF whose pages are images only (no text layer), as a scanner writes."""
    buf = io.BytesIO()
    images[0].convert("RGB").save(buf, format="PDF", save_all=True, append_images=[i.convert("RGB") for i in images[1:]],
                                  resolution=200)
    return buf.getvalue()


def docx_bytes(paragraphs: list[str], page_break_after: int | None = None, table: list[list[str]] | None = None) -> bytes:
    import docx
    from docx.enum.text import WD_BREAK

    document = docx.Document()
    for i, text in enumerate(paragraphs):
        p = document.add_paragraph(text)
        if page_break_after is not None and i == page_break_after:
            p.add_run().add_break(WD_BREAK.PAGE)
    if table:
        t = document.add_table(rows=len(table), cols=len(table[0]))
        for r, row in enumerate(table):
            for c, cell in enumerate(row):
                t.cell(r, c).text = cell
    buf = io.BytesIO()
    document.save(buf)
    return buf.getvalue()


def html_bytes(title: str, body: str) -> bytes:
    paras = "".join(f"<p>{p}</p>" for p in body.split("\n") if p)
    return (f"<!DOCTYPE html><html><head><title>{title}</title></head><body><nav><a href='/'>Home</a> | "
            f"<a href='/news'>News</a></nav><article><h1>{title}</h1>{paras}</article>"
            "<footer>Copyright 2026 Example News</footer></body></html>").encode()


def eml_bytes(subject: str, body: str, attachments: dict[str, bytes] | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"] = "alice@example.com"
    msg["To"] = "bob@example.com"
    msg["Subject"] = subject
    msg["Date"] = "Mon, 30 Nov 2026 08:00:00 +0000"
    msg.set_content(body)
    for name, data in (attachments or {}).items():
        maintype, subtype = ("application", "pdf") if name.endswith(".pdf") else ("application", "octet-stream")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg.as_bytes()


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def tar_gz_bytes(files: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return buf.getvalue()


def encrypted_pdf_bytes(text: str = EN_TEXT) -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf_bytes([text]))))
    writer.encrypt("secret", algorithm="AES-128")
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


def cer(reference: str, hypothesis: str) -> float:
    """Character error rate: edit distance over the reference's length, whitespace ignored (OCR line
    breaks differ from the renderer's wrapping, and Chinese has no spaces)."""
    ref = "".join(reference.split())
    hyp = "".join(hypothesis.split())
    prev = list(range(len(hyp) + 1))
    for i, a in enumerate(ref, 1):
        cur = [i]
        for j, b in enumerate(hyp, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a != b)))
        prev = cur
    return prev[-1] / max(len(ref), 1)


__all__ = ["EN_TEXT", "ZH_TEXT", "cer", "docx_bytes", "eml_bytes", "encrypted_pdf_bytes", "html_bytes",
           "image_bytes", "pdf_bytes", "scanned_page", "scanned_pdf_bytes", "tar_gz_bytes", "zip_bytes"]
_ = Path
