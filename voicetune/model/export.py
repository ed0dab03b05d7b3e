"""`voicetune export`: the merged model as GGUF files for llama.cpp, Ollama and LM Studio, each one
loaded by the real llama.cpp runtime and compared with the merged transformers model.

    merged_models/<run>/gguf/
      <run>-F16.gguf  <run>-Q8_0.gguf  <run>-Q4_K_M.gguf
      Modelfile (Q4_K_M)  Modelfile.F16  Modelfile.Q8_0      # Ollama: ChatML template, stops, system
      lmstudio/voicetune/<run>-GGUF/<run>-<QUANT>.gguf       # LM Studio's models/<publisher>/<model>/
      manifest.json                                          # inputs, settings, the check's lines

Steps: `stage` (a copy of the merged folder the converter reads right) -> `convert` (llama.cpp's own
convert_hf_to_gguf.py, unpacked by setup/5_install_export.sh into ~/.cache/voicetune/llama-cpp/) ->
`quantize` (llama.cpp's llama_model_quantize through llama-cpp-python) -> `check` -> Modelfiles,
LM Studio folder and manifest, written atomically; a re-run with the same model and settings is a
no-op that prints the recorded check.

Why `stage`: the merged folder's tokenizer comes from transformers' GGUF loader (the demo base is
built from a GGUF), which writes SmolLM2's byte-level BPE with `byte_fallback: true` and a
SentencePiece-style decoder (ByteFallback, Fuse, Replace "▁"). llama.cpp's converter takes exactly
that signature for a Llama SentencePiece vocabulary (`LlamaHfVocab`) and writes
`tokenizer.ggml.model = llama`, which llama.cpp cannot load. For a byte-level BPE both parts are
inert (every byte has a token, no token holds "▁"), so the staged copy says what the tokenizer is -
byte_fallback off and a ByteLevel decoder - the converter takes its BPE path, recognises the
pre-tokenizer by its hash (`smollm`) and writes `gpt2`. The check then proves the tokenisations agree.

The check, per file, on held-out prompts from the run's prepared val/test split: (1) the chat
template: llama.cpp renders the GGUF's template and tokenises it as its server does, and the ids must
equal transformers' apply_chat_template; (2) greedy tokens: the argmax next token of llama.cpp and of
transformers at every position of the held-out answer (teacher-forced, so one early difference does
not hide the rest), F16 must agree on >= 95%; (3) perplexity of the held-out answers under both;
(4) the end of turn: the GGUF's end-of-generation token is the model's, and where transformers ends
the answer with it, llama.cpp's own sampling loop stops there.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voicetune.core.artifacts import SCRIPTS, MergedModel, PreparedData, stored_path
from voicetune.core.errors import VoicetuneError
from voicetune.core.manifest import (
    atomic_output_dir,
    build_manifest,
    exclusive_lock,
    fingerprint,
    is_up_to_date,
    read_manifest,
    sha256_file,
    write_manifest,
    write_text_atomic,
)
from voicetune.core.progress import say
from voicetune.core.prompting import END_OF_TURN_TOKENS

EXPORT_VERSION = 1  # bump when the files or the check change, so old exports are redone
LLAMA_CPP_VERSION = "0.3.36"  # setup/5_install_export.sh installs this llama-cpp-python
CONVERTER = "convert_hf_to_gguf.py"
INSTALL = "setup/5_install_export.sh"
# name on the command line -> (file label, llama.cpp's LLAMA_FTYPE_* or None for the converter's type)
QUANTS: dict[str, tuple[str, str | None]] = {
    "f16": ("F16", None),
    "bf16": ("BF16", None),
    "q8_0": ("Q8_0", "LLAMA_FTYPE_MOSTLY_Q8_0"),
    "q6_k": ("Q6_K", "LLAMA_FTYPE_MOSTLY_Q6_K"),
    "q5_k_m": ("Q5_K_M", "LLAMA_FTYPE_MOSTLY_Q5_K_M"),
    "q4_k_m": ("Q4_K_M", "LLAMA_FTYPE_MOSTLY_Q4_K_M"),
}
DEFAULT_QUANTS = ("f16", "q8_0", "q4_k_m")
MIN_AGREEMENT = 0.95  # the 16-bit file's greedy tokens vs transformers'
PUBLISHER = "voicetune"  # LM Studio's models/<publisher>/<model>/ layout
LIBRARIES = ("torch", "transformers", "llama_cpp_python", "gguf")


# ---------------------------------------------------------------------------------------------
# stage: a copy of the merged folder that llama.cpp's converter reads as what it is


def converter_tokenizer(tokenizer_json: dict[str, Any]) -> dict[str, Any] | None:
    """The tokenizer.json the converter should read, or None when the original is already right.

    A byte-level BPE (ByteLevel pre-tokenizer, BPE model) saved by transformers' GGUF loader carries
    `byte_fallback` and a SentencePiece decoder; both are inert for byte-level BPE (no byte is
    missing from its vocabulary, no token holds "▁") but make the converter write a SentencePiece
    vocabulary. Returns the same tokenizer with byte_fallback off and a ByteLevel decoder.
    """
    model = tokenizer_json.get("model") or {}
    pre = json.dumps(tokenizer_json.get("pre_tokenizer"))
    if model.get("type") != "BPE" or '"ByteLevel"' not in pre:
        return None
    decoder = tokenizer_json.get("decoder") or {}
    if not model.get("byte_fallback") and decoder.get("type") == "ByteLevel":
        return None
    vocab = model.get("vocab") or {}
    if any("▁" in token or token.startswith("<0x") for token in vocab):
        return None  # a real SentencePiece-style vocabulary: leave it to the converter
    fixed = dict(tokenizer_json)
    fixed["model"] = {**model, "byte_fallback": False}
    fixed["decoder"] = {
        "type": "ByteLevel",
        "add_prefix_space": True,
        "trim_offsets": True,
        "use_regex": True,
    }
    return fixed


def stage_model(model_dir: Path, stage: Path) -> list[str]:
    """Link the merged folder's files into `stage`, rewriting tokenizer.json when it must be; returns
    notes on what was changed."""
    notes: list[str] = []
    stage.mkdir(parents=True, exist_ok=True)
    for source in sorted(model_dir.iterdir()):
        if not source.is_file() or source.name == "manifest.json":
            continue
        target = stage / source.name
        if source.name == "tokenizer.json":
            fixed = converter_tokenizer(json.loads(source.read_text(encoding="utf-8")))
            if fixed is not None:
                target.write_text(json.dumps(fixed, ensure_ascii=False), encoding="utf-8")
                notes.append(
                    "tokenizer.json staged as byte-level BPE (byte_fallback off, ByteLevel decoder): "
                    "the merged folder's SentencePiece-style decoder made llama.cpp's converter write "
                    "a SentencePiece vocabulary"
                )
                continue
        os.symlink(source.resolve(), target)
    return notes


# ---------------------------------------------------------------------------------------------
# convert and quantize: llama.cpp's own code, run as child processes


def cache_root() -> Path:
    return Path(os.environ.get("VOICETUNE_CACHE") or Path.home() / ".cache" / "voicetune")


def find_converter(llama_cpp: Path | None = None) -> Path:
    """llama.cpp's convert_hf_to_gguf.py: --llama-cpp DIR, $LLAMA_CPP_DIR, else setup's cache."""
    candidates = [llama_cpp, Path(os.environ["LLAMA_CPP_DIR"]) if os.environ.get("LLAMA_CPP_DIR") else None]
    candidates.append(cache_root() / "llama-cpp" / LLAMA_CPP_VERSION / "converter")
    for folder in candidates:
        if folder is not None and (folder / CONVERTER).is_file():
            return folder / CONVERTER
    raise VoicetuneError(
        f"llama.cpp's converter is not installed (looked in {candidates[-1]}): run {INSTALL}", exit_code=3
    )


def llama_cpp_problem() -> str | None:
    """None when llama-cpp-python imports, else why not."""
    try:
        import llama_cpp  # noqa: F401
    except (ImportError, OSError) as exc:
        return f"llama-cpp-python does not import ({exc})"
    return None


def _run_quiet(command: list[str], what: str, env: dict[str, str] | None = None) -> None:
    """Run a child; its log is shown only when it fails (the last lines, in the error)."""
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        tail = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()][-8:]
        raise VoicetuneError(f"{what} failed (exit {result.returncode}): " + " | ".join(tail))


def convert(converter: Path, stage: Path, outfile: Path, outtype: str, name: str) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(converter.parent / "gguf-py"), env.get("PYTHONPATH")])
    )
    env["HF_HUB_OFFLINE"] = "1"
    command = [sys.executable, str(converter), str(stage), "--outfile", str(outfile), "--outtype", outtype]
    command += ["--model-name", name]  # general.name (else the staging folder's name)
    _run_quiet(command, f"llama.cpp's converter ({shlex.join(command)})", env)


_QUANTIZE = """
import ctypes, sys, llama_cpp
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = getattr(llama_cpp, sys.argv[3])
params.nthread = {threads}
sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(params)))
"""


def quantize(source: Path, outfile: Path, ftype: str) -> None:
    code = _QUANTIZE.format(threads=os.cpu_count() or 1)
    _run_quiet(
        [sys.executable, "-c", code, str(source), str(outfile), ftype], f"llama.cpp's quantize ({ftype})"
    )


# ---------------------------------------------------------------------------------------------
# Ollama: the model's real chat template in Go-template syntax, when it is ChatML


def render_chatml(messages: Sequence[dict[str, str]], default_system: str | None) -> str:
    """What `ollama_chatml_template(default_system)` renders, in Python (the check compares it with
    the model's own Jinja template)."""
    out = []
    if default_system is not None and messages and messages[0]["role"] != "system":
        out.append(f"<|im_start|>system\n{default_system}<|im_end|>\n")
    out += [f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages]
    return "".join(out) + "<|im_start|>assistant\n"


def ollama_chatml_template(default_system: str | None) -> str:
    default = (
        '{{- if and (eq $i 0) (ne $m.Role "system") }}<|im_start|>system\n'
        f"{default_system}<|im_end|>\n{{{{ end }}}}"
        if default_system is not None
        else ""
    )
    return (
        "{{- range $i, $m := .Messages }}"
        + default
        + "<|im_start|>{{ $m.Role }}\n{{ $m.Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n"
    )


def chatml_default_system(tokenizer: Any, system_prompt: str) -> tuple[bool, str | None]:
    """(is the model's template ChatML as `render_chatml` writes it, its default system prompt)."""

    def jinja(messages: list[dict[str, str]]) -> str:
        return str(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))

    if getattr(tokenizer, "chat_template", None) is None:
        return False, None
    user = [{"role": "user", "content": "Write about the sea."}]
    bare = jinja(user)
    default = None
    head = "<|im_start|>system\n"
    if bare.startswith(head) and "<|im_end|>" in bare:
        default = bare[len(head) : bare.index("<|im_end|>")]
    conversations = [
        user,
        [{"role": "system", "content": system_prompt}, *user],
        [
            {"role": "system", "content": system_prompt},
            *user,
            {"role": "assistant", "content": "It was grey."},
            {"role": "user", "content": "Go on."},
        ],
    ]
    return all(jinja(c) == render_chatml(c, default) for c in conversations), default


def modelfile(
    gguf_name: str,
    template: str | None,
    system_prompt: str | None,
    stop_tokens: Sequence[str],
    temperature: float = 0.8,
) -> str:
    """An Ollama Modelfile: the GGUF, the chat template in Ollama's syntax, the training system prompt,
    the stop tokens."""
    lines = [
        f"# ollama create <name> -f {'Modelfile'} && ollama run <name>",
        f"FROM ./{gguf_name}",
    ]
    if template is not None:
        lines.append(f'TEMPLATE """{template}"""')
    if system_prompt:
        escaped = system_prompt.replace('"""', '\\"\\"\\"')
        lines.append(f'SYSTEM """{escaped}"""')
    lines += [f'PARAMETER stop "{token}"' for token in stop_tokens]
    lines.append(f"PARAMETER temperature {temperature}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# check: every file in llama.cpp against the merged model in transformers


@dataclass
class Sample:
    """One held-out example: the chat messages of the request and the author's answer."""

    messages: list[dict[str, str]]
    answer: str


def held_out_samples(data: PreparedData, count: int) -> list[Sample]:
    """The first `count` chat examples of the prepared val split, then test."""
    samples: list[Sample] = []
    for split in ("val", "test"):
        path = data.split(split)
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line) if line.strip() else {}
            messages = row.get("messages") or []
            if len(messages) >= 2 and messages[-1].get("role") == "assistant":
                samples.append(Sample([dict(m) for m in messages[:-1]], str(messages[-1]["content"])))
            if len(samples) >= count:
                return samples
    if not samples:
        raise VoicetuneError(
            f"no held-out chat examples in {data.folder} (val.jsonl/test.jsonl): the check needs the "
            f"prepared data of a chat-format run ({SCRIPTS['prepare']})"
        )
    return samples


@dataclass
class Reference:
    """transformers' view of the samples: token ids and, per position, argmax and log-probability."""

    prompts: list[list[int]]  # apply_chat_template ids of the request, generation prompt opened
    sequences: list[list[int]]  # prompt + answer (+ end of turn unless cut at max_tokens)
    argmax: list[list[int]]  # next-token argmax at each answer position
    logprobs: list[list[float]]  # log p(actual next token) at each answer position
    ends: list[bool]  # the answer is whole and ends with the end-of-turn token
    eot_id: int
    eot_token: str


def reference_pass(model_dir: Path, samples: Sequence[Sample], max_tokens: int) -> tuple[Reference, Any]:
    """Run the merged model in transformers over the samples (one forward pass each)."""
    import torch

    from voicetune.model.loading import load_for_inference

    model, tokenizer = load_for_inference(model_dir, device="auto")
    eot_id = int(tokenizer.eos_token_id)
    ref = Reference([], [], [], [], [], eot_id, str(tokenizer.convert_ids_to_tokens(eot_id)))
    for sample in samples:
        prompt = list(
            tokenizer.apply_chat_template(
                sample.messages, add_generation_prompt=True, tokenize=True, return_dict=False
            )
        )
        answer = list(tokenizer(sample.answer, add_special_tokens=False)["input_ids"])
        whole = len(answer) < max_tokens
        sequence = prompt + ([*answer, eot_id] if whole else answer[:max_tokens])
        with torch.inference_mode():
            logits = model(input_ids=torch.tensor([sequence], device=model.device)).logits[0].float()
        positions = range(len(prompt) - 1, len(sequence) - 1)
        logp = torch.log_softmax(logits, dim=-1)
        ref.prompts.append(prompt)
        ref.sequences.append(sequence)
        ref.argmax.append([int(logits[p].argmax()) for p in positions])
        ref.logprobs.append([float(logp[p, sequence[p + 1]]) for p in positions])
        ref.ends.append(whole)
    return ref, tokenizer


@dataclass
class FileCheck:
    label: str
    prompts: int
    tokens: int = 0
    agree: int = 0
    template_same: int = 0
    template_problem: str | None = None
    perplexity: float = math.nan
    reference_perplexity: float = math.nan
    eot_problem: str | None = None
    stops_expected: int = 0
    stops_seen: int = 0
    forced_stop: bool = False  # the sampling loop ends the reply when it samples the end-of-turn token
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def agreement(self) -> float:
        return self.agree / self.tokens if self.tokens else 0.0

    def line(self, eot_token: str) -> str:
        change = 100 * (self.perplexity / self.reference_perplexity - 1)
        natural = (
            f" (and where transformers ends the turn: {self.stops_seen}/{self.stops_expected})"
            if self.stops_expected
            else ""
        )
        stops = self.eot_problem is None and self.forced_stop and self.stops_seen == self.stops_expected
        stop = f"stops at {eot_token}{natural}" if stops else f"does NOT stop at {eot_token}{natural}"
        return (
            f"llama.cpp {self.label}: greedy tokens match {100 * self.agreement:.1f}% "
            f"({self.tokens:,} tokens, "
            f"{self.prompts} prompts), chat template ids identical {self.template_same}/{self.prompts}, "
            f"perplexity {self.perplexity:.3f} vs {self.reference_perplexity:.3f} ({change:+.2f}%), {stop}"
        )

    def problems(self, strict: bool, eot_token: str) -> list[str]:
        """Why this file is not the merged model (empty when it is). `strict` for 16-bit files."""
        found = []
        if self.template_problem:
            found.append(self.template_problem)
        if self.eot_problem:
            found.append(self.eot_problem)
        elif not self.forced_stop:
            found.append(f"llama.cpp's sampling loop did not end the reply when it sampled {eot_token}")
        elif self.stops_seen != self.stops_expected:
            found.append(
                f"llama.cpp's generation did not stop at {eot_token} on "
                f"{self.stops_expected - self.stops_seen} answers where transformers ends the turn"
            )
        if strict and self.agreement < MIN_AGREEMENT:
            found.append(
                f"greedy tokens agree on only {100 * self.agreement:.1f}% "
                f"(< {100 * MIN_AGREEMENT:.0f}%): the GGUF's weights or architecture settings differ "
                "from the merged model"
            )
        return found


def _first_difference(ours: Sequence[int], theirs: Sequence[int], decode: Any) -> str:
    index = next(
        (i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b), min(len(ours), len(theirs))
    )
    a = decode(ours[index : index + 1]) if index < len(ours) else "(end)"
    b = decode(theirs[index : index + 1]) if index < len(theirs) else "(end)"
    return f"at token {index}: transformers {a!r}, llama.cpp {b!r}"


def check_gguf(
    path: Path, label: str, samples: Sequence[Sample], ref: Reference, tokenizer: Any
) -> FileCheck:
    """Load one GGUF in llama.cpp (llama-cpp-python) and compare it with transformers' reference."""
    import numpy as np
    from llama_cpp import Llama, llama_chat_format

    started = time.monotonic()
    n_ctx = max(len(s) for s in ref.sequences) + 16
    llm = Llama(
        str(path), n_ctx=n_ctx, n_batch=512, logits_all=True, verbose=False, n_threads=os.cpu_count() or 1
    )
    result = FileCheck(label, len(samples))
    vocab = llm._model.vocab
    import llama_cpp

    if not llama_cpp.llama_vocab_is_eog(vocab, ref.eot_id):
        result.eot_problem = (
            f"the GGUF does not end generation at {ref.eot_token} (id {ref.eot_id}); "
            f"its EOS is id {llm.token_eos()}"
        )
    template = llm.metadata.get("tokenizer.chat_template")
    if template is None:
        result.template_problem = "the GGUF carries no chat template (tokenizer.chat_template)"
    eos, bos = llm.token_eos(), llm.token_bos()
    formatter = llama_chat_format.Jinja2ChatFormatter(
        template=template or "",
        eos_token=llm._model.token_get_text(eos) if eos != -1 else "",
        bos_token=llm._model.token_get_text(bos) if bos != -1 else "",
        stop_token_ids=[eos],
    )
    logprobs: list[float] = []
    for index, sample in enumerate(samples):
        prompt, sequence = ref.prompts[index], ref.sequences[index]
        if template is not None:
            # as llama-cpp-python's chat completion (and its server) renders and tokenises a request
            rendered = formatter(messages=sample.messages).prompt  # type: ignore[arg-type]
            ids = llm.tokenize(rendered.encode("utf-8"), add_bos=False, special=True)
            if ids == prompt:
                result.template_same += 1
            elif result.template_problem is None:
                result.template_problem = (
                    "llama.cpp's tokens of the templated prompt differ from transformers' "
                    "apply_chat_template " + _first_difference(prompt, ids, tokenizer.decode)
                )
        llm.reset()
        llm.eval(sequence)
        # rows len(prompt)-1 .. len(sequence)-2 predict the answer's tokens
        scores = np.asarray(llm.scores[len(prompt) - 1 : len(sequence) - 1], dtype=np.float64)
        shifted = scores - scores.max(axis=-1, keepdims=True)
        logz = np.log(np.exp(shifted).sum(axis=-1))
        targets = sequence[len(prompt) :]
        for k, target in enumerate(targets):
            result.tokens += 1
            result.agree += int(shifted[k].argmax() == ref.argmax[index][k])
            logprobs.append(float(shifted[k, target] - logz[k]))
        if ref.ends[index] and ref.argmax[index][-1] == ref.eot_id:
            # transformers ends this answer here: llama.cpp's own sampling loop must stop here too
            result.stops_expected += 1
            out = llm.create_completion(sequence[:-1], max_tokens=4, temperature=0.0)
            choice = out["choices"][0]  # type: ignore[index]
            if choice["finish_reason"] == "stop" and not choice["text"]:
                result.stops_seen += 1
    # the runtime's own loop, made to sample the end-of-turn token: it must end the reply there
    forced = llm.create_completion(
        ref.prompts[0], max_tokens=4, temperature=0.0, logit_bias={ref.eot_id: 100.0}
    )
    choice = forced["choices"][0]  # type: ignore[index]
    result.forced_stop = choice["finish_reason"] == "stop" and not choice["text"]
    reference = [lp for row in ref.logprobs for lp in row]
    result.reference_perplexity = math.exp(-sum(reference) / len(reference))
    result.perplexity = math.exp(-sum(logprobs) / len(logprobs))
    result.seconds = round(time.monotonic() - started, 1)
    del llm
    return result


# ---------------------------------------------------------------------------------------------
# the step


@dataclass
class Plan:
    model: MergedModel
    out_dir: Path
    quants: list[str]
    samples: int
    max_tokens: int
    converter: Path
    data: PreparedData

    @property
    def name(self) -> str:
        return self.model.name

    def file(self, quant: str) -> str:
        return f"{self.name}-{QUANTS[quant][0]}.gguf"

    def key(self) -> str:
        settings = {"quants": self.quants, "samples": self.samples, "max_tokens": self.max_tokens}
        return fingerprint(
            "export",
            EXPORT_VERSION,
            LLAMA_CPP_VERSION,
            self.model.manifest.get("fingerprint"),
            self.data.fingerprint,
            settings,
        )


def make_plan(args: argparse.Namespace) -> Plan:
    if args.run is None and args.model is None:
        raise VoicetuneError("which model? give --run NAME (a merged run) or --model DIR", exit_code=2)
    model = MergedModel.load(args.model if args.model is not None else args.run)
    quants = [q.strip().lower() for q in args.quants.split(",") if q.strip()]
    unknown = [q for q in quants if q not in QUANTS]
    if unknown or not quants:
        raise VoicetuneError(
            f"unknown --quants {','.join(unknown) or '(none)'}: choose from {', '.join(QUANTS)}"
        )
    sixteen = [q for q in quants if QUANTS[q][1] is None]
    if not sixteen:
        quants.insert(0, "f16")  # the others are quantised from it
    data_dir = args.data or model.data_dir
    if data_dir is None:
        raise VoicetuneError(
            f"{model.folder} records no prepared data for the check's held-out prompts: give --data NAME",
            exit_code=2,
        )
    problem = llama_cpp_problem()
    if problem:
        raise VoicetuneError(f"{problem}: run {INSTALL}", exit_code=3)
    return Plan(
        model=model,
        out_dir=(args.out or model.folder / "gguf").resolve(),
        quants=quants,
        samples=args.prompts,
        max_tokens=args.max_tokens,
        converter=find_converter(args.llama_cpp),
        data=PreparedData.load(data_dir),
    )


def build_files(plan: Plan, tmp: Path) -> list[str]:
    """Convert the 16-bit files, then quantise from the first of them, into tmp; returns notes."""
    stage = tmp / ".stage"
    notes = stage_model(plan.model.folder, stage)
    sixteen = [q for q in plan.quants if QUANTS[q][1] is None]
    for quant in sixteen:
        say(f"export: converting {plan.model.folder} -> {plan.file(quant)} (llama.cpp's {CONVERTER})")
        started = time.monotonic()
        convert(plan.converter, stage, tmp / plan.file(quant), quant, plan.name)
        say(f"export: {plan.file(quant)} in {time.monotonic() - started:.0f} s")
    shutil.rmtree(stage)
    for quant in plan.quants:
        ftype = QUANTS[quant][1]
        if ftype is not None:
            say(f"export: quantising -> {plan.file(quant)}")
            quantize(tmp / plan.file(sixteen[0]), tmp / plan.file(quant), ftype)
    return notes


def check_files(plan: Plan, tmp: Path) -> tuple[list[FileCheck], Reference, Any, list[Sample]]:
    samples = held_out_samples(plan.data, plan.samples)
    say(
        f"export: checking each file in llama.cpp against transformers on {len(samples)} held-out prompts "
        f"({plan.data.folder.name} val/test)"
    )
    ref, tokenizer = reference_pass(plan.model.folder, samples, plan.max_tokens)
    checks = []
    for quant in plan.quants:
        check = check_gguf(tmp / plan.file(quant), QUANTS[quant][0], samples, ref, tokenizer)
        say(check.line(ref.eot_token))
        checks.append(check)
    return checks, ref, tokenizer, samples


def write_side_files(plan: Plan, tmp: Path, tokenizer: Any, eot_token: str) -> list[str]:
    """Modelfiles and the LM Studio folder; returns notes."""
    notes = []
    system_prompt = plan.data.prompt_format.system_prompt
    is_chatml, default_system = chatml_default_system(tokenizer, system_prompt)
    template = ollama_chatml_template(default_system) if is_chatml else None
    if not is_chatml:
        notes.append(
            "the chat template is not ChatML: the Modelfiles leave the template to Ollama (from the GGUF)"
        )
    vocab = tokenizer.get_vocab()
    stops = [eot_token] + [
        t for t in END_OF_TURN_TOKENS if t in vocab and t != eot_token and t != "<|endoftext|>"
    ]
    if is_chatml and "<|im_start|>" not in stops:
        stops.append("<|im_start|>")
    default = "q4_k_m" if "q4_k_m" in plan.quants else plan.quants[-1]
    for quant in plan.quants:
        name = "Modelfile" if quant == default else f"Modelfile.{QUANTS[quant][0]}"
        write_text_atomic(tmp / name, modelfile(plan.file(quant), template, system_prompt, stops))
    lmstudio = tmp / "lmstudio" / PUBLISHER / f"{plan.name}-GGUF"
    lmstudio.mkdir(parents=True)
    for quant in plan.quants:
        try:
            os.link(tmp / plan.file(quant), lmstudio / plan.file(quant))
        except OSError:
            shutil.copy2(tmp / plan.file(quant), lmstudio / plan.file(quant))
    return notes


def export(plan: Plan) -> dict[str, Any]:
    key = plan.key()
    if is_up_to_date(plan.out_dir, key):
        manifest = read_manifest(plan.out_dir) or {}
        say(f"export: up to date in {plan.out_dir} (same merged model, data and settings); its check:")
        for line in manifest.get("check", []):
            say(line)
        return manifest
    with exclusive_lock(plan.out_dir, "exporting"), atomic_output_dir(plan.out_dir) as tmp:
        started = time.monotonic()
        notes = build_files(plan, tmp)
        checks, ref, tokenizer, samples = check_files(plan, tmp)
        problems = [
            f"{check.label}: {problem}"
            for check in checks
            for problem in check.problems(QUANTS[check.label.lower()][1] is None, ref.eot_token)
        ]
        if problems:
            raise VoicetuneError(
                "the GGUF is not the merged model - " + "; ".join(problems) + " (nothing was kept)"
            )
        notes += write_side_files(plan, tmp, tokenizer, ref.eot_token)
        outputs = {
            p.relative_to(tmp).as_posix(): sha256_file(p)
            for p in sorted(tmp.rglob("*"))
            if p.is_file() and p.name != "manifest.json"
        }
        manifest = build_manifest(
            "export",
            key,
            settings={"quants": plan.quants, "samples": plan.samples, "max_tokens": plan.max_tokens},
            inputs={
                "merged_model": stored_path(plan.model.folder, plan.out_dir),
                "merged_fingerprint": plan.model.manifest.get("fingerprint"),
                "data": stored_path(plan.data.folder, plan.out_dir),
                "data_fingerprint": plan.data.fingerprint,
                "converter": str(plan.converter),
            },
            outputs=outputs,
            libraries=LIBRARIES,
            run=plan.name,
            files={q: plan.file(q) for q in plan.quants},
            check=[c.line(ref.eot_token) for c in checks],
            check_details=[
                {
                    "file": plan.file(q),
                    "agreement": round(c.agreement, 5),
                    "tokens": c.tokens,
                    "prompts": c.prompts,
                    "template_identical": c.template_same,
                    "perplexity": round(c.perplexity, 4),
                    "reference_perplexity": round(c.reference_perplexity, 4),
                    "end_of_turn": ref.eot_token,
                    "stops": [c.stops_seen, c.stops_expected],
                    "seconds": c.seconds,
                }
                for q, c in zip(plan.quants, checks, strict=True)
            ],
            prompts=[s.messages[-1]["content"][:80] for s in samples],
            notes=notes,
            seconds=round(time.monotonic() - started, 1),
        )
        write_manifest(tmp, manifest)
    say(f"export: wrote {plan.out_dir}")
    return manifest


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", default=None, help="export merged_models/<run>")
    parser.add_argument("--model", type=Path, default=None, help="export this merged model folder instead")
    parser.add_argument(
        "--quants", default=",".join(DEFAULT_QUANTS), help=f"files to write, from {', '.join(QUANTS)}"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default: merged_models/<run>/gguf)"
    )
    parser.add_argument("--data", default=None, help="prepared data for the check (default: the run's)")
    parser.add_argument("--prompts", type=int, default=8, help="held-out prompts the check compares on")
    parser.add_argument("--max-tokens", type=int, default=256, help="answer tokens compared per prompt")
    parser.add_argument(
        "--llama-cpp", type=Path, default=None, help="a llama.cpp checkout (else setup's cache)"
    )


def run(args: argparse.Namespace) -> int:
    from voicetune.core.privacy import apply_private_env

    apply_private_env()
    plan = make_plan(args)
    manifest = export(plan)
    out = plan.out_dir
    files = manifest.get("files", {})
    say(
        f"  llama.cpp:  python -m llama_cpp.server --model {shlex.quote(str(out / files.get('q4_k_m', '')))}"
        f"  (or: voicetune serve --run {plan.name} --backend llama-cpp)"
    )
    say(
        f"  Ollama:     cd {shlex.quote(str(out))} && ollama create {plan.name} -f Modelfile "
        f"&& ollama run {plan.name}"
    )
    say(f"  LM Studio:  copy {shlex.quote(str(out / 'lmstudio' / PUBLISHER))} into ~/.lmstudio/models/")
    return 0
