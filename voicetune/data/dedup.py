"""Deduplicate: exact and near-duplicate texts, across all files, with MinHash LSH (datasketch).

Texts are compared as sets of word 5-grams (case and punctuation ignored). Exact copies are caught by
a hash of the normalised words; near copies by MinHash signatures bucketed with LSH, then confirmed
by the estimated Jaccard similarity. Texts are visited in priority order and the first of a group is
kept, so the caller decides who wins (the held-out test split before training, for instance).
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

_WORD = re.compile(r"[^\W_]+")
SHINGLE_WORDS = 5


def normalised_words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


_MASK = np.uint64(0xFFFFFFFF)
_MIX = np.uint64(0x01000193)
_word_hashes: dict[str, int] = {}
_SLICE = 1 << 15  # shingles per MinHash update: bounds the (shingles x permutations) work array


def shingle_hashes(words: Sequence[str], size: int = SHINGLE_WORDS) -> np.ndarray:
    """32-bit hashes of every run of `size` words, combined with numpy from per-word crc32s (each
    distinct word is hashed once), so a whole book costs milliseconds, not a Python loop per shingle.
    MinHash mixes its inputs (datasketch's affine32 scheme runs a murmur finaliser), so this simple
    polynomial combination is enough."""
    if not words:
        return np.empty(0, dtype=np.uint64)
    if len(words) <= size:
        return np.array([zlib.crc32(" ".join(words).encode("utf-8"))], dtype=np.uint64)
    for word in set(words).difference(_word_hashes):
        _word_hashes[word] = zlib.crc32(word.encode("utf-8"))
    per_word = np.fromiter(map(_word_hashes.__getitem__, words), dtype=np.uint64, count=len(words))
    count = len(words) - size + 1
    combined = np.zeros(count, dtype=np.uint64)
    for offset in range(size):
        combined = (combined * _MIX + per_word[offset : offset + count]) & _MASK
    return combined


def _identity(value: Any) -> int:
    return int(value)


@dataclass(frozen=True)
class Duplicate:
    index: int  # the dropped text
    of: int  # the kept text it repeats
    kind: str  # "exact" or "near"
    similarity: float


def find_duplicates(
    texts: Sequence[str],
    order: Sequence[int] | None = None,
    threshold: float = 0.8,
    num_perm: int = 128,
    shingle_words: int = SHINGLE_WORDS,
    sample: int = 1,
) -> list[Duplicate]:
    """Duplicates among texts. `order` (indexes, highest priority first) decides which copy stays.

    Every text is checked against the texts kept before it; the result lists each dropped text once.
    sample > 1 keeps only shingles whose hash is 0 modulo `sample` (the same ones in every text, so
    Jaccard estimates hold): for whole books, where every shingle would be wasted effort.
    """
    from datasketch import MinHash, MinHashLSH

    order = list(range(len(texts))) if order is None else list(order)
    words = [normalised_words(texts[i]) for i in order]
    exact_keys = [hashlib.sha1(" ".join(w).encode("utf-8")).digest() for w in words]
    template = MinHash(num_perm=num_perm, hashfunc=_identity)
    signatures = []
    for w in words:
        hashes = shingle_hashes(w, shingle_words)
        if sample > 1:
            sampled = hashes[hashes % np.uint64(sample) == 0]
            hashes = sampled if len(sampled) else hashes
        signature = MinHash(
            num_perm=num_perm, hashfunc=_identity, permutations=template.permutations, scheme=template.scheme
        )
        for offset in range(0, len(hashes), _SLICE):
            signature.update_batch(hashes[offset : offset + _SLICE])
        signatures.append(signature)
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    kept_exact: dict[bytes, int] = {}
    kept_signature: dict[int, MinHash] = {}
    duplicates: list[Duplicate] = []
    for position, index in enumerate(order):
        if not words[position]:
            continue
        key = exact_keys[position]
        if key in kept_exact:
            duplicates.append(Duplicate(index, kept_exact[key], "exact", 1.0))
            continue
        signature = signatures[position]
        best: tuple[float, int] | None = None
        for candidate in lsh.query(signature):
            similarity = signature.jaccard(kept_signature[candidate])
            if similarity >= threshold and (best is None or similarity > best[0]):
                best = (similarity, candidate)
        if best is not None:
            duplicates.append(Duplicate(index, best[1], "near", round(best[0], 3)))
            continue
        kept_exact[key] = index
        kept_signature[index] = signature
        lsh.insert(index, signature)
    return duplicates
