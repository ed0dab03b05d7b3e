"""VRAM estimate for a LoRA/QLoRA training step: pure arithmetic over the model's shape.

No torch here: preflight and `--profile auto` call it on any machine, and tests check the numbers.
The model is Llama-shaped (q/k/v/o + gate/up/down projections, RMSNorm, an LM head), which covers
Llama, Mistral, Qwen2/3, SmolLM and most open decoders.

What the estimate counts, in the order memory is taken during one optimizer step:
- base weights: 4-bit NF4 linears (0.5 byte a weight + absmax scales; double quantisation shrinks
  the scales to ~8 bits per 64 weights) or 16/32-bit linears; embeddings, LM head and norms stay in
  the compute dtype;
- LoRA adapters: PEFT keeps them (and so their gradients) in fp32, unless
  `peft_autocast_adapter_dtype: false` leaves them in the compute dtype;
- `prepare_model_for_kbit_training` (what a plain PEFT script calls; Axolotl does not) upcasts every
  frozen non-4-bit weight (embeddings, LM head, norms) to fp32, and so the residual stream (fp32
  embeddings in, fp32 sums out); under autocast the LM head still runs in bf16, from a bf16 copy of
  its weights kept for the backward;
- optimizer states: AdamW 8 bytes a trainable parameter, 8-bit AdamW 2 bytes (bitsandbytes keeps
  32-bit states for tensors under 4,096 elements); "paged" variants put the states of tensors of at
  least 100,000 elements in CUDA unified memory, which torch's allocator does not count (they still
  take GPU memory); smaller tensors' states (every LoRA matrix of a SmolLM2, the attention ones of
  an 8B at r 16) are ordinary GPU memory;
- activations: with gradient checkpointing only each layer's input is kept, plus one layer's working
  set while it is recomputed; without it every layer keeps its intermediates. Eager attention also
  keeps the heads x seq x seq score matrices; SDPA and flash-attention do not. LoRA dropout keeps
  a dropped-out copy of an adapted module's input and its mask (1 byte an element): PEFT one per
  module; Axolotl's LoRA kernels (on by default) one shared by q/k/v, one by gate/up, none for down.
  Activation offloading (`activation_offloading: hidden_states` with checkpointing, `true` instead
  of it) streams what is saved to pinned CPU memory: about two layers' worth stay on the card;
- logits: the LM head's output in the compute dtype, plus, alive together at the turn from forward
  to backward, the loss's fp32 upcast, log-softmax's fp32 output and the fp32 gradient (14 bytes a
  logit in bf16); Liger's fused linear cross-entropy never builds them.

Peak = persistent memory + saved activations + torch's two cuBLAS workspaces + the larger of
(logits: the end of the forward pass) and (one layer's working set and the backward's transients,
plus the LoRA gradients when gradient accumulation keeps them: the start of the backward pass).

Peak over the whole run = the largest of loading (the weights as they arrive, plus Axolotl's fp32
casts of the embeddings and LM head unless `embeddings_skip_upcast`: load_peak_bytes), training and
evaluation; what must be free is sized from that, so a row "fits" only where a run capped to that
memory gets through loading as well as training.

Accuracy (benchmarks/results/estimator-accuracy.md, written by benchmarks/perf/estimator_accuracy.py
from the committed measurements): calibration, the 39 peaks this module was written and tuned
against (8B and SmolLM2-135M shapes, plain PEFT, Axolotl defaults, voicetune's profiles, micro batch
1 to 16, 2048 and 4096 tokens, one and two GPUs), within 9.5%. They are in-sample: one term, the
backward's transients (four hidden-sized tensors a token, the same on both models), was sized from
the gaps they left; the rest is counted from the code it models (PEFT, Axolotl's LoRA kernels and
loader, bitsandbytes, torch). Held out, 16 peaks measured after the estimate was fixed (the capped
8gb profile at 2048 and 4096 tokens, no checkpointing at micro batch 8, loading peaks): within 10%,
worst +9.1% (no checkpointing). tests/test_throughput.py asserts the held-out tolerance,
tests/test_train.py the calibration runs.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

GIB = 1024**3
LLAMA_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# CUDA context, cuBLAS workspaces and the allocator's slack: what "fits" keeps free beyond the peak.
CONTEXT_BYTES = int(1.0 * GIB)
FRAGMENTATION = 1.10
# The least a run can start with: the peak, a CUDA context (about 0.3-0.6 GiB with lazy module
# loading) and no slack. Between this and `required` a run is tight: it may run out of memory when
# the allocator fragments. Small cards live there (an 8B model on an 8 GB card).
MIN_CONTEXT_BYTES = int(0.5 * GIB)
# NF4 block of 64 weights: 4 bits each + one absmax. Plain: an fp32 absmax (32 bits / 64 weights);
# double quantisation: an 8-bit absmax plus one fp32 scale per 256 blocks.
NF4_BYTES_PER_WEIGHT = 0.5 + 4 / 64
NF4_DQ_BYTES_PER_WEIGHT = 0.5 + 1 / 64 + 4 / (64 * 256)
# torch's cuBLAS workspace, one per (handle, stream): the forward's thread and autograd's backward
# thread each hold one, 32 MiB on Hopper (8 MiB elsewhere; the larger is counted), taken through
# the caching allocator, so counted in max_memory_allocated, and kept for the whole run (so in
# evaluation too).
CUBLAS_WORKSPACES_BYTES = 2 * 32 * 1024**2
LOGIT_BYTES_EXTRA = 12  # fp32 upcast + fp32 log-softmax output + fp32 gradient of the logits
LORA_PARAM_BYTES = 4  # PEFT's autocast_adapter_dtype keeps adapters in fp32 (the default)


@dataclass(frozen=True)
class ModelShape:
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool = False
    max_position_embeddings: int | None = None

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ModelShape:
        """From a Hugging Face config.json mapping (text config of multimodal models too)."""
        cfg = config.get("text_config") or config
        try:
            hidden = int(cfg["hidden_size"])
            heads = int(cfg["num_attention_heads"])
            return cls(
                hidden_size=hidden,
                num_layers=int(cfg["num_hidden_layers"]),
                num_heads=heads,
                num_kv_heads=int(cfg.get("num_key_value_heads") or heads),
                head_dim=int(cfg.get("head_dim") or hidden // heads),
                intermediate_size=int(cfg["intermediate_size"]),
                vocab_size=int(cfg["vocab_size"]),
                tie_word_embeddings=bool(cfg.get("tie_word_embeddings", config.get("tie_word_embeddings"))),
                max_position_embeddings=cfg.get("max_position_embeddings"),
            )
        except KeyError as exc:
            raise ValueError(f"config.json lacks {exc.args[0]!r}: not a Llama-shaped decoder") from exc

    @classmethod
    def from_model_dir(cls, model_dir: Path) -> ModelShape:
        return cls.from_config(json.loads((model_dir / "config.json").read_text(encoding="utf-8")))

    def projection_dims(self) -> dict[str, tuple[int, int]]:
        """(in_features, out_features) of each projection of one decoder layer."""
        h, q, kv, i = (
            self.hidden_size,
            self.num_heads * self.head_dim,
            self.num_kv_heads * self.head_dim,
            self.intermediate_size,
        )
        return {
            "q_proj": (h, q),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (q, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }

    @property
    def linear_params(self) -> int:
        """Weights of all decoder-layer projections (what 4-bit quantisation applies to)."""
        return self.num_layers * sum(a * b for a, b in self.projection_dims().values())

    @property
    def embedding_params(self) -> int:
        heads = 1 if self.tie_word_embeddings else 2
        return heads * self.vocab_size * self.hidden_size

    @property
    def norm_params(self) -> int:
        return (2 * self.num_layers + 1) * self.hidden_size

    @property
    def total_params(self) -> int:
        return self.linear_params + self.embedding_params + self.norm_params


@dataclass(frozen=True)
class TrainPlan:
    """The knobs of a run that decide memory (names follow the Axolotl keys they come from)."""

    micro_batch_size: int = 1
    gradient_accumulation_steps: int = 1
    sequence_len: int = 2048
    load_in_4bit: bool = True
    double_quant: bool = True
    compute_bytes: int = 2  # bf16/fp16 = 2, fp32 = 4
    lora_r: int = 64
    lora_target_modules: tuple[str, ...] = LLAMA_PROJECTIONS
    lora_dropout: float = 0.05
    optimizer: str = "paged_adamw_8bit"
    # Axolotl's fused LoRA autograd functions (lora_qkv_kernel / lora_mlp_kernel): q/k/v share one
    # dropout copy, gate/up share one and down gets none; the MLP recomputes its activation.
    lora_qkv_kernel: bool = False
    lora_mlp_kernel: bool = False
    gradient_checkpointing: bool = True
    attention: str = "sdpa"  # sdpa | flash_attention_2 | eager | ...
    liger_fused_linear_cross_entropy: bool = False
    liger_kernels: bool = False  # rms_norm/glu: smaller working set per layer
    fused_eval_loss: bool = False  # voicetune's FusedEvalLossPlugin: Liger's fused loss in evaluation too
    lora_fp32: bool = True  # PEFT's autocast_adapter_dtype (False: adapters in the compute dtype)
    activation_offloading: str = "off"  # off | hidden_states (with checkpointing) | all
    upcast_frozen_fp32: bool = False  # prepare_model_for_kbit_training (plain PEFT scripts)
    # Axolotl casts the embeddings and LM head to fp32 while loading (and back to the compute dtype
    # before training) unless the base is 4-bit and `embeddings_skip_upcast: true`
    embeddings_skip_upcast: bool = False
    eval_micro_batch_size: int | None = None  # Axolotl's eval_batch_size (default: micro batch)

    @property
    def tokens(self) -> int:
        return self.micro_batch_size * self.sequence_len


@dataclass(frozen=True)
class Estimate:
    """Bytes by component; `peak_allocated` is comparable with torch.cuda.max_memory_allocated()."""

    base_weights: int
    lora_params: int
    lora_weights: int
    lora_grads: int
    optimizer_states: int
    optimizer_states_paged: int  # the part in CUDA unified memory (paged optimizers, large tensors)
    saved_activations: int
    logits: int
    layer_working_set: int
    persistent: int
    peak_allocated: int
    required: int  # comfortable: peak x FRAGMENTATION + CUDA context + paged optimizer states
    minimum: int  # tight: the larger peak + MIN_CONTEXT_BYTES (paged states can move to CPU memory)
    eval_peak: int = 0  # evaluation: weights + one layer's activations + the logits (or chunks)
    load_peak: int = 0  # loading: the weights as loaded + the embeddings' fp32 casts (load_peak_bytes)

    @property
    def highest_peak(self) -> int:
        """The largest of the loading, training and evaluation peaks: what the run needs at its worst
        (a run capped below it fails at that phase, loading included)."""
        return max(self.peak_allocated, self.eval_peak, self.load_peak)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            {
                f"{k}_gib": round(v / GIB, 2)
                for k, v in asdict(self).items()
                if isinstance(v, int) and not isinstance(v, bool) and k != "lora_params"
            }
        )
        return data

    def lines(self) -> list[str]:
        """A short human breakdown, one component a line."""

        def gib(value: int) -> str:
            return f"{value / GIB:6.2f} GiB"

        paged_gib = gib(self.optimizer_states_paged).strip()
        paged = f" ({paged_gib} paged: unified memory)" if self.optimizer_states_paged else ""
        dtype = "fp32" if self.lora_weights == 4 * self.lora_params else "compute dtype"
        return [
            f"base weights      {gib(self.base_weights)}",
            f"LoRA weights      {gib(self.lora_weights)}  ({self.lora_params / 1e6:.1f} M params, {dtype})",
            f"LoRA gradients    {gib(self.lora_grads)}",
            f"optimizer states  {gib(self.optimizer_states)}{paged}",
            f"activations       {gib(self.saved_activations)}",
            f"logits            {gib(self.logits)}",
            f"layer working set {gib(self.layer_working_set)}",
            f"cuBLAS workspaces {gib(CUBLAS_WORKSPACES_BYTES)}",
            f"peak allocated    {gib(self.peak_allocated)}  (training step)",
            f"evaluation peak   {gib(self.eval_peak)}  (no gradients; full logits unless the loss is fused)",
            f"loading peak      {gib(self.load_peak)}  (weights as loaded + fp32 casts of the embeddings)",
            f"needs free        {gib(self.required)}  (peak x{FRAGMENTATION:.2f} + CUDA context)",
            f"at the least      {gib(self.minimum)}  (peak + CUDA context, no slack: tight)",
        ]


def optimizer_bytes_per_param(optimizer: str) -> tuple[int, bool]:
    """(bytes of state per trainable parameter, paged?) for an Axolotl/HF optimizer name."""
    name = optimizer.lower()
    paged = "paged" in name
    if "lion" in name:
        return (1 if "8bit" in name else 4), paged  # one momentum
    if "8bit" in name:
        return 2, paged  # two 8-bit moments
    if name.startswith("sgd"):
        return 0, paged
    if "adafactor" in name:
        return 1, paged  # factored second moment: tiny for adapters
    return 8, paged  # AdamW and friends: two fp32 moments


BNB_MIN_8BIT_SIZE = 4096  # bitsandbytes keeps 32-bit states for smaller tensors
BNB_MIN_PAGED_SIZE = 100_000  # ... and pages only tensors at least this large (get_state_buffer)


def optimizer_state_bytes(shape: ModelShape, plan: TrainPlan) -> tuple[int, int]:
    """(all optimizer state bytes, the part paged to unified memory), LoRA matrix by matrix."""
    per_param, paged = optimizer_bytes_per_param(plan.optimizer)
    per_param_32bit, _ = optimizer_bytes_per_param(plan.optimizer.lower().replace("8bit", "32bit"))
    dims = shape.projection_dims()
    total = in_unified = 0
    for target in plan.lora_target_modules:
        fan_in, fan_out = dims[target]
        for numel in (plan.lora_r * fan_in, plan.lora_r * fan_out):  # lora_A, lora_B
            state = numel * (per_param_32bit if numel < BNB_MIN_8BIT_SIZE else per_param)
            total += state
            in_unified += state if paged and numel >= BNB_MIN_PAGED_SIZE else 0
    return total * shape.num_layers, in_unified * shape.num_layers


def lora_param_count(shape: ModelShape, r: int, targets: tuple[str, ...] | list[str]) -> int:
    dims = shape.projection_dims()
    unknown = [t for t in targets if t not in dims]
    if unknown:
        raise ValueError(f"unknown LoRA target module(s) {unknown}: expected some of {list(dims)}")
    return shape.num_layers * sum(r * (dims[t][0] + dims[t][1]) for t in targets)


def _dropout_inputs_width(shape: ModelShape, plan: TrainPlan) -> int:
    """Elements per token of the dropped-out input copies one layer keeps for backward."""
    dims = shape.projection_dims()
    targets = [t for t in plan.lora_target_modules if t in dims]
    shared = []
    if plan.lora_qkv_kernel:
        shared.append({"q_proj", "k_proj", "v_proj"})
    if plan.lora_mlp_kernel:
        shared.append({"gate_proj", "up_proj", "down_proj"})  # down's input (the activation) gets none
    width = 0
    for group in shared:
        if group - {"down_proj"} & set(targets):
            width += shape.hidden_size
        targets = [t for t in targets if t not in group]
    return width + sum(dims[t][0] for t in targets)


def _layer_saved_bytes(shape: ModelShape, plan: TrainPlan) -> int:
    """Activations one decoder layer keeps for backward, without checkpointing."""
    h, i = shape.hidden_size, shape.intermediate_size
    q, kv = shape.num_heads * shape.head_dim, shape.num_kv_heads * shape.head_dim
    # norm in/out (2h), q, k, v, attention output (q), o_proj input, residual, second norm (2h),
    # gate, up, act(gate), gate*up (4i)
    width = 2 * h + q + 2 * kv + q + h + 2 * h + 4 * i
    per_token = width * plan.compute_bytes
    if plan.lora_dropout > 0:
        # a dropped-out copy of the module's input (compute dtype) and its mask (1 byte)
        per_token += _dropout_inputs_width(shape, plan) * (plan.compute_bytes + 1)
    if plan.liger_kernels or plan.lora_mlp_kernel:
        per_token -= 2 * i * plan.compute_bytes  # act(gate) and the product are recomputed
    attention = 0
    if plan.attention == "eager":
        # scores + softmax (compute dtype) + dropout mask (1 byte) per head
        attention = (
            plan.micro_batch_size * shape.num_heads * plan.sequence_len**2 * (2 * plan.compute_bytes + 1)
        )
    return plan.tokens * per_token + attention


def estimate(shape: ModelShape, plan: TrainPlan) -> Estimate:
    cb = plan.compute_bytes
    frozen_bytes = 4 if plan.upcast_frozen_fp32 else cb
    if plan.load_in_4bit:
        per_weight = NF4_DQ_BYTES_PER_WEIGHT if plan.double_quant else NF4_BYTES_PER_WEIGHT
        linear = int(shape.linear_params * per_weight)
    else:
        linear = shape.linear_params * frozen_bytes
    base = linear + (shape.embedding_params + shape.norm_params) * frozen_bytes

    lora_params = lora_param_count(shape, plan.lora_r, plan.lora_target_modules)
    lora_bytes = LORA_PARAM_BYTES if plan.lora_fp32 else cb
    lora_weights = lora_params * lora_bytes
    lora_grads = lora_params * lora_bytes
    states, states_paged = optimizer_state_bytes(shape, plan)

    layer_full = _layer_saved_bytes(shape, plan)
    # fp32 embeddings (prepare_model_for_kbit_training) make the whole residual stream fp32: the
    # checkpointed layer inputs too
    layer_input = plan.tokens * shape.hidden_size * frozen_bytes
    if plan.activation_offloading == "all":
        saved = 2 * layer_full  # no recomputation; the layer being copied out and the next one
    elif plan.gradient_checkpointing:
        kept = 2 if plan.activation_offloading == "hidden_states" else shape.num_layers
        saved = kept * layer_input
    else:
        saved = shape.num_layers * layer_full
    # The layer being recomputed and back-propagated keeps its activations (their gradients reuse
    # what the backward frees as it goes: counting them twice overshot every measurement by 10-25%),
    # one 4-bit weight dequantised for its matmul (in evaluation too), and the backward's own
    # transients: the incoming gradient, its copy along the residual path and the RMSNorm backward's
    # fp32 gradient, about four hidden-sized tensors a token.
    dequantised = max(a * b for a, b in shape.projection_dims().values()) * cb if plan.load_in_4bit else 0
    backward_transients = 4 * plan.tokens * shape.hidden_size * cb
    working = layer_full + dequantised + backward_transients
    if plan.liger_fused_linear_cross_entropy:
        logits = 0
    else:
        # under autocast the LM head runs in the compute dtype whatever its weights' dtype; an fp32
        # head is cast for the matmul and that copy is kept for the backward
        head_copy = shape.vocab_size * shape.hidden_size * cb if plan.upcast_frozen_fp32 else 0
        logits = plan.tokens * shape.vocab_size * (cb + LOGIT_BYTES_EXTRA) + head_copy

    persistent_counted = base + lora_weights + states - states_paged
    # Saved layer inputs are alive both at the end of the forward pass (with the logits) and at the
    # start of the backward pass (with the top layer's working set). The adapter gradients are there
    # too only when gradient accumulation keeps them between micro batches: the Trainer sets them to
    # None after each optimizer step (measured: fp32 adapters cost their weights' extra bytes, not
    # their gradients', at accumulation 1).
    accumulated = lora_grads if plan.gradient_accumulation_steps > 1 else 0
    peak = persistent_counted + saved + max(logits, accumulated + working) + CUBLAS_WORKSPACES_BYTES
    # Evaluation without gradients: the weights and one layer's transient activations at a time.
    # Liger fuses the loss only in training, so evaluation builds the full logits (bf16 logits +
    # fp32 upcast + fp32 log-softmax). Measured on 2 x H200 (80gb profile, micro batch 4 x 4096
    # tokens, Liger): 25.7 GiB at evaluation vs 15.1 GiB in training steps. voicetune's
    # FusedEvalLossPlugin asks Liger for the loss alone in evaluation too: then the logits are built
    # chunk by chunk, each chunk about the size of the hidden states.
    eval_tokens = (plan.eval_micro_batch_size or plan.micro_batch_size) * plan.sequence_len
    if plan.fused_eval_loss and plan.liger_fused_linear_cross_entropy:
        per_token = shape.hidden_size * (4 * cb + 3 * 4) + shape.intermediate_size * 3 * cb
        eval_peak = persistent_counted + CUBLAS_WORKSPACES_BYTES + eval_tokens * per_token + dequantised
    else:
        logits_bytes = eval_tokens * shape.vocab_size * (cb + 8)
        hidden_bytes = eval_tokens * shape.hidden_size * cb * 4  # a few hidden states of the eval batch
        eval_peak = persistent_counted + CUBLAS_WORKSPACES_BYTES + logits_bytes + hidden_bytes
    load = load_peak_bytes(shape, plan)
    highest = max(peak, eval_peak, load)
    required = int((highest + states_paged) * FRAGMENTATION) + CONTEXT_BYTES
    return Estimate(
        base_weights=base,
        lora_params=lora_params,
        lora_weights=lora_weights,
        lora_grads=lora_grads,
        optimizer_states=states,
        optimizer_states_paged=states_paged,
        saved_activations=saved,
        logits=logits,
        layer_working_set=working,
        persistent=persistent_counted,
        peak_allocated=peak,
        required=required,
        minimum=highest + MIN_CONTEXT_BYTES,
        eval_peak=eval_peak,
        load_peak=load,
    )


def embeddings_upcast_on_load(plan: TrainPlan) -> bool:
    """Whether loading casts the embeddings and LM head to fp32 (a transient for Axolotl, which
    casts them back before training; for good with `upcast_frozen_fp32`)."""
    if plan.compute_bytes >= 4:
        return False  # already fp32
    return plan.upcast_frozen_fp32 or not (plan.load_in_4bit and plan.embeddings_skip_upcast)


def load_peak_bytes(shape: ModelShape, plan: TrainPlan) -> int:
    """Peak allocated while the model loads, before the first training step.

    The weights arrive in the compute dtype, 4-bit linears quantised one at a time (the largest
    one briefly in both forms). Then, unless `embeddings_upcast_on_load` says no, Axolotl's
    `_convert_embedding_modules_dtype` (and a plain script's `prepare_model_for_kbit_training`)
    casts the input embedding, then the LM head, to fp32 module by module: while the last one is
    cast, the ones before it are fp32 and it exists in both dtypes. For an untied 128k x 4096
    vocabulary that is 2.94 GiB above the loaded weights (the 1.96 GiB request that failed a
    7.6 GiB-capped 8B run with 6.29 GiB allocated). Axolotl casts them back to the compute dtype
    (the same peak, the other way round); the adapters come after, so the weights + adapters bound
    the end of loading. Measured: plain PEFT on the 8B shape 8.25 GiB (predicted 8.26), on
    SmolLM2-135M 0.23 GiB (predicted 0.23).
    """
    cb = plan.compute_bytes
    if plan.load_in_4bit:
        per_weight = NF4_DQ_BYTES_PER_WEIGHT if plan.double_quant else NF4_BYTES_PER_WEIGHT
        linear = int(shape.linear_params * per_weight)
        quantising = max(a * b for a, b in shape.projection_dims().values()) * cb
    else:
        linear, quantising = shape.linear_params * cb, 0
    loaded = linear + (shape.embedding_params + shape.norm_params) * cb
    matrix = shape.vocab_size * shape.hidden_size
    matrices = shape.embedding_params // matrix
    cast = (matrices - 1) * matrix * (4 - cb) + matrix * 4 if embeddings_upcast_on_load(plan) else 0
    frozen_after = 4 if plan.upcast_frozen_fp32 else cb
    lora_bytes = LORA_PARAM_BYTES if plan.lora_fp32 else cb
    after = (
        linear
        + (shape.embedding_params + shape.norm_params) * frozen_after
        + lora_param_count(shape, plan.lora_r, plan.lora_target_modules) * lora_bytes
    )
    return max(loaded + quantising, loaded + cast, after)


def plan_from_axolotl(cfg: dict[str, Any]) -> TrainPlan:
    """The memory-relevant knobs of a rendered Axolotl config."""
    precision_32 = not (cfg.get("bf16") in (True, "auto") or cfg.get("fp16") is True)
    targets = cfg.get("lora_target_modules") or (LLAMA_PROJECTIONS if cfg.get("lora_target_linear") else ())
    if isinstance(targets, str):
        targets = (targets,)
    bnb = cfg.get("bnb_config_kwargs") or {}
    plugins = " ".join(cfg.get("plugins") or [])
    liger = "liger" in plugins.lower()
    attention = str(
        cfg.get("attn_implementation") or ("flash_attention_2" if cfg.get("flash_attention") else "sdpa")
    )
    return TrainPlan(
        micro_batch_size=int(cfg.get("micro_batch_size") or 1),
        gradient_accumulation_steps=int(cfg.get("gradient_accumulation_steps") or 1),
        eval_micro_batch_size=int(cfg["eval_batch_size"]) if cfg.get("eval_batch_size") else None,
        sequence_len=int(cfg.get("sequence_len") or 2048),
        load_in_4bit=bool(cfg.get("load_in_4bit")),
        double_quant=bool(bnb.get("bnb_4bit_use_double_quant", True)),
        compute_bytes=4 if precision_32 else 2,
        lora_r=int(cfg.get("lora_r") or 8),
        lora_target_modules=tuple(targets),
        lora_dropout=float(cfg.get("lora_dropout") or 0.0),
        lora_qkv_kernel=_lora_kernel(cfg, "lora_qkv_kernel"),
        lora_mlp_kernel=_lora_kernel(cfg, "lora_mlp_kernel"),
        optimizer=str(cfg.get("optimizer") or "adamw_torch"),
        gradient_checkpointing=bool(cfg.get("gradient_checkpointing")),
        attention=attention,
        liger_fused_linear_cross_entropy=liger and bool(cfg.get("liger_fused_linear_cross_entropy")),
        liger_kernels=liger and bool(cfg.get("liger_glu_activation") or cfg.get("liger_swiglu")),
        fused_eval_loss="FusedEvalLossPlugin" in plugins,
        lora_fp32=cfg.get("peft_autocast_adapter_dtype") is not False or precision_32,
        activation_offloading=_offloading(cfg.get("activation_offloading")),
        upcast_frozen_fp32=bool(cfg.get("upcast_frozen_fp32")),
        embeddings_skip_upcast=bool(cfg.get("embeddings_skip_upcast")),
    )


LORA_KERNEL_KEYS = ("lora_mlp_kernel", "lora_qkv_kernel", "lora_o_kernel", "lora_embedding_kernel")


def _lora_kernel(cfg: dict[str, Any], key: str) -> bool:
    """Whether Axolotl runs this fused LoRA kernel: as set, or its auto-enable rule when no kernel
    key is set (LoRA/QLoRA, not 8-bit LoRA, no remote code)."""
    if any(cfg.get(k) is not None for k in LORA_KERNEL_KEYS):
        return bool(cfg.get(key))
    adapter = cfg.get("adapter")
    return adapter == "qlora" or (
        adapter == "lora" and not cfg.get("load_in_8bit") and not cfg.get("trust_remote_code")
    )


def _offloading(value: Any) -> str:
    """Axolotl's `activation_offloading`: true (offload everything, no recomputation), "legacy"
    (the same), "hidden_states" (checkpointing + offloaded layer inputs), false/absent."""
    if value in (None, False, "false", "off"):
        return "off"
    return "hidden_states" if value == "hidden_states" else "all"


def eval_batch_within_training_peak(shape: ModelShape, plan: TrainPlan) -> int:
    """The largest eval batch (at most Axolotl's default, the micro batch) whose evaluation peak stays
    within the training peak. Evaluation builds the full [tokens x vocabulary] logits unless the loss
    is fused there too (FusedEvalLossPlugin), so at the training micro batch it can need several times
    the memory of a training step (a 135M model at micro batch 16 x 4096 tokens: 28.5 GiB in
    evaluation against 4.0 GiB in training, measured on an H100). At least 1: when even one row
    exceeds it, that row's peak is the limit."""
    wanted = plan.eval_micro_batch_size or plan.micro_batch_size
    train_peak = estimate(shape, plan).peak_allocated  # the eval batch does not change it
    best = 1
    for batch in range(2, wanted + 1):
        if estimate(shape, _replace(plan, eval_micro_batch_size=batch)).eval_peak > train_peak:
            break
        best = batch
    return best


@dataclass(frozen=True)
class AutoChoice:
    micro_batch_size: int
    sequence_len: int
    estimate: Estimate
    reason: str


def choose_batch_and_length(
    shape: ModelShape,
    plan: TrainPlan,
    free_bytes: int,
    min_sequence_len: int,
    lengths: tuple[int, ...] = (512, 1024, 2048, 4096),
    batches: tuple[int, ...] = (1, 2, 4, 8, 16),
) -> AutoChoice | None:
    """The longest sequence (>= min_sequence_len, so no example is dropped) that fits with micro
    batch 1, then the largest micro batch that fits at that length, all with the allocator's slack.
    When nothing fits so, what fits without it (the reason says "tight"). None when nothing fits."""
    cap = shape.max_position_embeddings or max(lengths)
    candidates = sorted({max(min_sequence_len, n) for n in lengths if n <= cap} | {min_sequence_len})
    candidates = [n for n in candidates if n <= max(cap, min_sequence_len)]

    def fits(mb: int, n: int, tight: bool) -> Estimate | None:
        # the eval batch is sized apart (eval_batch_within_training_peak), so evaluation never
        # shrinks the training micro batch
        candidate = _replace(plan, micro_batch_size=mb, sequence_len=n, eval_micro_batch_size=None)
        eval_batch = eval_batch_within_training_peak(shape, candidate)
        candidate = _replace(candidate, eval_micro_batch_size=eval_batch)
        est = estimate(shape, candidate)
        return est if (est.minimum if tight else est.required) <= free_bytes else None

    tight = False  # with the allocator's slack
    best_len = next((n for n in reversed(candidates) if fits(1, n, tight)), None)
    if best_len is None:
        # A small card: without the slack, and then no further than the data and the profile ask
        # (the shortest length that drops no example, at most the profile's micro batch).
        tight = True
        best_len = candidates[0] if fits(1, candidates[0], tight) else None
        batches = tuple(mb for mb in batches if mb <= plan.micro_batch_size)
    if best_len is None:
        return None
    best_mb, best_est = 1, fits(1, best_len, tight)
    for mb in batches:
        est = fits(mb, best_len, tight)
        if est is None:
            break
        best_mb, best_est = mb, est
    assert best_est is not None
    need = best_est.minimum if tight else best_est.required
    reason = (
        f"sequence_len {best_len} and micro_batch_size {best_mb} are the largest that fit: they need "
        f"{need / GIB:.1f} GiB of the {free_bytes / GIB:.1f} GiB free"
    )
    if tight:
        reason += (
            f" with no room for the allocator's slack (comfortable: {best_est.required / GIB:.1f} GiB); "
            f"close other GPU programs, or set PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True"
        )
    return AutoChoice(best_mb, best_len, best_est, reason)


def _replace(plan: TrainPlan, **changes: Any) -> TrainPlan:
    from dataclasses import replace

    return replace(plan, **changes)
