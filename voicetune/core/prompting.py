"""The prompt format: how training pairs ask for the author's voice, and how generation, the
benchmark and export ask the same way.

One place for it, because every step must agree byte for byte: the data step writes pairs with these
templates (and records them in its manifest), generation and the benchmark render requests with the
recorded templates, and export writes the same chat template and stop tokens into the GGUF/Modelfile.
Pure string work; `stop_token_ids` only reads attributes of a tokenizer and model it is given.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from voicetune.core.errors import VoicetuneError

Mode = Literal["continue", "write", "rewrite"]
MODES: tuple[Mode, ...] = ("continue", "write", "rewrite")
DEFAULT_SYSTEM_PROMPT = "You are the author. Write in your own voice."
PROMPTS: dict[str, str] = {
    "continue": "Continue this passage in your own voice.\n\n{opening}",
    "write": "Write a passage of about {words} words in your own voice.\n\nBrief: {brief}",
    "rewrite": "Rewrite this passage in your own voice, keeping its meaning.\n\n{source}",
}
# Tokens that end a chat turn in common templates (not every generation_config lists its own).
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>")


def user_prompt(mode: str, **fields: Any) -> str:
    return PROMPTS[mode].format(**fields)


def chat_messages(system_prompt: str, prompt: str, response: str | None = None) -> list[dict[str, str]]:
    """A conversation in the shape Axolotl's chat_template loader and tokenizers expect."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages.append({"role": "user", "content": prompt})
    if response is not None:
        messages.append({"role": "assistant", "content": response})
    return messages


@dataclass(frozen=True)
class PromptFormat:
    """How the training pairs were written: prompt templates, system prompt, chat or raw text."""

    templates: Mapping[str, str]
    system_prompt: str
    completion: bool = False


def prompt_format_from_settings(recorded: Mapping[str, Any] | None) -> PromptFormat:
    """The prompt format recorded in a prepare manifest's settings, else the defaults above."""
    recorded = recorded or {}
    templates = recorded.get("prompts") if isinstance(recorded.get("prompts"), dict) else None
    return PromptFormat(
        templates=dict(templates or PROMPTS),
        system_prompt=str(recorded.get("system_prompt", DEFAULT_SYSTEM_PROMPT)),
        completion=recorded.get("format") == "completion",
    )


def build_messages(mode: str, text: str, fmt: PromptFormat, words: int = 200) -> list[dict[str, str]]:
    """The chat messages for one request, worded exactly like the training pairs of that mode.

    write: `text` is the brief; continue: the opening to continue; rewrite: the text to rewrite.
    """
    text = text.strip()
    if not text:
        raise VoicetuneError("the prompt is empty: give --prompt TEXT or --prompt-file FILE")
    fields = {
        "write": {"words": max(10, round(words, -1)), "brief": text},  # as pairs.py rounds lengths
        "continue": {"opening": text},
        "rewrite": {"source": text},
    }
    if mode not in fields:
        raise VoicetuneError(f"unknown mode {mode!r}: use write, continue or rewrite")
    template = fmt.templates.get(mode) or PROMPTS[mode]
    return chat_messages(fmt.system_prompt, template.format(**fields[mode]))


def render_prompt(tokenizer: Any, mode: str, text: str, fmt: PromptFormat, words: int = 200) -> str:
    """The exact string the model sees: the chat template with the assistant turn opened, or, for a
    model trained on raw text (completion format), the opening itself."""
    if fmt.completion or getattr(tokenizer, "chat_template", None) is None:
        if mode != "continue":
            raise VoicetuneError(
                f"the model learnt raw text (no chat template): only --mode continue works, not {mode}"
            )
        return text.strip()
    messages = build_messages(mode, text, fmt, words)
    return str(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))


def stop_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every token id that ends a turn for this model: its generation config's, its EOS, and the
    common end-of-turn tokens its vocabulary has."""
    ids: list[int] = []
    configured = getattr(model.generation_config, "eos_token_id", None)
    ids += configured if isinstance(configured, list) else [configured] if configured is not None else []
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    vocab = tokenizer.get_vocab()
    ids += [vocab[token] for token in END_OF_TURN_TOKENS if token in vocab]
    return sorted({int(i) for i in ids})
