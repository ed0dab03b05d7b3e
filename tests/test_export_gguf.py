"""GGUF export: llama.cpp's own converter when a checkout is given, the exact commands otherwise,
and an Ollama Modelfile with the system prompt the model was trained with."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from lora_fixtures import make_data_dir, make_run, shared_adapter

from voicetune.cli import main
from voicetune.cli import main as cli_main
from voicetune.core.errors import VoicetuneError
from voicetune.model.export import CONVERTER, modelfile


def test_without_llama_cpp_it_prints_the_exact_commands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import argparse

    from voicetune.model import export as export_gguf

    monkeypatch.delenv("LLAMA_CPP_DIR", raising=False)
    model = tmp_path / "merged_models" / "mine"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    parser = argparse.ArgumentParser()
    export_gguf.configure_parser(parser)
    with pytest.raises(VoicetuneError) as error:
        export_gguf.run(parser.parse_args(["--model", str(model), "--outtype", "q8_0"]))
    message = str(error.value)
    assert error.value.exit_code == 3
    assert "git clone --depth 1 https://github.com/ggml-org/llama.cpp" in message
    assert (
        f"{CONVERTER} {model} --outfile {tmp_path / 'merged_models' / 'mine-gguf' / 'mine-q8_0.gguf'}"
        in message
    )
    assert "llama-quantize" in message


def test_modelfile_carries_the_training_system_prompt_and_stop_tokens() -> None:
    text = modelfile("demo-f16.gguf", "You are the author.", ["<|im_end|>"])
    assert text.splitlines()[0] == "FROM ./demo-f16.gguf"
    assert 'PARAMETER stop "<|im_end|>"' in text
    assert 'SYSTEM """You are the author."""' in text


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("LLAMA_CPP_DIR"), reason="needs a llama.cpp checkout in $LLAMA_CPP_DIR"
)
def test_exported_gguf_reproduces_the_merged_model(
    tmp_path_factory: pytest.TempPathFactory, base_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real conversion with llama.cpp's script, then the GGUF loaded back by transformers."""
    from voicetune.model.export import compare_logits

    home = tmp_path_factory.mktemp("gguf home")
    data = make_data_dir(home, ["x"], ["The sea was calm."])
    make_run(home, "demo", base_model_dir, shared_adapter(tmp_path_factory, base_model_dir), data_dir=data)
    (home / "empty.yaml").write_text("{}\n")
    monkeypatch.setenv("VOICETUNE_HOME", str(home))
    assert main(["merge", "--run", "demo", "--config", str(home / "empty.yaml")]) == 0
    assert cli_main(["export-gguf", "--run", "demo", "--outtype", "f32"]) == 0
    out = home / "merged_models" / "demo-gguf"
    gguf = out / "demo-f32.gguf"
    assert gguf.stat().st_size > 100 << 20
    assert "SYSTEM" in (out / "Modelfile").read_text()
    assert compare_logits(home / "merged_models" / "demo", gguf) < 1e-3
    shutil.rmtree(out)
    assert json.loads((home / "merged_models" / "demo" / "manifest.json").read_text())["step"] == "merge"
