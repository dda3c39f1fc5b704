"""TRL's names for our settings, so a TRL user's `GRPOConfig` / `SFTConfig` YAML mostly works.

Each setting has one canonical name (ours, saved in every run's config.yaml); TRL's name is a
documented alias accepted in YAML, `--set` and as a second flag (`--lr` and `--learning-rate`).
A few TRL settings need a conversion rather than a rename (`to_ours`): `bf16`/`fp16` set `dtype`;
`per_device_train_batch_size` is SFT's `batch_size` and GRPO's `completions_per_batch` (both TRL's
meaning: examples, resp. completions, per micro-batch and process);
`reward_funcs` + `reward_weights` (lists) become `rewards` (name → weight); `dataset_config`
joins `dataset_name` as `NAME:CONFIG`; `push_to_hub: true` + `hub_model_id` become
`push_to_hub: ID`; `use_peft` + `lora_*` become `lora`; `report_to` may be one string (`none`,
`all`, `wandb,trackio`); `log_completions: true/false` (TRL's switch) keeps our count or sets 0;
TRL's reward name `accuracy_reward` is our `accuracy`; `lr_scheduler_type: cosine_with_restarts`
(one cycle, TRL's default) is `cosine`. If both spellings are given, the later one wins (a flag,
`--set`). TRL settings we do not have are still rejected as unknown keys; those in UNSUPPORTED
(and TRL's launcher keys `num_processes`, `accelerate_config: zero2`) get a one-line reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import AliasChoices

# ours -> TRL's (GRPOConfig / SFTConfig / their TrainingArguments, and TRL scripts' model and data arguments)
TRL_NAMES = {
    "lr": "learning_rate",
    "grad_accum": "gradient_accumulation_steps",
    "out": "output_dir",
    "log_every": "logging_steps",
    "save_every": "save_steps",
    "eval_every": "eval_steps",
    "schedule": "lr_scheduler_type",
    "epsilon_low": "epsilon",
    "resume": "resume_from_checkpoint",
    "model": "model_name_or_path",
    "dataset": "dataset_name",
    "split": "dataset_train_split",
    "eval_split": "dataset_test_split",
    "log_completions": "num_completions_to_print",
    "hub_private": "hub_private_repo",
    "streaming": "dataset_streaming",
    "batch_size": "per_device_train_batch_size",  # SFT
    "completions_per_batch": "per_device_train_batch_size",  # GRPO: TRL counts completions too
}
# the same name in both (listed for the README table and the test of a TRL-style YAML)
SHARED = ("dtype", "max_steps", "num_generations", "beta", "temperature", "top_p", "max_completion_length", "loss_type",
          "seed", "warmup_steps", "weight_decay", "max_grad_norm", "epsilon_high", "num_iterations",
          "scale_rewards", "report_to", "run_name", "save_total_limit", "attn_implementation", "num_train_epochs",
          "warmup_ratio", "max_prompt_length", "adam_beta1", "adam_beta2", "top_k", "importance_sampling_level",
          "mask_truncated_completions")
# TRL names that need a conversion, not a rename: TRL's -> ours
CONVERTED = {"bf16": "dtype", "fp16": "dtype", "torch_dtype": "dtype", "optim": "(adamw_torch only)",
             "eval_strategy": "eval_split (no) / eval_every (steps)",
             "reward_weights": "rewards", "reward_funcs": "rewards", "dataset_config": "dataset",
             "push_to_hub + hub_model_id": "push_to_hub", "use_peft + lora_*": "lora"}
# TRL settings we cannot honour: a one-line error names them, unless set to the value that means "off"
UNSUPPORTED = {
    "lr_scheduler_kwargs": "schedules take no extra arguments; use lr_scheduler_type linear | cosine | constant",
    "repetition_penalty": "sampled rollouts are the policy's own distribution (1.0 means off)",
    "generation_batch_size": "each optimizer step samples its own completions (TRL's default: "
                             "per_device_train_batch_size × gradient_accumulation_steps × processes)",
    "steps_per_generation": "one generation round per optimizer step, so only = gradient_accumulation_steps "
                            "(TRL's default); num_iterations reuses a round",
    "sync_ref_model": "the reference model stays the starting model (false)",
    "packing": "SFT examples are not packed (false)",
    "completion_only_loss": "SFT's loss is on the completion only (true)",
    "max_length": "prompts are never truncated (audio); use max_prompt_length to bound them",
    "eos_token": "SFT completions end with the chat template's <|im_end|>",
    "num_processes": "sari-train runs in the processes it is started in: accelerate launch --num_processes N "
                     "-m sari_train.cli ...",
}
NEUTRAL = {"repetition_penalty": (1.0, 1),
           "sync_ref_model": (False,), "packing": (False,), "completion_only_loss": (True, None),
           "max_length": (None,), "lr_scheduler_kwargs": (None, {}),
           "generation_batch_size": (None,), "steps_per_generation": (None,), "eos_token": ("<|im_end|>", None),
           "num_processes": (1, None)}
# TRL settings whose TRL flag is a bare switch (`--push_to_hub`, `--log_completions`) though ours take a value
SWITCHES = ("push_to_hub", "log_completions")
# TRL's reward function names (trl/scripts/grpo.py) that are one of ours
TRL_REWARDS = {"accuracy_reward": "accuracy"}
# `trl ... --accelerate_config NAME`: TRL's built-in launcher profiles (trl/accelerate_configs/)
TRL_PROFILES = ("fsdp1", "fsdp2", "zero1", "zero2", "zero3", "multi_gpu", "single_gpu")
LORA = {"lora_r": "r", "lora_alpha": "alpha", "lora_dropout": "dropout", "lora_target_modules": "target_modules"}
TRACKERS = ("tensorboard", "wandb", "trackio")


def trl_alias(name: str) -> AliasChoices | str:
    """A field's validation alias: its own name, plus TRL's where that differs."""
    return AliasChoices(name, TRL_NAMES[name]) if name in TRL_NAMES else name


def to_ours(data: Any, fields: dict[str, Any]) -> Any:
    """Rewrite the TRL settings that are not plain renames (see the module docstring)."""
    if not isinstance(data, dict):
        return data
    if isinstance(data.get("push_to_hub"), bool) or "hub_model_id" in data:  # TRL: a bool plus the repo id
        wanted, repo = data.pop("push_to_hub", bool(data.get("hub_model_id"))), data.pop("hub_model_id", None)
        if wanted and not repo:
            raise ValueError("push_to_hub: true needs hub_model_id (or give the repo: push_to_hub: me/model)")
        data = {**data, "push_to_hub": repo if wanted else None}
    if isinstance(data.get("log_completions"), bool):  # TRL's switch; its count is num_completions_to_print
        wanted = data.pop("log_completions")
        count = data.pop("num_completions_to_print", None)
        data = {**data, "log_completions": (count if count is not None else fields["log_completions"].default)
                if wanted else 0} if "log_completions" in fields else data
    if "use_peft" in data or any(k in data for k in LORA):
        data = _lora(data)
    canonical = {trl: ours for ours, trl in TRL_NAMES.items() if ours in fields}  # this command's fields
    renamed: dict[str, Any] = {}
    for key, value in data.items():  # both spellings given: the later one (a flag, --set) wins
        renamed.pop(key, None)
        renamed[canonical.get(key, key)] = value
    data = renamed
    for flag, dtype in (("bf16", "bfloat16"), ("fp16", "float16")):
        if data.pop(flag, None):
            data["dtype"] = dtype
    if "reward_weights" in data or "reward_funcs" in data:
        data["rewards"] = _rewards(data.pop("reward_funcs", None), data.pop("reward_weights", None))
    config = data.pop("dataset_config", None)
    if config and data.get("dataset"):
        data["dataset"] = f"{data['dataset']}:{config}"
    if isinstance(data.get("scale_rewards"), bool):  # TRL ≤ 0.21 spelled group scaling as a bool
        data["scale_rewards"] = "group" if data["scale_rewards"] else "none"
    if data.get("schedule") == "constant_with_warmup":  # our constant schedule warms up too
        data["schedule"] = "constant"
    if data.get("schedule") == "cosine_with_restarts" and not data.get("lr_scheduler_kwargs"):
        data["schedule"] = "cosine"  # one cycle (TRL's default num_cycles 1) is the cosine decay
    if str(data.get("accelerate_config")) in TRL_PROFILES and not Path(str(data["accelerate_config"])).exists():
        raise ValueError(f"accelerate_config {data['accelerate_config']}: TRL's named launcher profiles are not "
                         f"shipped here, and sari-train does not launch processes: accelerate launch --config_file "
                         f"FILE -m sari_train.cli ... (accelerate_config: FILE records it for sari-train plan)")
    if isinstance(data.get("resume"), str) and data["resume"].lower() in ("true", "false"):
        data["resume"] = data["resume"].lower() == "true"
    if "top_k" in data and data["top_k"] is None:  # TRL's "off"
        data["top_k"] = 0
    if "torch_dtype" in data:
        data.setdefault("dtype", data.pop("torch_dtype"))
    if data.get("optim", "adamw_torch") not in ("adamw_torch", "adamw_torch_fused"):
        raise ValueError(f"optim {data['optim']!r}: only AdamW is supported here (adamw_torch)")
    data.pop("optim", None)
    if data.get("eval_strategy") is False:  # YAML reads a bare `no` as false
        data["eval_strategy"] = "no"
    if data.get("eval_strategy", "steps") not in ("steps", "no"):
        raise ValueError(f"eval_strategy {data['eval_strategy']!r}: give steps (with eval_steps) or no")
    if data.pop("eval_strategy", None) == "no":
        data["eval_split"] = None
    if data.get("steps_per_generation") == data.get("grad_accum", fields["grad_accum"].default):
        data.pop("steps_per_generation")  # TRL's default: a round per optimizer step, as here
    for key, why in UNSUPPORTED.items():
        if key in data and data[key] not in NEUTRAL.get(key, ()):
            raise ValueError(f"{key}: not supported here ({why})")
        data.pop(key, None)
    if "report_to" in data or "tensorboard" in data:
        data["report_to"] = _trackers(data.get("report_to", fields["report_to"].default), data.pop("tensorboard", None))
    return data


def _lora(data: dict[str, Any]) -> dict[str, Any]:
    """TRL's `use_peft` + `lora_*` (ModelConfig) as our `lora` block (TRL ignores `lora_*` without
    `use_peft`, and so do we). Module names become our regex, kept to the language model;
    `all-linear` is our default (its attention and MLP projections)."""
    rest = {k: v for k, v in data.items() if k != "use_peft" and k not in LORA}
    if not data.get("use_peft"):
        return rest
    settings = {ours: data[trl] for trl, ours in LORA.items() if trl in data}
    modules = settings.pop("target_modules", None)
    if isinstance(modules, (list, tuple)):  # TRL's documented `--lora_target_modules "q_proj", "v_proj"` gives 'q_proj,'
        modules = [name.strip() for module in modules for name in str(module).split(",") if name.strip()]
        modules = None if modules == ["all-linear"] else modules
    if isinstance(modules, list):
        settings["target_modules"] = rf".*language_model.*\.({'|'.join(map(str, modules))})"
    elif modules not in (None, "all-linear"):
        settings["target_modules"] = modules
    return {**rest, "lora": settings}


def _rewards(funcs: list[str] | str | None, weights: list[float] | None) -> dict[str, float]:
    funcs = [funcs] if isinstance(funcs, str) else list(funcs or ["accuracy", "format"])  # our defaults, in order
    funcs = [TRL_REWARDS.get(f, f) for f in funcs]
    theirs = [f for f in funcs if "." not in f and ":" not in f and f.endswith(("_reward", "_punishment"))]
    if theirs:  # TRL's other built-ins (trl/scripts/grpo.py) are text-task rewards we do not have
        raise ValueError(f"reward_funcs {', '.join(theirs)}: not a reward here; ours are accuracy "
                         f"(TRL's accuracy_reward), accuracy_normalised, format, structure, accuracy_r1aqa, "
                         f"format_r1aqa, or a dotted path package.module.function")
    weights = list(weights) if weights is not None else [1.0] * len(funcs)
    if len(weights) != len(funcs):
        raise ValueError(f"reward_weights has {len(weights)} weights for {len(funcs)} rewards ({', '.join(funcs)}); "
                         f"give one weight per reward, or use rewards: {{name: weight}}")
    return dict(zip(funcs, map(float, weights)))


def _trackers(report_to: Any, tensorboard: bool | None) -> list[str]:
    """TRL accepts one string, `none` or `all`; `tensorboard: false` is our older spelling."""
    if isinstance(report_to, str) and "," in report_to:
        report_to = [t.strip() for t in report_to.split(",")]
    if isinstance(report_to, str):
        report_to = installed_trackers() if report_to == "all" else [] if report_to == "none" else [report_to]
    trackers = [t for t in report_to or [] if t != "none"]
    if tensorboard is True and "tensorboard" not in trackers:
        trackers.append("tensorboard")
    if tensorboard is False:
        trackers = [t for t in trackers if t != "tensorboard"]
    return trackers


def installed_trackers() -> list[str]:
    from importlib.util import find_spec

    return [t for t in TRACKERS if t == "tensorboard" or find_spec(t) is not None]
