#!/usr/bin/env python3
"""Speed of the data step (`voicetune prepare`), on generated inputs of a known size.

1. ~10 MB of plain text (about 1.7 M words, Gutenberg-style wrapped files) -> words/s.
2. a 500-page text PDF made with reportlab -> pages/s (and words/s).

Targets (issue 5): each under 60 s on 2 CPU cores, without model-made pairs. The text is random
sentences over the bundled author's vocabulary with its word frequencies, so tokenization costs what
real prose costs and deduplication finds nothing to drop (the whole corpus goes through every stage).
The first run in a process includes importing transformers and loading the tokenizer, as a person's
run does; both numbers are printed, with the time of every stage.

usage: .venv/bin/python benchmarks/perf/prepare_speed.py [--base-model DIR] [--mb 10] [--pages 500]
       [--sequence-len 512] [--keep DIR] [--only text|pdf]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

FALLBACK_VOCABULARY = [
    "the",
    "of",
    "and",
    "to",
    "a",
    "in",
    "that",
    "was",
    "he",
    "it",
    "his",
    "with",
    "as",
    "had",
    "for",
    "you",
    "her",
    "on",
    "at",
    "not",
    "be",
    "by",
    "she",
    "but",
    "which",
    "all",
    "they",
    "said",
    "would",
    "were",
    "one",
    "there",
    "from",
    "my",
    "or",
    "this",
    "have",
    "so",
    "if",
    "no",
    "what",
    "an",
    "when",
    "been",
    "we",
    "their",
    "more",
    "about",
    "out",
    "up",
    "into",
    "very",
    "could",
    "then",
    "them",
    "only",
    "some",
    "like",
    "any",
    "now",
    "time",
    "little",
    "man",
    "lady",
    "aunt",
    "garden",
    "duchess",
    "reginald",
    "luncheon",
    "carriage",
    "window",
    "morning",
    "evening",
    "drawing-room",
    "nephew",
    "tiger",
    "wolf",
    "hedgehog",
]


def vocabulary() -> tuple[list[str], list[int]]:
    """Word frequencies of the bundled demo author (or a small fallback list)."""
    counts: Counter[str] = Counter()
    for path in sorted((REPO / "data" / "demo" / "author").glob("*.txt")):
        counts.update(re.findall(r"[A-Za-z][a-z'-]*", path.read_text(encoding="utf-8", errors="replace")))
    if len(counts) < 500:
        counts = Counter({word: 100 // (rank + 1) + 1 for rank, word in enumerate(FALLBACK_VOCABULARY)})
    words, weights = zip(*counts.most_common(20000), strict=True)
    return list(words), list(weights)


def paragraphs(rng: random.Random, words: list[str], weights: list[int], count: int) -> list[str]:
    out = []
    for _ in range(count):
        sentences = []
        for _ in range(rng.randint(2, 7)):
            sentence = rng.choices(words, weights, k=rng.randint(6, 28))
            for i in range(3, len(sentence) - 2, rng.randint(5, 9)):
                sentence[i] += ","
            text = " ".join(sentence)
            sentences.append(text[0].upper() + text[1:] + rng.choice([".", ".", ".", "!", "?"]))
        if rng.random() < 0.3:
            sentences[0] = '"' + sentences[0] + '" said the Duchess.'
        out.append(" ".join(sentences))
    return out


def wrap(paragraph: str, width: int = 72) -> str:
    lines, line = [], ""
    for word in paragraph.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return "\n".join([*lines, line])


def make_text_corpus(folder: Path, megabytes: float, seed: int = 0) -> int:
    """Files of ~500 KB each, chapters with headings, wrapped at 72 columns; returns the word count."""
    rng = random.Random(seed)
    words, weights = vocabulary()
    folder.mkdir(parents=True, exist_ok=True)
    target = int(megabytes * 1_000_000)
    written = total_words = 0
    number = 0
    while written < target:
        number += 1
        chapters = []
        for chapter in range(1, 9):
            body = paragraphs(rng, words, weights, 60)
            total_words += sum(len(p.split()) for p in body)
            chapters.append(f"CHAPTER {chapter}\n\n" + "\n\n".join(wrap(p) for p in body))
        text = "\n\n\n".join(chapters) + "\n"
        (folder / f"book-{number:03d}.txt").write_text(text, encoding="utf-8")
        written += len(text.encode("utf-8"))
    return total_words


def make_pdf(path: Path, pages: int, seed: int = 1) -> int:
    """A text PDF of exactly `pages` pages (running header, page numbers); returns its word count."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    rng = random.Random(seed)
    words, weights = vocabulary()
    pdf = canvas.Canvas(str(path), pagesize=A4)
    width, height = A4
    total = 0
    pending: list[str] = []
    for number in range(1, pages + 1):
        pdf.drawString(72, height - 40, "THE BENCHMARK BOOK")
        y = height - 80
        for _ in range(46):
            if not pending:
                paragraph = paragraphs(rng, words, weights, 1)[0]
                total += len(paragraph.split())
                lines = wrap(paragraph, 88).split("\n")
                pending = ["    " + lines[0], *lines[1:]]
            pdf.drawString(72, y, pending.pop(0))
            y -= 15
        pdf.drawString(width / 2, 30, str(number))
        pdf.showPage()
    pdf.save()
    return total


def run_prepare(input_dir: Path, home: Path, base_model: Path, sequence_len: int, name: str) -> dict:
    os.environ["VOICETUNE_HOME"] = str(home)
    from voicetune.data.prepare import DataSettings, prepare_corpus

    settings = DataSettings(
        input=str(input_dir), name=name, base_model=str(base_model), sequence_len=sequence_len, min_words=0
    )
    started = time.perf_counter()
    result = prepare_corpus(settings, force=True)
    return {"seconds": time.perf_counter() - started, "manifest": result.manifest}


def report(label: str, run: dict, words: int, pages: int | None = None) -> None:
    seconds = run["seconds"]
    manifest = run["manifest"]
    pairs = sum(manifest["counts"][s]["pairs"] for s in ("train", "val", "test"))
    line = f"{label}: {words:,} words in {seconds:.1f} s = {words / seconds:,.0f} words/s"
    if pages:
        line += f", {pages / seconds:.1f} pages/s"
    print(line)
    stages = ", ".join(f"{stage} {value:.1f}" for stage, value in manifest["timings"].items())
    print(f"  stages (s): {stages}")
    print(
        f"  {manifest['words']:,} words kept, {pairs:,} examples, "
        f"sequence_len {manifest['settings']['sequence_len']}"
    )
    verdict = "under" if seconds < 60 else "OVER"
    print(f"  target: under 60 s on 2 cores -> {verdict} ({os.cpu_count()} cores here)")


def main() -> int:
    from voicetune.core.paths import default_base_model_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-model", type=Path, default=default_base_model_dir())
    parser.add_argument("--mb", type=float, default=10.0, help="megabytes of plain text")
    parser.add_argument("--pages", type=int, default=500, help="pages of PDF")
    parser.add_argument("--sequence-len", type=int, default=512)
    parser.add_argument("--only", choices=["text", "pdf"])
    parser.add_argument("--keep", type=Path, help="generate into this folder and keep it")
    args = parser.parse_args()
    if not (args.base_model / "tokenizer.json").is_file():
        print(f"error: no tokenizer in {args.base_model}: run `voicetune base-model` first", file=sys.stderr)
        return 2
    if args.only is None:
        # each measurement in a fresh process: both pay the transformers import, as a real run does
        print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
        rest = [a for a in sys.argv[1:] if a not in ("--only", "text", "pdf")]
        codes = [
            subprocess.call([sys.executable, __file__, *rest, "--only", only]) for only in ("text", "pdf")
        ]
        return max(codes)
    work = args.keep or Path(tempfile.mkdtemp(prefix="voicetune-bench-"))
    try:
        if args.only in (None, "text"):
            text_dir = work / "text"
            shutil.rmtree(text_dir, ignore_errors=True)
            words = make_text_corpus(text_dir, args.mb)
            size = sum(p.stat().st_size for p in text_dir.iterdir()) / 1e6
            print(
                f"generated {size:.1f} MB of text, {words:,} words, in {len(list(text_dir.iterdir()))} files"
            )
            report(
                f"text {size:.1f} MB",
                run_prepare(text_dir, work / "home", args.base_model, args.sequence_len, "bench-text"),
                words,
            )
        if args.only in (None, "pdf"):
            pdf_dir = work / "pdf"
            shutil.rmtree(pdf_dir, ignore_errors=True)
            pdf_dir.mkdir(parents=True)
            started = time.perf_counter()
            words = make_pdf(pdf_dir / "book.pdf", args.pages)
            print(
                f"generated a {args.pages}-page PDF ({words:,} words) "
                f"in {time.perf_counter() - started:.1f} s"
            )
            run = run_prepare(pdf_dir, work / "home", args.base_model, args.sequence_len, "bench-pdf")
            report(f"pdf {args.pages} pages", run, words, pages=args.pages)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
