import pandas as pd
import pytest
import yaml

from sari_train import experiment
from sari_train.config import ConfigError
from sari_train.evaluate import named, trained_style
from sari_train.experiment import Arm, ExperimentConfig, comparison, comparison_lines, run_experiment, stage_fields, summarise


def test_summary_is_mean_and_sample_std_over_seeds():
    results = pd.DataFrame([
        {"arm": "base", "label": "b", "seed": None, "total": 40.0, "task/music": 40.0},
        {"arm": "sari", "label": "s", "seed": 0, "total": 50.0, "task/music": 50.0},
        {"arm": "sari", "label": "s", "seed": 1, "total": 60.0, "task/music": 70.0},
    ])
    table = summarise(results).set_index("arm")
    # sample std of (50, 60) = sqrt(((−5)² + 5²) / 1) = 7.07; of (50, 70) = 14.14
    assert table.loc["sari", "total"] == "55.0 ± 7.1" and table.loc["sari", "task/music"] == "60.0 ± 14.1"
    assert table.loc["base", "total"] == "40.0" and table.loc["sari", "seeds"] == 2


def test_comparison_is_the_gap_of_means_against_twice_the_larger_seed_std():
    results = pd.DataFrame([
        {"arm": "sari", "seed": 0, "total": 70.0}, {"arm": "sari", "seed": 1, "total": 72.0},
        {"arm": "sari", "seed": 2, "total": 74.0}, {"arm": "sft_only", "seed": 0, "total": 60.0},
        {"arm": "sft_only", "seed": 1, "total": 61.0}, {"arm": "sft_only", "seed": 2, "total": 65.0},
    ])
    c = comparison(results, "sari", "sft_only")
    # means 72 and 62; sample stds 2.0 and sqrt((4 + 1 + 9) / 2) = 2.65; 10 > 2 x 2.65
    assert c["per_seed"] == [10.0, 11.0, 9.0] and c["gap"] == 10.0 and c["larger_std"] == 2.6
    assert c["separated"] and c["gap_over_std"] == 3.8
    close = comparison(results.assign(total=[70.0, 72.0, 74.0, 66.0, 72.0, 72.0]), "sari", "sft_only")
    assert close["gap"] == 2.0 and not close["separated"]
    assert "| sari − sft_only | +10.0, +11.0, +9.0 | +10.0 | 2.6 | +3.8 | yes |" in comparison_lines([c])
    with pytest.raises(ValueError, match="does not define"):
        ExperimentConfig(workspace=".", base="b", arms={"sari": Arm()}, compare=[("sari", "nope")])


def test_eval_names_columns_and_reads_each_models_trained_format(tmp_path):
    assert named("base=runs/base/final") == ("base", "runs/base/final")
    assert named("runs/grpo/final") == ("final", "runs/grpo/final")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"prompt": {"format": "structured"}, "lr": 1.0}))
    assert trained_style(str(tmp_path)).format == "structured"
    assert trained_style(str(tmp_path / "elsewhere")).format == "implicit"


def test_stage_settings_layer_preset_then_experiment(tmp_path):
    preset = tmp_path / "preset.yaml"
    preset.write_text(yaml.safe_dump({"lr": 1.0, "batch_size": 2, "sft": {"lr": 2.0, "max_steps": 5},
                                      "grpo": {"lr": 3.0}}))
    config = ExperimentConfig(workspace=tmp_path, base="b", arms={"a": Arm()}, preset=preset, sft={"max_steps": 7})
    assert stage_fields(config, "sft") == {"lr": 2.0, "batch_size": 2, "max_steps": 7}
    assert stage_fields(config, "grpo") == {"lr": 3.0, "batch_size": 2}
    with pytest.raises(ConfigError, match="not found"):
        stage_fields(config.model_copy(update={"preset": tmp_path / "missing.yaml"}), "sft")


def test_an_arm_may_set_its_own_sft_length_in_its_own_folder(tmp_path, monkeypatch):
    stages = []
    monkeypatch.setattr(experiment, "run_stage", lambda stage, train, what: stages.append(stage) or stage.out)
    config = ExperimentConfig(workspace=tmp_path, base=str(tmp_path), arms={"a": Arm()}, out=tmp_path / "exp",
                              sft={"max_steps": 5, "batch_size": 2})
    experiment.sft_stage(config, "structured", 0)
    experiment.sft_stage(config, "structured", 0, 9)
    assert [(s.max_steps, s.out.name) for s in stages] == [(5, "sft-structured-seed0"),
                                                           (9, "sft-structured-9steps-seed0")]


@pytest.mark.slow
def test_experiment_runs_every_arm_and_seed_and_reuses_finished_stages(tiny_model_dir, train_workspace, tmp_path,
                                                                       monkeypatch):
    config = ExperimentConfig(
        workspace=train_workspace, base=str(tiny_model_dir), seeds=[0, 1], out=tmp_path / "exp",
        arms={"sft_only": Arm(format="implicit", grpo=False, label="answer-only SFT"),
              "rl_only": Arm(format="implicit", sft=False, sampler="random", label="GRPO from the base"),
              "sari": Arm(format="structured", label="structured SFT then curriculum GRPO")},
        sft={"max_steps": 2, "batch_size": 4, "lr": 1e-3, "tensorboard": False},
        grpo={"max_steps": 1, "num_generations": 2, "max_completion_length": 8, "lr": 1e-3, "tensorboard": False},
        eval_limit=4, eval_max_new_tokens=8)
    outcome = run_experiment(config, "sari-train experiment --config x.yaml")
    results = pd.read_csv(tmp_path / "exp" / "results.csv")
    assert list(results.arm) == ["base"] + ["sft_only", "rl_only", "sari"] * 2
    assert results.total.between(0, 100).all() and (results.n == 4).all()
    assert set(outcome["gains"]) == {"sft_only", "rl_only", "sari"}
    table = (tmp_path / "exp" / "table.md").read_text()
    assert "`sari-train experiment --config x.yaml`" in table and "| sari |" in table and "seeds [0, 1]" in table
    for folder in ("sft-implicit-seed0", "sft-structured-seed1", "rl_only-seed1", "sari-seed0"):
        assert (tmp_path / "exp" / folder / "final" / "config.yaml").exists()
    assert not (tmp_path / "exp" / "sft_only-seed0").exists()  # an SFT-only arm is its SFT stage

    # A second run trains and scores nothing: every stage and score is reused.
    calls = []
    monkeypatch.setattr(experiment, "evaluate_model", lambda *a, **k: calls.append(a))
    monkeypatch.setattr("sari_train.sft.train_sft", lambda *a, **k: calls.append(a))
    monkeypatch.setattr("sari_train.grpo.train.train_grpo", lambda *a, **k: calls.append(a))
    again = run_experiment(config, "sari-train experiment --config x.yaml")
    assert calls == [] and again["gains"] == outcome["gains"]


def test_experiment_command_says_what_is_missing_in_one_line(tmp_path, capsys):
    from sari_train.cli import main

    base = tmp_path / "base"
    base.mkdir()
    assert main(["experiment", "--workspace", str(tmp_path / "nowhere"), "--base", str(base),
                 "--set", "arms={a: {}}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sari-train experiment: error: no workspace at") and "sari-data build" in err
    assert main(["experiment", "--workspace", str(tmp_path), "--base", str(tmp_path / "missing"),
                 "--set", "arms={a: {}}"]) == 2
    second = capsys.readouterr().err.strip()
    assert second.startswith("sari-train experiment: error: ") and "base model" in second
    assert str(tmp_path / "missing") in second and "\n" not in second and "Traceback" not in second


def test_required_fields_say_so_in_help():
    import argparse

    from sari_train.config import add_config_flags

    parser = argparse.ArgumentParser()
    add_config_flags(parser, ExperimentConfig)
    text = parser.format_help()
    assert "PydanticUndefined" not in text and "(required)" in text and "(default: none)" in text
