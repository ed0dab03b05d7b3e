"""The whole data step on real files of every format, with bad inputs mixed in: outputs Axolotl
accepts, a held-out test split, exact lengths after the chat template, a manifest, idempotent
re-runs, and one clear error when the corpus cannot be used."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.prepare_fixtures import good_corpus, prose, write_html
from voicetune.core.errors import MissingArtifactError, VoicetuneError
from voicetune.data.prepare import DataSettings, PrepareResult, load_tokenizer, prepare_corpus

SEQ = 256


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("VOICETUNE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _settings(input_dir: Path, base: Path, **extra: Any) -> DataSettings:
    values: dict[str, Any] = {
        "input": str(input_dir),
        "name": "t",
        "base_model": str(base),
        "sequence_len": SEQ,
        "min_words": 500,
    }
    values.update(extra)
    return DataSettings(**values)


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "raw"
    good_corpus(root)
    # the same book again as HTML: a near-duplicate document that must be dropped before the split
    book = (root / "book.txt").read_text(encoding="utf-8")
    paragraphs = [p for p in book.split("\n\n") if len(p.split()) > 20]
    write_html(root / "book-copy.html", "Garden Stories", [" ".join(p.split()) for p in paragraphs])
    (root / "empty.txt").write_bytes(b"")
    (root / "broken.pdf").write_bytes(b"%PDF-1.4 nothing else")
    return root


def test_prepare_writes_axolotl_ready_splits_with_a_manifest(
    corpus: Path, home: Path, base_model_dir: Path
) -> None:
    lines: list[str] = []
    result = prepare_corpus(_settings(corpus, base_model_dir), log=lines.append)
    assert result.status == "written"
    out = home / "data" / "processed" / "t"
    assert result.output_dir == out.resolve()
    for name in ["train.jsonl", "val.jsonl", "test.jsonl", "manifest.json"]:
        assert (out / name).is_file(), name

    manifest = json.loads((out / "manifest.json").read_text())
    settings = manifest["settings"]
    assert settings["name"] == "t"
    assert (out / settings["base_model"]).resolve() == base_model_dir.resolve()  # stored relative to out
    assert settings["sequence_len"] == SEQ and settings["format"] == "chat_template"
    assert settings["modes"] == ["continue", "write", "rewrite"] and settings["seed"] == 42
    assert set(manifest["inputs"]) >= {"book.txt", "notes.md", "nested/essay.pdf", "nested/deeper/novel.epub"}
    assert all(len(value) == 64 for key, value in manifest["inputs"].items() if key != "empty.txt")
    dropped = {item["file"]: item["reason"] for item in manifest["dropped"]}
    assert "empty" in dropped["empty.txt"] and "corrupt" in dropped["broken.pdf"]
    # the same book twice: the first in path order stays, the other is named as its duplicate
    assert "duplicate of book-copy.html" in dropped["book.txt"] and "book-copy.html" not in dropped
    assert any("skipped broken.pdf" in line for line in lines)  # one line each, printed
    for split in ["train", "val", "test"]:
        counts = manifest["counts"][split]
        assert counts["docs"] >= 1 and counts["pairs"] >= 1 and counts["chunks"] >= 1
        assert manifest["token_stats"][split]["max"] <= SEQ
    assert manifest["versions"]["pypdf"] != "not installed"
    assert manifest["outputs"]["train.jsonl"]

    tokenizer = load_tokenizer(base_model_dir)
    train, val, test = (_rows(out / f"{split}.jsonl") for split in ["train", "val", "test"])
    assert {row["mode"] for row in train} == {"continue", "write", "rewrite"}
    conversations = [row["messages"] for row in train + val + test]
    for messages in conversations:
        assert [m["role"] for m in messages] == ["system", "user", "assistant"]
        assert all(m["content"].strip() for m in messages)
    for split, rows in [("train", train), ("val", val), ("test", test)]:
        rendered = tokenizer.apply_chat_template([row["messages"] for row in rows], tokenize=False)
        lengths = [len(ids) for ids in tokenizer(rendered, add_special_tokens=False)["input_ids"]]
        assert max(lengths) <= SEQ  # exact, after the base model's own chat template
        assert manifest["token_stats"][split]["total"] == sum(lengths)
        assert manifest["token_stats"][split]["max"] == max(lengths)

    # the held-out split: its documents never reach training, as files or as text
    test_docs = {p.stem for p in (out / "texts" / "test").glob("*.txt")}
    assert test_docs and test_docs == {row["doc"] for row in test}
    assert not test_docs & {row["doc"] for row in train + val}
    train_text = " ".join(row["messages"][2]["content"] + row["messages"][1]["content"] for row in train)
    for path in (out / "texts" / "test").glob("*.txt"):
        for sentence in path.read_text().split(". ")[:5]:
            assert sentence.strip() not in train_text
    words = sum(len(p.read_text().split()) for p in (out / "texts").rglob("*.txt"))
    assert words == manifest["words"]


def test_rerun_is_up_to_date_and_a_changed_input_rebuilds(
    corpus: Path, home: Path, base_model_dir: Path
) -> None:
    settings = _settings(corpus, base_model_dir)
    first = prepare_corpus(settings)
    manifest = first.output_dir / "manifest.json"
    stamp = manifest.stat().st_mtime_ns
    lines: list[str] = []
    again = prepare_corpus(settings, log=lines.append)
    assert again.status == "up_to_date" and manifest.stat().st_mtime_ns == stamp
    assert any("up to date" in line for line in lines)
    with (corpus / "notes.md").open("a", encoding="utf-8") as handle:
        handle.write("\n\n" + prose(99)[0] + "\n")
    rebuilt = prepare_corpus(settings)
    assert rebuilt.status == "written"
    assert rebuilt.manifest["fingerprint"] != first.manifest["fingerprint"]
    changed = prepare_corpus(_settings(corpus, base_model_dir, seed=7))  # a changed setting rebuilds too
    assert changed.status == "written"
    assert not list(first.output_dir.parent.glob(".t.tmp-*"))  # no temporary folder left behind


def test_dry_run_lists_and_writes_nothing(corpus: Path, home: Path, tmp_path: Path) -> None:
    lines: list[str] = []
    result = prepare_corpus(_settings(corpus, tmp_path / "no-model"), dry_run=True, log=lines.append)
    assert result.status == "dry_run"
    assert not (home / "data" / "processed").exists()
    text = "\n".join(lines)
    assert "book.txt" in text and "nested/essay.pdf" in text and "words" in text and "nothing written" in text


def test_small_corpus_is_split_by_sections_with_a_warning(
    tmp_path: Path, home: Path, base_model_dir: Path
) -> None:
    root = tmp_path / "one"
    root.mkdir()
    stories = [f"STORY NUMBER {n}\n\n" + "\n\n".join(prose(200 + n, paragraphs=4)) for n in range(1, 11)]
    (root / "collection.txt").write_text("\n\n\n".join(stories), encoding="utf-8")
    result = prepare_corpus(_settings(root, base_model_dir))
    assert result.manifest["settings"]["split_unit"] == "section"
    assert any("only 1 document" in warning for warning in result.warnings)
    units = result.manifest["units"]
    assert all(len(units[split]) >= 1 for split in ["train", "val", "test"])
    assert not set(units["test"]) & set(units["train"])


def test_completion_format_writes_text_rows_within_the_window(
    corpus: Path, home: Path, base_model_dir: Path
) -> None:
    result = prepare_corpus(_settings(corpus, base_model_dir, format="completion", sequence_len=128))
    rows = _rows(result.output_dir / "train.jsonl")
    assert rows and all(set(row) == {"text", "mode", "doc", "source"} for row in rows)
    tokenizer = load_tokenizer(base_model_dir)
    counts = [len(ids) for ids in tokenizer([r["text"] for r in rows], add_special_tokens=True)["input_ids"]]
    assert max(counts) + 1 <= 128  # + the EOS token Axolotl appends


def test_too_small_nothing_usable_and_missing_model_fail_clearly(
    tmp_path: Path, home: Path, base_model_dir: Path
) -> None:
    root = tmp_path / "small"
    root.mkdir()
    (root / "a.txt").write_text("\n\n".join(prose(300, paragraphs=2)), encoding="utf-8")
    with pytest.raises(VoicetuneError, match=r"add about [\d,]+ more words") as too_small:
        prepare_corpus(_settings(root, base_model_dir, min_words=5000))
    assert too_small.value.exit_code == 1

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.txt").write_bytes(b"")
    (bad / "photo.md").write_bytes(bytes(range(256)) * 20)
    with pytest.raises(VoicetuneError, match="nothing usable") as nothing:
        prepare_corpus(_settings(bad, base_model_dir))
    assert nothing.value.exit_code == 1

    with pytest.raises(MissingArtifactError, match="voicetune base-model") as missing:
        prepare_corpus(_settings(root, tmp_path / "no-model"))
    assert missing.value.exit_code == 2

    with pytest.raises(VoicetuneError, match="not found"):
        prepare_corpus(_settings(tmp_path / "nowhere", base_model_dir))


def test_script_help_and_cli_exit_codes(tmp_path: Path, repo_root: Path, base_model_dir: Path) -> None:
    script = repo_root / "training" / "1_prepare_data.sh"
    shown = subprocess.run([str(script), "--help"], text=True, capture_output=True, timeout=120)
    assert shown.returncode == 0 and "--dry-run" in shown.stdout and "--sequence-len" in shown.stdout
    root = tmp_path / "in"
    root.mkdir()
    (root / "a.txt").write_text("\n\n".join(prose(400, paragraphs=2)), encoding="utf-8")
    env = {"VOICETUNE_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}
    small = subprocess.run(
        [str(script), "--input", str(root), "--base-model", str(base_model_dir), "--min-words", "9000"],
        text=True,
        capture_output=True,
        timeout=300,
        env=env,
    )
    assert small.returncode == 1
    errors = [line for line in small.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "more words" in errors[0]  # one line: what, where, the fix
    missing = subprocess.run(
        [str(script), "--input", str(root), "--base-model", str(tmp_path / "none"), "--min-words", "10"],
        text=True,
        capture_output=True,
        timeout=300,
        env=env,
    )
    assert missing.returncode == 2 and "voicetune base-model" in missing.stderr


def test_prepare_result_type() -> None:
    assert PrepareResult("dry_run", Path(".")).manifest == {}
