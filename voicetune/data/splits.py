"""Split: assign whole documents (or, for a small corpus, whole sections) to train, val and test.

Deterministic for a seed. The unit of the split is never cut, so no passage of a test document can
reach training. A corpus of fewer than three documents, or one whose documents are too uneven to
give a test share near the one asked for, is split by sections (chapters, stories) instead, with a
warning; a document without headings is cut into parts at paragraph boundaries for that.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Literal

SplitName = Literal["train", "val", "test"]
SPLITS: tuple[SplitName, ...] = ("train", "val", "test")
SplitBy = Literal["auto", "document", "section"]
_PARTS_PER_PLAIN_DOCUMENT = 10


@dataclass(frozen=True)
class Unit:
    """A piece of writing that goes to one split as a whole."""

    id: str  # "<doc>" or "<doc>#<nn>"
    doc: str
    title: str | None
    text: str

    @property
    def words(self) -> int:
        return len(self.text.split())


@dataclass(frozen=True)
class DocumentText:
    doc: str
    sections: list[tuple[str | None, str]]  # (title, text) in reading order

    @property
    def text(self) -> str:
        return "\n\n".join(text for _, text in self.sections)

    @property
    def words(self) -> int:
        return len(self.text.split())


@dataclass
class SplitPlan:
    by: Literal["document", "section"]
    units: dict[str, list[Unit]]
    warnings: list[str] = field(default_factory=list)

    def words(self, split: str) -> int:
        return sum(unit.words for unit in self.units[split])


def document_units(documents: list[DocumentText]) -> list[Unit]:
    return [Unit(doc.doc, doc.doc, None, doc.text) for doc in documents]


def section_units(documents: list[DocumentText]) -> list[Unit]:
    """Each section as a unit; a document without sections is cut into about ten parts."""
    units: list[Unit] = []
    for doc in documents:
        sections = doc.sections
        if len(sections) < 2:
            paragraphs = [p for p in doc.text.split("\n\n") if p.strip()]
            size = max(1, -(-len(paragraphs) // _PARTS_PER_PLAIN_DOCUMENT))
            sections = [
                (None, "\n\n".join(paragraphs[i : i + size])) for i in range(0, len(paragraphs), size)
            ]
        for number, (title, text) in enumerate(sections, start=1):
            units.append(Unit(f"{doc.doc}#{number:02d}", doc.doc, title, text))
    return units


def assign(units: list[Unit], val_fraction: float, test_fraction: float, seed: int) -> dict[str, list[Unit]]:
    """Shuffle units with the seed, fill test then val up to their share of words, train gets the rest.

    Each held-out split gets at least one unit when there are three or more units, and train always
    keeps the most.
    """
    ordered = sorted(units, key=lambda unit: unit.id)
    random.Random(seed).shuffle(ordered)
    total = sum(unit.words for unit in ordered) or 1
    result: dict[str, list[Unit]] = {name: [] for name in SPLITS}
    remaining = list(ordered)
    for split, fraction in (("test", test_fraction), ("val", val_fraction)):
        if fraction <= 0 or len(remaining) < 2:
            continue
        target = fraction * total
        taken = 0
        for unit in list(remaining):
            if len(remaining) <= 1:
                break
            if taken >= target:
                break
            if taken + unit.words <= target * 1.25:
                result[split].append(unit)
                remaining.remove(unit)
                taken += unit.words
        if not result[split] and len(remaining) >= 2 and len(units) >= 3:
            smallest = min(remaining, key=lambda unit: (unit.words, unit.id))
            result[split].append(smallest)
            remaining.remove(smallest)
    result["train"] = remaining
    for name in SPLITS:
        result[name].sort(key=lambda unit: unit.id)
    return result


def _balanced(split: dict[str, list[Unit]], val_fraction: float, test_fraction: float) -> bool:
    total = sum(unit.words for units in split.values() for unit in units) or 1
    for name, fraction in (("test", test_fraction), ("val", val_fraction)):
        if fraction <= 0:
            continue
        share = sum(unit.words for unit in split[name]) / total
        if not split[name] or share > 2 * fraction or share < fraction / 2:
            return False
    return bool(split["train"])


def plan_split(
    documents: list[DocumentText],
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 42,
    by: SplitBy = "auto",
) -> SplitPlan:
    """Choose the unit (documents or sections) and assign units to splits."""
    warnings: list[str] = []
    if by == "document" or (by == "auto" and len(documents) >= 3):
        split = assign(document_units(documents), val_fraction, test_fraction, seed)
        if by == "document" or _balanced(split, val_fraction, test_fraction):
            return SplitPlan("document", split, warnings)
        warnings.append(
            f"{len(documents)} documents cannot give val/test splits near {test_fraction:.0%} of the words: "
            "splitting by sections (chapters, stories) instead; pass --split-by document to keep "
            "documents whole"
        )
    elif by == "auto":
        warnings.append(
            f"only {len(documents)} document{'s' if len(documents) != 1 else ''}: splitting by sections "
            "(chapters, stories, or parts) so that val and test hold writing that training never sees; "
            "add more documents to split by document"
        )
    split = assign(section_units(documents), val_fraction, test_fraction, seed)
    return SplitPlan("section", split, warnings)


def unit_filename(unit: Unit) -> str:
    """A readable, unique file name for a unit's text (texts/<split>/<name>.txt)."""
    stem = re.sub(r"\.[A-Za-z0-9]{1,5}$", "", unit.doc)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem.replace("/", "__")).strip("_") or "document"
    if unit.id != unit.doc:
        stem += "--" + unit.id.rsplit("#", 1)[1]
    return f"{stem}.txt"
