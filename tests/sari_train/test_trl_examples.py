"""TRL's own documented GRPO and SFT examples, run through `sari-train grpo|sft` for 2 steps.

Each example is written out with TRL's key names and its documented values; a comment names the
file of the huggingface/trl repository it comes from and says what was changed to run here. What
must change everywhere: the model (TRL's text models → our tiny random-weight Qwen2-Audio), the
dataset (TRL's Hub text datasets → our tiny corpus published as a dataset folder, still given as
`dataset_name`; GRPO adds `sampler: random`, TRL's uniform order, as ours defaults to the difficulty
curriculum, which needs the buckets of a dataset's `rl` config: without it the run stops with one line
saying so), the length (2 steps: `max_steps: 2`, which wins over `num_train_epochs` as in TRL)
and the sizes (`max_completion_length` 4; our held-out eval, which TRL's default
`eval_strategy: no` would not run, on 2 items of 2 tokens: `eval_limit`, `eval_max_new_tokens`).
Every other key is honoured, or refused with one line naming it.
"""

import json
import shutil

import pytest
import yaml

from sari_train.cli import main

SMALL = {"max_steps": 2, "eval_limit": 2, "eval_max_new_tokens": 2}  # what every example gets to run here
RANDOM = {"sampler": "random"}  # and every GRPO example (TRL's order; our default needs difficulty buckets)


@pytest.fixture(scope="module")
def dataset_dir(train_workspace, tmp_path_factory):
    """The training workspace published as `sari-data publish` does: a dataset folder whose default
    config (`all`) has the train and test splits TRL's dataset_train_split / dataset_test_split name."""
    from sari_data.publish.run import publish

    root = tmp_path_factory.mktemp("trl-examples")
    shutil.copytree(train_workspace, root / "ws")  # publishing records a run in the workspace
    publish(root / "ws", root / "hub", progress=False)
    return root / "hub"


def flags(settings: dict) -> list[str]:
    """A mapping as TRL's command-line flags (`--key value`, lists as several values)."""
    argv = []
    for key, value in settings.items():
        argv.append(f"--{key}")
        argv += [str(v) for v in value] if isinstance(value, list) else [] if value is True else [str(value)]
    return argv


def run(command: str, tmp_path, settings: dict, argv: list[str] = ()) -> dict:
    """`sari-train COMMAND --config settings.yaml ARGV`; the saved config of the finished run."""
    path = tmp_path / f"{command}.yaml"
    path.write_text(yaml.safe_dump(settings))
    assert main([command, "--config", str(path), *argv]) == 0
    out = tmp_path / "out"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2]
    return yaml.safe_load((out / "final" / "config.yaml").read_text())


def refused(command: str, argv: list[str], capsys) -> str:
    assert main([command, *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


# --- GRPO ------------------------------------------------------------------------------------------

# docs/source/clis.md, "Using Configuration Files" (GRPO tab): grpo_config.yaml, `trl grpo --config grpo_config.yaml`
CLIS_GRPO_YAML = {"model_name_or_path": "Qwen/Qwen2.5-0.5B", "dataset_name": "HuggingFaceH4/Polaris-Dataset-53K",
                  "reward_funcs": ["accuracy_reward"]}


def test_clis_md_grpo_config_file(tiny_model_dir, dataset_dir, tmp_path):
    # changed: model, dataset_name (our dataset folder), SMALL, RANDOM, max_completion_length 4 (TRL's default 256),
    # output_dir (TRL's default trainer_output)
    example = {**CLIS_GRPO_YAML, "model_name_or_path": str(tiny_model_dir), "dataset_name": str(dataset_dir),
               **SMALL, **RANDOM, "max_completion_length": 4, "output_dir": str(tmp_path / "out")}
    saved = run("grpo", tmp_path, example)
    # TRL's accuracy_reward (trl/scripts/grpo.py's registry) is our accuracy
    assert saved["rewards"] == {"accuracy": 1.0} and saved["dataset"] == str(dataset_dir)
    assert (saved["split"], saved["eval_split"], saved["prompts_per_batch"]) == ("train", "test", 1)


def test_clis_md_grpo_command_line_is_the_same_config(tiny_model_dir, dataset_dir, tmp_path):
    # docs/source/clis.md, "Basic Usage" (GRPO tab): trl grpo --model_name_or_path Qwen/Qwen2.5-0.5B
    #   --dataset_name HuggingFaceH4/Polaris-Dataset-53K --reward_funcs accuracy_reward
    # changed: model and dataset_name as above (the run itself is test_clis_md_grpo_config_file's)
    from sari_train.cli import parser
    from sari_train.config import load_config
    from sari_train.grpo.train import GRPOConfig

    argv = ["grpo", "--model_name_or_path", str(tiny_model_dir), "--dataset_name", str(dataset_dir),
            "--reward_funcs", "accuracy_reward"]
    config = load_config(GRPOConfig, parser().parse_args(argv), "grpo")
    assert (config.model, config.dataset, config.rewards) == (str(tiny_model_dir), str(dataset_dir), {"accuracy": 1.0})


def test_grpo_trainer_md_quick_start_is_the_same_config(tiny_model_dir, dataset_dir):
    # docs/source/grpo_trainer.md, "Quick start": GRPOTrainer(model="Qwen/Qwen2.5-0.5B-Instruct",
    #   reward_funcs=accuracy_reward, train_dataset=load_dataset("trl-lib/DeepMath-103K", split="train"))
    # with GRPOConfig's defaults, as YAML: one reward function, not a list. changed: model, dataset_name
    from sari_train.grpo.train import GRPOConfig

    config = GRPOConfig.model_validate({"model_name_or_path": str(tiny_model_dir), "dataset_name": str(dataset_dir),
                                        "dataset_train_split": "train", "reward_funcs": "accuracy_reward"})
    assert (config.rewards, config.split, config.num_generations, config.lr) == ({"accuracy": 1.0}, "train", 8, 1e-6)


def reward_len(completions, **kwargs):  # docs/source/grpo_trainer.md's quick start until 2025-10, verbatim
    return [-abs(20 - len(completion)) for completion in completions]


def test_grpo_trainer_md_earlier_quick_start_with_its_reward_function(tiny_model_dir, dataset_dir, tmp_path,
                                                                       monkeypatch):
    # docs/source/grpo_trainer.md, "Quick start" (huggingface/trl commit 4e3f569e, 2025-03): the custom reward
    # function above, GRPOConfig(output_dir="Qwen2-0.5B-GRPO", logging_steps=10), model Qwen/Qwen2-0.5B-Instruct,
    # dataset trl-lib/tldr. changed: model, dataset_name, output_dir, SMALL, RANDOM, max_completion_length 4;
    # the function is named by its dotted path (trl/scripts/grpo.py takes the same)
    calls, theirs = [], reward_len
    monkeypatch.setattr(__import__(__name__), "reward_len", lambda completions, **kw: calls.append(kw) or
                        theirs(completions, **kw))
    example = {"model_name_or_path": str(tiny_model_dir), "dataset_name": str(dataset_dir),
               "reward_funcs": [f"{__name__}.reward_len"], "output_dir": str(tmp_path / "out"), "logging_steps": 10,
               **SMALL, **RANDOM, "max_completion_length": 4}
    path = tmp_path / "grpo.yaml"
    path.write_text(yaml.safe_dump(example))
    assert main(["grpo", "--config", str(path)]) == 0
    saved = yaml.safe_load((tmp_path / "out" / "final" / "config.yaml").read_text())
    assert (saved["rewards"], saved["log_every"]) == ({f"{__name__}.reward_len": 1.0}, 10)
    assert len(calls) == 2 and {"prompts", "answer", "choices"} <= set(calls[0])  # once per step, TRL's arguments
    rows = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert not [r for r in rows if "loss" in r]  # logging_steps 10: nothing to log in 2 steps, as in TRL


# docs/source/clis.md, "Scaling Up with Accelerate" and "Using --accelerate_config" (every tab): TRL's
# CLI launches the processes itself; sari-train runs in the processes `accelerate launch` started
@pytest.mark.parametrize("command", ["grpo", "sft"])
@pytest.mark.parametrize("key,value", [("num_processes", 4), ("accelerate_config", "zero2")])
def test_clis_md_launcher_settings_are_one_line_errors(tiny_model_dir, dataset_dir, tmp_path, capsys, command,
                                                       key, value):
    example = {"model_name_or_path": str(tiny_model_dir), "dataset_name": str(dataset_dir), key: value}
    if command == "grpo":
        example["reward_funcs"] = ["accuracy_reward"]
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(example))
    for argv in (["--config", str(path)], flags(example)):  # the YAML file and the command line
        line = refused(command, argv, capsys)
        assert key in line and "accelerate launch" in line


# examples/scripts/grpo_vlm.py (its docstring's first command; also docs/source/grpo_trainer.md,
# "Vision-Language Model (VLM) Training", "Quick Start"), after `accelerate launch --config_file ... grpo_vlm.py`
GRPO_VLM = ["--model_name_or_path", "Qwen/Qwen2.5-VL-3B-Instruct", "--output_dir", "grpo-Qwen2.5-VL-3B-Instruct",
            "--learning_rate", "1e-5", "--dtype", "bfloat16", "--max_completion_length", "1024", "--use_vllm",
            "--vllm_mode", "colocate", "--use_peft", "--lora_target_modules", "q_proj,", "v_proj",  # "q_proj", "v_proj"
            "--log_completions"]                                                                   # as the shell splits it


def replaced(argv: list[str], **values) -> list[str]:
    argv = list(argv)
    for key, value in values.items():
        argv[argv.index(f"--{key}") + 1] = str(value)
    return argv


def test_grpo_vlm_script_command(tiny_model_dir, dataset_dir, tmp_path):
    # changed: model; output_dir; max_completion_length 1024 -> 4; the script's dataset (hard-coded in
    # grpo_vlm.py) -> --dataset_name ours; SMALL, RANDOM; --use_vllm and --vllm_mode colocate left out (vLLM needs
    # a GPU; test_grpo_vlm_vllm_settings checks the config they make)
    argv = replaced(GRPO_VLM, model_name_or_path=tiny_model_dir, output_dir=tmp_path / "out",
                    max_completion_length=4)
    argv.remove("--use_vllm")
    del argv[argv.index("--vllm_mode"):argv.index("--vllm_mode") + 2]
    argv += ["--dataset_name", str(dataset_dir), *flags(SMALL), *flags(RANDOM)]
    assert main(["grpo", *argv]) == 0
    out = tmp_path / "out"
    saved = yaml.safe_load((out / "final" / "config.yaml").read_text())
    assert (saved["lr"], saved["dtype"], saved["max_completion_length"]) == (1e-5, "bfloat16", 4)
    assert saved["lora"]["target_modules"] == r".*language_model.*\.(q_proj|v_proj)"
    assert saved["log_completions"] == 2  # TRL's switch on: our count of completions per logged step
    assert len((out / "samples.jsonl").read_text().splitlines()) == 2 * 2  # two logged steps


def test_grpo_vlm_vllm_settings(tiny_model_dir, dataset_dir):
    # examples/scripts/grpo_vlm.py's command as written (model and dataset changed): the config it makes
    from sari_train.cli import parser
    from sari_train.config import load_config
    from sari_train.grpo.train import GRPOConfig

    argv = replaced(GRPO_VLM, model_name_or_path=tiny_model_dir)
    config = load_config(GRPOConfig, parser().parse_args(["grpo", *argv, "--dataset_name", str(dataset_dir)]), "grpo")
    assert (config.use_vllm, config.vllm_mode, config.lora.r, config.max_completion_length) == (True, "colocate", 16, 1024)
    assert str(config.out) == "grpo-Qwen2.5-VL-3B-Instruct"


def test_grpo_vlm_script_smolvlm_command(tiny_model_dir, dataset_dir, tmp_path):
    # examples/scripts/grpo_vlm.py, its docstring's second command (HuggingFaceTB/SmolVLM2-2.2B-Instruct):
    # per_device_train_batch_size 1 completion with num_generations 2: a group spans the 2 micro-batches, as in TRL
    argv = ["--model_name_or_path", "HuggingFaceTB/SmolVLM2-2.2B-Instruct", "--output_dir",
            "grpo-SmolVLM2-2.2B-Instruct", "--learning_rate", "1e-5", "--dtype", "bfloat16", "--max_completion_length",
            "1024", "--use_peft", "--lora_target_modules", "q_proj,", "v_proj", "--log_completions",
            "--per_device_train_batch_size", "1", "--gradient_accumulation_steps", "2", "--num_generations", "2"]
    # changed: model, output_dir, max_completion_length 1024 -> 4, --dataset_name ours, SMALL, RANDOM
    argv = replaced(argv, model_name_or_path=tiny_model_dir, output_dir=tmp_path / "out", max_completion_length=4)
    assert main(["grpo", *argv, "--dataset_name", str(dataset_dir), *flags(SMALL), *flags(RANDOM)]) == 0
    saved = yaml.safe_load((tmp_path / "out" / "final" / "config.yaml").read_text())
    assert (saved["num_generations"], saved["completions_per_batch"], saved["grad_accum"], saved["lr"]) == (2, 1, 2, 1e-5)


def test_grpo_trainer_md_at_scale_config_refuses_server_mode(tiny_model_dir, dataset_dir, tmp_path, capsys):
    # docs/source/grpo_trainer.md, "GRPO at scale: train a 70B+ Model on multiple nodes": GRPOConfig(
    #   per_device_train_batch_size=4, use_vllm=True, vllm_mode="server", vllm_server_host=...) with the
    # quick start's model and dataset. Our vLLM runs in the training process only: refused, one line.
    # changed: model and dataset_name (trl-lib/DeepMath-103K) as everywhere; the host is an example value
    example = {"model_name_or_path": str(tiny_model_dir), "dataset_name": str(dataset_dir),
               "reward_funcs": ["accuracy_reward"], "per_device_train_batch_size": 4, "use_vllm": True,
               "vllm_mode": "server", "vllm_server_host": "10.0.0.5"}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(example))
    line = refused("grpo", ["--config", str(path)], capsys)
    assert "vllm_mode" in line and "vllm_server_host" in line


# --- SFT -------------------------------------------------------------------------------------------

# examples/cli_configs/example_config.yaml (the same YAML is docs/source/clis.md's "simple example")
EXAMPLE_CONFIG = {"model_name_or_path": "Qwen/Qwen2.5-0.5B", "dataset_name": "stanfordnlp/imdb", "report_to": "none",
                  "learning_rate": 0.0001, "lr_scheduler_type": "cosine"}


def test_example_config_yaml_with_the_documented_override(tiny_model_dir, dataset_dir, tmp_path):
    # docs/source/clis.md: trl sft --config examples/cli_configs/example_config.yaml --output_dir test-trl-cli
    #   --lr_scheduler_type cosine_with_restarts   ("will force-use cosine_with_restarts")
    # changed: model, dataset_name, output_dir (test-trl-cli -> a temporary folder), SMALL (TRL's default
    # num_train_epochs 3 would be 9 steps on our 16 items)
    example = {**EXAMPLE_CONFIG, "model_name_or_path": str(tiny_model_dir), "dataset_name": str(dataset_dir), **SMALL}
    saved = run("sft", tmp_path, example, ["--output_dir", str(tmp_path / "out"),
                                           "--lr_scheduler_type", "cosine_with_restarts"])
    # one cycle (TRL's default num_cycles) of cosine_with_restarts is the cosine decay
    assert (saved["lr"], saved["schedule"], saved["report_to"]) == (1e-4, "cosine", [])


# trl/scripts/sft.py, its docstring's "Full training" and "LoRA" commands (`python trl/scripts/sft.py ...`)
SFT_FULL = ["--model_name_or_path", "Qwen/Qwen2-0.5B", "--dataset_name", "trl-lib/Capybara", "--learning_rate", "2.0e-5",
            "--num_train_epochs", "1", "--packing", "--per_device_train_batch_size", "2",
            "--gradient_accumulation_steps", "8", "--eos_token", "<|im_end|>", "--eval_strategy", "steps",
            "--eval_steps", "100", "--output_dir", "Qwen2-0.5B-SFT", "--push_to_hub"]
SFT_LORA = replaced(SFT_FULL, learning_rate="2.0e-4")[:-3] + ["--use_peft", "--lora_r", "32", "--lora_alpha", "16",
                                                              "--output_dir", "Qwen2-0.5B-SFT", "--push_to_hub"]


def test_sft_script_commands_as_written_name_what_we_cannot_honour(tiny_model_dir, dataset_dir, capsys):
    from sari_train.cli import parser
    from sari_train.config import load_config
    from sari_train.sft import SFTConfig

    for command in (SFT_FULL, SFT_LORA):
        argv = replaced(command, model_name_or_path=tiny_model_dir, dataset_name=dataset_dir)
        # TRL would push to <you>/<output_dir's name>; we push only to a repo named with hub_model_id
        assert "push_to_hub: true needs hub_model_id" in refused("sft", argv, capsys)
        argv.remove("--push_to_hub")
        assert refused("sft", argv, capsys).endswith("packing: not supported here (SFT examples are not packed (false))")
        argv.remove("--packing")
        named = parser().parse_args(["sft", *argv, "--push_to_hub", "--hub_model_id", "me/Qwen2-0.5B-SFT"])
        assert load_config(SFTConfig, named, "sft").push_to_hub == "me/Qwen2-0.5B-SFT"  # with TRL's hub_model_id


@pytest.mark.parametrize("command", ["full", "lora"])
def test_sft_script_commands(tiny_model_dir, dataset_dir, tmp_path, command):
    # changed: model, dataset_name, output_dir; --packing and --push_to_hub left out (refused above);
    # SMALL (max_steps 2 wins over num_train_epochs 1, as in TRL)
    argv = replaced(SFT_FULL if command == "full" else SFT_LORA, model_name_or_path=tiny_model_dir,
                    dataset_name=dataset_dir, output_dir=tmp_path / "out")
    argv = [a for a in argv if a not in ("--packing", "--push_to_hub")] + flags(SMALL)
    assert main(["sft", *argv]) == 0
    saved = yaml.safe_load((tmp_path / "out" / "final" / "config.yaml").read_text())
    assert (saved["batch_size"], saved["grad_accum"], saved["num_train_epochs"], saved["max_steps"]) == (2, 8, 1, 2)
    assert (saved["eval_every"], saved["eval_split"], saved["push_to_hub"]) == (100, "test", None)
    if command == "full":
        assert (saved["lr"], saved["lora"]) == (2e-5, None)
    else:
        assert (saved["lr"], saved["lora"]["r"], saved["lora"]["alpha"]) == (2e-4, 32, 16)
    rows = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2]


def test_sft_eos_token_other_than_the_template_end_is_one_line(capsys):
    # docs/source/sft_trainer.md: "for Qwen/Qwen2.5-1.5B, one should set eos_token="<|im_end|>"" is what we
    # append; another token is refused
    line = refused("sft", ["--model", "m", "--workspace", "w", "--eos_token", "</s>"], capsys)
    assert "eos_token" in line and "<|im_end|>" in line


# docs/source/paper_index.md: the GRPOConfig each paper's section gives "to reproduce the paper's setting"
# (keys and values as written; the trainer's other arguments are Python objects, left out). Checked as configs:
# what is honoured maps onto ours, what is not is refused in one line naming it.
PAPER_INDEX = [
    pytest.param({"loss_type": "dr_grpo", "per_device_train_batch_size": 1, "num_generations": 8,  # "Dr. GRPO"
                  "max_completion_length": 3000, "beta": 0.0},
                 {"loss_type": "dr_grpo", "completions_per_batch": 1, "num_generations": 8, "beta": 0.0},
                 id="dr-grpo"),  # a step's 1 × 8 processes completions make one group (TRL's rule, and ours)
    pytest.param({"learning_rate": 4.0e-5, "max_completion_length": 32768, "num_generations": 16, "beta": 0.001,
                  "use_vllm": True},  # "DeepSeek-R1"
                 {"lr": 4.0e-5, "max_completion_length": 32768, "num_generations": 16, "beta": 0.001,
                  "use_vllm": True}, id="deepseek-r1"),
    pytest.param({"mask_truncated_completions": True, "loss_type": "dapo", "epsilon_high": 0.28, "epsilon": 0.2,
                  "per_device_train_batch_size": 512, "num_generations": 16, "max_completion_length": 20480,
                  "beta": 0.0},  # "DAPO"
                 {"mask_truncated_completions": True, "loss_type": "dapo", "epsilon_high": 0.28, "epsilon_low": 0.2,
                  "completions_per_batch": 512, "num_generations": 16, "beta": 0.0}, id="dapo"),
    pytest.param({"loss_type": "grpo", "beta": 0.001, "epsilon": 10.0, "num_generations": 16,  # "DeepSeekMath"
                  "max_completion_length": 32_768, "steps_per_generation": 16, "per_device_train_batch_size": 4,
                  "gradient_accumulation_steps": 128},
                 "steps_per_generation", id="deepseekmath"),
]


@pytest.mark.parametrize("example,expected", PAPER_INDEX)
def test_paper_index_grpo_configs(tmp_path, capsys, example, expected):
    path = tmp_path / "grpo.yaml"
    path.write_text(yaml.safe_dump({"model_name_or_path": "m", "dataset_name": "d", **example}))  # added: a model and dataset
    if isinstance(expected, str):  # refused: one line naming the key
        line = refused("grpo", ["--config", str(path)], capsys)
        assert f"{expected}: not supported here" in line
        from sari_train.grpo.train import GRPOConfig

        rest = GRPOConfig.model_validate({"model": "m", "dataset": "d", **{k: v for k, v in example.items()
                                                                          if k != expected}})
        assert rest.loss_type == example["loss_type"]  # the other keys are honoured
    else:
        from sari_train.cli import parser
        from sari_train.config import load_config
        from sari_train.grpo.train import GRPOConfig

        config = load_config(GRPOConfig, parser().parse_args(["grpo", "--config", str(path)]), "grpo")
        assert {k: getattr(config, k) for k in expected} == expected
