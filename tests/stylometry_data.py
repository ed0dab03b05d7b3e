"""Real text for the stylometry, attribution, report and benchmark tests: the bundled demo author
(Saki) and the other authors in data/demo, cleaned once per session by the prepare step's cleaner.

Split by book, as the prepare step splits by document: `reginald.txt` is held out, the other four
books are the author's training text.
"""

from __future__ import annotations

import random
from functools import lru_cache
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "data" / "demo"
HELD_OUT_BOOK = "reginald.txt"


def _clean(path: Path) -> str:
    from voicetune.voice.attribution import clean_raw_text
    from voicetune.voice.stylometry import read_text_file

    return clean_raw_text(read_text_file(path))


@lru_cache(maxsize=1)
def author_split() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(training texts, held-out texts) of the demo author."""
    books = sorted((DEMO / "author").glob("*.txt"))
    train = tuple(_clean(p) for p in books if p.name != HELD_OUT_BOOK)
    test = tuple(_clean(p) for p in books if p.name == HELD_OUT_BOOK)
    assert train and test, f"demo author books missing under {DEMO / 'author'}"
    return train, test


@lru_cache(maxsize=1)
def other_authors() -> dict[str, list[str]]:
    from voicetune.voice.attribution import load_other_authors

    return load_other_authors(DEMO / "others")


@lru_cache(maxsize=1)
def author_profile():  # StyleProfile, imported lazily
    from voicetune.voice.stylometry import build_profile

    return build_profile(author_split()[0])


def shuffle_words(text: str, seed: int = 0) -> str:
    """The same words (with their attached punctuation) in a random order."""
    tokens = text.split()
    random.Random(seed).shuffle(tokens)
    return " ".join(tokens)
