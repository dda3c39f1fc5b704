"""Checkpoint files: where they live, the model folder a run saves (LoRA merged, in the run's
dtype), RNG states as tensors and plain types, and reading them back with `weights_only=True`
(a crafted checkpoint must never run code on --resume). `Run.checkpoint`/`Run.restore` in
training.py put these together.

Not accelerate's `save_state`/`load_state` (1.16): they resume exactly (test_training's and test_fsdp's
resume tests pass on them), but `register_for_checkpointing` state is unpickled with weights_only=False
(a crafted custom_checkpoint_0.pkl ran its code on --resume), a missing random_states_<rank>.pkl is
skipped with a log line (SFT resumed so: step 3's loss 6.781, not 6.866), every model is saved whole
(tiny bf16 LoRA checkpoint 0.93 -> 1.63 MB: the frozen base again; float32 3.35 -> 4.76 MB: the
weights twice), and `ProjectConfiguration(total_limit=...)` deletes old checkpoints before saving."""

from __future__ import annotations

import copy
import pickle
import random
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import yaml

from sari_train.config import ConfigError, save_config
from sari_train.models.adapter import AudioLM
from sari_train.prompts import PromptStyle

if TYPE_CHECKING:
    from sari_train.training import TrainConfig


def checkpoint_dir(out: Path, step: int) -> Path:
    return out / "checkpoints" / f"step-{step:06d}"


def complete_checkpoints(out: Path) -> list[Path]:
    """A run's checkpoints in step order, leaving out saves cut short (no state file yet)."""
    return sorted(p for p in (out / "checkpoints").glob("step-*") if (p / "trainer_state.pt").exists())


def latest_checkpoint(out: Path) -> Path | None:
    found = complete_checkpoints(out)
    return found[-1] if found else None


def rotate_checkpoints(out: Path, keep: int | None) -> list[Path]:
    """Delete all but the newest `keep` complete checkpoints (TRL's save_total_limit; None keeps
    all). Returns what was deleted. A folder without its state file (a save cut short) is left for
    `latest_checkpoint` to skip."""
    import shutil

    found = complete_checkpoints(out)
    stale = found[:-keep] if keep is not None and len(found) > keep else []
    for folder in stale:
        shutil.rmtree(folder)
    return stale


def merge_lora(weights: dict[str, torch.Tensor], scale: float, adapter: str = "default") -> dict[str, torch.Tensor]:
    """Base-model weights from a LoRA model's state dict: W + scale·B·A in each adapted layer
    (computed in float32), adapter tensors dropped, `base_layer.` taken out of the names."""
    merged = {}
    for name, value in weights.items():
        if ".lora_" in name:
            continue
        if ".base_layer." in name:
            prefix, leaf = name.split(".base_layer.")
            a, b = (weights.get(f"{prefix}.lora_{ab}.{adapter}.weight") for ab in "AB")
            if leaf == "weight" and a is not None:
                value = (value.float() + scale * (b.float() @ a.float())).to(value.dtype)
            name = f"{prefix}.{leaf}"
        merged[name] = value
    return merged


def save_model(folder: Path, lm: AudioLM, weights: dict[str, torch.Tensor], config: TrainConfig) -> Path:
    """A folder `AudioLM.load` can read: `weights` (full, LoRA already merged) cast to
    `config.dtype`, the model config saying so, tokenizer, feature extractor, the run's config."""
    folder.mkdir(parents=True, exist_ok=True)
    dtype = getattr(torch, config.dtype)
    lm.model.save_pretrained(folder, state_dict={k: v.to(dtype) if v.is_floating_point() else v
                                                 for k, v in weights.items()})
    model_config = copy.deepcopy(lm.model.config)  # save_pretrained wrote the float32 master weights' dtype
    model_config.dtype = config.dtype
    model_config.save_pretrained(folder)
    lm.tokenizer.save_pretrained(folder)
    lm.feature_extractor.save_pretrained(folder)
    lm.save_chat_template(folder)
    save_config(config, folder / "config.yaml")
    return folder


def saved_prompt_style(model: str | Path) -> PromptStyle | None:
    """The prompt style a model folder of ours was trained with (the run config `save_model` writes
    next to the weights), or None for any other model."""
    saved = Path(model) / "config.yaml"
    if not saved.is_file():
        return None
    prompt = (yaml.safe_load(saved.read_text()) or {}).get("prompt")
    return PromptStyle.model_validate(prompt) if isinstance(prompt, dict) else None


def inherit_prompt_format(config: TrainConfig) -> TrainConfig:
    """A config that sets no `prompt.format` asks in the format its starting model was trained in:
    GRPO from a structured-CoT SFT model must not quietly train bare answers. A format the config
    sets is kept (an arm may change format on purpose)."""
    saved = saved_prompt_style(config.model)
    if "format" in config.prompt.model_fields_set or saved is None or saved.format == config.prompt.format:
        return config
    return config.model_copy(update={"prompt": config.prompt.model_copy(update={"format": saved.format})})


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


def load_plain(path: Path) -> Any:
    """A checkpoint file of tensors and plain types only: anything else could run code when unpickled."""
    try:
        return torch.load(path, weights_only=True)
    except pickle.UnpicklingError as err:
        raise ConfigError(f"{path} holds objects other than tensors and plain data, so it is not loaded (it could "
                          f"run code): {str(err).splitlines()[-1][:200]}; resume only from checkpoints this toolkit "
                          f"wrote") from None


def resume_point(config: TrainConfig) -> Path | None:
    """The checkpoint to continue from, or None for a fresh run (refusing to overwrite a run by accident)."""
    if isinstance(config.resume, Path):  # TRL's resume_from_checkpoint: PATH
        if not (config.resume / "trainer_state.pt").exists():
            raise ConfigError(f"resume_from_checkpoint {config.resume}: not a checkpoint folder (no trainer_state.pt); "
                              f"give one of {config.out / 'checkpoints'}/step-*, or true for the latest")
        return config.resume
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


def gathered(state: Any) -> Any:
    """`state` with every DTensor replaced by its full tensor on CPU (torch leaves them sharded on a
    CPU mesh). A collective when there are any: every process calls it on the same structure."""
    if isinstance(state, dict):
        return {k: gathered(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(gathered(v) for v in state)
    return state.full_tensor().cpu() if hasattr(state, "full_tensor") else state
