"""Stylometry on strings: every metric on cases with a known answer, then on the real demo author."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
from stylometry_data import author_profile, author_split, other_authors, shuffle_words

from voicetune.core.errors import VoicetuneError
from voicetune.voice import stylometry as st

# --------------------------------------------------------------------------- tokenisation


def test_words_are_lowercased_letters_with_inner_apostrophes() -> None:
    assert st.words("Don’t SAY it's 42 o'clock—_really_!") == ["don't", "say", "it's", "o'clock", "really"]


def test_sentences_respect_abbreviations_initials_and_dialogue() -> None:
    text = 'Mr. Smith met J. Jones. "Stop!" said he. I did it, not I. Then they left for St. Ives'
    assert st.sentences(text) == [
        "Mr. Smith met J. Jones.",
        '"Stop!" said he.',
        "I did it, not I.",
        "Then they left for St. Ives",
    ]
    # A continuation cut at its token budget ends mid-sentence: that fragment is not a sentence length.
    assert st.sentence_lengths(text, complete_only=True) == [5, 3, 5]
    assert st.sentence_lengths(text, complete_only=False) == [5, 3, 5, 6]


def test_paragraph_breaks_end_sentences_and_hard_wraps_do_not() -> None:
    text = "A heading without a stop\n\nThe body of the\nparagraph runs on. It ends here."
    expected = ["A heading without a stop", "The body of the paragraph runs on.", "It ends here."]
    assert st.sentences(text) == expected


def test_typography_variants_give_one_punctuation_profile() -> None:
    curly = "“Well,” she said… ‘it’s late’ – and left."
    ascii_ = "\"Well,\" she said... 'it's late' -- and left."
    assert st.punctuation_counts(curly) == st.punctuation_counts(ascii_)
    counts = st.punctuation_counts(ascii_)
    assert counts['"'] == 2 and counts["'"] == 2  # the apostrophe in "it's" is not a quote
    assert counts["…"] == 1 and counts["—"] == 1 and counts["."] == 1


def test_function_word_list_is_the_established_one() -> None:
    assert len(st.MOSTELLER_WALLACE_70) == 70 == len(set(st.MOSTELLER_WALLACE_70))
    assert set(st.MOSTELLER_WALLACE_70) <= set(st.FUNCTION_WORDS)
    assert list(st.FUNCTION_WORDS) == sorted(set(st.FUNCTION_WORDS))
    assert {"she", "he", "i", "you", "they", "could", "might", "although"} <= set(st.FUNCTION_WORDS)
    assert not {"cat", "house", "said", "good"} & set(st.FUNCTION_WORDS)


# --------------------------------------------------------------------------- vocabulary, repetition


def _naive_mattr(tokens: list[str], window: int) -> float:
    if len(tokens) <= window:
        return len(set(tokens)) / len(tokens)
    ratios = [len(set(tokens[i : i + window])) / window for i in range(len(tokens) - window + 1)]
    return sum(ratios) / len(ratios)


def test_mattr_known_answers_and_agrees_with_the_definition() -> None:
    assert st.mattr(list("abcdefgh"), window=4) == 1.0
    assert st.mattr(["a"] * 10, window=5) == pytest.approx(0.2)
    assert st.mattr(list("ababab"), window=3) == pytest.approx(2 / 3)
    assert math.isnan(st.mattr([], window=5))
    rng = random.Random(1)
    for _ in range(20):
        tokens = [rng.choice("abcdefghij") for _ in range(rng.randint(1, 80))]
        assert st.mattr(tokens, 7) == pytest.approx(_naive_mattr(tokens, 7))


def test_repetition_rate_known_answers() -> None:
    assert st.repetition_rate(["a", "b", "c", "a", "b", "c"], 3) == pytest.approx(0.25)  # abc bca cab abc
    assert st.repetition_rate(["one", "two", "three", "four", "five"], 3) == 0.0
    assert st.repetition_rate(["la"] * 12, 3) == pytest.approx(9 / 10)
    assert math.isnan(st.repetition_rate(["a", "b"], 3))


# --------------------------------------------------------------------------- distances and tests


def test_identical_profiles_have_zero_distance_and_disjoint_ones_the_maximum() -> None:
    counts = [5, 0, 3, 2]
    assert st.jensen_shannon_distance(counts, counts) == pytest.approx(0.0, abs=1e-9)
    assert st.jensen_shannon_distance([2, 4, 6, 0], [1, 2, 3, 0]) == pytest.approx(0.0, abs=1e-9)
    assert st.jensen_shannon_distance([1, 0], [0, 1]) == pytest.approx(1.0)
    stat, p, dof = st.chi_square_homogeneity([10, 20, 30], [100, 200, 300])
    assert stat == pytest.approx(0.0, abs=1e-9) and p == pytest.approx(1.0) and dof == 2
    stat, p, _ = st.chi_square_homogeneity([60, 0, 0], [0, 60, 60])
    assert p < 1e-10
    rows = st.jensen_shannon_rows(np.array([[5, 0, 3, 2], [0, 0, 0, 0]]), np.array(counts))
    assert rows[0] == pytest.approx(0.0, abs=1e-9) and math.isnan(rows[1])


def test_kolmogorov_smirnov_from_histograms_matches_scipy() -> None:
    rng = random.Random(3)
    a = [rng.randint(1, 40) for _ in range(300)]
    b = [rng.randint(5, 60) for _ in range(200)]
    d_hist = st.ks_rows(st.length_histogram(a)[None, :], st.length_histogram(b))[0]
    d_scipy, p = st.ks_test(a, b)
    assert d_hist == pytest.approx(d_scipy)
    assert p < 1e-6
    assert st.ks_rows(st.length_histogram(a)[None, :], st.length_histogram(a))[0] == 0.0
    assert st.ks_test(a, a) == (0.0, 1.0)


def test_delta_of_identical_texts_is_zero_and_opposites_are_far() -> None:
    z = np.array([1.0, -2.0, 0.5])
    assert st.burrows_delta(z, z) == 0.0
    assert st.cosine_delta(z, z) == pytest.approx(0.0, abs=1e-12)
    assert st.cosine_delta(z, -z) == pytest.approx(2.0)
    assert st.burrows_delta(z, -z) == pytest.approx(np.mean(np.abs(2 * z)))
    assert math.isnan(st.cosine_delta(np.zeros(3), z))


def test_delta_space_on_real_authors_places_the_author_nearest_to_itself() -> None:
    train, test = author_split()
    others = other_authors()
    space = st.fit_delta_space({"(author)": list(train), **others}, segment_size=300, n_words=150, seed=0)
    assert len(space.vocabulary) > 100 and "the" in space.vocabulary
    author_z = space.zscores([w for t in train for w in st.words(t)])
    same = space.zscores([w for t in train for w in st.words(t)])
    assert st.cosine_delta(author_z, same) == pytest.approx(0.0, abs=1e-12)
    # Whole books: the held-out book is closer to the author than every other author is.
    held_out = st.cosine_delta(space.zscores(st.words(test[0])), author_z)
    for name, texts in others.items():
        other = st.cosine_delta(space.zscores([w for t in texts for w in st.words(t)]), author_z)
        assert held_out < other, name
    # Culling: a name that only the author uses is not a Delta feature.
    assert "reginald" not in space.vocabulary and "clovis" not in space.vocabulary


# --------------------------------------------------------------------------- the style profile


def test_style_distance_of_a_text_to_its_own_profile_is_small() -> None:
    train, _ = author_split()
    text = train[0]
    own = st.build_profile([text])
    zs = st.style_zscores(text, own)
    # Every pooled feature of the whole text equals the profile's mean: z = 0 exactly.
    assert all(abs(v) < 1e-9 for k, v in zs.items() if not k.startswith("wo:"))
    assert st.style_distance(text, own) < 0.3


def test_a_shuffled_word_text_scores_far_from_the_author() -> None:
    profile = author_profile()
    _, test = author_split()
    pieces = st.segment_words(test[0], 100)[10:50]
    original = np.array([st.style_distance(p, profile) for p in pieces])
    shuffled = np.array([st.style_distance(shuffle_words(p, i), profile) for i, p in enumerate(pieces)])
    assert original.mean() < 1.0  # calibrated: held-out text by the author sits near ~0.8
    assert shuffled.mean() > original.mean() + 0.5
    assert (shuffled > original).mean() >= 0.9
    # Word order is what gives the shuffle away; the word counts are unchanged.
    family = st.style_family_scores(shuffle_words(pieces[0]), profile)
    assert family["word_order"] > 2 * st.style_family_scores(pieces[0], profile)["word_order"]


def test_style_distance_edge_cases_and_profile_round_trip(tmp_path: Path) -> None:
    profile = author_profile()
    assert st.style_distance("", profile) == math.inf
    assert st.style_distance("12 34 !!", profile) == math.inf
    text = "She said that the aunt was, on the whole, a person of very few ideas and no discretion."
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(profile.to_dict()))
    again = st.StyleProfile.from_dict(json.loads(path.read_text()))
    assert st.style_distance(text, again) == pytest.approx(st.style_distance(text, profile))
    with pytest.raises(VoicetuneError):
        st.build_profile([])
    with pytest.raises(VoicetuneError):
        st.build_profile(["too short to profile"])


def test_skeleton_cross_entropy_prefers_the_authors_word_order() -> None:
    profile = author_profile()
    _, test = author_split()
    text = st.segment_words(test[0], 400)[3]
    tokens = st.words(text)
    shuffled = st.words(shuffle_words(text))
    assert st.skeleton_cross_entropy(tokens, profile.transitions) < st.skeleton_cross_entropy(
        shuffled, profile.transitions
    )
    assert math.isnan(st.skeleton_cross_entropy(["one"], profile.transitions))


# --------------------------------------------------------------------------- novelty


def _naive_longest_common_run(a: list[str], docs: list[list[str]]) -> int:
    best = 0
    for doc in docs:
        for i in range(len(a)):
            for j in range(len(doc)):
                k = 0
                while i + k < len(a) and j + k < len(doc) and a[i + k] == doc[j + k]:
                    k += 1
                best = max(best, k)
    return best


def test_novelty_known_answers() -> None:
    train = [
        "the cat sat on the mat and looked at the dog with great contempt",
        "a second document about something else entirely",
    ]
    index = st.NoveltyIndex(train)
    copied = "The cat sat on the mat and looked at the dog"
    assert index.longest_copied_span(copied) == 11
    assert index.ngram_overlap(copied, 8) == (4, 4)
    fresh = "purple engines whistle beneath seven quiet moons tonight"
    assert index.longest_copied_span(fresh) == 0
    assert index.ngram_overlap(fresh, 8) == (0, 1)
    assert index.ngram_overlap("too short", 8) == (0, 0)
    # No n-gram spans the boundary between two training documents.
    assert index.longest_copied_span("with great contempt a second document") == 3


def test_longest_copied_span_matches_brute_force() -> None:
    rng = random.Random(7)
    vocab = ["ab", "cd", "ef", "gh", "ij", "kl"]  # letters: words() drops digits
    docs = [[rng.choice(vocab) for _ in range(rng.randint(5, 60))] for _ in range(3)]
    index = st.NoveltyIndex([" ".join(d) for d in docs])
    for _ in range(40):
        text = [rng.choice(vocab) for _ in range(rng.randint(0, 30))]
        assert index.longest_copied_span(" ".join(text)) == _naive_longest_common_run(text, docs)


# --------------------------------------------------------------------------- reading folders


def test_load_author_texts_reads_txt_recursively_in_order_and_says_what_is_wrong(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "2.txt").write_text("second", encoding="utf-8")
    (tmp_path / "1.txt").write_bytes("caf\xe9 first".encode("latin-1"))
    (tmp_path / "empty.txt").write_text("  \n", encoding="utf-8")
    (tmp_path / "notes.md").write_text("ignored", encoding="utf-8")
    texts = st.load_author_texts(tmp_path)
    assert len(texts) == 2 and texts[0].endswith("first") and "caf" in texts[0] and texts[1] == "second"
    with pytest.raises(VoicetuneError, match="not a folder"):
        st.load_author_texts(tmp_path / "missing")
    empty = tmp_path / "nothing"
    empty.mkdir()
    with pytest.raises(VoicetuneError, match=r"no non-empty \.txt"):
        st.load_author_texts(empty)


def test_pooled_delta_rows_match_delta_of_the_pooled_text() -> None:
    """delta_rows scores pooled counts (vocabulary counts + word total) as Delta scores the text."""
    train, test = author_split()
    space = st.fit_delta_space({"(author)": list(train), **other_authors()}, segment_size=60, seed=0)
    author_z = space.zscores(st.words(train[0]))
    pieces = [st.words(p) for p in st.segment_words(test[0], 60)[:5]]
    counts = np.array([[*(space.relative_frequencies(t) * len(t)), len(t)] for t in pieces])
    pooled = [w for t in pieces for w in t]
    z = space.zscores(pooled)
    for kind, single in (("cosine", st.cosine_delta), ("burrows", st.burrows_delta)):
        row = st.delta_rows(counts.sum(axis=0, keepdims=True), space, author_z, kind)
        assert row[0] == pytest.approx(single(z, author_z))
