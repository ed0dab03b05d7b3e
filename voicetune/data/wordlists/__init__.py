"""Word lists the pair builder uses, kept as data files beside this module (one word or pair a line)."""

from __future__ import annotations

from importlib import resources


def _lines(name: str) -> list[str]:
    text = resources.files(__package__).joinpath(name).read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def read_word_list(name: str) -> frozenset[str]:
    return frozenset(_lines(name))


def read_word_map(name: str) -> dict[str, str]:
    """A tab-separated `word<TAB>replacement` file, in file order."""
    return dict(line.split("\t", 1) for line in _lines(name))
