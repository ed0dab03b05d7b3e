"""Briefs and plain rewrites written by a local model (opt-in; the default is extractive briefs and
rule-based rewrites in `pairs`). The only part of the data step that loads weights: transformers is
imported lazily, on first use, and every answer is cached on disk so a re-run generates nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from voicetune.core.manifest import write_text_atomic

BRIEF_REQUEST = (
    "Summarise what happens in this passage in one plain sentence of at most 30 words. "
    "Do not quote it.\n\n{passage}"
)
REWRITE_REQUEST = (
    "Rewrite this passage in plain, simple, modern English. Keep the meaning, change the wording."
    "\n\n{passage}"
)


class LocalModelWriter:
    """Greedy generation with a local Hugging Face model folder; every answer is cached on disk under
    sha256(model identity, task, prompt), so a re-run never generates the same text twice."""

    def __init__(
        self, model_dir: Path, cache_dir: Path, max_new_tokens: int = 160, batch_size: int = 8
    ) -> None:
        self.model_dir = model_dir
        self.cache_dir = cache_dir
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self._model: Any = None
        self._tokenizer: Any = None
        self.identity = self._identity()
        self.generated = 0
        self.cached = 0

    def _identity(self) -> str:
        digest = hashlib.sha256()
        for name in ("manifest.json", "config.json", "tokenizer.json", "chat_template.jinja"):
            path = self.model_dir / name
            if path.is_file():
                digest.update(path.read_bytes())
        for path in sorted(self.model_dir.glob("*.safetensors")):
            digest.update(f"{path.name}:{path.stat().st_size}".encode())
        return digest.hexdigest()

    def _key(self, task: str, prompt: str) -> str:
        return hashlib.sha256(
            json.dumps([self.identity, task, prompt, self.max_new_tokens]).encode()
        ).hexdigest()

    def _load(self) -> None:
        if self._model is not None:
            return
        from voicetune.core.privacy import apply_private_env

        apply_private_env()
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        self._tokenizer.padding_side = "left"
        if self._tokenizer.pad_token is None:
            self._tokenizer.pad_token = self._tokenizer.eos_token
        self._model = AutoModelForCausalLM.from_pretrained(self.model_dir)
        self._model.eval()

    def briefs(self, passages: Sequence[str]) -> list[str]:
        """One plain sentence of what happens in each passage (the 'write' pairs' prompts)."""
        return self.complete("brief", [BRIEF_REQUEST.format(passage=p) for p in passages])

    def plain_rewrites(self, passages: Sequence[str]) -> list[str]:
        """Each passage in plain modern English (the 'rewrite' pairs' sources)."""
        return self.complete("rewrite", [REWRITE_REQUEST.format(passage=p) for p in passages])

    def complete(self, task: str, prompts: Sequence[str]) -> list[str]:
        from voicetune.core.manifest import write_text_atomic
        from voicetune.core.progress import progress

        results: list[str | None] = []
        missing: list[int] = []
        for index, prompt in enumerate(prompts):
            path = self.cache_dir / task / f"{self._key(task, prompt)}.txt"
            if path.is_file():
                results.append(path.read_text(encoding="utf-8"))
                self.cached += 1
            else:
                results.append(None)
                missing.append(index)
        if missing:
            self._load()
            import torch

            batches = [missing[i : i + self.batch_size] for i in range(0, len(missing), self.batch_size)]
            for batch in progress(batches, desc=f"local model: {task}", unit="batch"):
                texts = [
                    self._tokenizer.apply_chat_template(
                        [{"role": "user", "content": prompts[i]}], add_generation_prompt=True, tokenize=False
                    )
                    for i in batch
                ]
                encoded = self._tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
                with torch.no_grad():
                    output = self._model.generate(
                        **encoded,
                        max_new_tokens=self.max_new_tokens,
                        do_sample=False,
                        pad_token_id=self._tokenizer.pad_token_id,
                    )
                new = output[:, encoded["input_ids"].shape[1] :]
                for i, ids in zip(batch, new, strict=True):
                    answer = " ".join(self._tokenizer.decode(ids, skip_special_tokens=True).split())
                    write_text_atomic(self.cache_dir / task / f"{self._key(task, prompts[i])}.txt", answer)
                    results[i] = answer
                    self.generated += 1
        return [result or "" for result in results]


# --------------------------------------------------------------------------------------------------
# examples
