"""The benchmark's torch part on the real demo model (SmolLM2-135M) and a real PEFT LoRA adapter."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from lora_fixtures import shared_adapter
from stylometry_data import DEMO, HELD_OUT_BOOK

from voicetune.cli import main as cli_main
from voicetune.voice import perplexity as pp


@pytest.fixture(scope="module")
def base(base_model_dir: Path) -> tuple[object, object]:
    spec = pp.resolve_model_path("base", base_model_dir)
    return pp.load_model(spec, "cpu")


TEXT = (
    "Reginald closed his eyes with the elaborate weariness of one who has been asked to admire a "
    'sunset. "The Duchess," he said, "has a genius for being unexpectedly early. It is the only '
    'vice she has never been able to conceal, and she has tried most of the others." His aunt, who '
    "had not been asked for her opinion and therefore gave it at once, observed that punctuality was "
    "the politeness of kings. Reginald replied that kings had so few other things to be polite about."
)


def test_perplexity_scores_every_token_once_and_matches_one_forward_pass(base: tuple) -> None:
    import torch

    model, tokenizer = base
    ids = tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    one_window = pp.perplexity_windows(model, tokenizer, [TEXT], max_tokens=10_000, window=512, stride=256)
    assert int(one_window.tokens.sum()) == len(ids) - 1
    with torch.inference_mode():
        logits = model(torch.tensor([ids])).logits[0, :-1]
        expected = torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]), reduction="sum")
    assert one_window.nll.sum() == pytest.approx(float(expected), rel=1e-4)
    # Small windows: still every token once, each with context; the blocks are what the bootstrap uses.
    sliding = pp.perplexity_windows(model, tokenizer, [TEXT, TEXT], max_tokens=80, window=32, stride=16)
    assert int(sliding.tokens.sum()) == 80 - 2 and sliding.tokens.max() <= 128
    again = pp.perplexity_windows(model, tokenizer, [TEXT, TEXT], max_tokens=80, window=32, stride=16)
    assert list(again.nll) == list(sliding.nll)
    assert 1 < sliding.perplexity < 1000


def test_batched_generation_pads_on_the_left_and_is_seeded(base: tuple) -> None:
    model, tokenizer = base
    prompts = ["The aunt said that", "It was a long and tedious afternoon at the vicarage, and the curate"]
    greedy = {"temperature": 0.0, "add_special_tokens": True}
    together = pp.generate_continuations(model, tokenizer, prompts, 8, batch_size=2, **greedy)
    alone = [pp.generate_continuations(model, tokenizer, [p], 8, batch_size=1, **greedy)[0] for p in prompts]
    assert together == alone and all(together)
    a = pp.generate_continuations(model, tokenizer, prompts, 8, temperature=0.9, seed=11, batch_size=2)
    b = pp.generate_continuations(model, tokenizer, prompts, 8, temperature=0.9, seed=11, batch_size=2)
    assert a == b


def test_prompts_batched_by_length_come_back_in_their_own_order(base: tuple) -> None:
    model, tokenizer = base
    # longest first: batched by length, the second batch holds the first prompts
    prompts = [
        "It was a long and tedious afternoon at the vicarage, and the curate",
        "The aunt",
        "Reginald said",
    ]
    greedy = {"temperature": 0.0, "add_special_tokens": True}
    batched = pp.generate_continuations(model, tokenizer, prompts, 6, batch_size=2, **greedy)
    alone = [pp.generate_continuations(model, tokenizer, [p], 6, batch_size=1, **greedy)[0] for p in prompts]
    assert batched == alone


def test_a_shared_prompt_start_is_run_once_and_changes_nothing(base: tuple) -> None:
    """Chat prompts share their system prompt and instruction: generation continues each batch from one
    cache of those tokens, and writes what plain left-padded generation writes."""
    import torch

    model, tokenizer = base
    system = "You are the author. Write in your own voice."
    openings = [
        "The aunt said that the vicar had",
        "It was a long and tedious afternoon, and the curate",
        "No.",
    ]
    prompts = [
        tokenizer.apply_chat_template(
            [
                {"role": "system", "content": system},
                {"role": "user", "content": f"Continue this passage.\n\n{text}"},
            ],
            tokenize=False,
            add_generation_prompt=True,
        )
        for text in openings
    ]
    token_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    shared, cache = pp._shared_prefix(model, token_ids, "cpu")
    assert shared >= pp.MIN_SHARED_TOKENS and cache.get_seq_length() == shared
    assert all(ids[:shared] == token_ids[0][:shared] for ids in token_ids)
    assert len({ids[shared] for ids in token_ids}) > 1  # the first token that differs
    cached = pp.generate_continuations(model, tokenizer, prompts, 8, temperature=0.0, batch_size=3)
    tokenizer.padding_side = "left"
    encoded = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.inference_mode():
        plain = model.generate(
            **encoded, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
    expected = [
        tokenizer.decode(row, skip_special_tokens=True).strip()
        for row in plain[:, encoded["input_ids"].shape[1] :]
    ]
    assert cached == expected and all(cached)
    assert pp._shared_prefix(model, [[1, 2, 3], [4, 5, 6]], "cpu") == (0, None)  # nothing shared


def test_cpu_grouped_query_attention_reads_the_cache_in_place_and_changes_nothing(base: tuple) -> None:
    """A padded batch on the demo model (9 query heads, 3 key/value heads): within the block the masked
    attention runs as grouped-query SDPA, with the same logits as transformers' repeated heads; after
    it, and for a model not on SDPA, nothing is switched."""
    import torch

    from voicetune.model.attention import NAME, cpu_grouped_query_attention

    model, tokenizer = base
    assert model.config.num_key_value_heads < model.config.num_attention_heads
    tokenizer.padding_side = "left"
    batch = tokenizer(
        ["The aunt said that", "It was a long and tedious afternoon at the vicarage, and the curate"],
        return_tensors="pt",
        padding=True,
    )
    assert int(batch["attention_mask"].min()) == 0  # padded: transformers would repeat the heads
    with torch.inference_mode():
        plain = model(**batch).logits
        with cpu_grouped_query_attention(model):
            assert model.config._attn_implementation == NAME
            grouped = model(**batch).logits
    assert model.config._attn_implementation == "sdpa"
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(grouped[real], plain[real], rtol=1e-4, atol=1e-4)
    model.set_attn_implementation("eager")
    try:
        with cpu_grouped_query_attention(model):
            assert model.config._attn_implementation == "eager"
    finally:
        model.set_attn_implementation("sdpa")


def test_nucleus_sampling_keeps_transformers_nucleus_and_probabilities(base: tuple) -> None:
    """The sampler's distribution equals TemperatureLogitsWarper + TopPLogitsWarper's on the demo
    model's real next-token logits, and on flat rows whose nucleus is wider than the candidates."""
    import torch
    from transformers import TemperatureLogitsWarper, TopPLogitsWarper

    from voicetune.model.sampling import nucleus

    model, tokenizer = base
    encoded = tokenizer([TEXT[:200], TEXT[200:]], return_tensors="pt", padding=True)
    with torch.inference_mode():
        real = model(**encoded).logits[:, -1, :].float()
    flat = torch.randn(2, real.shape[-1], generator=torch.Generator().manual_seed(0)) * 0.5  # a wide nucleus
    for logits in (real, torch.cat([real, flat])):
        ids, probs = nucleus(logits, 0.8, 0.95, candidates=256)
        mine = torch.zeros_like(logits).scatter_(-1, ids, probs)
        mine = mine / mine.sum(-1, keepdim=True)
        warped = TopPLogitsWarper(0.95)(None, TemperatureLogitsWarper(0.8)(None, logits.clone()))
        expected = torch.softmax(warped, -1)
        kept, expected_kept = (mine > 0).sum(-1), (expected > 0).sum(-1)
        assert ((kept - expected_kept).abs() <= 1).all()  # float ties at the nucleus edge, at most one token
        both = (mine > 0) & (expected > 0)
        assert torch.allclose(mine[both], expected[both], rtol=1e-3, atol=1e-8)
    assert (expected_kept[2:] > 256).all()  # the flat rows did fall back to the whole vocabulary


def test_an_adapter_folder_names_its_base_and_changes_the_model(
    tmp_path_factory: pytest.TempPathFactory, base_model_dir: Path, base: tuple
) -> None:
    adapter = shared_adapter(tmp_path_factory, base_model_dir)
    spec = pp.resolve_model_path("tuned", adapter)
    assert spec.adapter_dir == adapter.resolve() and spec.model_dir == base_model_dir.resolve()
    tuned, tokenizer = pp.load_model(spec, "cpu")
    base_ppl = pp.perplexity_windows(*base, [TEXT], max_tokens=64, window=64, stride=64).perplexity
    tuned_ppl = pp.perplexity_windows(
        tuned, tokenizer, [TEXT], max_tokens=64, window=64, stride=64
    ).perplexity
    assert tuned_ppl != pytest.approx(base_ppl, rel=1e-6)


@pytest.mark.slow
def test_benchmark_end_to_end_is_reproducible_and_then_up_to_date(
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    base_model_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Two real models (base, base + LoRA) on an author given as folders: the same seed gives the same
    numbers twice, and a third run with nothing changed is skipped."""
    adapter = shared_adapter(tmp_path_factory, base_model_dir)
    train, test = tmp_path / "train", tmp_path / "test"
    train.mkdir()
    test.mkdir()
    shutil.copy(DEMO / "author" / "reginald-in-russia.txt", train)
    shutil.copy(DEMO / "author" / HELD_OUT_BOOK, test)
    config = tmp_path / "voicetune.yaml"
    config.write_text("benchmark:\n  attribution_segments: 120\n  bootstrap: 300\n")
    out = tmp_path / "results"
    argv = [
        "--model", f"base={base_model_dir}", "--model", f"lora={adapter}",
        "--author-train", str(train), "--author-test", str(test), "--out", str(out), "--config", str(config),
        "--prompts", "3", "--prompt-tokens", "32", "--max-new-tokens", "10", "--ppl-max-tokens", "96",
        "--device", "cpu", "--seed", "3",
    ]  # fmt: skip
    assert cli_main(["benchmark", *argv]) == 0
    first = json.loads((out / "results.json").read_text())
    assert cli_main(["benchmark", *argv, "--force"]) == 0
    second = json.loads((out / "results.json").read_text())
    assert first["samples"] == second["samples"]
    assert first["measures"] == second["measures"]
    assert first["comparisons"] == second["comparisons"]
    assert first["voice_score"] == second["voice_score"]
    assert set(first["voice_score"]) == {"base", "lora", "author (held-out)", "others", "difference"}
    assert first["voice_scale"]["difference_of"] == "lora - base"
    assert [m["name"] for m in first["models"]] == ["base", "lora"]
    assert first["models"][1]["adapter_dir"] == str(adapter.resolve())
    assert first["settings"]["attribution_segments"] == 120 and first["prompts"]["count"] == 3
    assert all(first["samples"][i]["continuations"]["lora"] for i in range(3))
    for name in ("report.md", "report.html", "results.json", "samples.md", "measures.png", "manifest.json"):
        assert (out / name).is_file(), name
    capsys.readouterr()
    assert cli_main(["benchmark", *argv]) == 0
    assert "up to date" in capsys.readouterr().out
