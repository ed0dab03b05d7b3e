"""Clean: from extracted text to the author's own paragraphs, grouped into sections.

Each pass is a small pure function over strings, in the order `clean_document` runs them:
unicode repair -> page furniture (running headers/footers, page numbers) -> licence boilerplate
(Project Gutenberg and friends) -> scan artefacts -> table of contents -> hyphenation -> line
unwrapping -> headings and sections -> punctuation style -> optional redaction.

Structured formats (HTML, DOCX, EPUB, ODT, Markdown) arrive with one paragraph per blank-line block and
headings marked "# "; plain text and PDF arrive as lines, and the cleaner works the paragraphs out.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

QuoteStyle = Literal["straight", "curly", "keep"]


@dataclass(frozen=True)
class CleanOptions:
    quotes: QuoteStyle = "straight"
    redact: bool = False
    # Sections shorter than this are folded into the next one (a "PART ONE" page, a dedication).
    min_section_words: int = 80


@dataclass
class Section:
    title: str | None
    paragraphs: list[str]

    @property
    def text(self) -> str:
        return "\n\n".join(self.paragraphs)

    @property
    def words(self) -> int:
        return sum(len(paragraph.split()) for paragraph in self.paragraphs)


@dataclass
class CleanDocument:
    sections: list[Section]
    removed: Counter[str] = field(default_factory=Counter)  # what was stripped, for the manifest

    @property
    def text(self) -> str:
        return "\n\n".join(section.text for section in self.sections if section.paragraphs)

    @property
    def words(self) -> int:
        return sum(section.words for section in self.sections)


# --------------------------------------------------------------------------------------------------
# unicode
_SUSPECT = re.compile(r"[\x80-\xff\ufb00-\ufb06\uff00-\uffef\u3000]")  # mojibake, ligatures, widths
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f\u200b-\u200d\u2060\ufeff\u00ad]")
_SPACES_UNI = re.compile(r"[\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]")


def fix_unicode(text: str) -> str:
    """Repair mojibake and ligatures with ftfy (only on lines that need it: ftfy is slow), then NFC.

    Soft hyphens, zero-width characters and stray control characters go; odd spaces become spaces.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u2028", "\n").replace("\u2029", "\n\n")
    if _SUSPECT.search(text):
        import ftfy

        lines = text.split("\n")
        for index, line in enumerate(lines):
            if _SUSPECT.search(line):
                lines[index] = ftfy.fix_text(line, uncurl_quotes=False, normalization=None)
        text = "\n".join(lines)
    text = _CONTROL.sub("", text)
    text = _SPACES_UNI.sub(" ", text)
    return unicodedata.normalize("NFC", text)


# --------------------------------------------------------------------------------------------------
# page furniture: running headers/footers and page numbers, found by repetition across pages
_PAGE_NUMBER = re.compile(
    r"^\s*(?:[-–—(\[]\s*)?(?:page\s+|p\.\s*)?(?:\d{1,4}|[ivxlcdm]{1,7})(?:\s*(?:of|/)\s*\d{1,4})?"
    r"(?:\s*[-–—)\]])?\s*$",
    re.IGNORECASE,
)
_EDGE_LINES = 3


def _furniture_key(line: str) -> str:
    return re.sub(r"\d+", "#", " ".join(line.lower().split()))


def strip_page_furniture(pages: list[str]) -> tuple[list[str], int]:
    """Remove page numbers and lines repeated at the top or bottom of many pages.

    A line counts as a running header/footer when (digits masked) it sits among the first or last
    three lines of at least a quarter of the pages (and of two pages at least).
    """
    if len(pages) < 2:
        return pages, 0
    split_pages = [page.split("\n") for page in pages]
    edges: list[tuple[list[int], list[int]]] = []
    counts: Counter[str] = Counter()
    for lines in split_pages:
        filled = [i for i, line in enumerate(lines) if line.strip()]
        top, bottom = filled[:_EDGE_LINES], filled[-_EDGE_LINES:]
        edges.append((top, bottom))
        counts.update({_furniture_key(lines[i]) for i in set(top) | set(bottom)})
    threshold = max(2, int(0.25 * len(pages)))
    repeated = {key for key, count in counts.items() if count >= threshold}

    def furniture(line: str) -> bool:
        return bool(_PAGE_NUMBER.match(line)) or _furniture_key(line) in repeated

    removed = 0
    cleaned: list[str] = []
    for lines, (top, bottom) in zip(split_pages, edges, strict=True):
        drop: set[int] = set()
        for order in (top, list(reversed(bottom))):
            for i in order:  # strip from the edge inwards, stop at the first line of text
                if not furniture(lines[i]):
                    break
                drop.add(i)
        removed += len(drop)
        cleaned.append("\n".join(line for i, line in enumerate(lines) if i not in drop))
    return cleaned, removed


# --------------------------------------------------------------------------------------------------
# licence boilerplate
_PG_START = re.compile(
    r"^.*?(?:\*\*\*\s*START OF (?:THE|THIS) PROJECT GUTENBERG|\*\s*END\s*\*?\s*THE SMALL PRINT).*$",
    re.IGNORECASE | re.MULTILINE,
)
_PG_END = re.compile(
    r"^.*?(?:\*\*\*\s*END OF (?:THE|THIS) PROJECT GUTENBERG|END OF (?:THE |THIS )?PROJECT GUTENBERG"
    r"|\*\*\*\s*START: FULL LICENSE).*$",
    re.IGNORECASE | re.MULTILINE,
)
_PG_CREDITS = re.compile(
    r"^\s*(?:produced by|e-?text prepared by|this e-?(?:text|book) was (?:produced|prepared)|prepared by"
    r"|transcribed (?:from|by)|scanned by|proofread by|html version by|updated editions will replace"
    r"|(?:the )?project gutenberg'?s?\b|transcriber'?s? notes?)",
    re.IGNORECASE,
)
_LICENCE_WORDS = re.compile(
    r"copyright|©|\(c\) \d{4}|all rights reserved|creative commons|licen[cs]ed? under|\bisbn\b"
    r"|this e-?book is for the use of|project gutenberg|gutenberg\.org|distributed proofread",
    re.IGNORECASE,
)
_BLOCK_SPLIT = re.compile(r"\n[ \t]*\n")


def strip_licence(text: str) -> tuple[str, int]:
    """Cut Project Gutenberg headers/footers (modern and 1990s "small print" styles) and licence or
    copyright blocks at the very start or end of a text. Returns (text, characters removed)."""
    before = len(text)
    half = len(text) // 2
    starts = [m for m in _PG_START.finditer(text) if m.start() < half]
    if starts:
        text = text[starts[-1].end() :]
    end = _PG_END.search(text)
    if end is not None and end.start() > len(text) // 3:
        text = text[: end.start()]
    blocks = _BLOCK_SPLIT.split(text)
    # Credits just inside the markers ("Produced by ...") and licence/copyright blocks at the edges.
    edge = max(1, min(8, len(blocks) // 10))
    keep: list[str] = []
    for index, block in enumerate(blocks):
        stripped = block.strip()
        at_edge = index < edge or index >= len(blocks) - edge
        if (
            at_edge
            and stripped
            and len(stripped.split()) < 150
            and (_LICENCE_WORDS.search(stripped) or (index < edge and _PG_CREDITS.match(stripped)))
        ):
            continue
        keep.append(block)
    text = "\n\n".join(keep)
    return text, before - len(text)


# --------------------------------------------------------------------------------------------------
# scan and e-text artefacts
_ARTEFACTS = re.compile(
    r"\[(?:Illustration|Transcriber'?s? [Nn]ote|Sidenote|Decoration)[^\]]*\]"  # Gutenberg markup
    r"|\[Pg\.? ?\d+\]|\{\d{1,4}\}",  # printed page numbers kept in e-texts
    re.DOTALL,
)


def strip_artefacts(text: str) -> tuple[str, int]:
    count = 0

    def drop(_match: re.Match[str]) -> str:
        nonlocal count
        count += 1
        return ""

    return _ARTEFACTS.sub(drop, text), count


# --------------------------------------------------------------------------------------------------
# table of contents
_CONTENTS = re.compile(r"^\s*(?:#\s*)?(?:table of )?contents[.:]?\s*$", re.IGNORECASE)
_LEADER = re.compile(r"(?:\.{3,}|\s{3,}|\t)\s*\d{1,4}\s*$|\s\.?\s?\d{1,4}$")
_TOC_NOISE = re.compile(r"^(?:page|chapter|chap\.?|chapter\s+page|part)$", re.IGNORECASE)


def _toc_key(line: str) -> str:
    line = line.strip().lstrip("#").strip()
    line = re.sub(r"(?:\.{2,}|\s{2,}|\t).*$", "", line)  # dot leaders and page numbers
    line = re.sub(r"[^\w\s]", " ", line.lower())
    return " ".join(line.split())


def _is_prose_block(block: list[str]) -> bool:
    words = sum(len(line.split()) for line in block)
    mean = sum(len(line.strip()) for line in block) / len(block)
    return words >= 30 and mean >= 40 and bool(re.search(r"[.!?]", " ".join(block)))


def drop_toc(lines: list[str]) -> tuple[list[str], int]:
    """Remove a table of contents near the start, and runs of dot-leader lines ("Title ..... 12").

    The contents block ends where its first entry comes back as a heading in the body; failing that,
    at the first block of real prose. What stands before a contents page (title page, publisher,
    dedication) is front matter and goes with it, unless it is long.
    """
    removed = 0
    limit = max(300, len(lines) // 5)
    start = next((i for i, line in enumerate(lines[:limit]) if _CONTENTS.match(line)), None)
    if start is not None:
        entries = [
            (i, _toc_key(lines[i]))
            for i in range(start + 1, min(len(lines), start + 600))
            if lines[i].strip() and not _TOC_NOISE.match(_toc_key(lines[i]))
        ][:3]
        end = None
        for position, key in entries:
            if not key:
                continue
            later = next(
                (j for j in range(position + 1, len(lines)) if _toc_key(lines[j]) == key),
                None,
            )
            if later is not None and later - start < max(400, len(lines) // 4):
                end = later
                break
        if end is None:
            # No repeated heading: stop at the first block of prose after the list.
            i = start + 1
            while i < len(lines):
                while i < len(lines) and not lines[i].strip():
                    i += 1
                j = i
                while j < len(lines) and lines[j].strip():
                    j += 1
                if i < len(lines) and _is_prose_block(lines[i:j]):
                    end = i
                    break
                i = j
        if end is not None:
            before = sum(len(line.split()) for line in lines[:start])
            cut_from = 0 if before < 600 else start
            removed += end - cut_from
            lines = lines[:cut_from] + lines[end:]
    # Dot-leader runs (three or more lines in a row) are contents pages without a heading.
    keep: list[str] = []
    run: list[str] = []
    for line in [*lines, ""]:
        end = line.rstrip()
        if end[-1:].isdigit() and len(end.strip()) < 100 and _LEADER.search(end):
            run.append(line)
            continue
        if len(run) >= 3:
            removed += len(run)
        else:
            keep.extend(run)
        run = []
        keep.append(line)
    return keep[:-1], removed


# --------------------------------------------------------------------------------------------------
# hyphenation and line wrapping
_HYPHEN_BREAK = re.compile(r"([A-Za-z]{2,})-\n[ \t]*([a-z][a-z']*)")


def join_hyphenation(text: str) -> tuple[str, int]:
    """Join words split across line ends ("exam-\\nple" -> "example").

    Keeps the hyphen when the hyphenated form appears elsewhere in the text and the joined form does
    not ("well-\\nknown" stays "well-known").
    """
    if "-\n" not in text:
        return text, 0
    words = set(re.findall(r"[a-z]+", text.lower()))
    hyphenated = set(re.findall(r"[a-z]+-[a-z]+", text.lower()))
    count = 0

    def join(match: re.Match[str]) -> str:
        nonlocal count
        count += 1
        head, tail = match.group(1), match.group(2)
        keep = f"{head}-{tail}".lower() in hyphenated and f"{head}{tail}".lower() not in words
        return f"{head}-{tail}\n" if keep else f"{head}{tail}\n"

    return _HYPHEN_BREAK.sub(join, text), count


_SENTENCE_END = re.compile(r"""[.!?:"'”’)\]—]$""")
_STARTS_PARAGRAPH = re.compile(r"""^["'“‘(\[A-Z0-9]""")
_LONE_NUMBER = re.compile(r"^\s*\d{1,4}\s*$")


def _join_lines(lines: list[str]) -> str:
    out = ""
    for line in lines:
        line = line.strip()
        if not line:
            continue
        if not out:
            out = line
        elif out.endswith(("—", "-")) and not out.endswith(" -"):
            out += line  # a dash at the end of a line binds to the next word
        else:
            out += " " + line
    return out


def unwrap(text: str) -> list[str]:
    """Plain text lines -> paragraphs. Hard-wrapped prose is joined; verse keeps its lines.

    Three layouts are recognised: blank-line paragraphs wrapped at a fixed width (Gutenberg), one
    long line per paragraph (editors), and wrapped text without blank lines (PDF pages), where a
    short line ending a sentence or an indented line starts a new paragraph.
    """
    raw_lines = text.split("\n")
    lengths = sorted(len(line.strip()) for line in raw_lines if line.strip())
    if not lengths:
        return []
    width = lengths[int(0.9 * (len(lengths) - 1))]
    blocks: list[list[str]] = []
    current: list[str] = []
    for line in raw_lines:
        if line.strip():
            current.append(line.rstrip())
        elif current:
            blocks.append(current)
            current = []
    if current:
        blocks.append(current)
    one_line_paragraphs = width > 120
    lines_per_block = sum(len(block) for block in blocks) / len(blocks)
    no_blank_paragraphs = lines_per_block > 20
    paragraphs: list[str] = []
    for block in blocks:
        if one_line_paragraphs:
            paragraphs.extend(" ".join(line.split()) for line in block)
            continue
        block = [line for line in block if not (len(block) > 2 and _LONE_NUMBER.match(line))]
        if len(block) == 1:
            paragraphs.append(" ".join(block[0].split()))
            continue
        body = block[:-1]
        short = sum(1 for line in body if len(line.strip()) < 0.6 * width)
        if not no_blank_paragraphs and short >= max(1, len(body) / 2):
            paragraphs.append("\n".join(" ".join(line.split()) for line in block))  # verse, lists
            continue
        indents = [len(line) - len(line.lstrip()) for line in block]
        base_indent = Counter(indents).most_common(1)[0][0]
        current = []
        for index, line in enumerate(block):
            indented = index > 0 and indents[index] >= base_indent + 2
            if current and indented:
                paragraphs.append(_join_lines(current))
                current = []
            current.append(line)
            if no_blank_paragraphs and index + 1 < len(block):
                stripped = line.strip()
                ends = len(stripped) < 0.8 * width and _SENTENCE_END.search(stripped)
                if ends and _STARTS_PARAGRAPH.match(block[index + 1].strip()):
                    paragraphs.append(_join_lines(current))
                    current = []
        if current:
            paragraphs.append(_join_lines(current))
    return [paragraph for paragraph in paragraphs if paragraph]


# --------------------------------------------------------------------------------------------------
# headings and sections
_NUMBER_WORDS = (
    r"one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen"
    r"|sixteen|seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|first|second|third|fourth|fifth"
    r"|sixth|seventh|eighth|ninth|tenth|last|final"
)
_CHAPTER = re.compile(
    rf"^(?:chapter|book|part|volume|canto|section|act|scene|story|letter|stave)\s+"
    rf"(?:\d+|[ivxlcdm]+\b|(?:the\s+)?(?:{_NUMBER_WORDS})\b)",
    re.IGNORECASE,
)
_NAMED = re.compile(
    r"^(?:prologue|epilogue|preface|introduction|foreword|afterword|appendix|postscript|interlude"
    r"|dedication|acknowledg(?:e)?ments?)\b",
    re.IGNORECASE,
)
_ROMAN = re.compile(r"^(?=[MDCLXVI])M{0,3}(?:C[MD]|D?C{0,3})(?:X[CL]|L?X{0,3})(?:I[XV]|V?I{0,3})\.?$")
_ARABIC = re.compile(r"^\d{1,3}\.?$")
_SCENE_BREAK = re.compile(r"^[\s*·•~=_#.\-–—]+$")
_THE_END = re.compile(r"^(?:the end|finis|end)\.?$", re.IGNORECASE)


def heading_title(paragraph: str, structured: bool) -> str | None:
    """The heading's text when the paragraph is a heading, else None."""
    if paragraph.startswith("# "):
        return paragraph[2:].strip()
    if structured or "\n" in paragraph or len(paragraph) > 80:
        return None
    text = paragraph.strip()
    if _CHAPTER.match(text) or _NAMED.match(text) or _ROMAN.match(text) or _ARABIC.match(text):
        return text
    letters = [c for c in text if c.isalpha()]
    shouted = text.startswith(('"', "'", "“", "‘")) or text.endswith((",", ";", "!", "?", '"', "”"))
    if len(letters) >= 2 and all(c.isupper() for c in letters) and len(text.split()) <= 12 and not shouted:
        return text  # an all-capitals line on its own: a title (dialogue in capitals is quoted)
    return None


_PROSE_END = re.compile(r"""[.!?]["'”’]?$""")


def _is_prose(paragraph: str) -> bool:
    """Writing, as opposed to a title-page or imprint line ("By Jane Doe", "London: 1904")."""
    words = len(paragraph.split())
    if "\n" in paragraph:  # a block of short lines: verse is prose enough when it has sentences
        return words >= 20 and bool(re.search(r"[.!?]", paragraph))
    return words >= 10 or (words >= 3 and bool(_PROSE_END.search(paragraph)))


def make_sections(
    paragraphs: list[str], structured: bool, min_words: int
) -> tuple[list[Section], Counter[str]]:
    """Group paragraphs under their headings; drop title-page lines, scene breaks and "THE END"."""
    removed: Counter[str] = Counter()
    sections: list[Section] = []
    title: str | None = None
    seen_prose = False
    body: list[str] = []
    for paragraph in paragraphs:
        heading = heading_title(paragraph, structured)
        if heading is not None:
            if body:
                sections.append(Section(title, body))
                body, title = [], None
            title = heading if title is None else f"{title}: {heading}"
            removed["headings"] += 1
            continue
        if _SCENE_BREAK.match(paragraph) or _THE_END.match(paragraph.strip()):
            removed["scene_breaks"] += 1
            continue
        if not seen_prose and not _is_prose(paragraph):
            removed["front_matter"] += 1  # "by Jane Doe", "London: 1904" before the writing starts
            continue
        seen_prose = True
        body.append(paragraph)
    while body and not _is_prose(body[-1]):
        body.pop()  # imprint lines at the very end ("Printed by ... Edinburgh")
        removed["back_matter"] += 1
    if body:
        sections.append(Section(title, body))
    # Fold tiny sections forward (a part title page, an epigraph) so units stay meaningful.
    merged: list[Section] = []
    carry: Section | None = None
    for section in sections:
        if carry is not None:
            section = Section(carry.title or section.title, carry.paragraphs + section.paragraphs)
            carry = None
        if section.words < min_words:
            carry = section
        else:
            merged.append(section)
    if carry is not None:
        if merged:
            merged[-1].paragraphs.extend(carry.paragraphs)
        else:
            merged.append(carry)
    return merged, removed


# --------------------------------------------------------------------------------------------------
# punctuation style and redaction
_STRAIGHT = str.maketrans(
    {
        "“": '"',
        "”": '"',
        "„": '"',
        "‟": '"',
        "″": '"',
        "‘": "'",
        "’": "'",
        "‚": "'",
        "‛": "'",
        "′": "'",
        "―": "—",
        "…": "...",
    }
)
_ITALICS = re.compile(r"(?<![\w_])_(?=\S)([^_]{1,400}?\S)_(?![\w_])")
_DOUBLE_HYPHEN = re.compile(r"(?<!-)--(?!-)")
_MULTI_SPACE = re.compile(r"[ \t]{2,}")


def _curl(text: str) -> str:
    text = re.sub(r"""(^|[\s(\[{—–-])"(?=\S)""", "\\1“", text)
    text = text.replace('"', "”")
    text = re.sub(r"""(^|[\s(\[{—–-])'(?=\S)""", "\\1‘", text)
    return text.replace("'", "’")


def normalise_punctuation(paragraph: str, quotes: QuoteStyle) -> str:
    """One convention for quotes, dashes and spaces; Gutenberg's _italics_ marks removed."""
    # Each pass is guarded by a cheap membership test: most paragraphs need none of them.
    if "_" in paragraph:
        paragraph = _ITALICS.sub(r"\1", paragraph)
    if "--" in paragraph:
        paragraph = _DOUBLE_HYPHEN.sub("—", paragraph)
    if quotes == "straight":
        paragraph = paragraph.translate(_STRAIGHT)
    elif quotes == "curly":
        paragraph = _curl(paragraph.translate(_STRAIGHT).replace("...", "…"))
    if "\t" in paragraph or "  " in paragraph:
        paragraph = _MULTI_SPACE.sub(" ", paragraph.replace("\t", " "))
    if "\n" in paragraph:
        paragraph = "\n".join(line.strip() for line in paragraph.split("\n"))
    return paragraph.strip()


_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_URL = re.compile(r"(?:https?://|www\.)[^\s<>\"')\]]+[^\s<>\"')\].,;:!?]", re.IGNORECASE)
_PHONE = re.compile(r"(?<![\w+])\+?\(?\d[\d\s().-]{7,18}\d(?!\w)")


def redact(paragraph: str) -> tuple[str, int]:
    """Replace e-mail addresses, URLs and phone numbers with [email], [url] and [phone]."""
    count = 0

    def sub(label: str) -> object:
        def replace(match: re.Match[str]) -> str:
            nonlocal count
            if label == "[phone]" and sum(c.isdigit() for c in match.group(0)) < 9:
                return match.group(0)  # years, page ranges and prices are not phone numbers
            count += 1
            return label

        return replace

    paragraph = _EMAIL.sub(sub("[email]"), paragraph)  # type: ignore[arg-type]
    paragraph = _URL.sub(sub("[url]"), paragraph)  # type: ignore[arg-type]
    paragraph = _PHONE.sub(sub("[phone]"), paragraph)  # type: ignore[arg-type]
    return paragraph, count


# --------------------------------------------------------------------------------------------------
def clean_document(pages: list[str], structured: bool, options: CleanOptions | None = None) -> CleanDocument:
    """Run every pass over one document's pages (see the module docstring for the order)."""
    options = options or CleanOptions()
    removed: Counter[str] = Counter()
    pages = [fix_unicode(page) for page in pages]
    if len(pages) == 1 and "\f" in pages[0]:
        pages = pages[0].split("\f")
    pages, count = strip_page_furniture(pages)
    removed["page_furniture_lines"] += count
    # A page break is no paragraph break: a paragraph runs on over the page (unwrap decides).
    text = "\n\n".join(pages) if structured else "\n".join(page.strip("\n") for page in pages)
    text, count = strip_licence(text)
    removed["licence_chars"] += count
    text, count = strip_artefacts(text)
    removed["artefacts"] += count
    lines, count = drop_toc(text.split("\n"))
    removed["toc_lines"] += count
    text = "\n".join(lines)
    if structured:
        paragraphs = [block.strip() for block in _BLOCK_SPLIT.split(text) if block.strip()]
    else:
        text, count = join_hyphenation(text)
        removed["hyphenations_joined"] += count
        paragraphs = unwrap(text)
    cleaned: list[str] = []
    for paragraph in paragraphs:
        paragraph = normalise_punctuation(paragraph, options.quotes)
        if options.redact:
            paragraph, count = redact(paragraph)
            removed["redacted"] += count
        if paragraph.strip():
            cleaned.append(paragraph)
    sections, section_removed = make_sections(cleaned, structured, options.min_section_words)
    removed.update(section_removed)
    return CleanDocument(sections=sections, removed=+removed)
