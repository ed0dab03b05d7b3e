"""`voicetune export`: GGUF files made by llama.cpp's own converter and quantiser, each loaded by the
real llama.cpp runtime (llama-cpp-python) and compared with the merged transformers model; an Ollama
Modelfile with the model's chat template in Ollama's syntax; LM Studio's folder layout; a manifest
whose re-run is a no-op. The real export runs once per session (tests/export_fixtures.py)."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest
from export_fixtures import RUN, SYSTEM_PROMPT, shared_export

from voicetune.cli import main
from voicetune.core.errors import VoicetuneError
from voicetune.model import export

BYTE_LEVEL_FROM_GGUF = {  # what transformers' GGUF loader writes for SmolLM2 (shape of it)
    "pre_tokenizer": {
        "type": "ByteLevel",
        "add_prefix_space": False,
        "trim_offsets": False,
        "use_regex": True,
    },
    "decoder": {
        "type": "Sequence",
        "decoders": [{"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Replace"}, {"type": "ByteLevel"}],
    },
    "model": {"type": "BPE", "byte_fallback": True, "vocab": {"Ġthe": 0, "<|im_end|>": 1}, "merges": []},
}


def test_the_staged_tokenizer_is_byte_level_bpe() -> None:
    fixed = export.converter_tokenizer(BYTE_LEVEL_FROM_GGUF)
    assert fixed is not None
    assert fixed["model"]["byte_fallback"] is False
    assert fixed["decoder"]["type"] == "ByteLevel"
    assert fixed["model"]["vocab"] == BYTE_LEVEL_FROM_GGUF["model"]["vocab"]
    assert export.converter_tokenizer(fixed) is None, "an already standard tokenizer is left as it is"


def test_a_sentencepiece_vocabulary_is_left_to_the_converter() -> None:
    spm = {**BYTE_LEVEL_FROM_GGUF, "model": {"type": "BPE", "byte_fallback": True, "vocab": {"▁the": 0}}}
    assert export.converter_tokenizer(spm) is None
    assert (
        export.converter_tokenizer({**BYTE_LEVEL_FROM_GGUF, "pre_tokenizer": {"type": "Metaspace"}}) is None
    )


def test_the_ollama_template_is_the_models_chatml(base_model_dir: Path) -> None:
    """The Go template's Python twin renders exactly what the model's own Jinja template renders."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(base_model_dir))
    is_chatml, default = export.chatml_default_system(tokenizer, SYSTEM_PROMPT)
    assert is_chatml
    assert default == "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    template = export.ollama_chatml_template(default)
    assert template.startswith("{{- range $i, $m := .Messages }}")
    assert (
        "<|im_start|>{{ $m.Role }}\n{{ $m.Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n" in template
    )
    text = export.modelfile("demo-Q4_K_M.gguf", template, SYSTEM_PROMPT, ["<|im_end|>", "<|im_start|>"])
    assert text.splitlines()[1] == "FROM ./demo-Q4_K_M.gguf"
    assert f'SYSTEM """{SYSTEM_PROMPT}"""' in text
    assert 'PARAMETER stop "<|im_end|>"' in text


def test_without_the_converter_it_names_the_setup_script(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LLAMA_CPP_DIR", raising=False)
    monkeypatch.setenv("VOICETUNE_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(VoicetuneError) as error:
        export.find_converter(None)
    assert error.value.exit_code == 3
    assert "setup/5_install_export.sh" in str(error.value)


def test_an_unknown_quant_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from voicetune.core.manifest import build_manifest, write_manifest

    model = tmp_path / "merged_models" / "mine"
    model.mkdir(parents=True)
    write_manifest(model, build_manifest("merge", "x", {}, {}, {}))
    parser = argparse.ArgumentParser()
    export.configure_parser(parser)
    with pytest.raises(VoicetuneError, match="unknown --quants q3"):
        export.make_plan(parser.parse_args(["--model", str(model), "--quants", "f16,q3"]))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, base_model_dir: Path) -> Path:
    return shared_export(tmp_path_factory, base_model_dir) / "merged_models" / RUN / "gguf"


def test_export_writes_the_files_and_llama_cpp_agrees_with_transformers(exported: Path) -> None:
    for name in ("demo-F16.gguf", "demo-Q8_0.gguf", "demo-Q4_K_M.gguf"):
        assert (exported / name).stat().st_size > 50 << 20
        assert (exported / "lmstudio" / "voicetune" / "demo-GGUF" / name).is_file()
    modelfile = (exported / "Modelfile").read_text()
    assert "FROM ./demo-Q4_K_M.gguf" in modelfile and 'TEMPLATE """' in modelfile
    assert f'SYSTEM """{SYSTEM_PROMPT}"""' in modelfile
    assert (exported / "Modelfile.F16").read_text().count("FROM ./demo-F16.gguf") == 1
    manifest = json.loads((exported / "manifest.json").read_text())
    lines = manifest["check"]
    assert [line.split(":")[0] for line in lines] == ["llama.cpp F16", "llama.cpp Q8_0", "llama.cpp Q4_K_M"]
    f16 = re.search(r"greedy tokens match ([\d.]+)% \(([\d,]+) tokens, 4 prompts\)", lines[0])
    assert f16 and float(f16.group(1)) >= 95.0 and int(f16.group(2).replace(",", "")) > 100
    for line in lines:
        assert "chat template ids identical 4/4" in line
        assert "stops at <|im_end|>" in line and "NOT" not in line
    details = manifest["check_details"]
    assert details[0]["agreement"] >= 0.95
    assert abs(details[0]["perplexity"] / details[0]["reference_perplexity"] - 1) < 0.01


def test_the_gguf_carries_the_chat_template_and_im_end(exported: Path) -> None:
    """Read back with gguf-py: a byte-level BPE vocabulary (not SentencePiece), SmolLM's
    pre-tokenizer, the merged model's chat template, and <|im_end|> as end of generation."""
    from gguf import GGUFReader
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(exported.parent))
    reader = GGUFReader(str(exported / "demo-Q4_K_M.gguf"))

    def value(key: str) -> object:
        return reader.fields[key].contents()

    assert value("tokenizer.ggml.model") == "gpt2"
    assert value("tokenizer.ggml.pre") == "smollm"
    assert value("tokenizer.chat_template") == tokenizer.chat_template
    assert value("tokenizer.ggml.eos_token_id") == tokenizer.convert_tokens_to_ids("<|im_end|>")


def test_a_rerun_is_a_no_op(
    exported: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VOICETUNE_HOME", str(exported.parent.parent.parent))
    before = (exported / "manifest.json").stat().st_mtime_ns
    assert main(["export", "--run", RUN, "--prompts", "4", "--max-tokens", "64"]) == 0
    out = capsys.readouterr().out
    assert "up to date" in out and "llama.cpp F16: greedy tokens match" in out
    assert (exported / "manifest.json").stat().st_mtime_ns == before
