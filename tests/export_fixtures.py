"""One real export per test session, shared by the export and serve tests: a LoRA adapter on the real
SmolLM2 base, merged by `voicetune merge`, exported by `voicetune export` (llama.cpp's converter and
quantiser, then the check in llama.cpp) - the same path a user's run takes, on a small model."""

from __future__ import annotations

import json
import os
from pathlib import Path

from lora_fixtures import AUTHOR_TEXTS, make_run, shared_adapter

from voicetune.core.manifest import build_manifest, sha256_text, write_manifest
from voicetune.core.prompting import PromptFormat, build_messages, prompt_format_from_settings

SYSTEM_PROMPT = "You are Saki. Write in your own voice."
RUN = "demo"


def make_prepared_data(root: Path, fmt: PromptFormat | None = None) -> Path:
    """data/processed/demo/ with val.jsonl/test.jsonl chat rows as `prepare` writes them, and its
    manifest (system prompt and templates recorded in settings)."""
    fmt = fmt or prompt_format_from_settings({"system_prompt": SYSTEM_PROMPT})
    data_dir = root / "data" / "processed" / RUN
    data_dir.mkdir(parents=True, exist_ok=True)
    texts = [AUTHOR_TEXTS[0], AUTHOR_TEXTS[-1]]
    rows = []
    for index, text in enumerate(texts * 2):
        words = text.split()
        cut = 12 + 5 * index
        opening, answer = " ".join(words[:cut]), " ".join(words[cut : cut + 40])
        messages = build_messages("continue", opening, fmt)
        rows.append({"messages": [*messages, {"role": "assistant", "content": answer}], "mode": "continue"})
    outputs = {}
    for split, part in (("val", rows[:2]), ("test", rows[2:])):
        text = "".join(json.dumps(row) + "\n" for row in part)
        (data_dir / f"{split}.jsonl").write_text(text, encoding="utf-8")
        outputs[f"{split}.jsonl"] = sha256_text(text)
    settings = {"system_prompt": fmt.system_prompt, "prompts": dict(fmt.templates)}
    write_manifest(data_dir, build_manifest("prepare", "fixture-data", settings, {}, outputs))
    return data_dir


def shared_export(tmp_path_factory: object, base_dir: Path) -> Path:
    """A project home with merged_models/demo/ and its gguf/ export, built once per test session."""
    from voicetune.cli import main

    home = Path(tmp_path_factory.getbasetemp()) / "shared-export-home"  # type: ignore[attr-defined]
    if (home / "merged_models" / RUN / "gguf" / "manifest.json").is_file():
        return home
    data = make_prepared_data(home)
    make_run(home, RUN, base_dir, shared_adapter(tmp_path_factory, base_dir), data_dir=data)
    (home / "empty.yaml").write_text("{}\n")
    previous = os.environ.get("VOICETUNE_HOME")
    os.environ["VOICETUNE_HOME"] = str(home)
    try:
        assert main(["merge", "--run", RUN, "--config", str(home / "empty.yaml")]) == 0
        assert main(["export", "--run", RUN, "--prompts", "4", "--max-tokens", "64"]) == 0
    finally:
        if previous is None:
            os.environ.pop("VOICETUNE_HOME", None)
        else:
            os.environ["VOICETUNE_HOME"] = previous
    return home
