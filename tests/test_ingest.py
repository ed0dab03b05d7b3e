"""Ingest: real files of every format, and every kind of bad input, one clear reason each."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.prepare_fixtures import bad_corpus, good_corpus, prose, write_pdf
from voicetune.data.ingest import READERS, Candidate, discover, load_bytes, read_corpus
from voicetune.data.ingest.base import UnusableFile
from voicetune.data.ingest.text import decode_bytes


def _read(root: Path, max_bytes: int = 10_000_000):
    candidates, dropped = discover(root, set(READERS))
    files, more = read_corpus(candidates, max_bytes)
    return {f.rel: f for f in files}, {d.file: d.reason for d in [*dropped, *more]}


def test_every_format_is_read_with_its_headings_and_paragraphs(tmp_path: Path) -> None:
    texts = good_corpus(tmp_path)
    files, dropped = _read(tmp_path)
    assert dropped == {}
    assert set(files) == set(texts)
    for rel, paragraphs in texts.items():
        text = files[rel].result.text
        flat = " ".join(text.split())
        for paragraph in paragraphs[:3]:
            assert " ".join(paragraph.split()[:8]) in flat, (rel, paragraph[:60])
    assert files["nested/letter.docx"].result.text.startswith("# A Letter")
    assert "RUNNING HEADER" not in files["nested/letter.docx"].result.text  # docx headers stay out
    assert "# Chapter Two" in files["nested/deeper/novel.epub"].result.text
    assert "# A Story" in files["nested/story.odt"].result.text
    html = files["page.html"].result.text
    assert "var x" not in html and "Home | About" not in html and "color: red" not in html
    markdown = files["notes.md"].result.text
    assert "Some linked words here." in markdown and "https://" not in markdown and "*" not in markdown
    assert files["nested/memo.rtf"].result.text.startswith("Café society.")
    assert len(files["nested/essay.pdf"].result.pages) >= 2  # pages kept for header/footer removal
    assert files["nested/essay.pdf"].format == "pdf"
    assert all(len(f.sha256) == 64 for f in files.values())


def test_bad_inputs_get_one_reason_each_and_the_rest_goes_on(tmp_path: Path) -> None:
    expected = bad_corpus(tmp_path)
    files, dropped = _read(tmp_path, max_bytes=1_000_000)
    assert list(files) == ["good.txt"]
    for name, word in expected.items():
        assert name in dropped, f"{name} was not reported"
        assert word.lower() in dropped[name].lower(), (name, dropped[name])
    assert "OCR" in dropped["scan.pdf"]  # says what to do about a scan
    assert "good.txt" in dropped["z-copy.txt"]  # names the file it duplicates
    assert all("\n" not in reason for reason in dropped.values())


def test_non_utf8_text_is_detected_and_decoded(tmp_path: Path) -> None:
    text = "\n\n".join(prose(30)) + "\n\n“Déjà vu,” said the café’s owner — naïvely."
    (tmp_path / "latin.txt").write_bytes(text.encode("cp1252"))
    (tmp_path / "utf16.txt").write_bytes(("Bonjour à tous. " + text).encode("utf-16"))
    files, dropped = _read(tmp_path)
    assert dropped == {}
    assert "“Déjà vu,” said the café’s owner — naïvely." in files["latin.txt"].result.text
    assert any("cp1252" in note or "1252" in note for note in files["latin.txt"].result.notes)
    assert "Bonjour à tous." in files["utf16.txt"].result.text


def test_decode_refuses_binary_and_keeps_utf8() -> None:
    assert decode_bytes("plain café".encode()) == ("plain café", "utf-8")
    with pytest.raises(UnusableFile, match="binary"):
        decode_bytes(bytes(range(256)) * 100)


def test_unreadable_file_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "secret.txt"
    path.write_text("some words", encoding="utf-8")
    if os.geteuid() == 0:
        # root reads every file whatever its mode: fake the one thing that cannot happen here
        def denied(self: Path) -> bytes:
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(Path, "read_bytes", denied)
    else:
        path.chmod(0)
    with pytest.raises(UnusableFile, match=r"permission denied.*chmod"):
        load_bytes(Candidate(path, "secret.txt"), 1_000_000)


def test_single_file_input_and_nested_order(tmp_path: Path) -> None:
    write_pdf(tmp_path / "one.pdf", [["Hello there, this is a page of words."] * 5])
    candidates, dropped = discover(tmp_path / "one.pdf", set(READERS))
    assert [c.rel for c in candidates] == ["one.pdf"] and dropped == []
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "z.txt").write_text("z", encoding="utf-8")
    (tmp_path / "a.txt").write_text("a", encoding="utf-8")
    (tmp_path / ".hidden.txt").write_text("h", encoding="utf-8")
    candidates, _ = discover(tmp_path, set(READERS))
    assert [c.rel for c in candidates] == ["a.txt", "b/z.txt", "one.pdf"]


def test_paths_with_spaces_and_non_ascii_names_are_read(tmp_path: Path) -> None:
    folder = tmp_path / "my notes" / "été 2024"
    folder.mkdir(parents=True)
    (folder / "Ünïcødé café.md").write_text("\n\n".join(prose(5)), encoding="utf-8")
    (folder / "日記 one.txt").write_text("\n\n".join(reversed(prose(7))), encoding="utf-8")
    files, dropped = _read(tmp_path)
    assert dropped == {}
    assert set(files) == {"my notes/été 2024/Ünïcødé café.md", "my notes/été 2024/日記 one.txt"}
