#!/usr/bin/env python3
"""Every figure the README states, traced to a committed results file under benchmarks/results/.

    python benchmarks/check_figures.py                  # README.md: the figures no results file holds
    python benchmarks/check_figures.py --trace          # every figure, with the file and line behind it
    python benchmarks/check_figures.py README.md docs/ARCHITECTURE.md

Which text is scanned: every section (heading to heading) except those whose heading matches
NOT_RESULTS (how to install and use voicetune: their numbers are settings, not measurements).
Fenced and indented code blocks, inline `code` and link targets are skipped: a setting, a command or
a path written in backticks is not a figure. So is a command's output pasted between
`<!-- NAME-output: ARGS -->` and `<!-- /NAME-output -->` (the estimates of `voicetune advise`): a test
of its own re-runs the command and compares.

What a figure is: a number with a decimal point (2.406, 6.9e-05), a thousands separator (9,684), or
a trailing x or % (2.80x, 44.1%, 46%). Plain integers ("40 steps", "2 cores") are settings and counts,
not figures. Version numbers (Axolotl 0.19, Python 3.11, 0.19.0) and numbers inside names
(Llama-3.1-8B) are not figures either.

Where it must be found: a results file is a file under benchmarks/results/ that git tracks, other than
a README.md there (those are notes written by people; the figures must come from what a script wrote:
JSON, JSONL, logs, generated reports). A figure is searched in the results files its block cites (a
block is a paragraph, a list item or a table; a citation is a path in backticks or a link target that
names a file or folder under benchmarks/results/, in full or by its file name); a block that cites none
uses every citation of its section; a section that cites none, every results file. A block that cites
a results path no commit holds fails.

How numbers compare: "9,684" is 9684; a figure is found when a number in a results file rounds to it
at the figure's own precision (3.88 matches 3.8812, 2.6x matches 2.62 or "2.62x", 9,684 matches
9684.3); a percentage also matches a share (46% matches 0.4583); signs are ignored ("-1.5%" matches
-1.5); a figure followed by GiB, MiB, GB, MB or tokens/s is found only on a line that names that unit
too (or in a Markdown table whose first row names it). A ratio (2.02x) is also found when it is the
quotient of two found figures of its block (16,896 / 8,354).
"""

from __future__ import annotations

import argparse
import itertools
import math
import re
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

RESULTS_DIR = "benchmarks/results"
NOTES = "README.md"  # hand-written notes beside the results: not a source of figures
NOT_RESULTS = re.compile(
    r"step by step|where things go|private by default|what is guaranteed|install|usage|contribut",
    re.IGNORECASE,
)
FIGURE = re.compile(
    r"(?<![\w.,/-])(?<![A-Za-z]-)"  # not inside a word, a path, or a name such as Llama-3.1-8B
    r"(?P<sign>[-+−])?"
    r"(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+\.\d+(?:e[-+]?\d+)?|\d+(?=\s?[x×%]))"
    r"(?P<suffix>\s?[x×%])?"
    r"(?![\w.]*\d)(?!-[A-Za-z0-9])"
    r"(?=\s*(?P<unit>GiB|MiB|GB|MB|tokens/s)?)"
)
SOFTWARE = re.compile(
    r"\b(?:python|axolotl|torch|pytorch|cuda|transformers|peft|trl|accelerate|bitsandbytes|deepspeed|"
    r"liger|vllm|llama\.cpp|driver|version|v)\s*$",
    re.IGNORECASE,
)
UNIT_WORDS = {
    "GiB": ("gib",),
    "MiB": ("mib",),
    "GB": ("gb", "gib"),
    "MB": ("mb", "mib"),
    "tokens/s": ("token",),
}
POOL_NUMBER = re.compile(
    r"(?<![A-Za-z0-9_.])"
    r"(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\d,])|\d+(?:\.\d+)?(?:[eE][-+]?\d{1,3}(?![\w.]))?)"
)
CITATION = re.compile(r"`([^`]+)`|\]\(([^)\s]+)\)")
GENERATED = re.compile(r"<!-- ([\w-]+)-output:.*-->$")


@dataclass(frozen=True)
class Figure:
    text: str  # as written: "9,684", "44.1%", "-1.5%"
    value: float  # its absolute value
    decimals: int
    percent: bool
    ratio: bool
    unit: str | None  # GiB, MiB, GB, MB or tokens/s when that word follows it
    line: int  # 1-based line in the scanned file
    section: str


@dataclass
class Block:
    section: str
    first_line: int
    lines: list[str] = field(default_factory=list)


@dataclass
class Finding:
    figure: Figure
    where: str | None  # "path:line" of the number that backs it; None when none does
    searched: str  # which files were searched, in words
    problem: str | None = None  # a cited results path that no commit holds


# ------------------------------------------------------------------------------------------ Markdown


def blocks_of(markdown: str) -> list[Block]:
    """Paragraphs, list items and tables, each with the heading of its section; code left out."""
    blocks: list[Block] = []
    section = "(top)"
    current: Block | None = None
    fenced = False
    generated: str | None = None  # inside <!-- NAME-output: ... --> ... <!-- /NAME-output -->
    for number, line in enumerate(markdown.splitlines(), 1):
        stripped = line.strip()
        if generated is None and (start := GENERATED.match(stripped)):
            generated, current = start.group(1), None
            continue
        if generated is not None:
            if stripped == f"<!-- /{generated}-output -->":
                generated = None
            continue
        if stripped.startswith(("```", "~~~")):
            fenced, current = not fenced, None
            continue
        if fenced:
            continue
        if stripped.startswith("#"):
            section, current = stripped.lstrip("#").strip(), None
            continue
        if not stripped:
            current = None
            continue
        if current is None and line.startswith("    "):
            continue  # an indented code block
        is_item = bool(re.match(r"(?:[-*+]|\d+[.)])\s", stripped))
        is_row = stripped.startswith("|")
        if current is None or is_item or is_row != current.lines[-1].lstrip().startswith("|"):
            current = Block(section, number)
            blocks.append(current)
        current.lines.append(line)
    return blocks


def figures_in(block: Block) -> list[Figure]:
    found: list[Figure] = []
    for offset, raw in enumerate(block.lines):
        line = CITATION.sub(lambda m: " " * len(m.group(0)), raw)
        for match in FIGURE.finditer(line):
            if SOFTWARE.search(line[: match.start()]):
                continue
            num = match.group("num")
            suffix = (match.group("suffix") or "").strip()
            mantissa = num.lower().split("e")[0]
            found.append(
                Figure(
                    text=(match.group("sign") or "") + num + suffix,
                    value=abs(float(num.replace(",", ""))),
                    decimals=len(mantissa.split(".")[1]) if "." in mantissa else 0,
                    percent=suffix == "%",
                    ratio=suffix in ("x", "×"),
                    unit=match.group("unit"),
                    line=block.first_line + offset,
                    section=block.section,
                )
            )
    return found


def citations_in(lines: Iterable[str]) -> list[str]:
    """Paths named in backticks or link targets (words with a / or a file suffix)."""
    out = []
    for line in lines:
        for match in CITATION.finditer(line):
            for word in (match.group(1) or match.group(2) or "").split():
                word = word.strip("(),;:'\"")
                if ("/" in word or "." in word) and "<" not in word and not word.startswith("-"):
                    out.append(word)
    return out


# ------------------------------------------------------------------------------------ results files


class Results:
    """The committed results files, the numbers in each, and which files a citation names."""

    def __init__(self, root: Path, files: Iterable[str]) -> None:
        self.root = root
        self.files = sorted(f for f in files if Path(f).name != NOTES)
        self.notes = sorted(f for f in files if Path(f).name == NOTES)
        self._numbers: dict[str, list[tuple[float, int, str]]] = {}

    @classmethod
    def committed(cls, root: Path) -> Results:
        listing = subprocess.run(
            ["git", "-C", str(root), "ls-files", "-z", "--", RESULTS_DIR],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return cls(root, [name for name in listing.split("\0") if name])

    def resolve(self, cited: str) -> list[str] | None:
        """The results files a citation names; [] for a results path that no commit holds; None when
        it names no results path (a script, a test, a config)."""
        path = cited.removeprefix("./").rstrip("/")
        while path.startswith("../"):
            path = path[3:]
        everything = self.files + self.notes
        if path.startswith(RESULTS_DIR):
            named = [f for f in everything if f == path or f.startswith(path + "/")]
            return [f for f in named if f in self.files] if named else []
        named = [f for f in everything if f.endswith("/" + path) or f"/{path}/" in f]
        if not named:
            return None
        return [f for f in named if f in self.files]

    def numbers(self, name: str) -> list[tuple[float, int, str]]:
        """(absolute value, line number, the line in lower case) of every number in one file."""
        if name not in self._numbers:
            try:
                raw = (self.root / name).read_bytes()
            except OSError:
                raw = b""
            text = "" if b"\0" in raw[:8192] else raw.decode("utf-8", errors="replace")  # PNGs: no
            found = []
            header = ""  # a Markdown table's first row names the units of its columns
            for number, line in enumerate(text.split("\n"), 1):
                if not line.lstrip().startswith("|"):
                    header = ""
                elif not header:
                    header = line
                lower = (line + " " + header).lower()
                for match in POOL_NUMBER.finditer(line):
                    value = abs(float(match.group(0).replace(",", "")))
                    if math.isfinite(value):
                        found.append((value, number, lower))
            self._numbers[name] = found
        return self._numbers[name]

    def find(self, figure: Figure, names: Iterable[str]) -> str | None:
        words = UNIT_WORDS.get(figure.unit or "", ())
        for name in names:
            for value, number, line in self.numbers(name):
                if matches(figure, value) and (not words or any(w in line for w in words)):
                    return f"{name}:{number}"
        return None


def matches(figure: Figure, value: float) -> bool:
    """Does `value` (from a results file) round to the figure at the figure's own precision?"""
    if "e" in figure.text.lower():
        return math.isclose(value, figure.value, rel_tol=0.05)
    half = 0.5 * 10.0 ** (-figure.decimals) + 1e-9
    candidates = (value, value * 100) if figure.percent else (value,)
    return any(abs(c - figure.value) <= half for c in candidates)


# ------------------------------------------------------------------------------------------ checking


def check(markdown: str, results: Results) -> list[Finding]:
    """One finding per figure of the scanned sections, found or not."""
    blocks = [b for b in blocks_of(markdown) if not NOT_RESULTS.search(b.section)]
    by_section: dict[str, list[str]] = {}
    for block in blocks:
        by_section.setdefault(block.section, []).extend(citations_in(block.lines))
    findings: list[Finding] = []
    for block in blocks:
        figures = figures_in(block)
        if not figures:
            continue
        own = _resolve_all(citations_in(block.lines), results)
        missing = [cited for cited, files in own if not files]
        problem = f"cites {missing[0]}, which no commit holds as a results file" if missing else None
        files, searched = sorted({f for _, fs in own for f in fs}), "the files its block cites"
        if not own:
            section = _resolve_all(by_section[block.section], results)
            files, searched = sorted({f for _, fs in section for f in fs}), "the files its section cites"
        if not files and not missing:
            files, searched = results.files, f"any results file under {RESULTS_DIR}/"
        block_findings = [Finding(fig, results.find(fig, files), searched, problem) for fig in figures]
        _ratios_of_found_figures(block_findings)
        findings += block_findings
    return findings


def _resolve_all(cited: list[str], results: Results) -> list[tuple[str, list[str]]]:
    return [(c, files) for c in cited if (files := results.resolve(c)) is not None]


def _ratios_of_found_figures(findings: list[Finding]) -> None:
    """A ratio nobody wrote down (2.02x) is found when two found figures of its block give it."""
    found = [f.figure for f in findings if f.where and not f.figure.ratio and f.figure.value]
    for finding in findings:
        if finding.where or not finding.figure.ratio:
            continue
        for a, b in itertools.permutations(found, 2):
            if matches(finding.figure, a.value / b.value):
                finding.where = f"{a.text} / {b.text} (line {a.line})"
                break


def failures(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.where is None or f.problem]


def describe(finding: Finding, source: str) -> str:
    fig = finding.figure
    head = f"{source}:{fig.line}: {fig.text} (section '{fig.section}')"
    if finding.problem:
        return f"{head}: {finding.problem}"
    if finding.where is None:
        return f"{head}: in none of {finding.searched}"
    return f"{head}: {finding.where}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="List the figures of README.md (or other Markdown files) that no committed results "
        "file under benchmarks/results/ holds; exit 1 if there are any.",
    )
    parser.add_argument("files", nargs="*", type=Path, help="Markdown files (default: README.md)")
    parser.add_argument("--trace", action="store_true", help="print every figure and where it was found")
    parser.add_argument(
        "--root", type=Path, default=Path(__file__).resolve().parents[1], help="the checkout (default: here)"
    )
    args = parser.parse_args(argv)
    root = args.root.resolve()
    results = Results.committed(root)
    failed_total = 0
    for path in args.files or [root / "README.md"]:
        findings = check(path.read_text(encoding="utf-8"), results)
        failed = failures(findings)
        failed_total += len(failed)
        for finding in findings if args.trace else failed:
            print(describe(finding, str(path)))
        print(f"{path}: {len(findings)} figures, {len(failed)} not found in a committed results file")
    return 1 if failed_total else 0


if __name__ == "__main__":
    sys.exit(main())
