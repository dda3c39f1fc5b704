"""A TRL user's GRPOConfig YAML runs `sari-train grpo` unchanged; TRL's names are aliases of ours."""

import json

import pytest
import yaml

from sari_train.cli import main, parser
from sari_train.config import ConfigError
from sari_train.grpo.train import GRPOConfig, micro_batch_rows
from sari_train.sft import SFTConfig
from sari_train.trl_names import SHARED, TRL_NAMES

# TRL's names for every setting both have (TRL's GRPOConfig and its scripts' model/data arguments)
TRL_YAML = {
    "model_name_or_path": None, "output_dir": None, "dataset_train_split": "train", "dataset_test_split": "test",
    "learning_rate": 2.0e-3, "lr_scheduler_type": "cosine", "warmup_steps": 1, "weight_decay": 0.01,
    "max_grad_norm": 0.5, "gradient_accumulation_steps": 2, "per_device_train_batch_size": 4, "num_generations": 2,
    "max_steps": 2, "logging_steps": 1, "save_steps": 2, "eval_steps": 0, "resume_from_checkpoint": False,
    "seed": 3, "bf16": False, "dtype": "float32", "dataset_streaming": False, "hub_private_repo": True, "report_to": "none", "run_name": "trl-style", "beta": 0.02, "epsilon": 0.15,
    "epsilon_high": 0.25, "temperature": 0.9, "top_p": 0.95, "max_completion_length": 4, "loss_type": "dr_grpo",
    "scale_rewards": "batch", "num_iterations": 2, "reward_funcs": ["accuracy", "format"],
    "reward_weights": [2.0, 1.0], "num_completions_to_print": 1, "save_total_limit": 1, "attn_implementation": "sdpa",
    "num_train_epochs": 1, "warmup_ratio": 0.5, "max_prompt_length": 4096, "adam_beta1": 0.9, "adam_beta2": 0.99,
    "top_k": 50, "importance_sampling_level": "sequence", "mask_truncated_completions": True,
}
OURS = {"lr": 2.0e-3, "schedule": "cosine", "warmup_steps": 1, "weight_decay": 0.01, "max_grad_norm": 0.5,
        "grad_accum": 2, "completions_per_batch": 4, "num_generations": 2, "max_steps": 2, "log_every": 1,
        "save_every": 2, "eval_every": 0, "resume": False, "seed": 3, "dtype": "float32", "report_to": [],
        "run_name": "trl-style", "beta": 0.02, "epsilon_low": 0.15, "epsilon_high": 0.25, "temperature": 0.9,
        "top_p": 0.95, "max_completion_length": 4, "loss_type": "dr_grpo", "scale_rewards": "batch",
        "num_iterations": 2, "rewards": {"accuracy": 2.0, "format": 1.0}, "log_completions": 1,
        "split": "train", "eval_split": "test", "streaming": False, "hub_private": True, "save_total_limit": 1,
        "attn_implementation": "sdpa", "num_train_epochs": 1, "warmup_ratio": 0.5, "max_prompt_length": 4096,
        "adam_beta1": 0.9, "adam_beta2": 0.99, "top_k": 50, "importance_sampling_level": "sequence",
        "mask_truncated_completions": True}  # max_steps 2 wins over num_train_epochs; ceil(0.5 · 2) = 1 warm-up


def test_trl_style_yaml_runs_grpo_unchanged(tiny_model_dir, train_workspace, tmp_path):
    out = tmp_path / "run"
    path = tmp_path / "grpo.yaml"
    path.write_text(yaml.safe_dump({**TRL_YAML, "model_name_or_path": str(tiny_model_dir), "output_dir": str(out),
                                    "workspace": str(train_workspace), "eval_limit": 2, "eval_max_new_tokens": 2,
                                    "sampler": "random"}))
    assert main(["grpo", "--config", str(path)]) == 0
    saved = yaml.safe_load((out / "final" / "config.yaml").read_text())
    assert {k: saved[k] for k in OURS} == OURS  # saved under our canonical names
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2]
    assert (out / "checkpoints" / "step-000002" / "trainer_state.pt").exists()  # save_steps: 2
    assert len((out / "samples.jsonl").read_text().splitlines()) == 2  # one completion per logged step


def test_every_shared_setting_has_a_trl_spelling_in_the_test_yaml():
    grpo_fields = set(GRPOConfig.model_fields)
    assert set(TRL_NAMES) - {"batch_size", "dataset"} <= grpo_fields and set(SHARED) <= grpo_fields
    covered = set(TRL_YAML)
    assert {TRL_NAMES[k] for k in TRL_NAMES if k not in ("batch_size", "dataset")} <= covered
    assert set(SHARED) <= covered


def test_flags_and_set_use_either_name_and_the_later_one_wins(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: m\nworkspace: w\nlearning_rate: 1.0e-4\n")
    args = parser().parse_args(["sft", "--config", str(path), "--set", "lr=3e-4"])
    from sari_train.config import load_config

    assert load_config(SFTConfig, args, "sft").lr == 3e-4
    path.write_text("model: m\nworkspace: w\nlr: 1.0e-4\n")
    args = parser().parse_args(["sft", "--config", str(path), "--learning-rate", "5e-4", "--per-device-train-batch-size", "3"])
    config = load_config(SFTConfig, args, "sft")
    assert (config.lr, config.batch_size) == (5e-4, 3)
    help_text = parser()._subparsers._group_actions[0].choices["grpo"].format_help()
    assert "--lr LR, --learning-rate LR, --learning_rate LR" in help_text
    assert "--epsilon-low EPSILON_LOW, --epsilon_low EPSILON_LOW, --epsilon EPSILON_LOW" in help_text
    assert "optim.lr" not in help_text and "--set prompt.format=structured" in " ".join(help_text.split())


def test_conversions_and_their_errors():
    base = dict(model="m", workspace="w")
    assert GRPOConfig(**base, per_device_train_batch_size=16).completions_per_batch == 16  # TRL counts completions
    assert GRPOConfig(**base, reward_weights=[3, 1]).rewards == {"accuracy": 3.0, "format": 1.0}
    assert GRPOConfig(**base, fp16=True).dtype == "float16"
    assert GRPOConfig(model="m", dataset_name="me/c", dataset_config="rl").dataset == "me/c:rl"
    assert GRPOConfig(**base, scale_rewards=False).scale_rewards == "none"
    assert GRPOConfig(**base, tensorboard=False).report_to == []
    assert GRPOConfig(**base, report_to=["none"]).report_to == []
    assert GRPOConfig(**base, report_to="wandb,trackio").report_to == ["wandb", "trackio"]  # --report-to a,b
    lora = GRPOConfig(**base, use_peft=True, lora_r=8, lora_alpha=16, lora_target_modules=["q_proj", "v_proj"]).lora
    assert (lora.r, lora.alpha, lora.target_modules) == (8, 16, r".*language_model.*\.(q_proj|v_proj)")
    assert GRPOConfig(**base, lora_r=8).lora is None  # TRL ignores lora_* without use_peft
    assert GRPOConfig(**base, dataset_streaming=True).streaming is True
    assert micro_batch_rows(GRPOConfig(**base, per_device_train_batch_size=4, grad_accum=2), world=1) == 4
    assert micro_batch_rows(GRPOConfig(**base, per_device_train_batch_size=4), world=2) == 4  # a group per 2 GPUs
    with pytest.raises(ConfigError, match="= 4 completions per step, not a multiple of num_generations 8"):
        micro_batch_rows(GRPOConfig(**base, per_device_train_batch_size=4), world=1)
    with pytest.raises(ConfigError, match="filter_zero_variance re-samples whole groups"):
        micro_batch_rows(GRPOConfig(**base, per_device_train_batch_size=4, filter_zero_variance=True), world=2)
    with pytest.raises(ValueError, match="2 weights for 3 rewards"):
        GRPOConfig(**base, reward_funcs=["accuracy", "format", "structure"], reward_weights=[1, 1])
    assert str(GRPOConfig(**base, resume_from_checkpoint="runs/x/step-000100").resume) == "runs/x/step-000100"
    assert GRPOConfig(**base, eval_strategy="no").eval_split is None
    with pytest.raises(ValueError, match="eval_strategy 'epoch'"):
        GRPOConfig(**base, eval_strategy="epoch")
    with pytest.raises(ValueError, match="unknown key|Extra inputs"):  # a key TRL does not have either
        GRPOConfig(**base, no_such_setting=1)


def test_trl_switches_reward_names_and_schedules(tmp_path, capsys):
    base = dict(model="m", workspace="w")
    assert GRPOConfig(**base, log_completions=True).log_completions == 2  # TRL's switch: our count
    assert GRPOConfig(**base, log_completions=True, num_completions_to_print=5).log_completions == 5
    assert GRPOConfig(**base, log_completions=False, num_completions_to_print=5).log_completions == 0
    assert GRPOConfig(**base, log_completions=3).log_completions == 3  # ours: a count
    assert GRPOConfig(**base, reward_funcs=["accuracy_reward", "format"]).rewards == {"accuracy": 1.0, "format": 1.0}
    assert GRPOConfig(**base, lr_scheduler_type="cosine_with_restarts").schedule == "cosine"
    with pytest.raises(ValueError, match="reward_funcs think_format_reward: not a reward here"):
        GRPOConfig(**base, reward_funcs=["think_format_reward"])
    path = tmp_path / "c.yaml"
    path.write_text("model: m\nworkspace: w\nlr_scheduler_type: polynomial\n")
    assert main(["sft", "--config", str(path)]) == 2
    assert "lr_scheduler_type (schedule): Input should be" in capsys.readouterr().err  # as the YAML spells it
