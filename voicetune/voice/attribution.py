"""Authorship attribution: would a classifier take this text for the author's?

A linear classifier (scikit-learn logistic regression) over two standard feature sets: character
n-grams, the most effective single feature type for attribution (Stamatatos 2009, "A Survey of
Modern Authorship Attribution Methods", JASIST 60(3)), and function-word frequencies (Mosteller &
Wallace 1964). Classes: the author and each of several other authors (data/demo/others by default).
It is trained on segments as long as the texts it will judge, so that a 60-word continuation is
compared with 60-word stretches of the author, not with whole books.

The benchmark reports the share of each model's continuations attributed to the author, beside the
share for the author's own held-out passages of the same length (the ceiling) and chance (1/classes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from voicetune.core.errors import VoicetuneError
from voicetune.voice.stylometry import FUNCTION_WORDS, read_text_file, segment_words, unwrap, words

AUTHOR_LABEL = "(author)"  # parentheses: never a folder slug, so it cannot clash with another author


def normalize_for_attribution(text: str) -> str:
    """One line, one typography: the classifier should see style, not line wrapping or which edition
    (ASCII or curly quotes) a text came from."""
    return " ".join(unwrap(text).split())


def clean_raw_text(text: str) -> str:
    """A raw plain-text file (e.g. a Project Gutenberg book) as the prepare step would clean it:
    licence header/footer, contents lists and artefacts removed, hard-wrapped lines joined."""
    from voicetune.data.clean import clean_document

    return clean_document([text], structured=False).text


def load_other_authors(root: Path) -> dict[str, list[str]]:
    """{author-slug: [texts]} from root/<author-slug>/*.txt, cleaned (licence headers stripped)."""
    root = Path(root)
    if not root.is_dir():
        raise VoicetuneError(
            f"{root} is not a folder of other authors: give --others DIR with one sub-folder of .txt "
            "files per author"
        )
    others: dict[str, list[str]] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        texts = [clean_raw_text(read_text_file(p)) for p in sorted(folder.rglob("*.txt"))]
        texts = [t for t in texts if t.strip()]
        if texts:
            others[folder.name] = texts
    if len(others) < 2:
        raise VoicetuneError(
            f"{root} holds {len(others)} author folder(s) with .txt files; attribution needs at least 2 "
            "other authors (one sub-folder each)"
        )
    return others


SAME_WRITER_SHARE = 0.2  # an "other" author whose text is this much the person's own is the person
_SHINGLE = 10  # words: two writers share a 10-word run only by quotation


def _shingles(texts: Sequence[str], stride: int) -> set[int]:
    out: set[int] = set()
    for text in texts:
        tokens = words(text)
        last = len(tokens) - _SHINGLE + 1
        out.update(hash(tuple(tokens[i : i + _SHINGLE])) for i in range(0, last, stride))
    return out


def drop_the_author(
    others: Mapping[str, list[str]], author_texts: Sequence[str]
) -> tuple[dict[str, list[str]], list[str]]:
    """(others without the person, notes). An other author whose text is largely the person's own
    (>= SAME_WRITER_SHARE of its 10-word runs appear in the person's texts: a bundled writer tried as
    the person, or the person's own files left among the others) would put the person's voice on the
    floor of the scale; it is left out, with a note. Needs at least 2 others left."""
    own = _shingles(author_texts, 1)
    kept: dict[str, list[str]] = {}
    notes: list[str] = []
    for name, texts in others.items():
        theirs = _shingles(texts, _SHINGLE)
        share = len(theirs & own) / len(theirs) if theirs else 0.0
        if share >= SAME_WRITER_SHARE:
            notes.append(
                f"other author '{name}' left out: {share:.0%} of its text is in your own texts (the same "
                "writer), so it cannot stand for other writers"
            )
        else:
            kept[name] = list(texts)
    if len(kept) < 2:
        raise VoicetuneError(
            f"only {len(kept)} other author(s) left once your own writing is taken out of them "
            f"({'; '.join(notes)}): give --others DIR with at least 2 other writers"
        )
    return kept, notes


class FunctionWordFrequencies(BaseEstimator, TransformerMixin):
    """scikit-learn transformer: texts -> square roots of the function words' relative frequencies,
    each row scaled to unit length (the Hellinger embedding of the function-word profile)."""

    def fit(self, texts: Sequence[str], y: Any = None) -> FunctionWordFrequencies:
        return self

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        vocabulary = {w: i for i, w in enumerate(FUNCTION_WORDS)}
        out = np.zeros((len(texts), len(vocabulary)))
        for row, text in enumerate(texts):
            tokens = words(text)
            for t in tokens:
                col = vocabulary.get(t)
                if col is not None:
                    out[row, col] += 1
            out[row] /= max(1, len(tokens))
        out = np.sqrt(out)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return np.divide(out, norms, out=np.zeros_like(out), where=norms > 0)


def _pipeline(seed: int, function_word_weight: float) -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import FeatureUnion, Pipeline
    from sklearn.svm import LinearSVC

    chars = TfidfVectorizer(
        analyzer="char",  # across word boundaries: n-grams like "e, t" carry punctuation and order
        ngram_range=(2, 4),
        lowercase=False,
        sublinear_tf=True,
        min_df=2,
        max_features=50_000,
        dtype=np.float32,
    )
    features = FeatureUnion(
        [("chars", chars), ("function_words", FunctionWordFrequencies())],
        transformer_weights={"chars": 1.0, "function_words": function_word_weight},
    )
    # A linear SVM: as accurate as logistic regression on these features here, and 5x faster.
    classifier = LinearSVC(C=0.5, class_weight="balanced", random_state=seed)
    return Pipeline([("features", features), ("classifier", classifier)])


@dataclass
class Attributor:
    """A fitted classifier; `classes` includes AUTHOR_LABEL."""

    pipeline: Any
    classes: list[str]
    segment_words: int
    validation_accuracy: float
    validation_author_recall: float
    training_segments: dict[str, int]

    @property
    def chance(self) -> float:
        return 1.0 / len(self.classes)

    def predict(self, texts: Sequence[str]) -> list[str]:
        if not texts:
            return []
        return [str(c) for c in self.pipeline.predict([normalize_for_attribution(t) for t in texts])]

    def is_author(self, texts: Sequence[str]) -> np.ndarray:
        """True where the author is the classifier's first choice."""
        return np.array([label == AUTHOR_LABEL for label in self.predict(texts)], dtype=bool)

    def summary(self) -> dict[str, Any]:
        return {
            "classes": self.classes,
            "chance": self.chance,
            "segment_words": self.segment_words,
            "validation_accuracy": self.validation_accuracy,
            "validation_author_recall": self.validation_author_recall,
            "training_segments": self.training_segments,
        }


def _segments(texts: Sequence[str], size: int) -> list[str]:
    return [s for t in texts for s in segment_words(t, size)]


def train_attributor(
    author_texts: Sequence[str],
    others: Mapping[str, Sequence[str]],
    segment_size: int = 60,
    max_segments_per_class: int = 400,
    validation_share: float = 0.2,
    function_word_weight: float = 0.3,
    seed: int = 0,
) -> Attributor:
    """Fit the classifier on segments of `segment_size` words: the author (AUTHOR_LABEL) against each
    other author. Each class is capped at max_segments_per_class segments drawn with the seed, in text
    order; the last validation_share of each class is held out to measure accuracy (the last stretch
    of a text, so no validation segment sits between training segments).

    Function words get a small weight beside the character n-grams: measured on the demo authors at
    60 words, a larger weight lowered accuracy (0.67 -> 0.63 at weight 1.0).
    """
    if AUTHOR_LABEL in others:
        raise VoicetuneError(f"an other-author folder may not be named {AUTHOR_LABEL}")
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[str]] = {AUTHOR_LABEL: _segments(author_texts, segment_size)}
    for name, texts in others.items():
        by_class[name] = _segments(texts, segment_size)
    for name, segs in by_class.items():
        if len(segs) < 10:
            what = "the author's training text" if name == AUTHOR_LABEL else f"other author '{name}'"
            raise VoicetuneError(
                f"{what} gives only {len(segs)} segments of {segment_size} words; attribution needs "
                "at least 10 (add text)"
            )
    train_x: list[str] = []
    train_y: list[str] = []
    val_x: list[str] = []
    val_y: list[str] = []
    counts: dict[str, int] = {}
    for name, segs in by_class.items():
        if len(segs) > max_segments_per_class:
            keep = np.sort(rng.choice(len(segs), size=max_segments_per_class, replace=False))
            segs = [segs[i] for i in keep]
        counts[name] = len(segs)
        cut = max(1, round(len(segs) * (1.0 - validation_share)))
        texts = [normalize_for_attribution(s) for s in segs]
        train_x += texts[:cut]
        train_y += [name] * cut
        val_x += texts[cut:]
        val_y += [name] * (len(texts) - cut)
    pipeline = _pipeline(seed, function_word_weight).fit(train_x, train_y)
    accuracy = recall = float("nan")
    if val_x:
        predicted = pipeline.predict(val_x)
        truth = np.array(val_y)
        accuracy = float(np.mean(predicted == truth))
        recall = float(np.mean(predicted[truth == AUTHOR_LABEL] == AUTHOR_LABEL))
    return Attributor(
        pipeline=pipeline,
        classes=[str(c) for c in pipeline.classes_],
        segment_words=segment_size,
        validation_accuracy=accuracy,
        validation_author_recall=recall,
        training_segments=counts,
    )
