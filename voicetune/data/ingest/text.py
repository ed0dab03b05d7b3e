"""Plain text (.txt): decode with the right encoding, refuse binary data, keep form-feed pages."""

from __future__ import annotations

import codecs
import re

from voicetune.data.ingest.base import ReadResult, UnusableFile

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# Control characters that never occur in prose (tab, newline, CR and form feed are allowed).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
_SAMPLE = 1 << 16
_LATIN_FAMILY = ("cp125", "iso8859", "latin", "mac_", "cp850", "cp852", "cp775", "hp_roman")
_BINARY = "binary data, not text (wrong extension?): remove it or give it its real extension"


def looks_binary(text: str) -> bool:
    """More than 1% control characters in a sample: an image, archive or program, not writing."""
    sample = text[:_SAMPLE]
    return bool(sample) and len(_CONTROL.findall(sample)) > 0.01 * len(sample)


def reject_binary(data: bytes) -> None:
    """Refuse bytes that are clearly not text (for readers that decode on their own)."""
    sample = data[:_SAMPLE]
    if sample.startswith(tuple(bom for bom, _ in _BOMS)):
        return
    if looks_binary(sample.decode("latin-1")):
        raise UnusableFile(_BINARY)


def decode_bytes(data: bytes) -> tuple[str, str]:
    """Decode file bytes: a BOM wins, then strict UTF-8, then charset-normalizer's best guess.

    Returns (text, encoding). Raises UnusableFile for binary data.
    """
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(encoding), encoding.replace("-sig", "")
            except UnicodeDecodeError:
                break
    if b"\x00" not in data[:_SAMPLE]:
        try:
            return data.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            pass
    from charset_normalizer import from_bytes

    matches = from_bytes(data)
    best = matches.best()
    # Single-byte code pages are often near-ties; Windows-1252 is by far the likeliest for Western
    # writing, so it wins a near-tie (within 0.1 chaos) over its neighbours (cp1250, cp1257, mac_roman).
    if best is not None and best.encoding != "cp1252" and best.encoding.startswith(_LATIN_FAMILY):
        western = from_bytes(data, cp_isolation=["cp1252"]).best()
        if western is not None and western.chaos <= best.chaos + 0.1:
            best = western
    if best is None:
        raise UnusableFile(_BINARY)
    text = str(best)
    if looks_binary(text):
        raise UnusableFile(_BINARY)
    return text, best.encoding


def read_text(data: bytes) -> ReadResult:
    text, encoding = decode_bytes(data)
    if looks_binary(text):
        raise UnusableFile(_BINARY)
    notes = [] if encoding in ("utf-8", "ascii") else [f"not UTF-8: read as {encoding}"]
    # A form feed is a page break in text exported from PDFs and word processors.
    pages = text.split("\f") if "\f" in text else [text]
    return ReadResult(pages=pages, notes=notes)
