"""A TRL user's command line and config keys: underscore flags, --use_peft/--lora_r, epochs and
warm-up ratios resolved as TRL resolves them, save_total_limit, and a one-line error for each
TRL setting we cannot honour."""

import json

import pytest
import yaml

from sari_train.cli import main
from sari_train.grpo.train import GRPOConfig
from sari_train.sft import SFTConfig


def test_trl_command_line_runs_grpo(tiny_model_dir, train_workspace, tmp_path):
    out = tmp_path / "g"
    assert main(["grpo", "--model_name_or_path", str(tiny_model_dir), "--workspace", str(train_workspace),
                 "--learning_rate", "1e-6", "--output_dir", str(out), "--use_peft", "--lora_r", "8", "--max_steps", "2",
                 "--num_generations", "2", "--max_completion_length", "4", "--eval_strategy", "no",
                 "--sampler", "random", "--report_to", "none"]) == 0
    saved = yaml.safe_load((out / "final" / "config.yaml").read_text())
    assert saved["lr"] == 1e-6 and saved["lora"]["r"] == 8 and saved["max_steps"] == 2 and saved["eval_split"] is None


def test_trl_yaml_with_epochs_warmup_ratio_and_rotation(tiny_model_dir, train_workspace, tmp_path):
    out = tmp_path / "s"
    path = tmp_path / "sft.yaml"
    path.write_text(yaml.safe_dump({
        "model_name_or_path": str(tiny_model_dir), "workspace": str(train_workspace), "output_dir": str(out),
        "num_train_epochs": 1, "per_device_train_batch_size": 4, "warmup_ratio": 0.25, "save_steps": 1,
        "save_total_limit": 2, "max_prompt_length": 4096, "torch_dtype": "float32", "optim": "adamw_torch",
        "adam_beta2": 0.98, "eval_strategy": "no", "report_to": "none"}))
    assert main(["sft", "--config", str(path)]) == 0
    saved = yaml.safe_load((out / "final" / "config.yaml").read_text())
    # 14 train items with a chain... implicit format: all 16 train items; 16 / 4 per step = 4 steps
    assert saved["max_steps"] == 4 and saved["warmup_steps"] == 1 and saved["adam_beta2"] == 0.98
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000003", "step-000004"]


def test_max_steps_wins_over_epochs_as_in_trl():
    config = SFTConfig(model="m", workspace="w", num_train_epochs=3, max_steps=5, warmup_ratio=0.2)
    resolved = config.with_steps(examples=100, per_step=10)
    assert resolved.max_steps == 5 and resolved.warmup_steps == 1
    assert SFTConfig(model="m", workspace="w", num_train_epochs=1.5).with_steps(100, 10).max_steps == 15


@pytest.mark.parametrize("key,value", [("repetition_penalty", 1.1), ("sync_ref_model", True),
                                       ("steps_per_generation", 4), ("optim", "adafactor")])
def test_a_trl_setting_we_cannot_honour_is_one_line_naming_it(tmp_path, capsys, key, value):
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({"model": "m", "workspace": "w", key: value}))
    assert main(["grpo", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and key in err[0]


def test_neutral_values_of_unsupported_settings_are_accepted():
    config = GRPOConfig.model_validate({"model": "m", "workspace": "w", "top_k": None, "repetition_penalty": 1.0,
                                        "sync_ref_model": False, "importance_sampling_level": "token"})
    assert (config.model, config.top_k) == ("m", 0)
    # steps_per_generation = gradient_accumulation_steps is TRL's default: a round per optimizer step, as here
    config = GRPOConfig.model_validate({"model": "m", "workspace": "w", "gradient_accumulation_steps": 4,
                                        "steps_per_generation": 4})
    assert config.grad_accum == 4


def test_resume_from_checkpoint_path_and_set_errors_blame_the_flag(tiny_model_dir, train_workspace, tmp_path, capsys):
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({"model": str(tiny_model_dir), "workspace": str(train_workspace),
                                    "sampler": "random", "out": str(tmp_path / "run")}))
    assert main(["grpo", "--config", str(path), "--set", "beta=-1"]) == 2
    assert "error: flags: beta" in capsys.readouterr().err  # not blamed on the YAML file
    assert main(["grpo", "--config", str(path), "--resume_from_checkpoint", str(tmp_path / "nope")]) == 2
    assert "not a checkpoint folder" in capsys.readouterr().err
