"""The embedded demo model: a real GGUF from PyPI, converted into a normal safetensors folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from voicetune.core.errors import VoicetuneError
from voicetune.model.base_model import find_demo_gguf


def test_converted_folder_is_safetensors_with_a_chat_template(base_model_dir: Path) -> None:
    names = {p.name for p in base_model_dir.iterdir()}
    assert "model.safetensors" in names and "config.json" in names
    assert not any(n.endswith((".bin", ".pt", ".pkl")) for n in names)
    manifest = json.loads((base_model_dir / "manifest.json").read_text())
    assert manifest["model"]["architecture"] == "LlamaForCausalLM"
    assert manifest["model"]["parameters"] > 100_000_000


def test_end_of_turn_is_the_eos_token(base_model_dir: Path) -> None:
    """GGUF metadata says eos = <|im_start|>; a model trained with that never learns to stop."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    assert tokenizer.eos_token == "<|im_end|>"
    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}], tokenize=False
    )
    assert chat.rstrip().endswith(tokenizer.eos_token)
    generation = json.loads((base_model_dir / "generation_config.json").read_text())
    assert generation["eos_token_id"] == tokenizer.eos_token_id


def test_rerun_is_a_no_op(base_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from voicetune.model.base_model import ensure_base_model

    before = (base_model_dir / "model.safetensors").stat().st_mtime_ns
    ensure_base_model(base_model_dir)
    assert "up to date" in capsys.readouterr().out
    assert (base_model_dir / "model.safetensors").stat().st_mtime_ns == before


def test_missing_gguf_file_is_one_clear_error(tmp_path: Path) -> None:
    from voicetune.cli import main

    assert main(["base-model", "--gguf", str(tmp_path / "nope.gguf")]) == 1
    with pytest.raises(VoicetuneError):
        from voicetune.model.base_model import run

        run(type("A", (), {"gguf": tmp_path / "nope.gguf", "out": None})())


def test_demo_gguf_is_found_without_importing_its_package() -> None:
    assert find_demo_gguf().stat().st_size > 50_000_000
