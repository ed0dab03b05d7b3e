"""Ingest: find the person's files, read each with a well-kept library, and say why any was left out.

One small reader module per format; this module only dispatches and applies the checks every format
shares (size, emptiness, permissions, duplicates).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from voicetune.data.ingest.base import ReadResult, UnusableFile
from voicetune.data.ingest.discover import Candidate, Dropped, discover

__all__ = [
    "READERS",
    "Candidate",
    "Dropped",
    "ReadResult",
    "SourceFile",
    "UnusableFile",
    "discover",
    "load_bytes",
    "parse_bytes",
    "read_corpus",
]


def _reader(module: str, function: str) -> Callable[[bytes], ReadResult]:
    """Import a reader on first use: `voicetune prepare --help` must not import pypdf and friends."""

    def read(data: bytes) -> ReadResult:
        import importlib

        return getattr(importlib.import_module(f"voicetune.data.ingest.{module}"), function)(data)

    return read


READERS: dict[str, Callable[[bytes], ReadResult]] = {
    ".txt": _reader("text", "read_text"),
    ".text": _reader("text", "read_text"),
    ".md": _reader("markdown", "read_markdown"),
    ".markdown": _reader("markdown", "read_markdown"),
    ".html": _reader("html", "read_html"),
    ".htm": _reader("html", "read_html"),
    ".xhtml": _reader("html", "read_html"),
    ".pdf": _reader("pdf", "read_pdf"),
    ".docx": _reader("docx", "read_docx"),
    ".epub": _reader("epub", "read_epub"),
    ".odt": _reader("odt", "read_odt"),
    ".rtf": _reader("rtf", "read_rtf"),
}


@dataclass
class SourceFile:
    rel: str
    path: Path
    format: str
    sha256: str
    size: int
    result: ReadResult


def load_bytes(candidate: Candidate, max_bytes: int) -> bytes:
    """The file's bytes, after the checks every format shares; UnusableFile says what is wrong."""
    path = candidate.path
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise UnusableFile(f"cannot read ({exc.strerror})") from exc
    if size == 0:
        raise UnusableFile("empty file")
    if size > max_bytes:
        raise UnusableFile(
            f"huge file ({size / 1e6:.1f} MB, limit {max_bytes / 1e6:.1f} MB): "
            "split it, or raise --max-file-mb"
        )
    try:
        return path.read_bytes()
    except PermissionError as exc:
        raise UnusableFile(f"unreadable (permission denied): fix with `chmod u+r '{path}'`") from exc
    except OSError as exc:
        raise UnusableFile(f"cannot read ({exc.strerror})") from exc


def parse_bytes(candidate: Candidate, data: bytes) -> ReadResult:
    """Run the format's reader; any failure becomes UnusableFile (a bad file never stops the run)."""
    try:
        result = READERS[candidate.path.suffix.lower()](data)
    except UnusableFile:
        raise
    except Exception as exc:  # a reader library choking on odd input: report it, go on
        raise UnusableFile(
            f"cannot read this {candidate.path.suffix} file ({type(exc).__name__}: {exc})"
        ) from exc
    if not any(page.strip() for page in result.pages):
        raise UnusableFile("no text in it (empty document)")
    return result


def read_corpus(candidates: Iterable[Candidate], max_bytes: int) -> tuple[list[SourceFile], list[Dropped]]:
    """Read every candidate; a bad file becomes a Dropped line and the rest goes on.

    A byte-identical copy of a file already read is dropped as a duplicate (the first in path order
    is kept). Near-duplicates (the same text in another format) are the dedup step's job.
    """
    files: list[SourceFile] = []
    dropped: list[Dropped] = []
    by_hash: dict[str, str] = {}
    for candidate in candidates:  # may be a progress bar over the candidates
        try:
            data = load_bytes(candidate, max_bytes)
            digest = hashlib.sha256(data).hexdigest()
            if digest in by_hash:
                raise UnusableFile(f"duplicate file: same bytes as {by_hash[digest]}")
            result = parse_bytes(candidate, data)
        except UnusableFile as exc:
            dropped.append(Dropped(candidate.rel, str(exc)))
            continue
        by_hash[digest] = candidate.rel
        files.append(
            SourceFile(
                rel=candidate.rel,
                path=candidate.path,
                format=candidate.path.suffix.lower().lstrip("."),
                sha256=digest,
                size=len(data),
                result=result,
            )
        )
    return files, dropped
