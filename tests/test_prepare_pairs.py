"""Pair building: the mode mix, continuations, extractive briefs, rule-made plain versions, and the
exact length guarantee after the chat template."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.prepare_fixtures import prose
from voicetune.data.chunk import Chunk, split_sentences, token_counts
from voicetune.data.pairs import (
    PairSettings,
    assign_modes,
    build_examples,
    chat_messages,
    degrade,
    extractive_brief,
    inverse_document_frequency,
    mode_rooms,
    passage_budget,
    split_opening,
    split_to_fit,
    templated_lengths,
    user_prompt,
)


def test_modes_follow_the_ratio_exactly_and_deterministically() -> None:
    modes = assign_modes(1000, {"continue": 0.5, "write": 0.3, "rewrite": 0.2}, seed=1, salt="train")
    assert Counter(modes) == {"continue": 500, "write": 300, "rewrite": 200}
    assert modes == assign_modes(1000, {"continue": 0.5, "write": 0.3, "rewrite": 0.2}, 1, "train")
    assert modes != assign_modes(1000, {"continue": 0.5, "write": 0.3, "rewrite": 0.2}, 2, "train")
    assert Counter(assign_modes(7, {"continue": 1, "write": 0, "rewrite": 1}, 0, "x")) == {
        "continue": 4,
        "rewrite": 3,
    }


def test_split_opening_cuts_at_a_sentence_near_the_fraction() -> None:
    text = "One two three. Four five six.\n\nSeven eight nine. Ten eleven twelve. Thirteen."
    opening, rest = split_opening(text, 0.2) or ("", "")
    assert opening == "One two three."
    assert rest == "Four five six.\n\nSeven eight nine. Ten eleven twelve. Thirteen."
    assert split_opening("Only one sentence here.") is None


def test_split_to_fit_balances_and_keeps_everything() -> None:
    text = "\n\n".join(prose(1, paragraphs=4))
    parts = split_to_fit(text, tokens=400, room=110)
    assert len(parts) == 4
    assert " ".join(" ".join(p.split()) for p in parts) == " ".join(text.split())
    assert split_to_fit(text, 100, 110) == [text]


def test_extractive_brief_is_short_and_taken_from_the_passage() -> None:
    passages = ["\n\n".join(prose(s, paragraphs=2)) for s in range(5)]
    idf = inverse_document_frequency(passages)
    brief = extractive_brief(passages[0], idf)
    assert brief.startswith("Themes: ") and 'Key line: "' in brief
    assert len(brief.split()) <= 34
    themes = brief.split("Themes: ")[1].split(".")[0].split(", ")
    assert all(word in passages[0].lower() for word in themes)
    key_line = brief.split('Key line: "')[1].rstrip('"').removesuffix(" ...")
    assert key_line in " ".join(passages[0].split())
    short = "A single sentence about a tortoise and a parasol."
    assert "Key line" not in extractive_brief(short, idf)  # it would give the passage away


def test_degrade_makes_a_plain_version_and_keeps_paragraphs() -> None:
    original = (
        "I can't say I'm surprised; whilst the Duchess was exceedingly rude, she was rather charming "
        "(in her way) and I wouldn't—indeed couldn't—refuse her.\n\nShe perceived it at once, and smiled."
    )
    plain = degrade(original, seed=3, strength=1.4)
    assert plain != original and plain.count("\n\n") == 1
    for gone in ["can't", "whilst", "exceedingly", "(in her way)", ";", "perceived"]:
        assert gone not in plain, gone
    assert "cannot" in plain and "while" in plain.lower()
    assert degrade(original, seed=3) == degrade(original, seed=3)  # deterministic
    assert "wo not" not in degrade("He won't.", strength=1.4)


@pytest.fixture(scope="module")
def tokenizer(base_model_dir: Path) -> Any:
    from voicetune.data.prepare import load_tokenizer

    return load_tokenizer(base_model_dir)


def test_examples_never_exceed_sequence_len_after_the_chat_template(tokenizer: Any) -> None:
    settings = PairSettings(sequence_len=160)
    budget = passage_budget(tokenizer, settings)
    rooms = mode_rooms(tokenizer, settings)
    assert budget == rooms["continue"] > rooms["write"] > rooms["rewrite"]
    texts = ["\n\n".join(prose(70 + i, paragraphs=2, sentences=4)) for i in range(30)]
    counts = token_counts(tokenizer, texts)
    chunks = [
        Chunk(f"u{i % 3}", i, text, count) for i, (text, count) in enumerate(zip(texts, counts, strict=True))
    ]
    labels = {f"u{i}": (f"doc{i}", f"doc{i}.txt") for i in range(3)}
    idf = inverse_document_frequency(texts)
    examples, stats = build_examples(chunks, "train", tokenizer, settings, idf, labels)
    assert {e.mode for e in examples} == {"continue", "write", "rewrite"}
    measured = templated_lengths(
        tokenizer, [chat_messages(settings.system_prompt, e.prompt, e.text) for e in examples]
    )
    assert max(measured) <= 160
    assert [e.tokens for e in examples] == measured
    record = examples[0].record(settings.system_prompt, completion=False)
    assert [m["role"] for m in record["messages"]] == ["system", "user", "assistant"]
    assert record["doc"] in {"doc0", "doc1", "doc2"} and record["source"].endswith(".txt")
    # every passage text reaches some example (split across examples, never dropped)
    taught = " ".join(" ".join(e.text.split()) for e in examples)
    prompts = " ".join(" ".join(e.prompt.split()) for e in examples)
    for text in texts:
        for sentence in split_sentences(text.replace("\n\n", " ")):
            assert sentence in taught or sentence in prompts, sentence
    assert stats.get("dropped_too_long_write", 0) == 0


def test_prompts_are_shared_with_generation() -> None:
    assert "Continue this passage" in user_prompt("continue", opening="x")
    messages = chat_messages("S", "U")
    assert messages == [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
