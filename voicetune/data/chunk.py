"""Chunk: cut each text into passages that fit the model's window, at paragraph boundaries where
possible and at sentence boundaries where a paragraph is too long, counting with the base model's
own tokenizer.

Token counts come from a few batched tokenizer calls (all paragraphs at once, then the sentences of
the long ones), never one call per sentence. Counts of joined pieces are a close estimate (a few
tokens either way at the joins); the pair builder measures every final example exactly after the
chat template and trims or drops the rare one that is still too long.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

_BATCH = 4096
_ABBREVIATIONS = {
    "mr",
    "mrs",
    "ms",
    "dr",
    "st",
    "mt",
    "jr",
    "sr",
    "prof",
    "rev",
    "gen",
    "col",
    "capt",
    "lt",
    "sgt",
    "no",
    "vs",
    "etc",
    "e.g",
    "i.e",
    "cf",
    "vol",
    "ch",
    "fig",
    "pp",
    "ed",
    "hon",
    "messrs",
    "mme",
    "mlle",
    "esq",
    "ft",
    "inc",
    "ltd",
    "co",
    "viz",
    "approx",
}
_BOUNDARY = re.compile(r"""[.!?…]+["'”’)\]]*(?=\s+["'“‘(\[]?[A-Z0-9])""")
_LAST_WORD = re.compile(r"([\w.]+)$")


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence in text; abbreviations ("Mr.") and initials ("J.") do not end one."""
    spans: list[tuple[int, int]] = []
    start = 0
    for match in _BOUNDARY.finditer(text):
        if text[match.start()] == ".":
            word = _LAST_WORD.search(text, start, match.start())
            if word is not None:
                token = word.group(1).lower()
                if token in _ABBREVIATIONS or (len(token) == 1 and token.isalpha()):
                    continue
        end = match.end()
        spans.append((start, end))
        start = end
        while start < len(text) and text[start].isspace():
            start += 1
    if start < len(text) and text[start:].strip():
        spans.append((start, len(text)))
    return spans


def split_sentences(text: str) -> list[str]:
    return [text[start:end].strip() for start, end in sentence_spans(text) if text[start:end].strip()]


def token_counts(tokenizer: Any, texts: Sequence[str]) -> list[int]:
    """Token counts without special tokens (special tokens written in the text still count as one),
    in large batches straight through the fast tokenizer's Rust backend: the same tokens
    `tokenizer(texts)` gives, without its Python per-item overhead and offset bookkeeping."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    encode = getattr(backend, "encode_batch_fast", None) or getattr(backend, "encode_batch", None)
    counts: list[int] = []
    for offset in range(0, len(texts), _BATCH):
        batch = list(texts[offset : offset + _BATCH])
        if encode is not None:
            counts.extend(len(encoding.ids) for encoding in encode(batch, add_special_tokens=False))
        else:
            encoded = tokenizer(batch, add_special_tokens=False, return_attention_mask=False)
            counts.extend(len(ids) for ids in encoded["input_ids"])
    return counts


def separator_tokens(tokenizer: Any, separator: str = "\n\n") -> int:
    """What joining two pieces with separator adds, measured rather than assumed."""
    joined, left, right = token_counts(tokenizer, [f"Word{separator}Word", "Word", "Word"])
    return max(0, joined - left - right)


@dataclass(frozen=True)
class Piece:
    text: str
    tokens: int
    new_paragraph: bool  # joined to the previous piece by a blank line (else by a space)


@dataclass(frozen=True)
class Chunk:
    unit: str
    index: int
    text: str
    tokens: int  # estimated from the pieces (exact counts come after templating)


def _split_words(text: str, parts: int) -> list[str]:
    words = text.split(" ")
    size = max(1, math.ceil(len(words) / parts))
    return [" ".join(words[i : i + size]) for i in range(0, len(words), size)]


def _fit(tokenizer: Any, texts: list[str], limit: int) -> list[tuple[str, int]]:
    """Cut texts until each is at most `limit` tokens: sentences first, then runs of words."""
    counts = token_counts(tokenizer, texts)
    out: list[tuple[str, int]] = []
    for text, count in zip(texts, counts, strict=True):
        if count <= limit:
            out.append((text, count))
            continue
        sentences = split_sentences(text)
        if len(sentences) > 1:
            out.extend(_fit(tokenizer, sentences, limit))
        elif " " in text.strip():
            out.extend(_fit(tokenizer, _split_words(text.strip(), math.ceil(count / limit) + 1), limit))
        else:
            out.append((text[: max(1, len(text) * limit // count)], limit))  # one giant "word": cut it
    return out


def pieces_of(tokenizer: Any, texts: Sequence[str], limit: int) -> list[list[Piece]]:
    """Each text as paragraph pieces; a paragraph longer than `limit` tokens becomes its sentences."""
    paragraphs = [[p for p in text.split("\n\n") if p.strip()] for text in texts]
    flat = [p for group in paragraphs for p in group]
    counts = iter(token_counts(tokenizer, flat))
    result: list[list[Piece]] = []
    for group in paragraphs:
        pieces: list[Piece] = []
        for paragraph in group:
            count = next(counts)
            if count <= limit:
                pieces.append(Piece(paragraph, count, True))
                continue
            for index, (text, sub_count) in enumerate(_fit(tokenizer, split_sentences(paragraph), limit)):
                pieces.append(Piece(text, sub_count, index == 0))
        result.append(pieces)
    return result


def pack(pieces: list[Piece], limit: int, target: int, separator: int) -> list[tuple[str, int]]:
    """Greedy packing into passages of at most `limit` tokens, evened out around `target`, so the
    last passage of a text is not a stub."""
    total = sum(piece.tokens for piece in pieces) + separator * max(0, len(pieces) - 1)
    if total == 0:
        return []
    soft = total / math.ceil(total / max(1, target))
    chunks: list[tuple[str, int]] = []
    parts: list[str] = []
    size = 0
    for piece in pieces:
        add = piece.tokens + (separator if parts and piece.new_paragraph else 0)
        if parts and (size + add > limit or (size + add > soft * 1.1 and size >= soft * 0.6)):
            chunks.append(("".join(parts), size))
            parts, size, add = [], 0, piece.tokens
        if parts:
            parts.append("\n\n" if piece.new_paragraph else " ")
        parts.append(piece.text)
        size += add
    if parts:
        chunks.append(("".join(parts), size))
    return chunks


def chunk_texts(
    tokenizer: Any,
    units: Sequence[tuple[str, str]],
    limit: int,
    target: int | None = None,
    min_tokens: int = 16,
) -> tuple[list[Chunk], Counter[str]]:
    """Cut (unit id, text) pairs into Chunks of at most `limit` tokens (estimated), around `target`.

    Returns the chunks and counts of what was dropped (passages under min_tokens).
    """
    dropped: Counter[str] = Counter()
    separator = separator_tokens(tokenizer)
    chunks: list[Chunk] = []
    all_pieces = pieces_of(tokenizer, [text for _, text in units], limit)
    for (unit, _), pieces in zip(units, all_pieces, strict=True):
        index = 0
        for text, size in pack(pieces, limit, target or limit, separator):
            if size < min_tokens:
                dropped["chunks_too_short"] += 1
                continue
            chunks.append(Chunk(unit, index, text, size))
            index += 1
    return chunks, dropped
