"""OpenDocument text (.odt) through odfpy: paragraphs and headings in document order."""

from __future__ import annotations

import io
import zipfile
from typing import Any

from voicetune.data.ingest.base import ReadResult, UnusableFile


def read_odt(data: bytes) -> ReadResult:
    from odf import teletype
    from odf.namespaces import TEXTNS
    from odf.opendocument import load

    try:
        document = load(io.BytesIO(data))
    except (zipfile.BadZipFile, KeyError, ValueError, Exception) as exc:
        raise UnusableFile("not a valid .odt (corrupt or encrypted): save it again as .odt") from exc
    paragraphs: list[str] = []

    def walk(node: Any) -> None:
        for child in node.childNodes:
            qname = getattr(child, "qname", None)
            if qname == (TEXTNS, "h"):
                text = " ".join(teletype.extractText(child).split())
                if text:
                    paragraphs.append("# " + text)
            elif qname == (TEXTNS, "p"):
                text = teletype.extractText(child).strip()
                if text:
                    paragraphs.append(text)
            elif qname is not None and qname[0] == TEXTNS and qname[1] in ("list", "list-item", "section"):
                walk(child)

    walk(document.text)
    return ReadResult(pages=["\n\n".join(paragraphs)], structured=True)
