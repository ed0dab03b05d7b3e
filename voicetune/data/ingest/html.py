"""HTML (.html, .htm, .xhtml) through BeautifulSoup; also used by the EPUB and Markdown readers.

Output convention (shared by all structured readers): one paragraph per block separated by a blank
line, headings prefixed with "# ", line breaks (<br>) kept inside a paragraph (verse, addresses).
"""

from __future__ import annotations

import re
import warnings

from voicetune.data.ingest.base import ReadResult, UnusableFile
from voicetune.data.ingest.text import reject_binary

_DROP = [
    "script",
    "style",
    "noscript",
    "template",
    "nav",
    "header",
    "footer",
    "aside",
    "form",
    "table",
    "figure",
    "svg",
    "math",
    "head",
    "button",
    "select",
    "iframe",
]
_BLOCKS = [
    "p",
    "div",
    "section",
    "article",
    "main",
    "blockquote",
    "li",
    "ul",
    "ol",
    "dl",
    "dt",
    "dd",
    "pre",
    "hr",
    "body",
    "center",
    "address",
    "figcaption",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
]
_HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
# Private-use sentinels survive get_text() and mark what HTML said before whitespace is collapsed.
_BREAK, _HEADING, _PARA = "\ue000", "\ue001", "\ue002"
_SPACES = re.compile(r"[ \t\r\n\u00a0]+")


def _parser() -> str:
    try:
        import lxml  # noqa: F401  (faster, and forgiving with broken markup)
    except ImportError:
        return "html.parser"
    return "lxml"


def html_to_text(markup: bytes | str) -> str:
    """The readable text of an HTML document, paragraphs and headings marked (see module doc)."""
    from bs4 import BeautifulSoup, XMLParsedAsHTMLWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", XMLParsedAsHTMLWarning)  # XHTML (EPUB chapters) reads fine as HTML
        soup = BeautifulSoup(markup, _parser())
    for tag in soup.find_all(_DROP):
        tag.decompose()
    # Project Gutenberg and other scans mark printed page numbers with these classes.
    for tag in soup.select(".pagenum, .pageno, .page-number, [role=doc-pagebreak]"):
        tag.decompose()
    for tag in soup.find_all(attrs={"epub:type": "pagebreak"}):
        tag.decompose()
    for br in soup.find_all("br"):
        br.replace_with(_BREAK)
    for tag in soup.find_all(_BLOCKS):
        if tag.name in _HEADINGS:
            tag.insert(0, _HEADING)
        tag.insert_before(_PARA)
        tag.insert_after(_PARA)
    raw = soup.get_text()
    paragraphs: list[str] = []
    for block in raw.split(_PARA):
        lines = [_SPACES.sub(" ", part).strip() for part in block.split(_BREAK)]
        text = "\n".join(line for line in lines if line)
        if not text.replace(_HEADING, "").strip():
            continue
        if _HEADING in text:
            paragraphs.append("# " + _SPACES.sub(" ", text.replace(_HEADING, "")).strip())
        else:
            paragraphs.append(text)
    return "\n\n".join(paragraphs)


def read_html(data: bytes) -> ReadResult:
    reject_binary(data)
    try:
        text = html_to_text(data)
    except Exception as exc:  # bs4 is forgiving; anything raised here means the bytes are not HTML
        raise UnusableFile(
            f"cannot parse HTML ({type(exc).__name__}): open it in a browser and save again"
        ) from exc
    return ReadResult(pages=[text], structured=True)
