"""Deduplication (exact and near, MinHash LSH) and the deterministic train/val/test split."""

from __future__ import annotations

from tests.prepare_fixtures import prose
from voicetune.data.dedup import find_duplicates
from voicetune.data.splits import DocumentText, assign, plan_split, section_units, unit_filename


def test_exact_and_near_duplicates_are_found_and_the_priority_copy_kept() -> None:
    base = " ".join(prose(1, paragraphs=3))
    near = base.replace("garden", "GARDEN", 1).replace(".", "!", 2) + " And one more sentence at the end."
    different = " ".join(prose(2, paragraphs=3))
    exact_copy = "  " + base.upper() + "  "  # case and spacing do not make a new passage
    texts = [base, near, different, exact_copy]
    duplicates = {d.index: d for d in find_duplicates(texts, threshold=0.8)}
    assert set(duplicates) == {1, 3}
    assert duplicates[3].kind == "exact" and duplicates[3].of == 0
    assert duplicates[1].kind == "near" and duplicates[1].of == 0 and duplicates[1].similarity >= 0.8
    # priority order: the later text (a held-out one, say) is kept, the earlier dropped
    reordered = {d.index: d.of for d in find_duplicates(texts, order=[3, 2, 1, 0])}
    assert reordered == {0: 3, 1: 3}


def test_unrelated_texts_sharing_phrases_are_not_duplicates() -> None:
    shared = "It was a dark and stormy night and the rain fell in torrents."
    texts = [shared + " " + " ".join(prose(10 + i, paragraphs=2)) for i in range(5)]
    assert find_duplicates(texts) == []


def _docs(count: int, words: int = 400) -> list[DocumentText]:
    docs = []
    for n in range(count):
        sections = [(f"S{k}", " ".join(" ".join(prose(n * 10 + k, 2)).split()[:words])) for k in range(4)]
        docs.append(DocumentText(f"doc{n:02d}.txt", sections))
    return docs


def test_document_split_is_deterministic_disjoint_and_near_the_fractions() -> None:
    docs = _docs(20)
    plan = plan_split(docs, 0.1, 0.1, seed=5)
    assert plan.by == "document" and plan.warnings == []
    assert plan.units == plan_split(docs, 0.1, 0.1, seed=5).units
    assert plan.units != plan_split(docs, 0.1, 0.1, seed=6).units
    ids = [[u.id for u in plan.units[s]] for s in ["train", "val", "test"]]
    assert not set(ids[0]) & set(ids[2]) and not set(ids[1]) & set(ids[2]) and not set(ids[0]) & set(ids[1])
    total = sum(plan.words(s) for s in ["train", "val", "test"])
    assert 0.05 <= plan.words("test") / total <= 0.15
    assert sum(len(x) for x in ids) == 20


def test_few_or_uneven_documents_are_split_by_sections_with_a_warning() -> None:
    two = plan_split(_docs(2), 0.1, 0.1, seed=1)
    assert two.by == "section" and "only 2 documents" in two.warnings[0]
    assert all(two.units[s] for s in ["train", "val", "test"])
    three_books = _docs(3)  # each a third of the words: no document can be a 10% test split
    plan = plan_split(three_books, 0.1, 0.1, seed=1)
    assert plan.by == "section" and "cannot give val/test splits near 10%" in plan.warnings[0]
    assert 0.05 <= plan.words("test") / sum(plan.words(s) for s in ["train", "val", "test"]) <= 0.2
    forced = plan_split(_docs(2), 0.1, 0.1, seed=1, by="document")
    assert forced.by == "document"


def test_a_document_without_headings_is_cut_into_parts() -> None:
    doc = DocumentText("plain.txt", [(None, "\n\n".join(prose(3, paragraphs=30)))])
    units = section_units([doc])
    assert len(units) == 10 and units[0].id == "plain.txt#01"
    assert unit_filename(units[0]) == "plain--01.txt"
    assert unit_filename(section_units([DocumentText("a b/c.d.txt", [(None, "x")])])[0]) == "a_b__c.d--01.txt"
    split = assign(units, 0.1, 0.1, seed=0)
    assert len(split["test"]) >= 1 and len(split["val"]) >= 1 and len(split["train"]) >= 6
