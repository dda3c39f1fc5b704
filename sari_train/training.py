"""What SFT and GRPO share: the common config fields, loading the policy (frozen audio path,
optional LoRA), the learning-rate schedule, greedy held-out accuracy, and checkpoints that resume
exactly (weights, optimizer, scheduler, sampler, RNG states of every rank, step).

A checkpoint folder is a loadable model (`AudioLM.load(folder)`: merged weights, tokenizer,
feature extractor) plus `config.yaml`, `trainer_state.pt` and one `rng-<rank>.pt` per process.
"""

from __future__ import annotations

import copy
import math
import pickle
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import AliasGenerator, BaseModel, ConfigDict, Field, model_validator

from corpus.scoring import exact_match, extract_answer, mmau_match
from sari_train.config import ConfigError, save_config
from sari_train.data import Example, WorkspaceSource, data_source
from sari_train.datasets import DatasetOptions
from sari_train.trl_names import to_ours, trl_alias
from sari_train.metrics import MetricsLog
from sari_train.models.adapter import AudioLM
from sari_train.prompts import PromptStyle, messages
from sari_train.rollout import LocalEngine, SamplingSettings

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
    lora: LoraSettings | None = Field(None, description="train LoRA adapters instead of all weights")
    save_every: int = Field(0, ge=0, description="checkpoint every N steps (0: only the final model)")
    log_every: int = Field(1, ge=1, description="write metrics every N steps")
    seed: int = Field(0, description="seed of data order, sampling and initialisation")
    resume: bool = Field(False, description="continue from the latest checkpoint in `out`")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="model weights dtype")
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
    tower and the audio encoder's position table are never trained. `start_from` is a full-weights checkpoint to resume from."""
    lm = AudioLM.load(start_from or config.model, dtype=config.dtype, device=str(device))
    for name, param in lm.model.named_parameters():
        audio_path = ".audio_tower." in f".{name}" or "multi_modal_projector" in name
        fixed = "visual" in name or "embed_positions" in name  # Whisper's position table is not learned
        param.requires_grad_(not (fixed or (audio_path and not train_audio)))
    peft_model = None
    if config.lora is not None:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=config.lora.r, lora_alpha=config.lora.alpha, lora_dropout=config.lora.dropout,
                          target_modules=config.lora.target_modules)
        peft_model = get_peft_model(lm.model, lora)  # injects adapters into lm.model in place
    return lm, peft_model


def trainable(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def lr_factor(step: int, warmup: int, total: int, kind: str) -> float:
    """Multiplier of the peak lr after `step` optimizer steps: linear warm-up, then decay to 0."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if kind == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 1.0 - progress if kind == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))


def optimizer_and_schedule(model: torch.nn.Module, config: TrainConfig, updates: int):
    params = trainable(model)
    if not params:
        raise ConfigError("nothing to train: every parameter is frozen")
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, config.warmup_steps, updates, config.schedule))
    return optimizer, scheduler


def make_accelerator() -> Any:
    """DDP (or FSDP/DeepSpeed per `accelerate config`) when launched on several processes; without
    CUDA, several CPU processes talk over gloo (`torchrun --nproc_per_node 2` or `accelerate launch --cpu`)."""
    from accelerate import Accelerator

    return Accelerator(cpu=not torch.cuda.is_available())


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --- evaluation ----------------------------------------------------------------------------------

@torch.no_grad()
def held_out_accuracy(lm: AudioLM, examples: list[Example], style: PromptStyle,
                      max_new_tokens: int, accelerator: Any, batch_size: int = 16) -> dict[str, float]:
    """Greedy answers through the rollout engine; exact match (R1-AQA) and the MMAU rule, in %.
    Each process answers its share of the items; counts are summed over processes."""
    was_training = lm.model.training
    lm.model.eval()
    shard = examples[accelerator.process_index::accelerator.num_processes]
    counts = torch.zeros(3, device=accelerator.device)
    if shard:
        settings = SamplingSettings(k=1, temperature=0.0, max_new_tokens=max_new_tokens)
        state = torch.get_rng_state()  # the engine seeds torch; leave the training stream untouched
        texts = LocalEngine(lm, batch_size=batch_size).sample(
            [messages(e.question, e.choices, style) for e in shard], [e.waveform() for e in shard], settings).texts
        torch.set_rng_state(state)
        answers = [group[0] for group in texts]
        counts += torch.tensor([sum(exact_match(a, e.answer) for a, e in zip(answers, shard)),
                                sum(mmau_match(extract_answer(a), e.answer, e.choices) for a, e in zip(answers, shard)),
                                len(shard)], dtype=counts.dtype, device=counts.device)
    counts = accelerator.reduce(counts, reduction="sum")
    lm.model.train(was_training)
    n = max(float(counts[2]), 1.0)
    return {"eval/accuracy": 100 * float(counts[0]) / n, "eval/accuracy_mmau": 100 * float(counts[1]) / n}


# --- checkpoints ---------------------------------------------------------------------------------

def checkpoint_dir(out: Path, step: int) -> Path:
    return out / "checkpoints" / f"step-{step:06d}"


def latest_checkpoint(out: Path) -> Path | None:
    found = sorted(p for p in (out / "checkpoints").glob("step-*") if (p / "trainer_state.pt").exists())
    return found[-1] if found else None


def save_model(folder: Path, lm: AudioLM, peft_model: Any, config: BaseModel) -> Path:
    """A folder `AudioLM.load` can read: merged weights (LoRA folded in), tokenizer, feature extractor."""
    folder.mkdir(parents=True, exist_ok=True)
    model = copy.deepcopy(peft_model).merge_and_unload() if peft_model is not None else lm.model
    model.save_pretrained(folder)
    lm.tokenizer.save_pretrained(folder)
    lm.feature_extractor.save_pretrained(folder)
    lm.save_chat_template(folder)
    save_config(config, folder / "config.yaml")
    return folder


def rng_state() -> dict[str, Any]:
    """Every RNG's state as tensors and plain types, so `torch.load(weights_only=True)` reads it back
    (a checkpoint must never be able to run code on --resume)."""
    numpy_state = np.random.get_state(legacy=False)
    numpy_state["state"]["key"] = torch.from_numpy(numpy_state["state"]["key"].astype(np.int64))
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    key = numpy_state["state"]["key"].numpy().astype(np.uint32)
    np.random.set_state({**numpy_state, "state": {**numpy_state["state"], "key": key}})
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(out: Path, step: int, lm: AudioLM, peft_model: Any, config: BaseModel, accelerator: Any,
                    optimizer: torch.optim.Optimizer, scheduler: Any, extra: dict[str, Any]) -> Path:
    """Everything needed to continue as if never stopped. Rank 0 writes the model and shared state."""
    folder = checkpoint_dir(out, step)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save_model(folder, lm, peft_model, config)
        lora = ({n: p.detach().cpu() for n, p in lm.model.named_parameters() if "lora_" in n}
                if peft_model is not None else None)
        torch.save({"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "lora": lora, **extra}, folder / "trainer_state.pt.tmp")
    accelerator.wait_for_everyone()
    torch.save(rng_state(), folder / f"rng-{accelerator.process_index}.pt")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:  # the state file last: a folder without it is not a checkpoint
        (folder / "trainer_state.pt.tmp").rename(folder / "trainer_state.pt")
    accelerator.wait_for_everyone()
    return folder


def load_plain(path: Path) -> Any:
    """A checkpoint file of tensors and plain types only: anything else could run code when unpickled."""
    try:
        return torch.load(path, weights_only=True)
    except pickle.UnpicklingError as err:
        raise ConfigError(f"{path} holds objects other than tensors and plain data, so it is not loaded (it could "
                          f"run code): {str(err).splitlines()[-1][:200]}; resume only from checkpoints this toolkit "
                          f"wrote") from None


def load_checkpoint(folder: Path, lm: AudioLM, optimizer: torch.optim.Optimizer, scheduler: Any,
                    accelerator: Any) -> dict[str, Any]:
    """Restore optimizer, scheduler, LoRA weights and this rank's RNG; returns the saved state
    (step, sampler, ...). Full weights were already loaded from the folder by `load_policy`."""
    state = load_plain(folder / "trainer_state.pt")
    if state.get("lora"):
        params = dict(lm.model.named_parameters())
        with torch.no_grad():
            for name, value in state["lora"].items():
                params[name].copy_(value)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    rng_file = folder / f"rng-{accelerator.process_index}.pt"
    if not rng_file.exists():
        raise ConfigError(f"{folder} was saved by fewer processes (no {rng_file.name}); resume with the same "
                          f"number of processes")
    set_rng_state(load_plain(rng_file))
    return state


def resume_point(config: TrainConfig) -> Path | None:
    """The checkpoint to continue from, or None for a fresh run (refusing to overwrite a run by accident)."""
    found = latest_checkpoint(config.out)
    if config.resume:
        if found is None:
            raise ConfigError(f"--resume: no checkpoint in {config.out / 'checkpoints'}")
        return found
    if found is not None:
        raise ConfigError(f"{config.out} already holds checkpoints; pass --resume to continue or choose another --out")
    return None


def step_of(folder: Path) -> int:
    match = re.search(r"step-(\d+)$", folder.name)
    return int(match.group(1)) if match else 0


# --- one run's set-up and finish, shared by SFT and GRPO ----------------------------------------

@dataclass
class Run:
    """A training run's moving parts: the policy, its optimizer and schedule, the metrics log,
    the step to start from, and the held-out examples it is scored on."""

    config: TrainConfig
    accelerator: Any
    lm: AudioLM
    peft_model: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    model: torch.nn.Module  # lm.model, wrapped for DDP when launched on several processes
    log: MetricsLog
    start: int
    held_out: list[Example]
    accuracy: dict[int, float] = field(default_factory=dict)

    def evaluate(self, step: int) -> None:
        if self.held_out:
            scores = held_out_accuracy(self.lm, self.held_out, self.config.prompt,
                                       self.config.eval_max_new_tokens, self.accelerator)
            self.accuracy[step] = round(scores["eval/accuracy"], 1)
            self.log.log(step, scores)

    def checkpoint(self, step: int, sampler: Any) -> Path:
        return save_checkpoint(self.config.out, step, self.lm, self.peft_model, self.config, self.accelerator,
                               self.optimizer, self.scheduler, {"sampler": sampler.state_dict()})

    def finish(self) -> dict[str, Any]:
        """Score the last step, save `final/`, draw the curves."""
        self.evaluate(self.config.max_steps)
        final = self.config.out / "final"
        if self.accelerator.is_main_process:
            save_model(final, self.lm, self.peft_model, self.config)
        curves = self.log.close()
        self.accelerator.wait_for_everyone()
        return {"final": str(final), "curves": str(curves), "steps": self.config.max_steps,
                "held-out accuracy % by step": self.accuracy}


def held_out_source(config: TrainConfig) -> Any:
    """Where the held-out split lives: `eval_dataset`, else `eval_workspace`, else the training data."""
    if config.eval_workspace is not None and config.eval_dataset is None:
        return WorkspaceSource(config.eval_workspace)
    return data_source(config, config.eval_dataset)


def start_run(config: TrainConfig, accelerator: Any, sampler: Any, updates: int, train_audio: bool = False) -> Run:
    """Load the policy (or resume it from the latest checkpoint, sampler included), build the
    optimizer for `updates` steps, open the metrics log and score step 0 of a fresh run."""
    checkpoint = resume_point(config)
    lm, peft_model = load_policy(config, accelerator.device, train_audio=train_audio,
                                 start_from=checkpoint if checkpoint and config.lora is None else None)
    optimizer, scheduler = optimizer_and_schedule(lm.model, config, updates)
    start = 0
    if checkpoint is not None:
        state = load_checkpoint(checkpoint, lm, optimizer, scheduler, accelerator)
        sampler.load_state_dict(state["sampler"])
        start = step_of(checkpoint)
    model = accelerator.prepare(lm.model)  # DDP when launched on several processes
    log = MetricsLog(config.out, accelerator.is_main_process, resume_step=start if checkpoint else None,
                     report_to=config.report_to, run_name=config.run_name, config=config.model_dump(mode="json"))
    held_out = (held_out_source(config).examples(config.eval_split, None, config.eval_limit)[0]
                if config.eval_split else [])
    run = Run(config, accelerator, lm, peft_model, optimizer, scheduler, model, log, start, held_out)
    if start == 0:
        run.evaluate(0)
    return run
