"""Prepared-data folders for the training tests, in the contract of `voicetune prepare`
(docs/ARCHITECTURE.md): train.jsonl / val.jsonl in Axolotl chat_template format + manifest.json.

The text is real prose (the bundled demo author, Saki, public domain), cut into short passages, so
the tokenizer, the chat template and Axolotl see what they see in the demo, only less of it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from voicetune.core.manifest import build_manifest, fingerprint, sha256_file, write_manifest

REPO = Path(__file__).resolve().parent.parent
BOOK = REPO / "data" / "demo" / "author" / "reginald.txt"
PROMPT = "Write a passage in the author's voice."


def passages(words_each: int = 60, limit: int = 200) -> list[str]:
    """Passages of about words_each words from the body of a demo book (Gutenberg header/footer cut)."""
    text = BOOK.read_text(encoding="utf-8", errors="replace")
    start = re.search(r"\*\*\* ?START OF.*\n", text)
    end = re.search(r"\*\*\* ?END OF", text)
    body = text[start.end() if start else 0 : end.start() if end else None]
    words = re.sub(r"\s+", " ", body).split(" ")[300:]  # past the title pages
    out = []
    for i in range(0, len(words) - words_each, words_each):
        out.append(" ".join(words[i : i + words_each]).strip())
        if len(out) >= limit:
            break
    return out


def write_prepared(
    folder: Path,
    n_train: int = 24,
    n_val: int = 4,
    words_each: int = 60,
    sequence_len: int = 256,
    base_model: str = "models/base",
    fmt: str = "chat_template",
    extra_long: int = 0,
) -> Path:
    """A prepared-data folder; `extra_long` adds training examples far over sequence_len."""
    folder.mkdir(parents=True, exist_ok=True)
    texts = passages(words_each, n_train + n_val)
    assert len(texts) >= n_train + n_val, "demo book too short for this fixture"
    long_text = " ".join(texts) if extra_long else ""

    def row(text: str, doc: str) -> dict[str, object]:
        if fmt == "completion":
            return {"text": text, "doc": doc}
        return {
            "messages": [{"role": "user", "content": PROMPT}, {"role": "assistant", "content": text}],
            "mode": "write",
            "doc": doc,
        }

    train = [row(t, f"reginald-{i}") for i, t in enumerate(texts[:n_train])]
    train += [row(long_text, f"long-{i}") for i in range(extra_long)]
    val = [row(t, f"reginald-val-{i}") for i, t in enumerate(texts[n_train : n_train + n_val])]
    for name, rows in (("train.jsonl", train), ("val.jsonl", val)):
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    outputs = {name: sha256_file(folder / name) for name in ("train.jsonl", "val.jsonl")}
    settings = {"base_model": base_model, "sequence_len": sequence_len, "format": fmt}
    write_manifest(
        folder,
        build_manifest(
            "prepare",
            fingerprint(settings, outputs),
            settings,
            {},
            outputs,
            counts={"train": len(train), "val": len(val)},
        ),
    )
    return folder
