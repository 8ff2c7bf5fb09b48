"""Documents in: text out of PDFs (text layer or scans), images, DOCX, HTML and e-mail, with pages
and the extractor used, read safely from archives, in a worker process with time and memory limits.

Called by the dataset service (archive uploads) and by endpoints' document requests. It imports
nothing of doctune above ``config``/``errors``: a lower layer, like ``doctune.data``.
"""

from doctune.documents._archive import normal_name, read_archive
from doctune.documents._formats import FORMATS, detect_format, extract_bytes
from doctune.documents._language import detect_language
from doctune.documents._model import PAGE_BREAK, Document, DocumentError, Limits, Page, join_pages
from doctune.documents._ocr import DEFAULT_ENGINE, ENGINES, ocr_image, tesseract_available
from doctune.documents._pool import extract_isolated, extract_many

__all__ = ["DEFAULT_ENGINE", "ENGINES", "FORMATS", "PAGE_BREAK", "Document", "DocumentError", "Limits", "Page",
           "detect_format", "detect_language", "extract_bytes", "extract_isolated", "extract_many", "join_pages",
           "normal_name", "ocr_image", "read_archive", "tesseract_available"]
