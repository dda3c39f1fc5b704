"""Every training preset runs end to end through the CLI on tiny models (a couple of steps)."""

import json
from pathlib import Path

import pytest

from sari_train.cli import main
from sari_train.models.tiny import build_tiny_omni_thinker

PRESETS = Path(__file__).parents[2] / "pipelines" / "train"
TINY = ["--max-steps", "1", "--eval-limit", "2", "--eval-max-new-tokens", "4", "--dtype", "float32",
        "--report-to", "none", "--save-every", "0", "--grad-accum", "1"]
GRPO_TINY = ["--num-generations", "2", "--max-completion-length", "4", "--prompts-per-batch", "1"]


def cli(*args):
    assert main([str(a) for a in args]) == 0


@pytest.mark.slow
@pytest.mark.parametrize("preset,kind", [("r1-aqa", "qwen2_audio"), ("sari-qwen2-audio", "qwen2_audio"),
                                         ("sari-omni", "omni")])
def test_preset_runs_end_to_end(preset, kind, tiny_model_dir, train_workspace, tmp_path):
    config = PRESETS / f"{preset}.yaml"
    model = tiny_model_dir if kind == "qwen2_audio" else build_tiny_omni_thinker(tmp_path / "omni", window_seconds=4)
    # The tiny workspace has train/test splits; the real chain (sft / rl, MMAU eval workspace) is
    # checked by test_presets_read_what_the_recipes_write and run by tests/staging.
    common = ["--config", config, "--workspace", train_workspace, "--split", "train",
              "--eval-workspace", train_workspace, *TINY]
    if preset == "r1-aqa":
        cli("grpo", *common, "--model", model, "--out", tmp_path / "grpo", *GRPO_TINY)
    else:
        cli("sft", *common, "--model", model, "--out", tmp_path / "sft", "--batch-size", "2")
        cli("grpo", *common, "--model", tmp_path / "sft" / "final", "--out", tmp_path / "grpo", *GRPO_TINY)
        sft_config = (tmp_path / "sft" / "final" / "config.yaml").read_text()
        assert "format: structured" in sft_config
    grpo_config = (tmp_path / "grpo" / "final" / "config.yaml").read_text()
    expected = {"r1-aqa": ["beta: 0.04", "lr: 1.0e-06", "sampler: random"],
                "sari-qwen2-audio": ["sampler: curriculum", "structure: 0.5"],
                "sari-omni": ["beta: 0.01", "accuracy: 2.0", "format: 1.0"]}[preset]
    assert all(line in grpo_config for line in expected), grpo_config
    rows = [json.loads(line) for line in (tmp_path / "grpo" / "metrics.jsonl").read_text().splitlines()]
    assert any("reward" in r for r in rows) and list((tmp_path / "grpo" / "runs").glob("*-grpo-*.json"))


def test_a_single_stage_preset_refuses_the_other_command(tmp_path, capsys):
    assert main(["sft", "--config", str(PRESETS / "r1-aqa.yaml")]) == 2
    assert "unknown key" in capsys.readouterr().err


def test_demo_presets_and_the_ablation_config_validate():
    """`make demo` and `sari-train experiment` read these files; a typo must fail here, not after minutes."""
    import yaml

    from sari_train.config import STAGES
    from sari_train.experiment import ExperimentConfig, stage_fields
    from sari_train.grpo.train import GRPOConfig
    from sari_train.sft import SFTConfig

    SFTConfig.model_validate(yaml.safe_load((PRESETS / "demo-base.yaml").read_text()))
    sari = yaml.safe_load((PRESETS / "demo-sari.yaml").read_text())
    shared = {k: v for k, v in sari.items() if k not in STAGES}
    SFTConfig.model_validate({**shared, **sari["sft"]})
    GRPOConfig.model_validate({**shared, **sari["grpo"]})
    root = PRESETS.parents[1]
    experiment = ExperimentConfig.model_validate(
        yaml.safe_load((root / "pipelines" / "experiments" / "ablations.yaml").read_text()))
    assert {a.format for a in experiment.arms.values()} == {"implicit", "free", "structured"}
    assert {a.sampler for a in experiment.arms.values()} == {"curriculum", "random"}
    assert {a.sft for a in experiment.arms.values()} == {True, False} and len(experiment.seeds) >= 3
    experiment = experiment.model_copy(update={"preset": root / experiment.preset})
    assert stage_fields(experiment, "sft")["max_steps"] == sari["sft"]["max_steps"]


@pytest.mark.slow
def test_experiment_command_prints_the_table(tiny_model_dir, train_workspace, tmp_path, capsys):
    cli("experiment", "--workspace", train_workspace, "--base", tiny_model_dir, "--out", tmp_path / "exp",
        "--set", "seeds=[0]", "--set", "arms={only: {format: implicit, grpo: false, label: answers}}",
        "--set", "sft={max_steps: 1, batch_size: 2, tensorboard: false}", "--eval-limit", "2",
        "--eval-max-new-tokens", "4")
    out = capsys.readouterr().out
    assert "only" in out and "points over the base" in out and (tmp_path / "exp" / "table.md").exists()
    assert list((tmp_path / "exp" / "runs").glob("*-experiment-*.json"))


def test_presets_read_what_the_recipes_write():
    """Split names and workspaces a training preset reads are the ones its corpus recipe writes."""
    import yaml

    from sari_data.recipe import load_recipe

    root = PRESETS.parents[1]
    sari = load_recipe(root / "pipelines" / "sari-32k.yaml")
    mmau = load_recipe(root / "pipelines" / "eval-mmau-test-mini.yaml")
    written = set(next(s for s in sari.steps if s.kind == "split_counts").counts)
    assert sari.stage_settings("cot").split == "sft"
    for preset in ("sari-qwen2-audio", "sari-omni"):
        config = yaml.safe_load((PRESETS / f"{preset}.yaml").read_text())
        assert Path(config["workspace"]) == sari.workspace and Path(config["eval_workspace"]) == mmau.workspace
        assert (config["sft"]["split"], config["grpo"]["split"]) == ("sft", "rl") and {"sft", "rl"} <= written
        assert config["eval_split"] == mmau.sources[0].split and config["grpo"]["sampler"] == "curriculum"
    r1 = yaml.safe_load((PRESETS / "r1-aqa.yaml").read_text())
    avqa = load_recipe(root / "pipelines" / "r1-aqa-avqa.yaml")
    assert Path(r1["workspace"]) == avqa.workspace and r1["split"] == avqa.sources[0].split
    assert Path(r1["eval_workspace"]) == mmau.workspace
