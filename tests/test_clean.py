"""Cleaning: licence boilerplate, page furniture, contents, hyphenation, wrapping, punctuation,
redaction and sections, each on text shaped like the real thing."""

from __future__ import annotations

from tests.prepare_fixtures import OLD_FOOTER, OLD_HEADER, gutenberg_book, prose, wrap
from voicetune.data.clean import (
    CleanOptions,
    clean_document,
    drop_toc,
    fix_unicode,
    join_hyphenation,
    normalise_punctuation,
    redact,
    strip_licence,
    strip_page_furniture,
    unwrap,
)


def _paragraphs(text: str, structured: bool = False, **options: object) -> list[str]:
    document = clean_document([text], structured, CleanOptions(**options))  # type: ignore[arg-type]
    return [p for s in document.sections for p in s.paragraphs]


def test_gutenberg_header_footer_title_page_and_contents_are_stripped() -> None:
    book, paragraphs = gutenberg_book(7)
    document = clean_document([book], structured=False)
    assert [p for s in document.sections for p in s.paragraphs] == paragraphs
    text = document.text
    for leftover in ["Gutenberg", "Produced by", "CONTENTS", "Release Date", "License", "A. WRITER"]:
        assert leftover.lower() not in text.lower(), leftover
    assert [s.title for s in document.sections] == ["I. THE ORCHARD", "II. THE HARBOUR"]
    assert document.removed["licence_chars"] > 500 and document.removed["toc_lines"] > 0


def test_old_small_print_header_and_footer_are_stripped() -> None:
    story = prose(11, paragraphs=4)
    text = OLD_HEADER + "\n\n".join(wrap(p) for p in story) + OLD_FOOTER
    assert _paragraphs(text) == story


def test_licence_without_markers_is_cut_only_at_the_edges() -> None:
    story = prose(12, paragraphs=4)
    text = "\n\n".join(
        [
            "Copyright © 2021 Jane Doe. All rights reserved.",
            *story[:2],
            "She said the copyright of the song was hers.",
            *story[2:],
        ]
    )
    out, removed = strip_licence(text)
    assert "All rights reserved" not in out and removed > 0
    assert "copyright of the song" in out  # inside the writing: kept


def test_running_headers_footers_and_page_numbers_are_removed() -> None:
    body = prose(13, paragraphs=8)
    lines = [line for p in body for line in wrap(p, 60).split("\n")]
    pages = []
    for number, start in enumerate(range(0, len(lines), 10), start=1):
        header = "THE GARDEN BOOK" if number % 2 else "Chapter Three: The Orchard"
        pages.append("\n".join([header, "", *lines[start : start + 10], "", f"- {number} -"]))
    cleaned, removed = strip_page_furniture(pages)
    text = "\n".join(cleaned)
    assert "GARDEN BOOK" not in text and "Chapter Three" not in text and "- 3 -" not in text
    assert removed == 2 * len(pages)  # a header and a page number on each
    assert all(line in text for line in lines)


def test_pdf_like_pages_rejoin_paragraphs_across_page_breaks() -> None:
    body = prose(14, paragraphs=6)
    lines = []
    for paragraph in body:
        wrapped = wrap(paragraph, 75).split("\n")
        lines += ["    " + wrapped[0], *wrapped[1:]]
    pages = [
        "\n".join(["MY BOOK", *lines[i : i + 25], str(n)]) for n, i in enumerate(range(0, len(lines), 25), 1)
    ]
    assert len(pages) >= 2
    document = clean_document(pages, structured=False)
    assert [p for s in document.sections for p in s.paragraphs] == body


def test_contents_with_dot_leaders_is_removed() -> None:
    lines = [
        "Contents",
        "",
        "The Orchard ........ 1",
        "The Harbour ........ 9",
        "The River ........ 17",
        "",
        *wrap(" ".join(prose(15, paragraphs=2)), 70).split("\n"),
    ]
    kept, removed = drop_toc(lines)
    assert not any("...." in line for line in kept) and "Contents" not in kept
    assert removed >= 4


def test_hyphenation_is_joined_unless_the_hyphen_belongs() -> None:
    text = "an exam-\nple of a well-\nknown thing, well-known to all."
    joined, count = join_hyphenation(text)
    assert count == 2
    assert " ".join(joined.split()) == "an example of a well-known thing, well-known to all."


def test_unwrap_keeps_paragraphs_and_verse() -> None:
    body = prose(16, paragraphs=3)
    verse = "The owl and the cat\nWent out in a boat\nThey sailed for a year\nAnd a day"
    text = "\n\n".join([wrap(body[0]), verse, wrap(body[1]), wrap(body[2])])
    assert unwrap(text) == [body[0], verse, body[1], body[2]]
    one_line_each = "\n".join(p + " " + p for p in body)  # long lines, no blank lines
    assert unwrap(one_line_each) == [p + " " + p for p in body]


def test_unicode_repairs() -> None:
    assert fix_unicode("It\u00e2\u20ac\u2122s a \ufb01ne day") == "It\u2019s a fine day"
    assert fix_unicode("soft\u00adhyphen and\u00a0space\u200b") == "softhyphen and space"
    assert fix_unicode("cafe\u0301") == "caf\u00e9"  # NFC


def test_quotes_dashes_and_italics_follow_one_convention() -> None:
    raw = "\u201cWell,\u201d she said--it\u2019s _very_ odd\u2026"
    assert normalise_punctuation(raw, "straight") == '"Well," she said\u2014it\'s very odd...'
    assert normalise_punctuation('"Well," she said--it\'s odd', "curly") == (
        "\u201cWell,\u201d she said\u2014it\u2019s odd"
    )
    assert normalise_punctuation(raw, "keep").startswith("\u201cWell,\u201d")


def test_redaction_of_emails_urls_and_phone_numbers() -> None:
    text = (
        "Write to jane.doe@example.org or see https://example.com/page?x=1, or call +44 20 7946 0958 "
        "or (555) 123-4567. The war of 1914-1918 lasted; see page 123."
    )
    out, count = redact(text)
    assert count == 4
    assert "[email]" in out and "[url]" in out and out.count("[phone]") == 2
    assert "1914-1918" in out and "page 123" in out
    assert "example" not in out
    assert _paragraphs(prose(17, 1)[0] + " Mail me at a@b.co now.", redact=True)[0].endswith(
        "at [email] now."
    )


def test_sections_from_headings_fold_tiny_ones_and_drop_scene_breaks() -> None:
    story_a, story_b = prose(18, paragraphs=3), prose(19, paragraphs=3)
    text = "\n\n".join(["PART ONE", "CHAPTER I", *story_a, "* * *", "THE SECOND STORY", *story_b, "THE END"])
    document = clean_document([text], structured=False)
    assert [s.title for s in document.sections] == ["PART ONE: CHAPTER I", "THE SECOND STORY"]
    assert document.sections[0].paragraphs == story_a and document.sections[1].paragraphs == story_b
    structured = "# Intro\n\nTiny.\n\n# Real Chapter\n\n" + "\n\n".join(story_a)
    sections = clean_document([structured], structured=True).sections
    assert len(sections) == 1 and sections[0].paragraphs[-len(story_a) :] == story_a


def test_dialogue_in_capitals_is_not_a_heading() -> None:
    body = prose(20, paragraphs=2)
    text = "\n\n".join([body[0], '"STOP!"', body[1]])
    assert _paragraphs(text) == [body[0], '"STOP!"', body[1]]
