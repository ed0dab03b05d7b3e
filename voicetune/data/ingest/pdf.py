"""PDF through pypdf: one text per page (the cleaner needs pages to find running headers/footers).

A PDF can fail in three ways a person can fix: it is corrupt, it is encrypted, or it holds page
images without a text layer (a scan), which needs OCR first.
"""

from __future__ import annotations

import io
import logging

from voicetune.data.ingest.base import ReadResult, UnusableFile

# Fewer characters than this per page on average: a scan (maybe with a stray page number).
_MIN_CHARS_PER_PAGE = 20
_OCR_HINT = "it needs OCR first (e.g. `ocrmypdf in.pdf out.pdf`), then add the OCR'd copy"


def read_pdf(data: bytes) -> ReadResult:
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError, PdfReadError

    if not data.lstrip()[:1024].startswith(b"%PDF") and b"%PDF" not in data[:1024]:
        raise UnusableFile("not a PDF (no %PDF header): export it again as PDF")
    # pypdf logs every recoverable oddity of a damaged file; one line per file is our job.
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            try:
                opened = reader.decrypt("")  # many PDFs are "encrypted" with an empty user password
            except DependencyError as exc:
                raise UnusableFile(
                    "PDF is AES-encrypted and the `cryptography` package is missing: "
                    "pip install cryptography, or save an unencrypted copy"
                ) from exc
            if not opened:
                raise UnusableFile("PDF is encrypted with a password: save an unencrypted copy and add that")
        pages_total = len(reader.pages)
    except UnusableFile:
        raise
    except (PdfReadError, FileNotDecryptedError, ValueError, KeyError, TypeError, OSError) as exc:
        raise UnusableFile(f"corrupt PDF ({type(exc).__name__}): export it again from the original") from exc
    if pages_total == 0:
        raise UnusableFile("PDF has no pages: export it again from the original")
    pages: list[str] = []
    failed = 0
    for page in reader.pages:
        try:
            pages.append(page.extract_text() or "")
        except Exception:  # one broken page must not cost the rest of the book
            failed += 1
            pages.append("")
    if failed == pages_total:
        raise UnusableFile("corrupt PDF (no page could be read): export it again from the original")
    chars = sum(len(page.strip()) for page in pages)
    if chars < _MIN_CHARS_PER_PAGE * pages_total:
        raise UnusableFile(f"PDF has no text layer (scanned images?): {_OCR_HINT}")
    notes = [f"{failed} of {pages_total} pages could not be read"] if failed else []
    return ReadResult(pages=pages, notes=notes)
