"""What every reader returns, and the one exception a reader raises for a file it cannot use."""

from __future__ import annotations

from dataclasses import dataclass, field


class UnusableFile(Exception):
    """A reader's verdict on one file: the message is the reason a person reads (and can act on)."""


@dataclass
class ReadResult:
    """Text of one file.

    pages: page texts for paged formats (PDF, text with form feeds), else one item. The cleaner uses
        pages to find running headers, footers and page numbers.
    structured: True when the format marks paragraphs and headings itself (HTML, DOCX, EPUB, ODT,
        Markdown): paragraphs are separated by blank lines and headings start with "# ", so the
        cleaner must not re-flow lines or guess headings.
    notes: things worth one line to the person (e.g. the encoding that was detected).
    """

    pages: list[str]
    structured: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(self.pages)
