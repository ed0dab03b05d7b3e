"""`voicetune prepare`: the person's writing -> clean, deduplicated, chunked train/val/test examples.

Reads every supported file under the input folder (data/raw/ by default), cleans it, removes exact
and near duplicates, splits by document (or by section for a small corpus), chunks with the base
model's own tokenizer so that no example exceeds sequence_len after its chat template, builds the
training pairs, and writes data/processed/<name>/ atomically with a manifest. A re-run with the same
inputs and settings does nothing.

Entry points: `prepare_corpus(settings)` (pure, what tests call) and `run(args)` (the CLI verb).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from voicetune.core.errors import MissingArtifactError, VoicetuneError
from voicetune.core.artifacts import stored_path
from voicetune.core.paths import default_base_model_dir, processed_dir, project_root, raw_data_dir

PREPARE_VERSION = 1  # bump when the same inputs and settings would now give different output
LIBRARIES = [
    "pypdf",
    "python-docx",
    "ebooklib",
    "beautifulsoup4",
    "lxml",
    "markdown-it-py",
    "charset-normalizer",
    "ftfy",
    "odfpy",
    "striprtf",
    "datasketch",
    "transformers",
    "tokenizers",
]
TOKENIZER_FILES = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
]
MODE_NAMES = ("continue", "write", "rewrite")


class DataSettings(BaseModel):
    """The `data:` section of configs/voicetune.yaml (flags override it)."""

    model_config = ConfigDict(extra="forbid")

    input: str = Field("data/raw", description="folder of writing (nested folders allowed), or one file")
    name: str = Field("default", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    base_model: str | None = Field(
        None, description="model folder whose tokenizer and chat template are used"
    )
    sequence_len: int = Field(512, ge=64, le=262144)
    format: Literal["chat_template", "completion"] = "chat_template"
    modes: list[Literal["continue", "write", "rewrite"]] = ["continue", "write", "rewrite"]
    ratio: dict[str, float] = {"continue": 0.5, "write": 0.3, "rewrite": 0.2}
    chunk_tokens: int | None = Field(
        None, ge=16, description="target passage size; default: the most that fits"
    )
    min_chunk_tokens: int = Field(16, ge=1)
    continue_fraction: float = Field(0.3, gt=0.05, lt=0.9)
    seed: int = 42
    val_fraction: float = Field(0.1, ge=0.0, le=0.4)
    test_fraction: float = Field(0.1, ge=0.0, le=0.4)
    split_by: Literal["auto", "document", "section"] = "auto"
    min_words: int = Field(2000, ge=0)
    max_file_mb: float = Field(200.0, gt=0)
    redact: bool = False
    quotes: Literal["straight", "curly", "keep"] = "straight"
    near_duplicate_threshold: float = Field(0.8, gt=0.3, le=1.0)
    system_prompt: str = "You are the author. Write in your own voice."
    brief: Literal["extractive", "model"] = "extractive"
    rewrite: Literal["rules", "model"] = "rules"
    helper_model: str | None = Field(None, description="local model for model-made briefs/rewrites")
    helper_max_new_tokens: int = Field(160, ge=8)

    @field_validator("ratio")
    @classmethod
    def _ratio(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = set(value) - set(MODE_NAMES)
        if unknown:
            raise ValueError(f"unknown mode {sorted(unknown)[0]!r} (modes: {', '.join(MODE_NAMES)})")
        if any(weight < 0 for weight in value.values()) or sum(value.values()) <= 0:
            raise ValueError("weights must be >= 0 and not all 0")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> DataSettings:
        if not self.modes:
            raise ValueError("modes: name at least one of continue, write, rewrite")
        if self.format == "chat_template" and sum(self.ratio.get(mode, 0) for mode in self.modes) <= 0:
            raise ValueError(f"ratio gives no weight to any of the modes {self.modes}")
        if self.val_fraction + self.test_fraction >= 0.6:
            raise ValueError("val_fraction + test_fraction must leave most of the writing for training")
        return self


@dataclass
class PrepareResult:
    status: Literal["written", "up_to_date", "dry_run"]
    output_dir: Path
    manifest: dict[str, Any] = field(default_factory=dict)
    dropped: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------
def _resolve(path: str | Path) -> Path:
    path = Path(path).expanduser()
    return path if path.is_absolute() else project_root() / path


def _quiet(_message: str) -> None:
    return None


def tokenizer_identity(folder: Path) -> str:
    """sha256 over the tokenizer and chat-template files: what decides every token count here."""
    from voicetune.core.manifest import sha256_file, sha256_text

    parts = {name: sha256_file(folder / name) for name in TOKENIZER_FILES if (folder / name).is_file()}
    return sha256_text(json.dumps(parts, sort_keys=True))


def require_tokenizer(folder: Path) -> None:
    if not (folder / "tokenizer.json").is_file() and not (folder / "tokenizer_config.json").is_file():
        raise MissingArtifactError(
            "base model tokenizer", folder, "`voicetune base-model` (or ./run_demo.sh)"
        )


@functools.lru_cache(maxsize=4)
def load_tokenizer(folder: Path) -> Any:
    """The base model's own tokenizer, offline (no hub, no remote code); loaded once per process."""
    from voicetune.core.privacy import apply_private_env

    # Batch encoding may use both cores here (prepare forks no workers); a value the user set wins.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    apply_private_env()
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError) as exc:
        raise VoicetuneError(
            f"cannot load the tokenizer in {folder} ({exc}): rebuild it with `voicetune base-model`"
        ) from exc
    if not getattr(tokenizer, "is_fast", False):
        raise VoicetuneError(f"the tokenizer in {folder} is not a fast tokenizer: add its tokenizer.json")
    return tokenizer


def _token_stats(lengths: list[int], limit: int) -> dict[str, Any]:
    if not lengths:
        return {"examples": 0, "total": 0}
    ordered = sorted(lengths)
    return {
        "examples": len(ordered),
        "total": sum(ordered),
        "min": ordered[0],
        "mean": round(statistics.fmean(ordered), 1),
        "median": ordered[len(ordered) // 2],
        "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
        "max": ordered[-1],
        "sequence_len": limit,
    }


# --------------------------------------------------------------------------------------------------
# The data step reads top to bottom: plan -> read + clean -> drop duplicate documents -> split ->
# chunk -> drop duplicate passages -> pairs -> write. Each stage is a function below.


class _Clock:
    """Seconds spent in each stage (recorded in the manifest's `timings`)."""

    def __init__(self) -> None:
        self.started = self.last = time.perf_counter()
        self.timings: dict[str, float] = {}

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.timings[stage] = round(now - self.last, 2)
        self.last = now


@dataclass
class _Job:
    """What this run reads and writes, and its fingerprint ("" on a dry run)."""

    settings: DataSettings
    input_dir: Path
    out: Path
    base: Path
    candidates: list[Any]
    discovery_dropped: list[Any]
    input_hashes: dict[str, str]
    settings_record: dict[str, Any]
    key: str = ""


@dataclass
class _Corpus:
    """The cleaned documents, and everything skipped on the way, with its reason."""

    documents: list[Any]
    dropped: list[Any]
    sources: int
    notes: dict[str, list[str]] = field(default_factory=dict)
    cleaning: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def words(self) -> int:
        return sum(doc.words for doc in self.documents)

    def dropped_records(self) -> list[dict[str, str]]:
        return [{"file": item.file, "reason": item.reason} for item in self.dropped]


@dataclass
class _Passages:
    """Chunks and training pairs of each split."""

    budget: int
    target: int
    unit_key: dict[str, str]
    chunks: dict[str, list[Any]]
    examples: dict[str, list[Any]] = field(default_factory=dict)
    stats: Counter[str] = field(default_factory=Counter)


def prepare_corpus(
    settings: DataSettings,
    output_dir: Path | None = None,
    dry_run: bool = False,
    force: bool = False,
    log: Callable[[str], None] | None = None,
) -> PrepareResult:
    """Run the whole data step for `settings`; returns what happened (and raises VoicetuneError with
    exit code 1 when nothing usable remains or the corpus is below min_words, 2 when the base model
    tokenizer is missing)."""
    from voicetune.data.splits import plan_split

    say = log or _quiet
    clock = _Clock()
    job = plan_job(settings, output_dir, dry_run)
    if job.key and not force and is_prepared(job.out, job.key):
        say(f"up to date: {job.out} (same inputs and settings); nothing to do")
        return PrepareResult(
            "up_to_date", job.out, manifest=json.loads((job.out / "manifest.json").read_text())
        )
    clock.lap("discover_and_hash")

    corpus = read_and_clean(job, say, clock)
    drop_duplicate_documents(corpus, settings.near_duplicate_threshold)
    clock.lap("dedup_documents")
    report_skipped(corpus, say)
    require_enough_writing(corpus, job)

    plan = plan_split(
        corpus.documents, settings.val_fraction, settings.test_fraction, settings.seed, settings.split_by
    )
    for warning in plan.warnings:
        say(f"warning: {warning}")
    if dry_run:
        return dry_run_result(job, corpus, plan, say)
    clock.lap("split")

    say(f"tokenizer: {job.base}")
    tokenizer = load_tokenizer(job.base)
    clock.lap("load_tokenizer")
    pair_settings = _pair_settings(settings)
    passages = chunk_splits(job, plan, tokenizer, pair_settings, corpus.words, say)
    clock.lap("chunk")
    idf_texts = drop_duplicate_passages(passages, settings.near_duplicate_threshold)
    clock.lap("dedup_passages")
    build_pairs(job, plan, passages, tokenizer, pair_settings, idf_texts)
    clock.lap("pairs")

    manifest = write_prepared(job, corpus, plan, passages, tokenizer, clock)
    completion = settings.format == "completion"
    summary = _summary(job.out, manifest, corpus.sources, corpus.words, plan.by, completion)
    for line in summary:
        say(line)
    return PrepareResult("written", job.out, manifest, corpus.dropped_records(), plan.warnings, summary)


def is_prepared(out: Path, key: str) -> bool:
    from voicetune.core.manifest import is_up_to_date

    return is_up_to_date(out, key)


def plan_job(settings: DataSettings, output_dir: Path | None, dry_run: bool) -> _Job:
    """Resolve the folders, list and hash the inputs, and fingerprint inputs + settings + tokenizer."""
    from voicetune.core.manifest import fingerprint, sha256_file
    from voicetune.data.ingest import READERS, discover

    input_dir = _resolve(settings.input)
    out = (output_dir or processed_dir(settings.name)).resolve()
    base = _resolve(settings.base_model) if settings.base_model else default_base_model_dir()
    if not input_dir.exists():
        raise VoicetuneError(
            f"input folder {input_dir} not found: put your writing there (.txt .md .html .pdf .docx .epub "
            f".odt .rtf, nested folders allowed) or pass --input DIR"
        )
    candidates, discovery_dropped = discover(input_dir, set(READERS))
    input_hashes: dict[str, str] = {}
    for candidate in candidates:
        try:
            input_hashes[candidate.rel] = sha256_file(candidate.path)
        except OSError as exc:
            input_hashes[candidate.rel] = f"unreadable: {exc.strerror}"
    settings_record = settings.model_dump()
    # the base model relative to the output folder, so a moved project keeps its fingerprint and finds it
    settings_record.update(input=str(input_dir), base_model=stored_path(base, out))
    job = _Job(settings, input_dir, out, base, candidates, discovery_dropped, input_hashes, settings_record)
    if not dry_run:
        require_tokenizer(base)
        fingerprint_settings = {k: v for k, v in settings_record.items() if k not in ("name", "input")}
        job.key = fingerprint(
            "prepare", PREPARE_VERSION, fingerprint_settings, input_hashes, tokenizer_identity(base)
        )
    return job


def read_and_clean(job: _Job, say: Callable[[str], None], clock: _Clock) -> _Corpus:
    """Read every file (one bad file is skipped with its reason, never the rest) and clean it."""
    from voicetune.core.progress import progress
    from voicetune.data.clean import CleanOptions, clean_document
    from voicetune.data.ingest import Dropped, read_corpus
    from voicetune.data.splits import DocumentText

    settings = job.settings
    count = len(job.candidates)
    say(f"reading {count} file{'s' if count != 1 else ''} from {job.input_dir}")
    bar = progress(job.candidates, desc="read", total=count, unit="file")
    sources, read_dropped = read_corpus(bar, int(settings.max_file_mb * 1e6))
    corpus = _Corpus([], [*job.discovery_dropped, *read_dropped], len(sources))
    clock.lap("read")
    options = CleanOptions(quotes=settings.quotes, redact=settings.redact)
    for source in progress(sources, desc="clean", unit="file"):
        cleaned = clean_document(source.result.pages, source.result.structured, options)
        corpus.cleaning[source.rel] = dict(cleaned.removed)
        if source.result.notes:
            corpus.notes[source.rel] = list(source.result.notes)
        if cleaned.words == 0:
            corpus.dropped.append(
                Dropped(source.rel, "no prose left after cleaning (only headings, licence or contents?)")
            )
            continue
        corpus.documents.append(DocumentText(source.rel, [(s.title, s.text) for s in cleaned.sections]))
    clock.lap("clean")
    return corpus


def drop_duplicate_documents(corpus: _Corpus, threshold: float) -> None:
    """Near-duplicate documents (the same book as .txt and .pdf) go before the split."""
    from voicetune.data.dedup import find_duplicates
    from voicetune.data.ingest import Dropped

    documents = corpus.documents
    duplicate_docs = find_duplicates([doc.text for doc in documents], threshold=threshold, sample=4)
    gone = {dup.index for dup in duplicate_docs}
    for dup in duplicate_docs:
        corpus.dropped.append(
            Dropped(
                documents[dup.index].doc,
                f"{dup.kind} duplicate of {documents[dup.of].doc} (similarity {dup.similarity})",
            )
        )
    corpus.documents = [doc for index, doc in enumerate(documents) if index not in gone]


def report_skipped(corpus: _Corpus, say: Callable[[str], None]) -> None:
    for item in corpus.dropped:
        say(f"skipped {item.file}: {item.reason}")
    for rel, lines in corpus.notes.items():
        for line in lines:
            say(f"note {rel}: {line}")


def require_enough_writing(corpus: _Corpus, job: _Job) -> None:
    total_words, minimum = corpus.words, job.settings.min_words
    if not corpus.documents:
        raise VoicetuneError(
            f"nothing usable in {job.input_dir}: {len(corpus.dropped)} item(s) skipped (reasons above); add "
            ".txt, .md, .html, .pdf, .docx, .epub, .odt or .rtf files of your own writing"
        )
    if total_words < minimum:
        raise VoicetuneError(
            f"only {total_words:,} words of usable writing in {job.input_dir}: at least {minimum:,} are "
            f"needed, add about {minimum - total_words:,} more words (or lower --min-words)"
        )


def dry_run_result(job: _Job, corpus: _Corpus, plan: Any, say: Callable[[str], None]) -> PrepareResult:
    from voicetune.data.splits import SPLITS

    summary = [f"dry run: nothing written (would write {job.out})"]
    for doc in corpus.documents:
        summary.append(f"  read {doc.doc}: {doc.words:,} words, {len(doc.sections)} section(s)")
    summary.append(
        f"  {len(corpus.documents)} document(s), {corpus.words:,} words; {len(corpus.dropped)} item(s) skipped"
    )
    summary.append(
        f"  split by {plan.by}: "
        + ", ".join(f"{name} {len(plan.units[name])} ({plan.words(name):,} words)" for name in SPLITS)
    )
    for line in summary:
        say(line)
    return PrepareResult(
        "dry_run", job.out, dropped=corpus.dropped_records(), warnings=plan.warnings, summary=summary
    )


def _pair_settings(settings: DataSettings) -> Any:
    from voicetune.data.pairs import PairSettings

    return PairSettings(
        sequence_len=settings.sequence_len,
        modes=list(settings.modes),
        ratio={mode: settings.ratio.get(mode, 0.0) for mode in settings.modes},
        seed=settings.seed,
        system_prompt=settings.system_prompt,
        completion=settings.format == "completion",
        continue_fraction=settings.continue_fraction,
        brief=settings.brief,
        rewrite=settings.rewrite,
    )


def _unit_keys(plan: Any) -> dict[str, str]:
    """A unique file stem for each split unit (its texts/<split>/<stem>.txt)."""
    from voicetune.data.splits import SPLITS, unit_filename

    unit_key: dict[str, str] = {}
    used_names: set[str] = set()
    for name in SPLITS:
        for unit in plan.units[name]:
            filename = unit_filename(unit)
            stem = filename[:-4]
            suffix = 2
            while filename in used_names:
                filename = f"{stem}-{suffix}.txt"
                suffix += 1
            used_names.add(filename)
            unit_key[unit.id] = filename[:-4]
    return unit_key


def chunk_splits(
    job: _Job, plan: Any, tokenizer: Any, pair_settings: Any, total_words: int, say: Callable[[str], None]
) -> _Passages:
    """Cut each split's units into passages that fit sequence_len after the chat template."""
    from voicetune.data.chunk import chunk_texts
    from voicetune.data.pairs import passage_budget
    from voicetune.data.splits import SPLITS

    settings = job.settings
    try:
        budget = passage_budget(tokenizer, pair_settings)
    except ValueError as exc:
        raise VoicetuneError(str(exc)) from exc
    target = min(budget, settings.chunk_tokens or budget)
    say(f"chunking {total_words:,} words into passages of at most {budget} tokens (target {target})")
    passages = _Passages(budget, target, _unit_keys(plan), {})
    for name in SPLITS:
        chunks, stats = chunk_texts(
            tokenizer, [(u.id, u.text) for u in plan.units[name]], budget, target, settings.min_chunk_tokens
        )
        passages.chunks[name] = chunks
        passages.stats.update(stats)
    return passages


def drop_duplicate_passages(passages: _Passages, threshold: float) -> list[str]:
    """Near-duplicate passages across all files go; the held-out splits win over training. Returns
    every passage's text before dropping (the document frequencies for extractive briefs)."""
    from voicetune.data.dedup import find_duplicates
    from voicetune.data.splits import SPLITS

    flat = [(name, chunk) for name in ("test", "val", "train") for chunk in passages.chunks[name]]
    duplicates = find_duplicates([chunk.text for _, chunk in flat], threshold=threshold)
    duplicate_index = {dup.index for dup in duplicates}
    passages.stats.update(Counter(f"{dup.kind}_duplicate_passages" for dup in duplicates))
    for name in SPLITS:
        passages.chunks[name] = [
            chunk
            for index, (split, chunk) in enumerate(flat)
            if split == name and index not in duplicate_index
        ]
    return [chunk.text for _, chunk in flat]


def build_pairs(
    job: _Job, plan: Any, passages: _Passages, tokenizer: Any, pair_settings: Any, idf_texts: list[str]
) -> None:
    """Turn each split's passages into continue/write/rewrite examples (the train split shuffled)."""
    from voicetune.data.pairs import build_examples, inverse_document_frequency
    from voicetune.data.splits import SPLITS

    settings = job.settings
    idf = inverse_document_frequency(idf_texts)
    writer = None
    if settings.format == "chat_template" and (settings.brief == "model" or settings.rewrite == "model"):
        from voicetune.data.local_writer import LocalModelWriter

        helper = _resolve(settings.helper_model) if settings.helper_model else job.base
        if not (helper / "config.json").is_file():
            raise MissingArtifactError("helper model for briefs/rewrites", helper, "`voicetune base-model`")
        writer = LocalModelWriter(
            helper, project_root() / "data" / "cache" / "helper", settings.helper_max_new_tokens
        )
    labels = {unit.id: (passages.unit_key[unit.id], unit.doc) for name in SPLITS for unit in plan.units[name]}
    for name in SPLITS:
        examples, stats = build_examples(
            passages.chunks[name], name, tokenizer, pair_settings, idf, labels, writer
        )
        passages.examples[name] = examples
        passages.stats.update(stats)
    random.Random(settings.seed).shuffle(passages.examples["train"])


def write_prepared(
    job: _Job, corpus: _Corpus, plan: Any, passages: _Passages, tokenizer: Any, clock: _Clock
) -> dict[str, Any]:
    """Write the splits, the held-out texts and the manifest atomically (a crash leaves the earlier
    version or nothing, never a mix)."""
    from voicetune.core.manifest import (
        atomic_output_dir,
        build_manifest,
        exclusive_lock,
        remove_stale_temporaries,
        sha256_text,
        write_manifest,
        write_text_atomic,
    )
    from voicetune.core.prompting import PROMPTS
    from voicetune.data.splits import SPLITS

    settings, out, examples_by_split = job.settings, job.out, passages.examples
    completion = settings.format == "completion"
    counts: dict[str, Any] = {}
    token_stats: dict[str, Any] = {}
    for name in SPLITS:
        examples = examples_by_split[name]
        counts[name] = {
            "docs": len(plan.units[name]),
            "words": plan.words(name),
            "chunks": len(passages.chunks[name]),
            "pairs": len(examples),
            "modes": dict(Counter(example.mode for example in examples)),
        }
        token_stats[name] = _token_stats([example.tokens for example in examples], settings.sequence_len)
    over = [e for name in SPLITS for e in examples_by_split[name] if e.tokens > settings.sequence_len]
    if over:  # build_examples guarantees this; a last check before anything is written
        raise VoicetuneError(f"internal error: {len(over)} example(s) over sequence_len; please report it")
    if not examples_by_split["train"]:
        raise VoicetuneError(
            f"no training examples could be made from {job.input_dir} ({corpus.words:,} words): add more writing"
        )

    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out.parent)
    with exclusive_lock(out, "preparing"), atomic_output_dir(out) as tmp:
        outputs: dict[str, str] = {}
        for name in SPLITS:
            lines = [
                json.dumps(example.record(settings.system_prompt, completion), ensure_ascii=False)
                for example in examples_by_split[name]
            ]
            text = "\n".join(lines) + ("\n" if lines else "")
            write_text_atomic(tmp / f"{name}.jsonl", text)
            outputs[f"{name}.jsonl"] = sha256_text(text)
            (tmp / "texts" / name).mkdir(parents=True, exist_ok=True)
            for unit in plan.units[name]:
                relative = f"texts/{name}/{passages.unit_key[unit.id]}.txt"
                write_text_atomic(tmp / relative, unit.text + "\n")
                outputs[relative] = sha256_text(unit.text + "\n")
        clock.lap("write")
        manifest = build_manifest(
            "prepare",
            job.key,
            {
                **job.settings_record,
                "split_unit": plan.by,
                "passage_budget_tokens": passages.budget,
                "passage_target_tokens": passages.target,
                "prompts": PROMPTS,
                "prepare_version": PREPARE_VERSION,
            },
            job.input_hashes,
            outputs,
            LIBRARIES,
            tokenizer=tokenizer_identity(job.base),
            counts=counts,
            token_stats=token_stats,
            words=corpus.words,
            dropped=corpus.dropped_records(),
            dropped_counts=dict(+passages.stats),  # positive counts only
            warnings=plan.warnings,
            notes=corpus.notes,
            cleaning=corpus.cleaning,
            units={
                name: {
                    passages.unit_key[u.id]: {"source": u.doc, "title": u.title, "words": u.words}
                    for u in plan.units[name]
                }
                for name in SPLITS
            },
            seconds=round(time.perf_counter() - clock.started, 2),
            timings=clock.timings,
        )
        write_manifest(tmp, manifest)
    return manifest


def _summary(
    out: Path, manifest: dict[str, Any], files: int, words: int, by: str, completion: bool
) -> list[str]:
    counts, stats = manifest["counts"], manifest["token_stats"]
    drops = manifest["dropped_counts"]
    lines = [
        f"prepared {out} in {manifest['seconds']:.1f} s",
        f"  read {files} file(s), {words:,} words; skipped {len(manifest['dropped'])} item(s)",
    ]
    for name in ("train", "val", "test"):
        c = counts[name]
        modes = ", ".join(f"{mode} {n}" for mode, n in sorted(c["modes"].items()))
        lines.append(
            f"  {name:5} {c['docs']:3} {by}s {c['words']:>9,} words  {c['pairs']:5} examples"
            + (f" ({modes})" if modes and not completion else "")
        )
    train = stats["train"]
    if train.get("examples"):
        lines.append(
            f"  tokens per example: mean {train['mean']:.0f}, p95 {train['p95']}, max {train['max']} "
            f"(sequence_len {train['sequence_len']})"
        )
    extra = ", ".join(f"{key.replace('_', ' ')} {value}" for key, value in sorted(drops.items()) if value)
    if extra:
        lines.append(f"  {extra}")
    lines.append("  test split: held out for the benchmark (texts/test/), never in train.jsonl")
    return lines


# --------------------------------------------------------------------------------------------------
def _parse_modes(value: str) -> list[str]:
    modes = [part.strip() for part in value.split(",") if part.strip()]
    unknown = [mode for mode in modes if mode not in MODE_NAMES]
    if unknown or not modes:
        raise argparse.ArgumentTypeError(f"modes are a comma list of {', '.join(MODE_NAMES)}")
    return modes


def _parse_ratio(value: str) -> dict[str, float]:
    ratio: dict[str, float] = {}
    for part in value.split(","):
        mode, _, weight = part.partition("=")
        try:
            ratio[mode.strip()] = float(weight)
        except ValueError as exc:
            raise argparse.ArgumentTypeError("ratio looks like continue=0.5,write=0.3,rewrite=0.2") from exc
    return ratio


def _path(value: str) -> str:
    return str(Path(value).expanduser().resolve())  # flags are relative to where the person stands


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Turn your writing (txt, md, html, pdf, docx, epub, odt, rtf under data/raw/) into clean, "
        "deduplicated train/val/test examples in data/processed/<name>/ for Axolotl. Settings come from "
        "the data: section of configs/voicetune.yaml; flags override it."
    )
    parser.add_argument(
        "--input", type=_path, help=f"folder of writing or one file (default {raw_data_dir()})"
    )
    parser.add_argument(
        "--name", help="dataset name: output goes to data/processed/<name>/ (default: default)"
    )
    parser.add_argument(
        "--base-model",
        type=_path,
        help=f"model folder whose tokenizer/chat template to use (default {default_base_model_dir()})",
    )
    parser.add_argument("--modes", type=_parse_modes, help="comma list of continue,write,rewrite")
    parser.add_argument("--ratio", type=_parse_ratio, help="mix, e.g. continue=0.5,write=0.3,rewrite=0.2")
    parser.add_argument("--sequence-len", type=int, help="max tokens of one example after the chat template")
    parser.add_argument("--format", choices=["chat_template", "completion"], help="chat pairs or raw text")
    parser.add_argument(
        "--chunk-tokens", type=int, help="target passage size in tokens (default: largest fit)"
    )
    parser.add_argument("--seed", type=int, help="seed for the split and the mode mix")
    parser.add_argument("--val-fraction", type=float, help="share of words held out for validation")
    parser.add_argument("--test-fraction", type=float, help="share of words held out for the benchmark")
    parser.add_argument("--split-by", choices=["auto", "document", "section"], help="unit of the split")
    parser.add_argument(
        "--redact", action="store_true", default=None, help="replace e-mails, URLs, phone numbers"
    )
    parser.add_argument("--quotes", choices=["straight", "curly", "keep"], help="quote style to normalise to")
    parser.add_argument("--min-words", type=int, help="refuse a corpus smaller than this")
    parser.add_argument("--max-file-mb", type=float, help="skip files larger than this")
    parser.add_argument("--brief", choices=["extractive", "model"], help="how write-mode briefs are made")
    parser.add_argument(
        "--rewrite", choices=["rules", "model"], help="how rewrite-mode plain versions are made"
    )
    parser.add_argument("--helper-model", type=_path, help="local model for --brief/--rewrite model")
    parser.add_argument("--config", type=Path, help="project config (default configs/voicetune.yaml)")
    parser.add_argument("--force", action="store_true", help="rebuild even when up to date")
    parser.add_argument(
        "--dry-run", action="store_true", help="list what would be read, with counts; write nothing"
    )


def settings_from_args(args: argparse.Namespace) -> DataSettings:
    from voicetune.core.settings import load_section

    overrides = {
        "input": args.input,
        "name": args.name,
        "base_model": args.base_model,
        "modes": args.modes,
        "sequence_len": args.sequence_len,
        "format": args.format,
        "chunk_tokens": args.chunk_tokens,
        "seed": args.seed,
        "val_fraction": args.val_fraction,
        "test_fraction": args.test_fraction,
        "split_by": args.split_by,
        "redact": args.redact,
        "quotes": args.quotes,
        "min_words": args.min_words,
        "max_file_mb": args.max_file_mb,
        "brief": args.brief,
        "rewrite": args.rewrite,
        "helper_model": args.helper_model,
    }
    if args.ratio is not None:
        overrides["ratio"] = args.ratio
        if args.modes is None:
            overrides["modes"] = [mode for mode in MODE_NAMES if args.ratio.get(mode, 0) > 0]
    return load_section(DataSettings, "data", overrides=overrides, source=args.config)


def run(args: argparse.Namespace) -> int:
    from voicetune.core.progress import say

    settings = settings_from_args(args)
    prepare_corpus(settings, dry_run=args.dry_run, force=args.force, log=say)
    return 0
