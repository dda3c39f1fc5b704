"""What SFT and GRPO share: the common config fields, loading the policy (frozen audio path,
optional LoRA), mixed precision, the optimizer step through accelerate, the learning-rate
schedule, greedy held-out accuracy, and checkpoints that resume exactly (weights, optimizer,
scheduler, sampler, RNG states of every rank, step).

Mixed precision: with `dtype: bfloat16` (or float16) the weights being trained are kept in
float32 (the "master weights": AdamW's small updates would round away in bf16) and every forward
pass runs under autocast in `dtype` (accelerate wraps the model's forward, so generation is
covered too); frozen weights stay in `dtype`. FSDP2 casts the gathered shards itself.

Sharding: the model, optimizer and scheduler all go through `accelerator.prepare`, so the same
code runs as one process, DDP or FSDP2 (`accelerate launch --config_file
pipelines/accelerate/...`; FSDP2 is the sharded path: DeepSpeed ZeRO-3 cannot be tested on CPU
processes, so no config for it ships). Saving gathers the full weights first. `save_total_limit`
keeps the newest N checkpoints.

A checkpoint folder is a loadable model (`AudioLM.load(folder)`: merged weights in `dtype`,
tokenizer, feature extractor) plus `config.yaml`, `trainer_state.pt` (optimizer, scheduler, step,
sampler, loss scale, and the float32 values of the trained weights when they differ from the
saved ones) and one `rng-<rank>.pt` per process.
Checkpoint files are written and read back (with `weights_only=True`) by sari_train/checkpoints.py.
"""

from __future__ import annotations

import math
import random
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np
import torch
from pydantic import AliasGenerator, BaseModel, ConfigDict, Field, model_validator

from corpus.scoring import exact_match, extract_answer, mmau_match
from sari_train.checkpoints import (checkpoint_dir, gathered, load_plain, merge_lora, resume_point, rng_state,
                                    rotate_checkpoints, save_model, set_rng_state, step_of)
from sari_train.config import ConfigError
from sari_train.data import Example, WorkspaceSource, data_source
from sari_train.datasets import DatasetOptions
from sari_train.device import AttentionName
from sari_train.metrics import MetricsLog
from sari_train.models.adapter import AudioLM
from sari_train.prompts import PromptStyle, messages
from sari_train.rollout import LocalEngine, SamplingSettings
from sari_train.trl_names import to_ours, trl_alias

# LoRA goes on the language model's projections only, never on the audio encoder's.
LM_PROJECTIONS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


class LoraSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    r: int = Field(16, ge=1, description="LoRA rank")
    alpha: int = Field(32, ge=1, description="LoRA scaling numerator (scale = alpha / r)")
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: str = Field(LM_PROJECTIONS, description="regex of module names that get adapters")


class TrainConfig(DatasetOptions):
    """Fields both trainers take (TRL's names are accepted too: `sari_train/trl_names.py`)."""

    model_config = ConfigDict(extra="forbid", alias_generator=AliasGenerator(validation_alias=trl_alias))

    model: str = Field(description="model folder to start from (or a hub id when online)")
    workspace: Path | None = Field(None, description="corpus workspace with the training split (or --dataset)")
    eval_dataset: str | None = Field(None, description="dataset of the held-out split when it is not --dataset's "
                                                       "(e.g. DIR:eval)")
    split: str = Field("train", description="split to train on")
    eval_split: str | None = Field("test", description="held-out split for greedy accuracy (none: no eval)")
    eval_workspace: Path | None = Field(None, description="workspace holding eval_split (default: `workspace`), "
                                                          "e.g. the MMAU test-mini eval workspace")
    eval_every: int = Field(0, ge=0, description="evaluate every N steps (0: at the start and the end only)")
    eval_limit: int | None = Field(200, ge=1, description="evaluate on at most N held-out items")
    eval_max_new_tokens: int = Field(64, ge=1, description="generation budget of the greedy eval")
    prompt: PromptStyle = PromptStyle()
    out: Path = Field(Path("artifacts/train"), description="run folder: checkpoints, metrics, curves")
    max_steps: int = Field(100, ge=1, description="optimizer steps (GRPO: one generation round each)")
    lr: float = Field(1e-5, gt=0, description="peak learning rate (AdamW)")
    weight_decay: float = Field(0.0, ge=0)
    schedule: Literal["cosine", "linear", "constant"] = Field("linear", description="decay after warm-up")
    warmup_steps: int = Field(0, ge=0, description="linear warm-up steps")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step and process")
    max_grad_norm: float | None = Field(1.0, gt=0, description="gradient clipping (none: off)")
    freeze_audio_tower: bool = Field(True, description="keep the audio encoder and projector fixed (false: train "
                                                       "them too; in GRPO the encoder then runs once per prompt "
                                                       "in the policy pass, its graph shared by the G completions)")
    lora: LoraSettings | None = Field(None, description="train LoRA adapters instead of all weights")
    save_every: int = Field(0, ge=0, description="checkpoint every N steps (0: only the final model)")
    save_total_limit: int | None = Field(None, ge=1, description="keep only the newest N checkpoints, deleting older "
                                                               "ones (TRL's name; none: keep all; final/ is kept apart)")
    log_every: int = Field(1, ge=1, description="write metrics every N steps")
    seed: int = Field(0, description="seed of data order, sampling and initialisation")
    resume: bool | Path = Field(False, description="continue from the latest checkpoint in `out` (true) or from "
                                                  "this checkpoint folder (TRL's resume_from_checkpoint: PATH)")
    num_train_epochs: float | None = Field(None, gt=0, description="passes over the training split; sets max_steps "
                                                                  "when max_steps is not given (TRL: max_steps wins)")
    warmup_ratio: float | None = Field(None, ge=0, lt=1, description="warm-up as a fraction of max_steps (TRL's; "
                                                                     "overrides warmup_steps)")
    max_prompt_length: int | None = Field(None, ge=1, description="longest prompt in tokens, audio included; TRL "
                                                                  "truncates longer prompts, we never cut audio: a "
                                                                  "longer prompt stops the run naming its item")
    adam_beta1: float = Field(0.9, ge=0, lt=1)
    adam_beta2: float = Field(0.999, ge=0, lt=1)
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="compute and saved-weights dtype; trained weights stay float32 (mixed precision)")
    accelerate_config: Path | None = Field(None, description="the launcher config the preset is sized for (`accelerate "
                                                          "launch --config_file` it; `sari-train plan` reads it)")
    attn_implementation: AttentionName = Field("auto", description="auto (flash_attention_2 when flash-attn is "
                                                "installed and the run is on GPU in 16 bits, else sdpa), sdpa, eager, "
                                                "flash_attention_2")
    gradient_checkpointing: bool = Field(False, description="recompute activations in the backward pass "
                                                           "(less memory, about a third more compute)")
    report_to: list[Literal["tensorboard", "wandb", "trackio"]] = Field(
        ["tensorboard"], description="trackers besides metrics.jsonl (TRL's names; `tensorboard: false` drops it)")
    run_name: str | None = Field(None, description="the run's name in trackers (default: the --out folder's name)")
    push_to_hub: str | None = Field(None, description="upload final/ with a model card to this Hub model repo "
                                                      "(token from HF_TOKEN or `hf auth login`)")
    hub_private: bool = Field(True, description="create the pushed repo private")

    @model_validator(mode="before")
    @classmethod
    def _trl_conversions(cls, data: Any) -> Any:
        return to_ours(data, cls.model_fields)

    def with_steps(self, examples: int, per_step: int) -> TrainConfig:
        """max_steps from `num_train_epochs` (when max_steps was not given) for `examples` training
        items taken `per_step` per optimizer step over all processes, and warmup_steps from
        `warmup_ratio`, as TRL resolves them."""
        update: dict[str, Any] = {}
        if self.num_train_epochs is not None and "max_steps" not in self.model_fields_set:
            update["max_steps"] = max(1, math.ceil(self.num_train_epochs * examples / per_step))
        if self.warmup_ratio is not None:
            update["warmup_steps"] = math.ceil(self.warmup_ratio * update.get("max_steps", self.max_steps))
        return self.model_copy(update=update)

    @model_validator(mode="after")
    def _one_data_source(self) -> TrainConfig:
        if (self.workspace is None) == (self.dataset is None):
            raise ValueError("give exactly one of workspace or dataset")
        return self


# --- model ---------------------------------------------------------------------------------------

def load_policy(config: TrainConfig, device: torch.device, train_audio: bool = False,
                start_from: Path | None = None) -> tuple[AudioLM, Any]:
    """The model to train, and its PEFT wrapper when LoRA is on (else None).

    The audio tower and projector stay frozen unless `train_audio`; the Omni thinker's vision
    tower and the audio encoder's position table are never trained. The weights being trained are
    read at float32 (the master weights: unrounded, so small updates add up and, off the bf16
    grid, show in the autocast forward in proportion); frozen ones are kept in `config.dtype`.
    `start_from` is a full-weights checkpoint to resume from."""
    lm = AudioLM.load(start_from or config.model, dtype="float32",  # on CPU: the frozen part shrinks first
                      attn_implementation=config.attn_implementation)
    for name, param in lm.model.named_parameters():
        audio_path = ".audio_tower." in f".{name}" or "multi_modal_projector" in name
        fixed = "visual" in name or "embed_positions" in name  # Whisper's position table is not learned
        param.requires_grad_(not (fixed or (audio_path and not train_audio)))
    peft_model = None
    if config.lora is not None:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=config.lora.r, lora_alpha=config.lora.alpha, lora_dropout=config.lora.dropout,
                          target_modules=config.lora.target_modules)
        peft_model = get_peft_model(lm.model, lora)  # injects float32 adapters into lm.model in place
    for param in lm.model.parameters():
        if not param.requires_grad:
            param.data = param.data.to(getattr(torch, config.dtype))
    lm.model.to(device)
    if config.gradient_checkpointing:
        # non-reentrant, and the input embeddings' output requires grad, so frozen layers before
        # the first trained one (LoRA, frozen audio tower) still pass gradients through
        lm.model.activation_checkpointing_enable()
    return lm, peft_model


def policy_mode(model: torch.nn.Module, checkpointing: bool) -> None:
    """Eval mode for RL (no dropout: sampling and the loss see the same function). Under gradient
    checkpointing the language model's layers keep their own training flag, which is what turns
    recomputation on (their sub-modules stay in eval)."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    model.eval()
    if checkpointing:
        for name, module in model.named_modules():
            if isinstance(module, GradientCheckpointingLayer) and "language_model" in name:
                module.training = True


def trainable(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def lr_schedule(optimizer: torch.optim.Optimizer, kind: str, warmup: int, total: int) -> Any:
    """transformers' schedule (our constant warms up: its constant_with_warmup) one step on: its
    warm-up starts at lr 0 (step/warmup), ours at lr/(warmup+1), so the first step trains."""
    from transformers import get_scheduler

    name = "constant_with_warmup" if kind == "constant" else kind
    scheduler = get_scheduler(name, optimizer, num_warmup_steps=warmup + 1, num_training_steps=total + 1)
    with warnings.catch_warnings(action="ignore"):  # "lr_scheduler.step() before optimizer.step()": on purpose
        scheduler.step()
    return scheduler


def schedule_state(trainer_state: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's scheduler state; one saved before `lr_schedule` (our own LambdaLR, no step at
    construction) counts one step less: caught up, so a resumed run keeps its learning rates."""
    state = trainer_state["scheduler"]
    return state if trainer_state.get("schedule_version", 1) >= 2 else {**state, "last_epoch": state["last_epoch"] + 1}


def optimizer_and_schedule(model: torch.nn.Module, config: TrainConfig, updates: int):
    params = trainable(model)
    if not params:
        raise ConfigError("nothing to train: every parameter is frozen")
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay,
                                  betas=(config.adam_beta1, config.adam_beta2))
    return optimizer, lr_schedule(optimizer, config.schedule, config.warmup_steps, updates)


PRECISION = {"float32": "no", "bfloat16": "bf16", "float16": "fp16"}


def make_accelerator(dtype: str = "float32") -> Any:
    """DDP or FSDP2 (per `accelerate launch --config_file`) when launched on several
    processes; without CUDA, several CPU processes talk over gloo (`torchrun --nproc_per_node 2`
    or `accelerate launch --multi_gpu --num_processes 2`).
    `dtype` bfloat16/float16 turns on mixed precision (autocast over float32 master weights)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import DataLoaderConfiguration

    cpu = not torch.cuda.is_available()
    if cpu and dtype == "float16":
        raise ConfigError("dtype float16 needs a GPU (its loss scaling is CUDA-only); use bfloat16 on CPU")
    AcceleratorState._reset_state()  # each run sets its own precision (experiment runs several in one process)
    # split_batches: we shard batches ourselves, and it makes the prepared scheduler step once per
    # optimizer step (not once per process)
    return Accelerator(cpu=cpu, mixed_precision=PRECISION[dtype],
                       dataloader_config=DataLoaderConfiguration(split_batches=True))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --- evaluation ----------------------------------------------------------------------------------

@torch.no_grad()
def held_out_accuracy(lm: AudioLM, examples: list[Example], style: PromptStyle,
                      max_new_tokens: int, accelerator: Any, batch_size: int = 16) -> dict[str, float]:
    """Greedy answers through the rollout engine; exact match (R1-AQA) and the MMAU rule, in %.
    Each process answers an equal share of the items (topped up with uncounted repeats: under
    FSDP every forward pass is collective); counts are summed over processes."""
    modes = {module: module.training for module in lm.model.modules()}
    lm.model.eval()
    world, rank = accelerator.num_processes, accelerator.process_index
    shard = examples[rank::world]
    counted = len(shard)
    shard += examples[:-(-len(examples) // world) - counted]
    counts = torch.zeros(3, device=accelerator.device)
    if shard:
        settings = SamplingSettings(k=1, temperature=0.0, max_new_tokens=max_new_tokens)
        state = torch.get_rng_state()  # the engine seeds torch; leave the training stream untouched
        texts = LocalEngine(lm, batch_size=batch_size).sample(
            [messages(e.question, e.choices, style) for e in shard], [e.waveform() for e in shard], settings).texts
        torch.set_rng_state(state)
        answers, shard = [group[0] for group in texts][:counted], shard[:counted]
        counts += torch.tensor([sum(exact_match(a, e.answer) for a, e in zip(answers, shard)),
                                sum(mmau_match(extract_answer(a), e.answer, e.choices) for a, e in zip(answers, shard)),
                                len(shard)], dtype=counts.dtype, device=counts.device)
    counts = accelerator.reduce(counts, reduction="sum")
    for module, mode in modes.items():
        module.training = mode
    n = max(float(counts[2]), 1.0)
    return {"eval/accuracy": 100 * float(counts[0]) / n, "eval/accuracy_mmau": 100 * float(counts[1]) / n}


# --- one run: set-up, the optimizer step, eval, checkpoints, finish -------------------------------

@dataclass
class Run:
    """A training run's moving parts: the policy, its optimizer and schedule (all prepared by
    accelerate), the metrics log, the step to start from, and the held-out examples it is scored on.
    The trainers' loops call `micro_batch` / `backward` / `step`; the rest is here."""

    config: TrainConfig
    accelerator: Any
    lm: AudioLM
    peft_model: Any
    optimizer: Any
    scheduler: Any
    model: torch.nn.Module  # lm.model as prepared: DDP-wrapped or FSDP-sharded
    log: MetricsLog
    start: int
    held_out: list[Example]
    accuracy: dict[int, float] = field(default_factory=dict)

    # --- the step ---

    @contextmanager
    def micro_batch(self, last: bool) -> Iterator[None]:
        """One micro-batch's forward and backward; gradients are synchronised (DDP all-reduce,
        FSDP reduce-scatter) only after the last one of the step."""
        self.accelerator.gradient_state._set_sync_gradients(last)
        with nullcontext() if last else self.accelerator.no_sync(self.model):
            yield

    def backward(self, loss: torch.Tensor) -> None:
        self.accelerator.backward(loss)  # loss scaling under float16

    def step(self) -> float:
        """Clip → optimizer step → schedule → zero the gradients. Returns the gradient norm
        before clipping (nan when clipping is off)."""
        norm = (self.accelerator.clip_grad_norm_(self.model.parameters(), self.config.max_grad_norm)
                if self.config.max_grad_norm else None)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        norm = getattr(norm, "full_tensor", lambda: norm)()  # a DTensor under FSDP
        return float("nan") if norm is None else float(norm)

    def policy_mode(self) -> None:
        policy_mode(self.lm.model, self.config.gradient_checkpointing)

    # --- eval, saving ---

    def evaluate(self, step: int) -> None:
        if self.held_out:
            scores = held_out_accuracy(self.lm, self.held_out, self.config.prompt,
                                       self.config.eval_max_new_tokens, self.accelerator)
            self.accuracy[step] = round(scores["eval/accuracy"], 1)
            self.log.log(step, scores)

    def full_weights(self) -> dict[str, torch.Tensor]:
        """Every weight under its (PEFT) name, on CPU, on the main process (empty elsewhere): the
        trained ones in float32, frozen ones in `dtype`. Gathered from the shards under FSDP2:
        every process must call it."""
        weights = gathered(self.accelerator.get_state_dict(self.model))
        return {k: v.detach().cpu() for k, v in weights.items()} if self.accelerator.is_main_process else {}

    def save(self, folder: Path, weights: dict[str, torch.Tensor]) -> Path:
        if self.peft_model is not None:
            weights = merge_lora(weights, self.config.lora.alpha / self.config.lora.r)
        return save_model(folder, self.lm, weights, self.config)

    def checkpoint(self, step: int, sampler: Any) -> Path:
        """Everything needed to continue as if never stopped. The main process writes the model and
        the shared state; each process its RNG."""
        accelerator, folder = self.accelerator, checkpoint_dir(self.config.out, step)
        accelerator.wait_for_everyone()
        weights, optimizer = self.full_weights(), self._optimizer_state()
        if accelerator.is_main_process:
            self.save(folder, weights)
            # the saved folder holds `dtype` weights; resuming needs the float32 master values
            exact = self.config.dtype == "float32" and self.peft_model is None
            master = None if exact else {n: weights[n] for n, p in self.lm.model.named_parameters()
                                         if p.requires_grad and n in weights}
            scaler = accelerator.scaler.state_dict() if accelerator.scaler is not None else None
            torch.save({"step": step, "optimizer": optimizer, "scheduler": self.scheduler.state_dict(), "schedule_version": 2,
                        "weights": master, "scaler": scaler, "sampler": sampler.state_dict()},
                       folder / "trainer_state.pt.tmp")
        accelerator.wait_for_everyone()
        torch.save(rng_state(), folder / f"rng-{accelerator.process_index}.pt")
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:  # the state file last: a folder without it is not a checkpoint
            (folder / "trainer_state.pt.tmp").rename(folder / "trainer_state.pt")
            rotate_checkpoints(self.config.out, self.config.save_total_limit)  # only once the new one is whole
        accelerator.wait_for_everyone()
        return folder

    def _optimizer_state(self) -> dict[str, Any] | None:
        if self.accelerator.is_fsdp2:  # the moments of every shard, gathered (a collective)
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

            return gathered(get_optimizer_state_dict(self.model, self.optimizer.optimizer,
                                                     options=StateDictOptions(full_state_dict=True, cpu_offload=True)))
        return self.optimizer.state_dict()

    def restore(self, folder: Path, state: dict[str, Any]) -> None:
        """Optimizer, scheduler, loss scale and this rank's RNG from a checkpoint (after prepare)."""
        if self.accelerator.is_fsdp2:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

            set_optimizer_state_dict(self.model, self.optimizer.optimizer, state["optimizer"],
                                     options=StateDictOptions(full_state_dict=True))
        else:
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(schedule_state(state))
        if state.get("scaler") and self.accelerator.scaler is not None:
            self.accelerator.scaler.load_state_dict(state["scaler"])
        rng_file = folder / f"rng-{self.accelerator.process_index}.pt"
        if not rng_file.exists():
            raise ConfigError(f"{folder} was saved by fewer processes (no {rng_file.name}); resume with the same "
                              f"number of processes")
        set_rng_state(load_plain(rng_file))

    def finish(self) -> dict[str, Any]:
        """Score the last step, save `final/` (in `dtype`), draw the curves."""
        self.evaluate(self.config.max_steps)
        final = self.config.out / "final"
        weights = self.full_weights()
        if self.accelerator.is_main_process:
            self.save(final, weights)
        curves = self.log.close()
        self.accelerator.wait_for_everyone()
        return {"final": str(final), "curves": str(curves), "steps": self.config.max_steps,
                "held-out accuracy % by step": self.accuracy}


def held_out_source(config: TrainConfig) -> Any:
    """Where the held-out split lives: `eval_dataset`, else `eval_workspace`, else the training data."""
    if config.eval_workspace is not None and config.eval_dataset is None:
        return WorkspaceSource(config.eval_workspace)
    return data_source(config, config.eval_dataset)


def warn_launcher(config: TrainConfig, accelerator: Any) -> None:
    """Say so when a preset sized for one launcher runs under another (its memory plan no longer holds)."""
    if config.accelerate_config is None or not accelerator.is_main_process or not Path(config.accelerate_config).exists():
        return
    import yaml

    wanted = (yaml.safe_load(Path(config.accelerate_config).read_text()) or {}).get("distributed_type", "NO")
    running = accelerator.distributed_type.value
    if accelerator.num_processes > 1 and wanted != running:
        print(f"warning: this preset is sized for {config.accelerate_config} ({wanted}) but runs as {running}; "
              f"launch with `accelerate launch --config_file {config.accelerate_config}` (see `sari-train plan`)")


def start_run(config: TrainConfig, accelerator: Any, sampler: Any, updates: int, train_audio: bool = False) -> Run:
    """Load the policy (or resume it from the latest checkpoint, sampler included), build the
    optimizer for `updates` steps, prepare all three with accelerate, open the metrics log and
    score step 0 of a fresh run."""
    checkpoint = resume_point(config)
    lm, peft_model = load_policy(config, accelerator.device, train_audio=train_audio,
                                 start_from=checkpoint if checkpoint and config.lora is None else None)
    state, start = None, 0
    if checkpoint is not None:
        state = load_plain(checkpoint / "trainer_state.pt")
        if state.get("weights"):  # float32 master values of the trained weights (or the LoRA adapters)
            params = dict(lm.model.named_parameters())
            with torch.no_grad():
                for name, value in state["weights"].items():
                    params[name].copy_(value)
        sampler.load_state_dict(state["sampler"])
        start = step_of(checkpoint)
    optimizer, scheduler = optimizer_and_schedule(lm.model, config, updates)
    warn_launcher(config, accelerator)
    model, optimizer, scheduler = accelerator.prepare(lm.model, optimizer, scheduler)
    log = MetricsLog(config.out, accelerator.is_main_process, resume_step=start if checkpoint else None,
                     report_to=config.report_to, run_name=config.run_name, config=config.model_dump(mode="json"))
    held_out = (held_out_source(config).examples(config.eval_split, None, config.eval_limit)[0]
                if config.eval_split else [])
    run = Run(config, accelerator, lm, peft_model, optimizer, scheduler, model, log, start, held_out)
    if checkpoint is not None:
        run.restore(checkpoint, state)
    else:
        run.evaluate(0)
    return run
