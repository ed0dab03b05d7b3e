"""E-books (.epub) through ebooklib: the spine's documents in reading order, each read as HTML."""

from __future__ import annotations

import io
import warnings
import zipfile

from voicetune.data.ingest.base import ReadResult, UnusableFile
from voicetune.data.ingest.html import html_to_text


def read_epub(data: bytes) -> ReadResult:
    import ebooklib
    from ebooklib import epub

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            if "META-INF/encryption.xml" in archive.namelist():
                raise UnusableFile("EPUB is DRM-protected (encrypted): use a DRM-free copy of your own book")
    except zipfile.BadZipFile as exc:
        raise UnusableFile("not a valid EPUB (corrupt or truncated zip): export it again") from exc
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ebooklib warns about future defaults on every read
            book = epub.read_epub(io.BytesIO(data), {"ignore_ncx": True})
    except Exception as exc:  # ebooklib raises bare Exceptions and KeyErrors for broken books
        raise UnusableFile(f"not a valid EPUB ({type(exc).__name__}: {exc}): export it again") from exc
    chapters: list[str] = []
    for entry in book.spine:
        idref = entry[0] if isinstance(entry, tuple) else entry
        item = book.get_item_with_id(idref)
        if item is None or item.get_type() != ebooklib.ITEM_DOCUMENT or isinstance(item, epub.EpubNav):
            continue
        text = html_to_text(item.get_content())
        if text.strip():
            chapters.append(text)
    return ReadResult(pages=["\n\n".join(chapters)], structured=True)
