"""Word documents (.docx) through python-docx: body paragraphs in order, headings marked.

Page headers and footers live in separate parts of a .docx, so they never reach the text.
"""

from __future__ import annotations

import io
import zipfile

from voicetune.data.ingest.base import ReadResult, UnusableFile


def read_docx(data: bytes) -> ReadResult:
    import docx
    from docx.opc.exceptions import PackageNotFoundError

    try:
        document = docx.Document(io.BytesIO(data))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        if data[:8] == b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1":
            raise UnusableFile(
                "password-protected or old-format Word file: save it as an unprotected .docx"
            ) from exc
        raise UnusableFile(
            "not a valid .docx (corrupt, or another format renamed): save it again as .docx"
        ) from exc
    paragraphs: list[str] = []
    for paragraph in document.paragraphs:
        text = paragraph.text.strip()
        if not text:
            continue
        style = (paragraph.style.name if paragraph.style is not None else "") or ""
        if style.startswith("Heading") or style == "Title":
            paragraphs.append("# " + " ".join(text.split()))
        else:
            # A manual line break inside a paragraph arrives as "\n": keep it (verse, addresses).
            paragraphs.append("\n".join(line.strip() for line in text.split("\n") if line.strip()))
    return ReadResult(pages=["\n\n".join(paragraphs)], structured=True)
