"""Resume: a training killed with SIGKILL resumes from its last checkpoint to the same final step,
a finished run extends with --resume, and checkpoints move between GPU counts (issues 6, 9, 10).

The end-to-end test runs the real `voicetune train` (real Axolotl, real Trainer checkpoints) on a
tiny randomly initialised Llama with the demo model's tokenizer, so that each launch costs Axolotl's
start-up and not a model's compute.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.train_data import write_prepared
from voicetune.train import resume

REPO = Path(__file__).resolve().parent.parent


def _tiny_model(folder: Path, tokenizer_from: Path) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        if (tokenizer_from / name).exists():
            shutil.copy(tokenizer_from / name, folder / name)
    base = json.loads((tokenizer_from / "config.json").read_text())
    config = LlamaConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=base["vocab_size"], tie_word_embeddings=True,
        bos_token_id=base.get("bos_token_id"), eos_token_id=base.get("eos_token_id"),
        pad_token_id=base.get("pad_token_id"), max_position_embeddings=2048,
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    return folder


def _train(home: Path, model: Path, *extra: str, background: bool = False) -> Any:
    command = [
        sys.executable, "-m", "voicetune", "train", "--profile", "cpu-demo", "--data", "d", "--run", "r",
        "--base-model", str(model), "--wandb", "off", "--set", "save_steps=2", "--set", "eval_steps=100",
        "--set", "save_total_limit=5", *extra,
    ]  # fmt: skip
    env = dict(os.environ, VOICETUNE_HOME=str(home), PYTHONPATH=str(REPO))
    if background:
        return subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_killed_training_resumes_to_the_same_step_then_extends(tmp_path: Path, base_model_dir: Path) -> None:
    home = tmp_path / "home"
    model = _tiny_model(tmp_path / "tiny", base_model_dir)
    write_prepared(home / "data" / "processed" / "d", n_train=40, n_val=4, base_model=str(model))
    output = home / "checkpoints" / "r" / "output"

    first = _train(home, model, "--max-steps", "6", background=True)
    deadline = time.monotonic() + 400
    while not (output / "checkpoint-2" / "trainer_state.json").is_file():
        assert first.poll() is None, "training ended before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint within 400 s"
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)  # voicetune itself, no clean-up; its trainer lives on
    first.wait()
    assert not (home / "checkpoints" / "r" / "manifest.json").exists()

    refused = _train(home, model, "--max-steps", "6")
    assert refused.returncode == 1
    assert "--resume" in refused.stderr.strip().splitlines()[-1]
    assert "stopped the trainer left running" in refused.stdout  # the orphan, before anything else

    resumed = _train(home, model, "--max-steps", "6", "--resume")
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert "resuming from checkpoint-" in resumed.stdout
    manifest = json.loads((home / "checkpoints" / "r" / "manifest.json").read_text())
    assert manifest["global_step"] == 6 and manifest["max_steps"] == 6
    assert manifest["resumed_from"] is not None and manifest["resumed_from"] != "checkpoint-6"
    assert not (home / "checkpoints" / "r" / resume.TRAINER_PID_FILE).exists()

    again = _train(home, model, "--max-steps", "6", "--resume")
    assert again.returncode == 0 and "up to date" in again.stdout

    extended = _train(home, model, "--max-steps", "8", "--resume")
    assert extended.returncode == 0, extended.stdout[-2000:] + extended.stderr[-2000:]
    assert "extending the finished run from checkpoint-6" in extended.stdout
    manifest = json.loads((home / "checkpoints" / "r" / "manifest.json").read_text())
    assert manifest["global_step"] == 8 and manifest["resumed_from"] == "checkpoint-6"

    # a learning rate other than the recipe's (which lifts a 6-step run's to its cap, 1e-3) is refused
    changed = _train(home, model, "--max-steps", "10", "--resume", "--lr", "0.0002")
    assert changed.returncode == 1 and "--force" in changed.stderr


def test_resume_may_change_steps_gpus_and_cadence_but_not_the_recipe() -> None:
    cfg = {"lora_r": 16, "learning_rate": 3e-4, "max_steps": 40, "gradient_accumulation_steps": 4}
    same = {**cfg, "max_steps": 80, "gradient_accumulation_steps": 8, "deepspeed": "zero2.json"}
    assert resume.resume_view(cfg) == resume.resume_view(same)
    assert resume.resume_view(cfg) != resume.resume_view({**cfg, "learning_rate": 1e-4})
    assert resume.resume_view(cfg) != resume.resume_view({**cfg, "lora_r": 64})


def test_gradient_accumulation_keeps_the_global_batch() -> None:
    assert resume.scaled_grad_accum(2, 2, 1) == 4
    assert resume.scaled_grad_accum(8, 1, 4) == 2
    assert resume.scaled_grad_accum(1, 1, 2) is None  # one micro batch cannot be split over two GPUs
    assert resume.scaled_grad_accum(3, 1, 2) is None


def _deepspeed_layout(checkpoint: Path, gpus: int) -> None:
    """The file layout the HF Trainer + DeepSpeed ZeRO-2 write on `gpus` GPUs (names as on the
    2 x H200 run in benchmarks/results/gpu-h200x2-multi-gpu/). Stand-in files: DeepSpeed needs CUDA."""
    shards = checkpoint / "global_step10"
    shards.mkdir(parents=True)
    for rank in range(gpus):
        (shards / f"bf16_zero_pp_rank_{rank}_mp_rank_00_optim_states.pt").write_bytes(b"x")
    (shards / "mp_rank_00_model_states.pt").write_bytes(b"x")
    (checkpoint / "latest").write_text("global_step10")
    (checkpoint / "zero_to_fp32.py").write_text("# DeepSpeed's script\n")
    for name in ("adapter_model.safetensors", "adapter_config.json", "trainer_state.json", "scheduler.pt"):
        (checkpoint / name).write_bytes(b"{}")
    for rank in range(gpus):
        (checkpoint / f"rng_state_{rank}.pth").write_bytes(b"x")


def test_a_deepspeed_checkpoint_is_re_laid_for_one_gpu(tmp_path: Path) -> None:
    checkpoint = tmp_path / "output" / "checkpoint-10"
    _deepspeed_layout(checkpoint, gpus=2)
    assert resume.deepspeed_world_size(checkpoint) == 2
    portable = resume.portable_checkpoint(checkpoint, tmp_path / "portable", "2 -> 1")
    names = {p.name for p in portable.iterdir()}
    assert {"adapter_model.safetensors", "scheduler.pt", "trainer_state.json", "rng_state.pth"} <= names
    assert not any(n.startswith("global_step") or n in ("latest", "zero_to_fp32.py") for n in names)
    assert resume.is_portable(portable) and not resume.is_portable(checkpoint)
    assert (checkpoint / "global_step10").is_dir()  # the original is untouched
    assert resume.deepspeed_world_size(portable) is None


def test_the_plugin_restores_the_lr_schedule_of_a_portable_checkpoint(tmp_path: Path) -> None:
    import torch
    from transformers import get_cosine_schedule_with_warmup

    def schedule(groups: int) -> torch.optim.lr_scheduler.LambdaLR:
        # DeepSpeed's optimizer and the plain one group the parameters differently
        params = [{"params": [torch.nn.Parameter(torch.zeros(2))]} for _ in range(groups)]
        optimizer = torch.optim.AdamW(params, lr=1e-3)
        return get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=2, num_training_steps=20)

    trained = schedule(groups=1)
    for _ in range(10):
        trained.optimizer.step()
        trained.step()
    checkpoint = tmp_path / "checkpoint-10"
    _deepspeed_layout(checkpoint, gpus=2)
    torch.save(trained.state_dict(), checkpoint / "scheduler.pt")
    portable = resume.portable_checkpoint(checkpoint, tmp_path / "portable", "2 -> 1")

    from voicetune.train.axolotl_plugin import PortableResume

    callbacks = PortableResume().add_callbacks_post_trainer({"resume_from_checkpoint": str(portable)}, None)
    assert len(callbacks) == 1
    fresh = schedule(groups=2)
    assert fresh.get_last_lr()[0] != trained.get_last_lr()[0]
    state = type("State", (), {"global_step": 10})()
    callbacks[0].on_train_begin(None, state, None, lr_scheduler=fresh)
    assert fresh.get_last_lr() == pytest.approx(trained.get_last_lr() * 2)
    for _ in range(2):  # and it keeps stepping on the same curve
        fresh.optimizer.step()
        fresh.step()
        trained.optimizer.step()
        trained.step()
    assert fresh.get_last_lr() == pytest.approx(trained.get_last_lr() * 2)
    original = {"resume_from_checkpoint": str(checkpoint)}
    assert PortableResume().add_callbacks_post_trainer(original, None) == []
