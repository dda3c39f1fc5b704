"""`sari-train plan`: GPU memory per device for a training preset, before renting the GPUs.

    sari-train plan --config pipelines/train/sari-qwen2-audio.yaml --gpus 8 --gpu-memory 80
    sari-train plan --config pipelines/train/r1-aqa.yaml --model models/replica-qwen2-audio --gpus 4

Parameter counts come from the model's config.json (or, for the two hub models, their dimensions
embedded below, so no download is needed): language model, audio encoder, projector, the Omni
thinker's vision tower. Memory per GPU is arithmetic on those counts and the preset's batch:

- weights: trained weights in float32 (master weights), frozen ones in `dtype`; sharded over the
  GPUs by FSDP2 (plus the two decoder layers FSDP gathers at a time); the GRPO reference model
  (β > 0 without LoRA) in `dtype`: sharded like the policy under FSDP (its no-grad pass gathers
  one unit at a time and frees it, before the policy's pass, so at the peak it holds its shards
  only), a whole copy on every GPU under DDP (sari_train/grpo/reference.py).
- gradients: float32, one per trained weight; DDP keeps a second copy in its all-reduce buckets.
- optimizer: AdamW's two float32 moments per trained weight.
- activations: what autograd keeps for one micro-batch (sequences × tokens): per token and decoder
  layer 34·H + 8·I bytes under bf16 autocast, 40·H + 16·I in float32 (measured: saved-tensor
  bytes of a Qwen2 layer; flash/efficient attention keeps no T×T matrices), or 4·H with
  gradient checkpointing plus one layer recomputed; the logits, their shifted copy and the
  log-softmax kept for the loss, 12·V bytes a token; under DDP mixed precision the bf16 copies
  autocast makes of the trained weights (2 bytes each).
- rollout KV cache (GRPO): keys and values of every layer for prompts × G sequences of prompt +
  completion tokens, in the compute dtype.

The peak ("total") is weights + optimizer + the largest of activations, gradients and KV cache:
they come at different times (rollouts before the loss, activations through the forward pass,
gradients as the backward pass frees the activations; `zero_grad` drops them before the next
step). A GPU "fits" when the peak is within 90 % of its memory (the rest: CUDA context, allocator
fragmentation). `bench/bench_plan.py` checks the arithmetic against measured peaks on CPU.

The preset as written is one row of the table: its `accelerate_config` (DDP or FSDP2, and the
number of processes), its LoRA setting and `gradient_checkpointing`; `plan` marks that row, says
whether it fits, and adds the disk a run needs: `save_total_limit` checkpoints (weights in
`dtype`, float32 master weights, AdamW moments) plus `final/`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

GiB = 1024 ** 3
STRATEGIES = ("ddp", "fsdp")
HEADROOM = 0.9

# The hub models' config.json fields that size them (the rest of each file does not change memory).
KNOWN_MODELS: dict[str, dict[str, Any]] = {
    "Qwen/Qwen2-Audio-7B-Instruct": {
        "model_type": "qwen2_audio",
        "audio_config": {"model_type": "qwen2_audio_encoder", "d_model": 1280, "encoder_layers": 32,
                         "encoder_attention_heads": 20, "encoder_ffn_dim": 5120, "num_mel_bins": 128,
                         "max_source_positions": 1500},
        "text_config": {"model_type": "qwen2", "vocab_size": 156032, "hidden_size": 4096, "intermediate_size": 11008,
                        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
                        "tie_word_embeddings": False},
    },
    "Qwen/Qwen2.5-Omni-7B": {
        "model_type": "qwen2_5_omni_thinker",  # what we train: the thinker of the full checkpoint
        "audio_config": {"d_model": 1280, "encoder_layers": 32, "encoder_attention_heads": 20, "encoder_ffn_dim": 5120,
                         "num_mel_bins": 128, "max_source_positions": 1500, "output_dim": 3584},
        "vision_config": {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
                          "in_channels": 3, "patch_size": 14, "temporal_patch_size": 2, "spatial_merge_size": 2,
                          "out_hidden_size": 3584},
        "text_config": {"vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
                        "num_attention_heads": 28, "num_key_value_heads": 4, "tie_word_embeddings": False},
    },
}
KNOWN_MODELS["Qwen/Qwen2-Audio-7B"] = KNOWN_MODELS["Qwen/Qwen2-Audio-7B-Instruct"]


@dataclass(frozen=True)
class Dims:
    """The sizes that set parameter counts and memory."""

    vocab: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    tied: bool
    audio_width: int
    audio_layers: int
    audio_ffn: int
    mel_bins: int
    audio_positions: int
    audio_output: int | None  # Omni: the encoder projects to the LM width itself; Qwen2-Audio: a projector does
    vision: dict[str, int] | None = None


def _get(config: Any, name: str, default: Any = None) -> Any:
    return config.get(name, default) if isinstance(config, dict) else getattr(config, name, default)


def dims_from_config(config: Any) -> Dims:
    """Dims of a transformers config (Qwen2-Audio, Omni thinker, or a full Omni config)."""
    if _get(config, "thinker_config") is not None:
        config = _get(config, "thinker_config")
    text, audio, vision = (_get(config, k) for k in ("text_config", "audio_config", "vision_config"))
    if text is None or audio is None:
        raise ValueError("not an audio LM config: it needs text_config and audio_config")
    heads = _get(text, "num_attention_heads")
    hidden = _get(text, "hidden_size")
    return Dims(
        vocab=_get(text, "vocab_size"), hidden=hidden, intermediate=_get(text, "intermediate_size"),
        layers=_get(text, "num_hidden_layers"), heads=heads, kv_heads=_get(text, "num_key_value_heads") or heads,
        head_dim=_get(text, "head_dim") or hidden // heads, tied=bool(_get(text, "tie_word_embeddings", False)),
        audio_width=_get(audio, "d_model"), audio_layers=_get(audio, "encoder_layers"),
        audio_ffn=_get(audio, "encoder_ffn_dim"), mel_bins=_get(audio, "num_mel_bins"),
        audio_positions=_get(audio, "max_source_positions"), audio_output=_get(audio, "output_dim"),
        vision=None if vision is None else {k: _get(vision, k) for k in (
            "depth", "hidden_size", "intermediate_size", "in_channels", "patch_size", "temporal_patch_size",
            "spatial_merge_size", "out_hidden_size")})


def load_dims(model: str) -> Dims:
    """From a known hub id (no download) or a model folder / config.json path."""
    from transformers import AutoConfig

    if model in KNOWN_MODELS:
        raw = dict(KNOWN_MODELS[model])
        return dims_from_config(AutoConfig.for_model(raw.pop("model_type"), **raw))
    path = Path(model)
    if path.is_file():
        path = path.parent
    if not (path / "config.json").exists():
        raise ValueError(f"{model}: no config.json there; give a model folder or one of {', '.join(KNOWN_MODELS)}")
    return dims_from_config(AutoConfig.from_pretrained(path))


# --- parameter counts -------------------------------------------------------------------------

def decoder_layer_params(d: Dims) -> int:
    """One Qwen2 decoder layer: q/k/v (with bias), o, gated MLP, two RMSNorms."""
    q, kv = d.heads * d.head_dim, d.kv_heads * d.head_dim
    attention = d.hidden * q + q + 2 * (d.hidden * kv + kv) + q * d.hidden
    return attention + 3 * d.hidden * d.intermediate + 2 * d.hidden


def language_model_params(d: Dims) -> int:
    embeddings = d.vocab * d.hidden * (1 if d.tied else 2)
    return embeddings + d.layers * decoder_layer_params(d) + d.hidden


def audio_encoder_params(d: Dims) -> int:
    """Whisper-style encoder: two convolutions, attention (no k bias) + MLP layers, final norm;
    Qwen2-Audio learns its position table, Omni's is a fixed buffer and it projects to the LM width."""
    w, f = d.audio_width, d.audio_ffn
    layer = 4 * w * w + 3 * w + 2 * w * f + f + w + 4 * w
    convs = d.mel_bins * w * 3 + w + w * w * 3 + w
    total = convs + d.audio_layers * layer + 2 * w
    if d.audio_output is None:
        return total + d.audio_positions * w
    return total + w * d.audio_output + d.audio_output + 2 * d.audio_output  # proj + bos/eos embeddings


def projector_params(d: Dims) -> int:
    return 0 if d.audio_output is not None else d.audio_width * d.hidden + d.hidden


def vision_params(d: Dims) -> int:
    """The Omni thinker's vision tower (never trained here): patch conv, blocks, patch merger."""
    if d.vision is None:
        return 0
    v = d.vision
    h, i, merged = v["hidden_size"], v["intermediate_size"], v["hidden_size"] * v["spatial_merge_size"] ** 2
    patch = v["in_channels"] * v["temporal_patch_size"] * v["patch_size"] ** 2 * h
    block = 4 * (h * h + h) + 3 * h * i + 2 * i + h + 2 * h
    merger = h + merged * merged + merged + merged * v["out_hidden_size"] + v["out_hidden_size"]
    return patch + v["depth"] * block + merger


def lora_params(d: Dims, r: int) -> int:
    """Rank-r adapters on every LM projection (q, k, v, o, gate, up, down): r·(in + out) each."""
    q, kv = d.heads * d.head_dim, d.kv_heads * d.head_dim
    per_layer = (d.hidden + q) * 2 + 2 * (d.hidden + kv) + 3 * (d.hidden + d.intermediate)
    return d.layers * r * per_layer


@dataclass(frozen=True)
class Counts:
    language_model: int
    audio_encoder: int
    projector: int
    vision: int

    @property
    def total(self) -> int:
        return self.language_model + self.audio_encoder + self.projector + self.vision


def parameter_counts(d: Dims) -> Counts:
    return Counts(language_model_params(d), audio_encoder_params(d), projector_params(d), vision_params(d))


# --- memory per GPU ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Workload:
    """One micro-batch per GPU and how it is trained."""

    sequences: int  # SFT: batch_size; GRPO: prompts_per_batch × G, or completions_per_batch
    prompt_tokens: int
    completion_tokens: int
    rollout_prompts: int = 0  # GRPO: prompts sampled at once per GPU (each G times); 0 for SFT
    generations: int = 1
    mixed: bool = True  # bf16/fp16 autocast over float32 master weights (False: all float32)
    reference: bool = False  # GRPO β > 0 without LoRA: a frozen copy of the model
    train_audio: bool = False


def memory_per_gpu(d: Dims, work: Workload, strategy: str, gpus: int, lora_rank: int | None = None,
                   checkpointing: bool = False) -> dict[str, float]:
    """Bytes per GPU by kind (see the module docstring for what each holds)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}")
    counts = parameter_counts(d)
    low = 2 if work.mixed else 4  # compute / frozen-weights bytes
    trained_base = counts.language_model + (counts.audio_encoder + counts.projector if work.train_audio else 0)
    trained = lora_params(d, lora_rank) if lora_rank else trained_base
    frozen = counts.total - (0 if lora_rank else trained_base)
    shards = 1 if strategy == "ddp" else gpus

    weights = (trained * 4 + frozen * low) / shards
    optimizer = trained * 8 / shards
    if strategy != "ddp":
        weights += 2 * decoder_layer_params(d) * low  # the layers gathered for compute (one in flight, one prefetched)
    gradients = trained * 4 * (2 if strategy == "ddp" and gpus > 1 else 1) / shards  # DDP buckets
    if work.reference and not lora_rank:  # under LoRA the reference is the base with adapters off
        weights += counts.total * low / (gpus if strategy == "fsdp" else 1)

    tokens = work.sequences * (work.prompt_tokens + work.completion_tokens)
    per_layer_token = (34 * d.hidden + 8 * d.intermediate) if work.mixed else (40 * d.hidden + 16 * d.intermediate)
    if checkpointing:
        layers = tokens * (4 * d.layers * d.hidden + per_layer_token)
    else:
        layers = tokens * d.layers * per_layer_token
    activations = layers + tokens * 12 * d.vocab
    if strategy == "ddp" and work.mixed:
        activations += trained * 2  # autocast's bf16 copies of the trained weights

    rollout = work.rollout_prompts * work.generations * (work.prompt_tokens + work.completion_tokens)
    kv_cache = rollout * 2 * d.layers * d.kv_heads * d.head_dim * low
    return {"weights": weights, "gradients": gradients, "optimizer": optimizer, "activations": activations,
            "kv_cache": kv_cache}


def peak(parts: dict[str, float]) -> float:
    """Bytes at the high-water mark: activations, gradients and rollout cache do not coexist."""
    return parts["weights"] + parts["optimizer"] + max(parts["activations"], parts["gradients"], parts["kv_cache"])


def fits(parts: dict[str, float], gpu_memory_gib: float) -> bool:
    return peak(parts) <= HEADROOM * gpu_memory_gib * GiB


# --- a preset's workload and the table ------------------------------------------------------------

def audio_tokens(seconds: float) -> int:
    """Encoder frames for a clip: 100 mel frames a second, conv stride 2, pool 2 (750 for 30 s)."""
    mel = int(seconds * 100)
    return ((mel - 1) // 2 + 1 - 2) // 2 + 1


def workload(stage: str, config: dict[str, Any], clip_seconds: float = 30.0, text_tokens: int = 120,
             completion_tokens: int | None = None) -> Workload:
    """The per-GPU micro-batch of an SFT or GRPO preset (resolved config dict)."""
    mixed = config.get("dtype", "float32") != "float32"
    prompt = audio_tokens(clip_seconds) + text_tokens
    if stage == "grpo":
        g, prompts = config.get("num_generations", 8), config.get("prompts_per_batch", 1)
        rows = config.get("completions_per_batch") or config.get("per_device_train_batch_size") or prompts * g
        if rows % g:  # groups span micro-batches: one sampling round of the step's groups (see grpo/train.py)
            prompts = -(-rows * config.get("grad_accum", config.get("gradient_accumulation_steps", 1)) // g) + 1
        completion = completion_tokens or config.get("max_completion_length", 256)
        return Workload(sequences=rows, prompt_tokens=prompt, completion_tokens=completion,
                        rollout_prompts=prompts, generations=g, mixed=mixed,
                        reference=config.get("beta", 0.04) > 0 and config.get("lora") is None,
                        train_audio=not config.get("freeze_audio_tower", True))
    completion = completion_tokens or (32 if config.get("prompt", {}).get("format", "implicit") == "implicit"
                                       else config.get("eval_max_new_tokens", 512))
    return Workload(sequences=config.get("batch_size", 8), prompt_tokens=prompt, completion_tokens=completion,
                    mixed=mixed, train_audio=not config.get("freeze_audio_tower", True))


@dataclass(frozen=True)
class Setup:
    """How a preset is launched and trained: the row of the table it is."""

    strategy: str = "ddp"
    gpus: int = 1
    lora_rank: int | None = None
    checkpointing: bool = False
    launcher: str | None = None


def preset_setup(config: dict[str, Any]) -> Setup:
    """The preset's own setup, from its `accelerate_config` (distributed_type, num_processes), `lora`
    and `gradient_checkpointing`; no launcher config means one process."""
    import yaml

    launcher, strategy, gpus = config.get("accelerate_config"), "ddp", 1
    if launcher:
        path = Path(launcher)
        if not path.exists():
            raise ValueError(f"accelerate_config {launcher} not found (launcher configs live in pipelines/accelerate/)")
        accel = yaml.safe_load(path.read_text()) or {}
        strategy = "fsdp" if accel.get("distributed_type") == "FSDP" else "ddp"
        gpus = int(accel.get("num_processes", 1))
    lora = config.get("lora")
    return Setup(strategy, gpus, lora.get("r", 16) if lora else None,
                 bool(config.get("gradient_checkpointing", False)), launcher)


def plan_rows(d: Dims, work: Workload, gpus: int, gpu_memory_gib: float, lora_rank: int = 16,
              preset: Setup | None = None) -> list[dict[str, Any]]:
    """One row per strategy × (full / LoRA) × (checkpointing off / on), sizes in GiB; the preset's
    own row is marked."""
    rows = []
    for strategy in STRATEGIES:
        for rank in (None, preset.lora_rank if preset and preset.lora_rank else lora_rank):
            for checkpointing in (False, True):
                parts = memory_per_gpu(d, work, strategy, gpus, rank, checkpointing)
                mine = preset is not None and (strategy, rank, checkpointing) == (
                    preset.strategy, preset.lora_rank, preset.checkpointing)
                rows.append({"strategy": strategy, "lora": f"r={rank}" if rank else "-",
                             "ckpt": "yes" if checkpointing else "-",
                             **{k: round(v / GiB, 1) for k, v in parts.items()},
                             "total": round(peak(parts) / GiB, 1),
                             "fits": "yes" if fits(parts, gpu_memory_gib) else "no",
                             "preset": "<- as written" if mine else ""})
    return rows


def checkpoint_bytes(d: Dims, work: Workload, lora_rank: int | None) -> tuple[float, float]:
    """(one checkpoint, final/) on disk: the model in `dtype` (LoRA merged), plus in a checkpoint the
    float32 master values of the trained weights and AdamW's two float32 moments."""
    counts = parameter_counts(d)
    low = 2 if work.mixed else 4
    trained = lora_params(d, lora_rank) if lora_rank else counts.language_model + (
        counts.audio_encoder + counts.projector if work.train_audio else 0)
    model = counts.total * low
    return model + trained * ((4 if work.mixed or lora_rank else 0) + 8), model


def disk_line(d: Dims, work: Workload, config: dict[str, Any], setup: Setup) -> str:
    each, final = checkpoint_bytes(d, work, setup.lora_rank)
    limit, every, steps = config.get("save_total_limit"), config.get("save_every", 0), config.get("max_steps", 100)
    saved = (steps // every) if every else 0
    kept = min(saved, limit) if limit else saved
    total = kept * each + final
    why = f"save_total_limit {limit}" if limit else "no save_total_limit: every checkpoint kept"
    return (f"disk: {kept} checkpoint(s) × {each / 1e9:.0f} GB ({why}) + final/ {final / 1e9:.0f} GB "
            f"= {total / 1e9:.0f} GB")


def format_table(rows: list[dict[str, Any]]) -> str:
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    lines = ["  ".join(c.rjust(widths[c]) for c in columns)]
    lines += ["  ".join(str(r[c]).rjust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)


# H100 SXM: dense bf16 tensor-core peak and HBM3 bandwidth; MFU a typical full fine-tune reaches
GPU_FLOPS, GPU_BANDWIDTH, MFU = 989e12, 3.35e12, 0.4


def step_seconds(d: Dims, work: Workload, config: dict[str, Any], setup: Setup) -> float:
    """A rough H100 estimate of one optimizer step per GPU: training passes compute-bound at 40 %
    MFU (6·N FLOPs a token, 8·N with checkpointing, 2·N for each reference / old-policy pass;
    shared-prefix GRPO counts each prompt once per group), GRPO decoding bandwidth-bound (every new
    token reads the weights once). An estimate for planning, not a measurement."""
    n = parameter_counts(d).total
    accum = config.get("grad_accum", 1)
    if work.rollout_prompts:  # GRPO
        tokens = work.rollout_prompts * work.prompt_tokens + work.sequences * work.completion_tokens
        passes = (8 if setup.checkpointing else 6) * config.get("num_iterations", 1)
        passes += 2 * ((config.get("beta", 0.04) > 0) + (config.get("num_iterations", 1) > 1))
        decode = work.completion_tokens * 2 * n / GPU_BANDWIDTH
    else:
        tokens, passes, decode = work.sequences * (work.prompt_tokens + work.completion_tokens), (
            8 if setup.checkpointing else 6), 0.0
    return accum * (passes * n * tokens / (GPU_FLOPS * MFU) + decode)


def describe(model: str, d: Dims, work: Workload, stage: str, gpus: int, gpu_memory_gib: float,
             config: dict[str, Any] | None = None) -> str:
    """The table for `gpus` GPUs; with the preset's `config`, its own row marked, whether that fits,
    and the disk the run needs."""
    counts = parameter_counts(d)
    b = 1e9
    setup = preset_setup(config) if config is not None else None
    head = (f"{model}: {counts.total / b:.2f}B parameters (language model {counts.language_model / b:.2f}B, "
            f"audio encoder {counts.audio_encoder / b:.3f}B, projector {counts.projector / b:.3f}B"
            f"{f', vision {counts.vision / b:.3f}B' if counts.vision else ''})\n"
            f"{stage}: {work.sequences} sequences × ({work.prompt_tokens} prompt + {work.completion_tokens} "
            f"completion tokens) per micro-batch and GPU"
            f"{f', rollouts of {work.rollout_prompts} prompt(s) × G={work.generations}' if stage == 'grpo' else ''}, "
            f"{'bf16 autocast over float32 master weights' if work.mixed else 'float32'}"
            f"{', audio encoder trained' if work.train_audio else ''}"
            f"{', a reference model (sharded under fsdp)' if work.reference else ''}\n"
            f"per GPU in GiB on {gpus} × {gpu_memory_gib:g} GiB (total: the peak; fits: total ≤ {HEADROOM:.0%} of a GPU):")
    rows = plan_rows(d, work, gpus, gpu_memory_gib, preset=setup)
    text = head + "\n" + format_table(rows) + "\n"
    if setup is not None:
        mine = next(r for r in rows if r["preset"])
        launch = (f"accelerate launch --config_file {setup.launcher}" if setup.launcher else "one process")
        text += (f"as written ({launch}, {setup.gpus} process(es)): {mine['strategy']}, "
                 f"{'LoRA ' + mine['lora'] if setup.lora_rank else 'full weights'}, checkpointing "
                 f"{'on' if setup.checkpointing else 'off'}: {mine['total']} GiB per GPU, "
                 f"{'fits' if mine['fits'] == 'yes' else 'does NOT fit'} on {gpus} × {gpu_memory_gib:g} GiB\n")
        text += disk_line(d, work, config, setup) + "\n"
        seconds = step_seconds(d, work, config, setup)
        hours = seconds * config.get("max_steps", 100) / 3600
        text += (f"time: about {seconds:.0f} s a step, {hours:.1f} h for {config.get('max_steps', 100)} steps on "
                 f"H100s (40 % MFU, bandwidth-bound decoding: an estimate, not a measurement)\n")
    return text


def preset_stages(preset: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{stage: resolved config} for a preset: its `sft:` / `grpo:` blocks over the shared keys, or
    the whole file as one stage (GRPO when it sets GRPO-only keys)."""
    shared = {k: v for k, v in preset.items() if k not in ("sft", "grpo")}
    blocks = {s: {**shared, **preset[s]} for s in ("sft", "grpo") if isinstance(preset.get(s), dict)}
    if blocks:
        return blocks
    grpo_keys = {"num_generations", "max_completion_length", "beta", "rewards", "prompts_per_batch",
                 "completions_per_batch"}
    return {"grpo" if grpo_keys & set(preset) else "sft": preset}


def stage_model(stages: dict[str, dict[str, Any]], stage: str) -> str:
    """The stage's model, or, when that is a run folder not made yet (GRPO after SFT), the model
    another stage starts from: the architecture is the same."""
    candidates = [stages[stage].get("model")] + [c.get("model") for s, c in stages.items() if s != stage]
    for model in candidates:
        if model and (model in KNOWN_MODELS or (Path(model) / "config.json").exists()):
            return model
    raise ValueError(f"stage {stage}: model {stages[stage].get('model')!r} is neither a local model folder nor one of "
                     f"{', '.join(KNOWN_MODELS)}; pass --model")
