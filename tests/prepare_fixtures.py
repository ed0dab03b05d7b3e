"""Real files of every format the prepare step reads, written with the formats' own libraries
(reportlab, python-docx, ebooklib, odfpy), plus a corpus of bad inputs. Shared by the data tests."""

from __future__ import annotations

import os
import random
from pathlib import Path

WORDS = [
    "garden",
    "lantern",
    "orchard",
    "harbour",
    "violin",
    "meadow",
    "cathedral",
    "kettle",
    "sparrow",
    "velvet",
    "thunder",
    "river",
    "ledger",
    "carriage",
    "spectacle",
    "bishop",
    "marmalade",
    "parasol",
    "tortoise",
    "chimney",
    "governess",
    "ballroom",
    "telegram",
    "umbrella",
    "pheasant",
    "omnibus",
    "curate",
    "duchess",
    "nephew",
    "aunt",
    "luncheon",
    "drawing-room",
    "hedgehog",
    "wolf",
    "pigeon",
    "tiger",
]
VERBS = [
    "admired",
    "forgot",
    "carried",
    "noticed",
    "painted",
    "borrowed",
    "ignored",
    "praised",
    "dropped",
    "guarded",
]


def prose(seed: int, paragraphs: int = 6, sentences: int = 5) -> list[str]:
    """Distinct, sentence-shaped paragraphs (each seed gives different text, so dedup leaves it be)."""
    rng = random.Random(seed)
    out = []
    for _ in range(paragraphs):
        sentence_list = []
        for _ in range(sentences):
            words = [rng.choice(WORDS) for _ in range(rng.randint(6, 14))]
            words.insert(2, rng.choice(VERBS))
            sentence_list.append(" ".join(words).capitalize() + rng.choice([".", ".", ".", "!", "?"]))
        out.append(" ".join(sentence_list))
    return out


def wrap(paragraph: str, width: int = 70) -> str:
    lines, line = [], ""
    for word in paragraph.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    lines.append(line)
    return "\n".join(lines)


GUTENBERG_HEADER = """The Project Gutenberg eBook of Garden Stories, by A. Writer

This eBook is for the use of anyone anywhere in the United States and
most other parts of the world at no cost and with almost no restrictions
whatsoever. You may copy it, give it away or re-use it under the terms
of the Project Gutenberg License included with this eBook or online at
www.gutenberg.org.

Title: Garden Stories

Author: A. Writer

Release Date: May 1, 2004 [eBook #12345]

*** START OF THE PROJECT GUTENBERG EBOOK GARDEN STORIES ***




Produced by A Volunteer and the Online Distributed Proofreading Team.




GARDEN STORIES

BY
A. WRITER

CONTENTS

   I. THE ORCHARD
  II. THE HARBOUR
"""

GUTENBERG_FOOTER = """

End of the Project Gutenberg EBook of Garden Stories, by A. Writer

*** END OF THE PROJECT GUTENBERG EBOOK GARDEN STORIES ***

Updating editions will replace the previous one--the old editions will
be renamed. Creating the works from print editions not protected by U.S.
copyright law means that no one owns a United States copyright in these
works. THE FULL PROJECT GUTENBERG LICENSE PLEASE READ THIS BEFORE YOU
DISTRIBUTE OR USE THIS WORK.
"""

OLD_HEADER = """**The Project Gutenberg Etext of Old Tales**
#1 in our series by A. Writer

Copyright laws are changing all over the world, be sure to check
the copyright laws for your country before posting these files!!

**Welcome To The World of Free Plain Vanilla Electronic Texts**

**Etexts Readable By Both Humans and By Computers, Since 1971**

*These Etexts Prepared By Hundreds of Volunteers and Donations*

We produce about two million dollars for each hour we work. The
fifty hours is one conservative estimate for how long it we take
to get any etext selected, entered, proofread, edited.

*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*Ver.04.29.93*END*

"""

OLD_FOOTER = """

End of The Project Gutenberg Etext of Old Tales
"""


def gutenberg_book(
    seed: int, stories: tuple[str, ...] = ("I. THE ORCHARD", "II. THE HARBOUR")
) -> tuple[str, list[str]]:
    """A Gutenberg-style plain text: licence header, title page, contents, wrapped stories, footer.
    Returns (file text, the story paragraphs in order)."""
    body, paragraphs = [], []
    for index, title in enumerate(stories):
        story = prose(seed * 10 + index, paragraphs=5)
        paragraphs.extend(story)
        body.append(title + "\n\n\n" + "\n\n".join(wrap(p) for p in story))
    return GUTENBERG_HEADER + "\n\n\n" + "\n\n\n\n".join(body) + GUTENBERG_FOOTER, paragraphs


def write_pdf(
    path: Path, pages: list[list[str]], header: str | None = "GARDEN STORIES", numbers: bool = True
) -> None:
    """A text PDF with reportlab: each page's lines, a running header and a page number."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    pdf = canvas.Canvas(str(path), pagesize=A4)
    width, height = A4
    for number, lines in enumerate(pages, start=1):
        if header:
            pdf.drawString(72, height - 40, header)
        y = height - 80
        for line in lines:
            pdf.drawString(72, y, line)
            y -= 14
        if numbers:
            pdf.drawString(width / 2, 30, str(number))
        pdf.showPage()
    pdf.save()


def pdf_pages_from(paragraphs: list[str], lines_per_page: int = 40) -> list[list[str]]:
    """Wrapped lines of paragraphs laid out on pages (paragraph starts indented, as in print)."""
    lines: list[str] = []
    for paragraph in paragraphs:
        wrapped = wrap(paragraph, 80).split("\n")
        lines.append("    " + wrapped[0])
        lines.extend(wrapped[1:])
    return [lines[i : i + lines_per_page] for i in range(0, len(lines), lines_per_page)]


def write_image_pdf(path: Path, pages: int = 2) -> None:
    """A "scanned" PDF: shapes only, no text layer."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    pdf = canvas.Canvas(str(path), pagesize=A4)
    for _ in range(pages):
        for row in range(40):
            pdf.rect(72, 100 + row * 15, 400, 8, fill=1)
        pdf.showPage()
    pdf.save()


def write_encrypted_pdf(path: Path, paragraphs: list[str]) -> None:
    from pypdf import PdfReader, PdfWriter

    plain = path.with_suffix(".plain.pdf")
    write_pdf(plain, pdf_pages_from(paragraphs))
    writer = PdfWriter()
    for page in PdfReader(plain).pages:
        writer.add_page(page)
    writer.encrypt(user_password="secret", owner_password="owner", algorithm="RC4-128")
    with open(path, "wb") as handle:
        writer.write(handle)
    plain.unlink()


def write_docx(path: Path, title: str, paragraphs: list[str]) -> None:
    import docx

    document = docx.Document()
    document.add_heading(title, level=1)
    for paragraph in paragraphs:
        document.add_paragraph(paragraph)
    section = document.sections[0]
    section.header.paragraphs[0].text = "RUNNING HEADER THAT MUST NOT APPEAR"
    document.save(str(path))


def write_epub(path: Path, chapters: list[tuple[str, list[str]]]) -> None:
    from ebooklib import epub

    book = epub.EpubBook()
    book.set_identifier("voicetune-test")
    book.set_title("Test Book")
    book.set_language("en")
    items = []
    for number, (title, paragraphs) in enumerate(chapters, start=1):
        chapter = epub.EpubHtml(title=title, file_name=f"chap_{number}.xhtml", lang="en")
        body = "".join(f"<p>{p}</p>" for p in paragraphs)
        chapter.content = f"<html><body><h1>{title}</h1>{body}</body></html>"
        book.add_item(chapter)
        items.append(chapter)
    book.toc = items
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    book.spine = ["nav", *items]
    epub.write_epub(str(path), book)


def write_odt(path: Path, title: str, paragraphs: list[str]) -> None:
    from odf.opendocument import OpenDocumentText
    from odf.text import H, P

    document = OpenDocumentText()
    document.text.addElement(H(outlinelevel=1, text=title))
    for paragraph in paragraphs:
        document.text.addElement(P(text=paragraph))
    document.save(str(path))


def write_rtf(path: Path, paragraphs: list[str]) -> None:
    # RTF is plain 7-bit text with control words; \'e9 is "é" in the ANSI code page.
    body = "".join(paragraph.replace("\\", "\\\\") + "\\par\n" for paragraph in paragraphs)
    path.write_text(
        "{\\rtf1\\ansi\\ansicpg1252\\deff0 {\\fonttbl {\\f0 Times;}}\\f0 Caf\\'e9 society.\\par\n"
        + body
        + "}",
        encoding="ascii",
    )


def write_html(path: Path, title: str, paragraphs: list[str]) -> None:
    body = "".join(f"<p>{p}</p>\n" for p in paragraphs)
    path.write_text(
        f"<html><head><title>x</title><style>p {{ color: red }}</style><script>var x = 1;</script></head>"
        f"<body><nav>Home | About</nav><h1>{title}</h1>{body}<footer>Copyright footer</footer></body></html>",
        encoding="utf-8",
    )


def write_markdown(path: Path, title: str, paragraphs: list[str]) -> None:
    body = "\n\n".join(paragraphs)
    path.write_text(
        f"# {title}\n\n*Some* [linked](https://example.com) words here.\n\n{body}\n", encoding="utf-8"
    )


def good_corpus(root: Path) -> dict[str, list[str]]:
    """One file of every format, each with its own distinct prose; returns name -> paragraphs."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "nested" / "deeper").mkdir(parents=True, exist_ok=True)
    texts: dict[str, list[str]] = {}
    book, paragraphs = gutenberg_book(1)
    (root / "book.txt").write_text(book, encoding="utf-8")
    texts["book.txt"] = paragraphs
    texts["notes.md"] = prose(2)
    write_markdown(root / "notes.md", "Notes", texts["notes.md"])
    texts["page.html"] = prose(3)
    write_html(root / "page.html", "A Page", texts["page.html"])
    texts["nested/essay.pdf"] = prose(4, paragraphs=12)
    write_pdf(root / "nested" / "essay.pdf", pdf_pages_from(texts["nested/essay.pdf"]))
    texts["nested/letter.docx"] = prose(5)
    write_docx(root / "nested" / "letter.docx", "A Letter", texts["nested/letter.docx"])
    texts["nested/deeper/novel.epub"] = prose(6) + prose(7)
    write_epub(
        root / "nested" / "deeper" / "novel.epub",
        [
            ("Chapter One", texts["nested/deeper/novel.epub"][:6]),
            ("Chapter Two", texts["nested/deeper/novel.epub"][6:]),
        ],
    )
    texts["nested/story.odt"] = prose(8)
    write_odt(root / "nested" / "story.odt", "A Story", texts["nested/story.odt"])
    texts["nested/memo.rtf"] = prose(9)
    write_rtf(root / "nested" / "memo.rtf", texts["nested/memo.rtf"])
    return texts


def bad_corpus(root: Path) -> dict[str, str]:
    """Every kind of bad input, next to one good file; returns name -> a word its reason must contain."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "good.txt").write_text("\n\n".join(prose(20, paragraphs=20)), encoding="utf-8")
    expected: dict[str, str] = {}
    (root / "corrupt.pdf").write_bytes(b"%PDF-1.4\n" + os.urandom(2000))
    expected["corrupt.pdf"] = "corrupt"
    write_encrypted_pdf(root / "locked.pdf", prose(21))
    expected["locked.pdf"] = "encrypted"
    write_image_pdf(root / "scan.pdf")
    expected["scan.pdf"] = "OCR"
    (root / "empty.txt").write_bytes(b"")
    expected["empty.txt"] = "empty"
    (root / "photo.txt").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40)
    expected["photo.txt"] = "binary"
    (root / "z-copy.txt").write_bytes((root / "good.txt").read_bytes())
    expected["z-copy.txt"] = "duplicate"
    (root / "huge.txt").write_text("word " * 300_000, encoding="utf-8")  # 1.5 MB against a 1 MB limit
    expected["huge.txt"] = "huge"
    (root / "broken.docx").write_bytes(b"PK\x03\x04 not really a zip")
    expected["broken.docx"] = "docx"
    (root / "loop").mkdir()
    (root / "loop" / "back").symlink_to(root, target_is_directory=True)
    expected["loop/back/"] = "loop"
    (root / "self.txt").symlink_to(root / "self.txt")
    expected["self.txt"] = "loop"
    (root / "dangling.md").symlink_to(root / "nowhere.md")
    expected["dangling.md"] = "broken symlink"
    (root / "picture.jpg").write_bytes(b"\xff\xd8\xff")
    expected["picture.jpg"] = "unsupported"
    return expected
