"""Markdown (.md, .markdown): rendered by markdown-it-py (CommonMark), then read as HTML, so that
emphasis marks, link targets and code fences do not end up in the training text."""

from __future__ import annotations

from voicetune.data.ingest.base import ReadResult
from voicetune.data.ingest.html import html_to_text
from voicetune.data.ingest.text import decode_bytes


def read_markdown(data: bytes) -> ReadResult:
    from markdown_it import MarkdownIt

    text, encoding = decode_bytes(data)
    html = MarkdownIt("commonmark").render(text)
    notes = [] if encoding in ("utf-8", "ascii") else [f"not UTF-8: read as {encoding}"]
    return ReadResult(pages=[html_to_text(html)], structured=True, notes=notes)
