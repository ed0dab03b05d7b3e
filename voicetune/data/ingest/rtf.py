"""Rich Text Format (.rtf) through striprtf; RTF is 7-bit text with escapes for everything else."""

from __future__ import annotations

import re

from voicetune.data.ingest.base import ReadResult, UnusableFile

_CODEPAGE = re.compile(rb"\\ansicpg(\d+)")


def read_rtf(data: bytes) -> ReadResult:
    from striprtf.striprtf import rtf_to_text

    if not data.lstrip().startswith(b"{\\rtf"):
        raise UnusableFile("not an RTF file (no {\\rtf header): save it again as .rtf")
    match = _CODEPAGE.search(data[:4096])
    encoding = f"cp{int(match.group(1))}" if match else "cp1252"
    try:
        text = rtf_to_text(data.decode("latin-1"), encoding=encoding, errors="replace")
    except (LookupError, ValueError, IndexError) as exc:
        raise UnusableFile(
            f"cannot parse RTF ({type(exc).__name__}): save it again as .rtf or .docx"
        ) from exc
    return ReadResult(pages=[text])
