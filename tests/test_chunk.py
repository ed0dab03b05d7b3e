"""Chunking with the base model's own tokenizer: passages fit, cut at paragraph or sentence ends,
nothing lost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.prepare_fixtures import prose
from voicetune.data.chunk import chunk_texts, sentence_spans, split_sentences, token_counts


@pytest.fixture(scope="module")
def tokenizer(base_model_dir: Path) -> Any:
    from voicetune.data.prepare import load_tokenizer

    return load_tokenizer(base_model_dir)


def test_sentences_respect_abbreviations_initials_and_quotes() -> None:
    text = (
        'Mr. Smith met J. R. Hartley at 5 p.m. on Tuesday. "Is it you?" he asked. She laughed! Then—nothing.'
    )
    assert split_sentences(text) == [
        "Mr. Smith met J. R. Hartley at 5 p.m. on Tuesday.",
        '"Is it you?" he asked.',
        "She laughed!",
        "Then—nothing.",
    ]
    assert sentence_spans("") == []
    assert split_sentences("no end punctuation here") == ["no end punctuation here"]


def test_chunks_fit_cut_at_boundaries_and_lose_nothing(tokenizer: Any) -> None:
    units = [(f"u{i}", "\n\n".join(prose(40 + i, paragraphs=8, sentences=3 + i))) for i in range(3)]
    long_paragraph = " ".join(prose(50, paragraphs=1, sentences=40))  # one paragraph > the limit
    units.append(("long", long_paragraph))
    limit = 120
    chunks, dropped = chunk_texts(tokenizer, units, limit, min_tokens=8)
    assert dropped == {}
    exact = token_counts(tokenizer, [chunk.text for chunk in chunks])
    assert max(exact) <= limit + 2  # estimates may be off by a token at a join; examples are checked exactly
    for chunk, count in zip(chunks, exact, strict=True):
        assert count <= chunk.tokens + 2  # the estimate may run high (safe), hardly ever low
        assert chunk.text.rstrip()[-1] in ".!?"  # every passage ends a sentence
    for unit, text in units:
        mine = [c for c in chunks if c.unit == unit]
        assert [c.index for c in mine] == list(range(len(mine)))
        joined = " ".join(" ".join(c.text.split()) for c in mine)
        assert joined == " ".join(text.split())  # nothing lost, nothing repeated
    long_chunks = [c for c in chunks if c.unit == "long"]
    assert len(long_chunks) >= 3
    sizes = [c.tokens for c in long_chunks]
    assert min(sizes) >= 0.4 * max(sizes)  # evened out: no stub at the end


def test_a_giant_sentence_is_cut_by_words(tokenizer: Any) -> None:
    words = " ".join(["meadow"] * 600)
    chunks, _ = chunk_texts(tokenizer, [("w", words)], 100, min_tokens=1)
    assert len(chunks) >= 6
    assert max(token_counts(tokenizer, [c.text for c in chunks])) <= 102
    assert sum(len(c.text.split()) for c in chunks) == 600


def test_tiny_units_are_dropped_and_counted(tokenizer: Any) -> None:
    chunks, dropped = chunk_texts(
        tokenizer, [("a", "Short."), ("b", " ".join(prose(60)))], 200, min_tokens=16
    )
    assert [c.unit for c in chunks].count("a") == 0
    assert dropped["chunks_too_short"] == 1
