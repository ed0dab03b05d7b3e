"""training/5_serve.sh: vLLM's OpenAI server on the merged model on a GPU (one clear line when vLLM is
missing), llama-cpp-python's OpenAI server on the exported GGUF on a CPU. vLLM cannot run here (no
GPU), so one test puts a stand-in `vllm` package (a fake, named so) on the path that only records how
it was started. The CPU server is real: started by the script on a real export, asked by the official
`openai` client for a chat completion and a streamed one, then stopped."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from export_fixtures import RUN, SYSTEM_PROMPT, shared_export

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "training" / "5_serve.sh"


@pytest.fixture()
def home(tmp_path: Path) -> Path:
    """A project home with a merged model folder (manifest + config; weights are not needed here)."""
    merged = tmp_path / "merged_models" / "mine"
    merged.mkdir(parents=True)
    (merged / "config.json").write_text("{}")
    (merged / "manifest.json").write_text(json.dumps({"step": "merge", "outputs": {}}))
    return tmp_path


def _serve(home: Path, *args: str, pythonpath: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, VOICETUNE_HOME=str(home), VOICETUNE_VENV=str(Path(sys.executable).parent.parent))
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return subprocess.run([str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_without_vllm_says_how_to_install_it(home: Path) -> None:
    result = _serve(home, "--run", "mine", "--backend", "vllm")
    assert result.returncode == 3
    assert result.stderr.strip().splitlines() == [
        "error: vLLM is not installed: install it with pip install -e '.[serve]' "
        "(vLLM needs Linux and an NVIDIA GPU) (or serve the GGUF on the CPU: --backend llama-cpp), "
        "then run this again"
    ]


def test_dry_run_prints_the_server_command(home: Path) -> None:
    result = _serve(
        home, "--run", "mine", "--backend", "vllm", "--port", "8123", "--dry-run", "--", "--enforce-eager"
    )
    assert result.returncode == 0, result.stderr
    command = result.stdout.split()
    assert command[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert command[command.index("--model") + 1] == str(home / "merged_models" / "mine")
    assert command[command.index("--served-model-name") + 1] == "mine"
    assert command[command.index("--port") + 1] == "8123"
    assert command[command.index("--host") + 1] == "127.0.0.1", "private by default"
    assert command[-1] == "--enforce-eager"


def test_an_unmerged_run_names_the_merge_script(home: Path) -> None:
    result = _serve(home, "--run", "other")
    assert result.returncode == 2
    assert "3_merge_adapter.sh" in result.stderr


def test_vllm_is_started_with_the_merged_model_and_no_usage_stats(home: Path, tmp_path: Path) -> None:
    fake = tmp_path / "fake-vllm"
    server = fake / "vllm" / "entrypoints" / "openai"
    server.mkdir(parents=True)
    for package in (fake / "vllm", fake / "vllm" / "entrypoints", server):
        (package / "__init__.py").write_text("")
    record = tmp_path / "started.json"
    (server / "api_server.py").write_text(
        "import json, os, sys\n"
        f"json.dump({{'argv': sys.argv[1:], 'stats': os.environ.get('VLLM_NO_USAGE_STATS'),"
        f" 'hub': os.environ.get('HF_HUB_OFFLINE')}}, open({str(record)!r}, 'w'))\n"
    )
    result = _serve(home, "--run", "mine", "--backend", "vllm", pythonpath=f"{fake}{os.pathsep}{REPO}")
    assert result.returncode == 0, result.stderr
    assert "serving" in result.stdout and "http://127.0.0.1:8000/v1" in result.stdout
    started = json.loads(record.read_text())
    argv = started["argv"]
    assert argv[argv.index("--model") + 1] == str(home / "merged_models" / "mine")
    assert argv[argv.index("--served-model-name") + 1] == "mine"
    assert started["stats"] == "1" and started["hub"] == "1"


def test_help() -> None:
    result = subprocess.run([str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "OpenAI-compatible" in result.stdout and "--served-model-name" in result.stdout


def test_on_a_cpu_without_an_export_it_names_the_export_script(home: Path) -> None:
    result = _serve(home, "--run", "mine", "--backend", "llama-cpp")
    assert result.returncode == 2
    assert "training/4_export.sh" in result.stderr


def test_cpu_dry_run_serves_the_exported_gguf(home: Path) -> None:
    from voicetune.core.manifest import build_manifest, write_manifest

    gguf = home / "merged_models" / "mine" / "gguf"
    gguf.mkdir()
    (gguf / "mine-Q4_K_M.gguf").write_bytes(b"GGUF")
    write_manifest(
        gguf,
        build_manifest(
            "export", "x", {}, {}, {"mine-Q4_K_M.gguf": "x"}, files={"q4_k_m": "mine-Q4_K_M.gguf"}
        ),
    )
    result = _serve(home, "--run", "mine", "--backend", "llama-cpp", "--port", "8124", "--dry-run")
    assert result.returncode == 0, result.stderr
    command = result.stdout.split()
    assert command[1:3] == ["-m", "llama_cpp.server"]
    assert command[command.index("--model") + 1] == str(gguf / "mine-Q4_K_M.gguf")
    assert command[command.index("--host") + 1] == "127.0.0.1", "private by default"
    assert command[command.index("--model_alias") + 1] == "mine"
    missing = _serve(home, "--run", "mine", "--backend", "llama-cpp", "--quant", "f16", "--dry-run")
    assert missing.returncode == 2 and "--quants q4_k_m,f16" in missing.stderr


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until_serving(port: int, server: subprocess.Popen[bytes], log: Path, seconds: float = 300) -> None:
    import time
    import urllib.request

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the server exited with {server.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5):
                return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"the server did not answer within {seconds:.0f} s: {log.read_text()[-2000:]}")


def test_the_cpu_server_answers_in_the_voice_format_and_stops_at_the_end_of_turn(
    tmp_path_factory: pytest.TempPathFactory, base_model_dir: Path, tmp_path: Path
) -> None:
    from openai import OpenAI
    from transformers import AutoTokenizer

    from voicetune.core.prompting import build_messages, prompt_format_from_settings

    home = shared_export(tmp_path_factory, base_model_dir)
    port = _free_port()
    log = tmp_path / "server.log"
    env = dict(os.environ, VOICETUNE_HOME=str(home), VOICETUNE_VENV=str(Path(sys.executable).parent.parent))
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [str(SCRIPT), "--run", RUN, "--backend", "llama-cpp", "--port", str(port)],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        _wait_until_serving(port, server, log)
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="local", max_retries=0, timeout=300)
        fmt = prompt_format_from_settings({"system_prompt": SYSTEM_PROMPT})
        messages = build_messages("write", "a grey morning at the harbour", fmt, words=10)
        reply = client.chat.completions.create(model=RUN, messages=messages, max_tokens=400, temperature=0)  # type: ignore[arg-type]
        choice = reply.choices[0]
        text = choice.message.content or ""
        assert choice.finish_reason == "stop", f"no end of turn within 400 tokens: {text!r}"
        assert text.strip() and "<|im_end|>" not in text and "<|im_start|>" not in text
        # the server built the voice's prompt: the model's chat template, token for token
        tokenizer = AutoTokenizer.from_pretrained(str(home / "merged_models" / RUN))
        ids = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=False
        )
        assert reply.usage is not None and reply.usage.prompt_tokens == len(ids)
        # A repeated prompt is served from llama.cpp's KV cache with its last token decoded alone, whose
        # logits differ from the first, whole-prompt decode in the last bits (a near tie can then flip a
        # greedy choice), so the stream is compared with a second request that also hits the cache.
        again = client.chat.completions.create(model=RUN, messages=messages, max_tokens=400, temperature=0)  # type: ignore[arg-type]
        text = again.choices[0].message.content or ""
        stream = client.chat.completions.create(
            model=RUN,
            messages=messages,
            max_tokens=400,
            temperature=0,
            stream=True,  # type: ignore[arg-type]
        )
        chunks = [chunk for chunk in stream if chunk.choices]
        streamed = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
        assert [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason] == ["stop"]
        assert streamed == text, "greedy: the streamed reply is the same reply"
    finally:
        server.terminate()
        server.wait(timeout=60)
    assert server.returncode is not None
