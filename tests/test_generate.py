"""`voicetune generate`: prompts worded exactly like the training pairs, the model's chat template,
streaming, and best-of-N reranking by stylometric distance (the real `voicetune.voice.stylometry`)."""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

import pytest
from lora_fixtures import make_data_dir, make_run, shared_adapter

from voicetune.cli import main
from voicetune.core import prompting as pairs
from voicetune.core.errors import VoicetuneError
from voicetune.core.prompting import PromptFormat, build_messages, render_prompt
from voicetune.model.generate import choose_best, prompt_format, rerank, resolve_source

REPO = Path(__file__).resolve().parent.parent
AUTHOR = REPO / "data" / "demo" / "author"

# Not the author: present-day technical prose, a voice far from an Edwardian satirist's.
OTHER_VOICE = (
    "To configure the service, open the settings file and set the port number, the log level and the "
    "path to the certificate. Restart the daemon after every change. If the health check fails, inspect "
    "the logs for errors related to authentication or network timeouts. The API returns JSON responses "
    "with a status code and an error message. Requests are rate limited to one hundred per minute per "
    "token. Use exponential backoff when retrying failed requests. Data is stored in a relational "
    "database and backed up every night to object storage. Monitoring dashboards show latency, "
    "throughput and error rates for each endpoint. Alerts are sent to the on-call engineer when "
    "thresholds are exceeded. Deployments run through a continuous integration pipeline that builds the "
    "container image, runs unit and integration tests, and promotes the release to staging."
)


def _gutenberg_body(path: Path) -> str:
    """The book without Project Gutenberg's header and licence."""
    text = path.read_text(encoding="utf-8")
    start = text.index("\n", text.index("PROJECT GUTENBERG EBOOK"))
    return text[start : text.index("*** END OF") if "*** END OF" in text else text.index("***END OF")]


@pytest.fixture(scope="module")
def profile():  # -> StyleProfile
    from voicetune.voice.stylometry import build_profile

    return build_profile([_gutenberg_body(AUTHOR / "reginald.txt")])


def _authors_unseen_passage() -> str:
    """300 words of the author from a book the profile was not built from."""
    words = _gutenberg_body(AUTHOR / "the-toys-of-peace.txt").split()
    start = 10 * (len(words) // 13)
    return " ".join(words[start : start + 300])


def _shuffled(text: str) -> str:
    """The same words in a random order: the author's vocabulary without the author's style."""
    words = text.split()
    random.Random(0).shuffle(words)
    return " ".join(words)


def test_rerank_puts_the_authors_voice_first(profile) -> None:
    author = _authors_unseen_passage()
    ranking = rerank([OTHER_VOICE, _shuffled(author), author], profile)
    assert ranking[0][0] == author
    assert ranking[0][1] < ranking[1][1] <= ranking[2][1]


def test_best_of_n_picks_the_closer_text_from_a_stub_sampler(profile) -> None:
    """Only the sampler is a stub (fixed candidates, no model); the reranking is the real one."""
    author = _authors_unseen_passage()
    asked: list[int] = []

    def sampler(n: int) -> list[str]:
        asked.append(n)
        return [OTHER_VOICE, "", author][:n]

    ranking = choose_best(sampler, 3, profile)
    assert asked == [3]
    assert ranking[0][0] == author
    assert ranking[-1] == ("", math.inf), "a text with no words must never win"


def test_messages_are_worded_like_the_training_pairs() -> None:
    fmt = PromptFormat(templates=pairs.PROMPTS, system_prompt=pairs.DEFAULT_SYSTEM_PROMPT)
    system = pairs.DEFAULT_SYSTEM_PROMPT
    assert build_messages("continue", "  It was late. ", fmt) == pairs.chat_messages(
        system, pairs.user_prompt("continue", opening="It was late.")
    )
    assert build_messages("rewrite", "a plain text", fmt) == pairs.chat_messages(
        system, pairs.user_prompt("rewrite", source="a plain text")
    )
    # write: the length is rounded to tens, as prepare rounds the passage's real length
    assert build_messages("write", "a brief", fmt, words=147) == pairs.chat_messages(
        system, pairs.user_prompt("write", words=150, brief="a brief")
    )
    with pytest.raises(VoicetuneError, match="empty"):
        build_messages("write", "   ", fmt)


def test_prompt_format_comes_from_the_data_manifest(tmp_path: Path) -> None:
    """The wording recorded when the data was prepared wins over today's defaults."""
    from voicetune.core.manifest import build_manifest, write_manifest

    data = tmp_path / "data"
    templates = {"continue": "Go on: {opening}", "write": "{words} words: {brief}", "rewrite": "Fix {source}"}
    write_manifest(
        data,
        build_manifest("prepare", "x", {"system_prompt": "Be Saki.", "prompts": templates}, {}, {}),
    )
    fmt = prompt_format(data)
    assert fmt.system_prompt == "Be Saki." and not fmt.completion
    assert build_messages("continue", "the cat", fmt) == [
        {"role": "system", "content": "Be Saki."},
        {"role": "user", "content": "Go on: the cat"},
    ]
    assert prompt_format(None).templates == pairs.PROMPTS


def test_rendered_prompt_uses_the_models_chat_template(base_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(base_model_dir))
    fmt = prompt_format(None)
    text = render_prompt(tokenizer, "continue", "The Duchess was late.", fmt)
    assert text.startswith("<|im_start|>system\n" + pairs.DEFAULT_SYSTEM_PROMPT)
    assert "The Duchess was late." in text
    assert text.endswith("<|im_start|>assistant\n")
    raw = PromptFormat(pairs.PROMPTS, "", completion=True)
    assert render_prompt(tokenizer, "continue", "Once upon a time", raw) == "Once upon a time"
    with pytest.raises(VoicetuneError, match="only --mode continue"):
        render_prompt(tokenizer, "write", "a brief", raw)


def test_source_is_the_merged_model_when_there_is_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VOICETUNE_HOME", str(tmp_path))
    merged = tmp_path / "merged_models" / "mine"
    merged.mkdir(parents=True)
    (merged / "manifest.json").write_text(json.dumps({"step": "merge", "data_dir": "/data/x", "outputs": {}}))
    source = resolve_source("mine", None, None)
    assert source.model_dir == merged and source.adapter_dir is None
    assert source.data_dir == Path("/data/x")
    assert resolve_source(None, None, None).model_dir == merged  # the only merged model
    with pytest.raises(VoicetuneError, match=r"2_train_lora\.sh"):
        resolve_source("other", None, None)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, base_model_dir: Path) -> Path:
    """A trained (not merged) run 'demo', with the author's texts as its training texts."""
    root = tmp_path_factory.mktemp("generate home")
    data = make_data_dir(root, [], ["held out"])
    shutil.copy(AUTHOR / "reginald.txt", data / "texts" / "train" / "reginald.txt")
    make_run(root, "demo", base_model_dir, shared_adapter(tmp_path_factory, base_model_dir), data_dir=data)
    (root / "empty.yaml").write_text("{}\n")
    return root


def _generate(home: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setenv("VOICETUNE_HOME", str(home))
    return main(["generate", "--config", str(home / "empty.yaml"), "--device", "cpu", *args])


def test_streamed_text_equals_the_batched_text(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Greedy on base + adapter: the streamed tokens and one non-streamed sample are the same text."""
    args = ["--run", "demo", "--mode", "continue", "--prompt", "Reginald looked at the Duchess.",
            "--max-new-tokens", "12", "--temperature", "0"]  # fmt: skip
    assert _generate(home, monkeypatch, *args, "--stream") == 0
    streamed = capsys.readouterr()
    assert "not merged yet" in streamed.out
    assert _generate(home, monkeypatch, *args, "--no-stream") == 0
    batched = capsys.readouterr().out
    streamed_text = streamed.out.split("\n", 1)[1].strip()
    assert streamed_text and streamed_text == batched.split("\n", 1)[1].strip()
    assert "<|im_end|>" not in streamed_text


def test_best_of_cli_ranks_real_samples(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "chosen.txt"
    args = ["--run", "demo", "--mode", "write", "--prompt", "An aunt, a nephew and a stolen peach.",
            "--max-new-tokens", "16", "--best-of", "2", "--seed", "3", "--show-candidates",
            "--output", str(out)]  # fmt: skip
    assert _generate(home, monkeypatch, *args) == 0
    captured = capsys.readouterr()
    assert "[best of 2: style distance" in captured.err
    assert captured.err.count("--- candidate") == 2
    assert out.read_text().strip() and out.read_text().strip() in captured.out


def test_best_of_with_greedy_decoding_is_refused(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--run", "demo", "--prompt", "x", "--best-of", "3", "--temperature", "0"]
    assert _generate(home, monkeypatch, *args) == 1
    assert "--best-of needs sampling" in capsys.readouterr().err


def test_style_strength_scales_the_adapter_and_zero_is_the_base_model(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], base_model_dir: Path
) -> None:
    """--scale 0 on base + adapter writes exactly what the base model writes (greedy); --scale 1 the
    trained model; a merged run with --scale is loaded as base + the adapter it was merged from."""
    from voicetune.model.generate import ModelSource, with_adapter_for_scale

    args = ["--mode", "continue", "--prompt", "Reginald looked at the Duchess.", "--max-new-tokens", "10",
            "--temperature", "0", "--no-stream"]  # fmt: skip
    texts = {}
    runs = {
        "base": ["--model", str(base_model_dir)],
        "x0": ["--run", "demo", "--scale", "0"],
        "x1": ["--run", "demo"],
    }
    for label, extra in runs.items():
        assert _generate(home, monkeypatch, *args, *extra) == 0
        texts[label] = capsys.readouterr().out.strip().splitlines()[-1]
    assert texts["x0"] == texts["base"] != texts["x1"]

    merged = home / "merged_models" / "demo"
    merged.mkdir(parents=True, exist_ok=True)
    adapter = home / "checkpoints" / "demo" / "output"
    (merged / "manifest.json").write_text(json.dumps(
        {"step": "merge", "base_model": str(base_model_dir), "adapter_dir": str(adapter), "outputs": {}}
    ))  # fmt: skip
    plain = ModelSource(merged, None, None, "demo (merged)")
    assert with_adapter_for_scale(plain, 1.0) is plain
    scaled = with_adapter_for_scale(plain, 1.5)
    assert scaled.model_dir == base_model_dir and scaled.adapter_dir == adapter
    assert scaled.label == "demo (base + adapter x1.5)"
    with pytest.raises(VoicetuneError, match="needs the adapter"):
        with_adapter_for_scale(ModelSource(base_model_dir, None, None, "base"), 1.5)
    shutil.rmtree(merged)
