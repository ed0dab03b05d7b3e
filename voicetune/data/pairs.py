"""Training pairs: passages of the author's writing turned into chat examples (Axolotl chat_template
`messages`), or raw text for completion training.

Three modes, mixed by a ratio:
- continue: the opening of a passage -> its continuation;
- write: a short brief of the passage -> the passage (brief extractive by default, or written by a
  local model, cached by content hash);
- rewrite: a plain, degraded version -> the author's original (degraded by rules by default, or by a
  local model).

The prompts themselves live in `voicetune.core.prompting`, shared with generation, the benchmark and
export, so that every step asks the model exactly what training taught it. Everything but the optional local model is pure string work.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from voicetune.core.prompting import DEFAULT_SYSTEM_PROMPT, MODES, PROMPTS, Mode, chat_messages, user_prompt
from voicetune.data.chunk import Chunk, split_sentences, token_counts
from voicetune.data.wordlists import read_word_list, read_word_map

if TYPE_CHECKING:
    from voicetune.data.local_writer import LocalModelWriter

DEFAULT_RATIO: dict[str, float] = {"continue": 0.5, "write": 0.3, "rewrite": 0.2}
BRIEF_MAX_WORDS = 30
BRIEF_RESERVE_TOKENS = 56  # room kept for a brief of BRIEF_MAX_WORDS words
REWRITE_EXPANSION = 2.2  # a rewrite example holds its passage twice; the plain one runs a bit longer


# --------------------------------------------------------------------------------------------------
# mode mix
def assign_modes(count: int, ratio: Mapping[str, float], seed: int, salt: str) -> list[str]:
    """Exactly the ratio's share of each mode (largest remainder), in a seeded shuffle."""
    modes = [mode for mode in MODES if ratio.get(mode, 0) > 0]
    if count == 0 or not modes:
        return []
    total = sum(ratio[mode] for mode in modes)
    exact = {mode: count * ratio[mode] / total for mode in modes}
    quotas = {mode: math.floor(value) for mode, value in exact.items()}
    for mode in sorted(modes, key=lambda m: exact[m] - quotas[m], reverse=True)[
        : count - sum(quotas.values())
    ]:
        quotas[mode] += 1
    result = [mode for mode in modes for _ in range(quotas[mode])]
    random.Random(f"{seed}:{salt}").shuffle(result)
    return result


# --------------------------------------------------------------------------------------------------
# continue
def split_opening(text: str, fraction: float = 0.3) -> tuple[str, str] | None:
    """(opening, continuation) cut at the sentence boundary nearest `fraction` of the characters."""
    sentences = _sentences_with_breaks(text)
    if len(sentences) < 2:
        return None
    lengths = [len(sentence) + 1 for sentence, _ in sentences]
    total = sum(lengths)
    best, running, best_gap = 1, 0, float("inf")
    for cut in range(1, len(sentences)):
        running += lengths[cut - 1]
        gap = abs(running / total - fraction)
        if gap < best_gap:
            best, best_gap = cut, gap
    return _join_sentences(sentences[:best]), _join_sentences(sentences[best:])


# --------------------------------------------------------------------------------------------------
# write: extractive briefs
STOPWORDS = read_word_list("stopwords.txt")
_CONTENT_WORD = re.compile(r"[A-Za-z][a-z']{3,}")


def content_words(text: str) -> list[str]:
    return [w.lower().strip("'") for w in _CONTENT_WORD.findall(text) if w.lower() not in STOPWORDS]


def inverse_document_frequency(texts: Sequence[str]) -> dict[str, float]:
    df: Counter[str] = Counter()
    for text in texts:
        df.update(set(content_words(text)))
    n = max(1, len(texts))
    return {word: math.log((1 + n) / (1 + count)) + 1.0 for word, count in df.items()}


def extractive_brief(text: str, idf: Mapping[str, float], max_words: int = BRIEF_MAX_WORDS) -> str:
    """Key words of the passage (by tf-idf) and, for a passage of three sentences or more, its most
    characteristic sentence, shortened; all taken from the passage itself."""
    default = max(idf.values(), default=1.0)
    sentences = split_sentences(" ".join(text.split()))
    counts = Counter(content_words(text))

    def score(sentence: str) -> float:
        words = content_words(sentence)
        return sum(counts[w] * idf.get(w, default) for w in words) / (len(sentence.split()) + 8)

    ranked = sorted(counts, key=lambda w: (-counts[w] * idf.get(w, default), w))[:5]
    themes = ", ".join(sorted(ranked, key=lambda w: text.lower().find(w))) or "the scene"
    brief = f"Themes: {themes}."
    if len(sentences) >= 3:  # with fewer, the key line would give the passage away
        words = max(sentences, key=score).split()
        room = max_words - len(ranked) - 3
        line = " ".join(words[:room]) + (" ..." if len(words) > room else "")
        brief += f' Key line: "{line}"'
    return brief


# --------------------------------------------------------------------------------------------------
# rewrite: a plain, degraded version made by rules
_CONTRACTION = re.compile(r"\b(\w+)['’](t|ll|re|ve|m)\b", re.IGNORECASE)
_IRREGULAR = {"can": "cannot", "won": "will not", "shan": "shall not", "ain": "is not"}
_ENDINGS = {"ll": " will", "re": " are", "ve": " have", "m": " am"}


def _expand(match: re.Match[str]) -> str:
    word, ending = match.group(1), match.group(2).lower()
    if ending == "t":
        if not word.lower().endswith("n"):
            return match.group(0)
        stem = word[:-1]
        full = _IRREGULAR.get(word.lower())
        if full is not None:
            return word[0] + full[1:]
        return f"{stem} not"
    if ending == "m" and word.lower() != "i":
        return match.group(0)
    return word + _ENDINGS[ending]


PLAIN_WORDS = read_word_map("plain_words.tsv")
_PLAIN = re.compile(r"\b(" + "|".join(sorted(PLAIN_WORDS, key=len, reverse=True)) + r")\b", re.IGNORECASE)
_NOT_ADVERBS = read_word_list("not_adverbs.txt")
# Hedges and intensifiers: style markers a plain version goes without.
_HEDGES = re.compile(
    r"\s\b(?:rather|quite|very|really|somewhat|certainly|simply|perhaps|indeed|actually|particularly"
    r"|distinctly|entirely|altogether|positively|decidedly|thoroughly|utterly|undoubtedly|evidently"
    r"|obviously|absolutely|extremely|exceedingly|remarkably|singularly|tolerably)\b(?=\s)",
)
_ADVERB = re.compile(r"\s\b([a-z]{3,}ly)\b")
_PARENTHETICAL = re.compile(r"\s*\([^()]{1,200}\)")
_DASH_ASIDE = re.compile(r"\s*—\s*([^—\n]{1,120}?)\s*—\s*")
_CLAUSE_SPLIT = re.compile(r",\s+(?:and|but)\s+(?=[a-z])")
_SEMICOLON = re.compile(r"\s*;\s+([a-z])")


def _capitalise_match(match: re.Match[str], word: str) -> str:
    return word[0].upper() + word[1:] if match.group(0)[0].isupper() else word


def degrade(text: str, seed: int | str = 0, strength: float = 0.7) -> str:
    """A plain version of text: contractions spelled out, ornate words swapped for plain ones,
    asides and -ly adverbs dropped, long sentences and semicolons split. Paragraphs are kept."""
    rng = random.Random(f"{seed}:{hashlib.sha1(text.encode('utf-8')).hexdigest()}")

    def maybe(probability: float) -> bool:
        return rng.random() < min(1.0, probability * strength / 0.7)

    out: list[str] = []
    for paragraph in text.split("\n\n"):
        paragraph = _CONTRACTION.sub(lambda m: _expand(m) if maybe(0.9) else m.group(0), paragraph)
        paragraph = _PLAIN.sub(
            lambda m: _capitalise_match(m, PLAIN_WORDS[m.group(0).lower()]) if maybe(0.9) else m.group(0),
            paragraph,
        )
        paragraph = _PARENTHETICAL.sub(lambda m: "" if maybe(0.8) else m.group(0), paragraph)
        paragraph = _DASH_ASIDE.sub(lambda m: f", {m.group(1)}, " if maybe(0.8) else m.group(0), paragraph)
        paragraph = paragraph.replace("—", ", ") if maybe(0.8) else paragraph
        paragraph = _SEMICOLON.sub(
            lambda m: ". " + m.group(1).upper() if maybe(0.9) else m.group(0), paragraph
        )
        paragraph = _CLAUSE_SPLIT.sub(lambda m: ". " if maybe(0.5) else m.group(0), paragraph)
        paragraph = re.sub(r"\.\s+([a-z])", lambda m: ". " + m.group(1).upper(), paragraph)
        paragraph = _HEDGES.sub(lambda m: "" if maybe(0.7) else m.group(0), paragraph)
        paragraph = _ADVERB.sub(
            lambda m: m.group(0) if m.group(1) in _NOT_ADVERBS or not maybe(0.6) else "", paragraph
        )
        paragraph = paragraph.replace("!", ".") if maybe(0.5) else paragraph
        paragraph = re.sub(r"\s+([,.;:!?])", r"\1", paragraph)
        paragraph = re.sub(r",\s*,", ",", paragraph)
        paragraph = re.sub(r"\b([Aa]) (?=[aeiouAEIOU])", r"\1n ", paragraph)  # after a dropped word
        paragraph = re.sub(r"\b([Aa])n (?=[b-df-hj-np-tv-zB-DF-HJ-NP-TV-Z])", r"\1 ", paragraph)
        paragraph = re.sub(r"[ \t]{2,}", " ", paragraph).strip()
        out.append(paragraph)
    return "\n\n".join(out)


# --------------------------------------------------------------------------------------------------
# a local model for briefs and rewrites (opt-in), cached by content hash
@dataclass
class Example:
    mode: str
    doc: str  # the unit of the split it came from (its texts/<split>/<doc>.txt file)
    source_file: str  # the input file, relative to the input folder
    text: str  # the author's passage this example teaches (the assistant turn, or the raw text)
    prompt: str = ""  # the user turn (empty in completion format)
    tokens: int = 0  # measured after the chat template (or with special tokens, for completion)

    def record(self, system_prompt: str, completion: bool) -> dict[str, Any]:
        meta = {"doc": self.doc, "source": self.source_file}
        if completion:
            return {"text": self.text, "mode": "completion", **meta}
        return {"messages": chat_messages(system_prompt, self.prompt, self.text), "mode": self.mode, **meta}


@dataclass
class PairSettings:
    sequence_len: int
    modes: Sequence[str] = MODES
    ratio: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_RATIO))
    seed: int = 42
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    completion: bool = False
    continue_fraction: float = 0.3
    brief: Literal["extractive", "model"] = "extractive"
    rewrite: Literal["rules", "model"] = "rules"


def template_overhead(tokenizer: Any, settings: PairSettings) -> dict[str, int]:
    """Tokens each mode's example costs beyond the passage itself (template, system prompt,
    instruction), measured with the base model's own chat template."""
    if settings.completion:
        bos_eos = len(tokenizer("x", add_special_tokens=True)["input_ids"]) - 1
        return {"completion": bos_eos + 1}  # + the EOS token Axolotl appends
    samples = {
        "continue": user_prompt("continue", opening="x"),
        "write": user_prompt("write", words=999, brief="x"),
        "rewrite": user_prompt("rewrite", source="x"),
    }
    conversations = [chat_messages(settings.system_prompt, prompt, "x") for prompt in samples.values()]
    lengths = templated_lengths(tokenizer, conversations)
    return {mode: length - 1 for mode, length in zip(samples, lengths, strict=True)}


def mode_rooms(tokenizer: Any, settings: PairSettings) -> dict[str, int]:
    """The most tokens of the author's passage one example of each mode can hold.

    continue: the passage (opening + continuation) once; write: the passage and a brief;
    rewrite: the passage twice (plain and original, the plain one a little longer).
    """
    overhead = template_overhead(tokenizer, settings)
    margin = max(4, settings.sequence_len // 50)  # joins can tokenize a little differently
    if settings.completion:
        return {"completion": settings.sequence_len - overhead["completion"] - margin}
    rooms = {
        "continue": settings.sequence_len - overhead["continue"] - margin,
        "write": settings.sequence_len - overhead["write"] - BRIEF_RESERVE_TOKENS - margin,
        "rewrite": int((settings.sequence_len - overhead["rewrite"] - margin) / REWRITE_EXPANSION),
    }
    return {mode: room for mode, room in rooms.items() if mode in settings.modes}


def passage_budget(tokenizer: Any, settings: PairSettings) -> int:
    """Passage size for chunking: the largest any active mode can hold. Modes with less room cut
    their passage into several examples at sentence boundaries, so no text is lost."""
    rooms = mode_rooms(tokenizer, settings)
    budget = max(rooms.values())
    if min(rooms.values()) < 24:
        raise ValueError(
            f"sequence_len {settings.sequence_len} leaves only {min(rooms.values())} tokens for text after "
            "the chat template and prompts: raise --sequence-len"
        )
    return budget


def templated_lengths(tokenizer: Any, conversations: Sequence[list[dict[str, str]]]) -> list[int]:
    """Exact token counts of conversations rendered by the tokenizer's own chat template."""
    if not conversations:
        return []
    rendered = tokenizer.apply_chat_template(list(conversations), tokenize=False)
    return token_counts(tokenizer, rendered)


def _sentences_with_breaks(text: str) -> list[tuple[str, bool]]:
    """(sentence, starts a paragraph) for every sentence of text."""
    out: list[tuple[str, bool]] = []
    for paragraph in text.split("\n\n"):
        for index, sentence in enumerate(split_sentences(paragraph)):
            out.append((sentence, index == 0))
    return out


def _join_sentences(part: Sequence[tuple[str, bool]]) -> str:
    out = ""
    for sentence, new_paragraph in part:
        out = out + ("\n\n" if new_paragraph else " ") + sentence if out else sentence
    return out


def split_to_fit(text: str, tokens: int, room: int) -> list[str]:
    """text cut in two at the sentence boundary nearest its middle, again and again, until each
    part's share of `tokens` (estimated by characters) is within `room`; balanced parts, no loss."""
    if tokens <= room:
        return [text]
    sentences = _sentences_with_breaks(text)
    if len(sentences) < 2:
        return [text]
    lengths = [len(sentence) + 1 for sentence, _ in sentences]
    total = sum(lengths)
    running, cut, best = 0, 1, float("inf")
    for index in range(1, len(sentences)):
        running += lengths[index - 1]
        if abs(running - total / 2) < best:
            cut, best = index, abs(running - total / 2)
    head, tail = sentences[:cut], sentences[cut:]
    head_tokens = math.ceil(tokens * sum(lengths[:cut]) / total)
    return [
        *split_to_fit(_join_sentences(head), head_tokens, room),
        *split_to_fit(_join_sentences(tail), tokens - head_tokens + 1, room),
    ]


def _drop_last_sentence(text: str) -> str | None:
    paragraphs = text.split("\n\n")
    sentences = split_sentences(paragraphs[-1])
    if len(sentences) > 1:
        paragraphs[-1] = " ".join(sentences[:-1])
    elif len(paragraphs) > 1:
        paragraphs.pop()
    else:
        return None
    return "\n\n".join(paragraphs)


def build_examples(
    chunks: Sequence[Chunk],
    split: str,
    tokenizer: Any,
    settings: PairSettings,
    idf: Mapping[str, float],
    labels: Mapping[str, tuple[str, str]],
    writer: LocalModelWriter | None = None,
) -> tuple[list[Example], Counter[str]]:
    """One split's examples, each measured after the chat template and never over sequence_len.

    labels maps a chunk's unit id to (doc key, source file) for the records.

    An example that is too long loses its last sentence and is measured again (counted as
    `trimmed`); after four tries it is dropped (counted as `dropped_too_long`).
    """
    stats: Counter[str] = Counter()
    examples: list[Example] = []
    if settings.completion:
        examples = [Example("completion", *labels[c.unit], c.text) for c in chunks]
    else:
        ratio = {mode: settings.ratio.get(mode, 0.0) for mode in settings.modes}
        modes = assign_modes(len(chunks), ratio, settings.seed, split)
        rooms = mode_rooms(tokenizer, settings)
        for chunk, mode in zip(chunks, modes, strict=True):
            if mode == "continue" and split_opening(chunk.text, settings.continue_fraction) is None:
                mode = "write" if "write" in settings.modes else mode  # one sentence cannot be continued
            # A mode with less room than the passage takes it as several examples (no text is lost).
            for part in split_to_fit(chunk.text, chunk.tokens, rooms[mode]):
                examples.append(Example(mode, *labels[chunk.unit], part))
        _fill_prompts(examples, settings, idf, writer, stats)
    return _enforce_length(examples, tokenizer, settings, idf, stats), stats


def _fill_prompts(
    examples: list[Example],
    settings: PairSettings,
    idf: Mapping[str, float],
    writer: LocalModelWriter | None,
    stats: Counter[str],
) -> None:
    briefs: dict[int, str] = {}
    plains: dict[int, str] = {}
    if writer is not None and settings.brief == "model":
        wanted = [i for i, e in enumerate(examples) if e.mode == "write"]
        answers = writer.briefs([examples[i].text for i in wanted])
        briefs = {i: a for i, a in zip(wanted, answers, strict=True) if a.strip()}
    if writer is not None and settings.rewrite == "model":
        wanted = [i for i, e in enumerate(examples) if e.mode == "rewrite"]
        answers = writer.plain_rewrites([examples[i].text for i in wanted])
        plains = {i: a for i, a in zip(wanted, answers, strict=True) if a.strip()}
    for index, example in enumerate(examples):
        _set_prompt(example, settings, idf, briefs.get(index), plains.get(index), stats)


def _set_prompt(
    example: Example,
    settings: PairSettings,
    idf: Mapping[str, float],
    brief: str | None,
    plain: str | None,
    stats: Counter[str],
) -> None:
    if example.mode == "continue":
        halves = split_opening(example.text, settings.continue_fraction)
        if halves is None:
            example.mode = "write"
        else:
            opening, example.text = halves
            example.prompt = user_prompt("continue", opening=opening)
            return
    if example.mode == "rewrite":
        if plain is None:
            plain = degrade(example.text, settings.seed)
            if plain == example.text:
                plain = degrade(example.text, settings.seed, strength=1.0)
        if plain != example.text:
            example.prompt = user_prompt("rewrite", source=plain)
            return
        halves = split_opening(example.text, settings.continue_fraction)
        if halves is not None:  # nothing plain-able in it: teach it as a continuation instead
            stats["rewrite_unchanged_as_continue"] += 1
            example.mode = "continue"
            opening, example.text = halves
            example.prompt = user_prompt("continue", opening=opening)
            return
        stats["rewrite_unchanged_as_write"] += 1
        example.mode = "write"
    words = len(example.text.split())
    rounded = max(10, int(round(words, -1)))
    example.prompt = user_prompt("write", words=rounded, brief=brief or extractive_brief(example.text, idf))


def _enforce_length(
    examples: list[Example],
    tokenizer: Any,
    settings: PairSettings,
    idf: Mapping[str, float],
    stats: Counter[str],
) -> list[Example]:
    fits: set[int] = set()
    pending = list(range(len(examples)))
    for attempt in range(5):
        if not pending:
            break
        lengths = _measure([examples[i] for i in pending], tokenizer, settings)
        over: list[int] = []
        for index, length in zip(pending, lengths, strict=True):
            examples[index].tokens = length
            (fits.add(index) if length <= settings.sequence_len else over.append(index))
        pending = []
        for index in over:
            example = examples[index]
            shorter = None if attempt == 4 else _drop_last_sentence(example.text)
            if shorter is None and example.mode == "rewrite" and attempt < 4:
                # one long sentence, twice, does not fit: teach it as a write example instead
                stats["rewrite_too_long_as_write"] += 1
                example.mode = "write"
                _set_prompt(example, settings, idf, None, None, stats)
                pending.append(index)
                continue
            if shorter is None:
                stats[f"dropped_too_long_{example.mode}"] += 1
                continue
            stats[f"trimmed_{example.mode}"] += 1
            example.text = shorter
            if example.mode == "rewrite":
                _set_prompt(example, settings, idf, None, None, stats)
            elif example.mode == "write":
                _set_prompt(example, settings, idf, example.prompt.split("Brief: ", 1)[-1], None, stats)
            pending.append(index)
    return [example for index, example in enumerate(examples) if index in fits]


def _measure(examples: Sequence[Example], tokenizer: Any, settings: PairSettings) -> list[int]:
    if settings.completion:
        counts = token_counts(tokenizer, [e.text for e in examples])
        return [count + template_overhead(tokenizer, settings)["completion"] for count in counts]
    conversations = [chat_messages(settings.system_prompt, e.prompt, e.text) for e in examples]
    return templated_lengths(tokenizer, conversations)
