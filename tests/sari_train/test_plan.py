"""`sari-train plan`: parameter counts from config dims and the memory arithmetic, by hand."""

import pytest
import torch

from sari_train import plan
from sari_train.cli import main

TINY = plan.Dims(vocab=100, hidden=8, intermediate=16, layers=2, heads=2, kv_heads=1, head_dim=4, tied=False,
                 audio_width=4, audio_layers=1, audio_ffn=8, mel_bins=2, audio_positions=3, audio_output=None)


def test_parameter_counts_by_hand():
    # q 8·8+8, k and v 8·4+4 each, o 8·8, MLP 3·8·16, norms 2·8
    assert plan.decoder_layer_params(TINY) == 72 + 2 * 36 + 64 + 384 + 16 == 608
    assert plan.language_model_params(TINY) == 2 * 100 * 8 + 2 * 608 + 8 == 2824
    # convs 2·4·3+4 and 4·4·3+4; layer 4·16+3·4 + 2·4·8+8+4 + 4·4; final norm 8; positions 3·4
    assert plan.audio_encoder_params(TINY) == 28 + 52 + (76 + 76 + 16) + 8 + 12 == 268
    assert plan.projector_params(TINY) == 4 * 8 + 8
    # rank 2 adapters: q (8+8), k (8+4), v (8+4), o (8+8), gate/up/down (8+16) each
    assert plan.lora_params(TINY, 2) == 2 * 2 * (16 + 12 + 12 + 16 + 3 * 24)


@pytest.mark.parametrize("name", list(plan.KNOWN_MODELS))
def test_counts_equal_the_model_built_from_the_config(name):
    from transformers import AutoConfig, Qwen2AudioForConditionalGeneration
    from transformers.models.qwen2_5_omni import Qwen2_5OmniThinkerForConditionalGeneration

    raw = dict(plan.KNOWN_MODELS[name])
    config = AutoConfig.for_model(raw.pop("model_type"), **raw)
    cls = Qwen2_5OmniThinkerForConditionalGeneration if "Omni" in name else Qwen2AudioForConditionalGeneration
    with torch.device("meta"):
        model = cls(config)
    assert plan.parameter_counts(plan.load_dims(name)).total == sum(p.numel() for p in model.parameters())


def test_counts_read_from_a_model_folder(tiny_model_dir):
    from transformers import Qwen2AudioForConditionalGeneration

    model = Qwen2AudioForConditionalGeneration.from_pretrained(tiny_model_dir)
    counts = plan.parameter_counts(plan.load_dims(str(tiny_model_dir)))
    assert counts.total == sum(p.numel() for p in model.parameters())
    assert counts.audio_encoder == sum(p.numel() for n, p in model.named_parameters() if "audio_tower" in n)


def test_memory_by_hand():
    work = plan.Workload(sequences=2, prompt_tokens=3, completion_tokens=1, mixed=True)
    total, lm = plan.parameter_counts(TINY).total, 2824
    ddp = plan.memory_per_gpu(TINY, work, "ddp", gpus=4)
    assert ddp["weights"] == lm * 4 + (total - lm) * 2  # float32 master LM, frozen audio path in bf16
    assert ddp["gradients"] == lm * 4 * 2  # + DDP's buckets
    assert ddp["optimizer"] == lm * 8
    tokens = 2 * 4
    assert ddp["activations"] == tokens * 2 * (34 * 8 + 8 * 16) + tokens * 12 * 100 + lm * 2
    assert plan.peak(ddp) == ddp["weights"] + ddp["optimizer"] + max(ddp["activations"], ddp["gradients"])
    assert ddp["kv_cache"] == 0
    fsdp = plan.memory_per_gpu(TINY, work, "fsdp", gpus=4)
    assert fsdp["weights"] == (lm * 4 + (total - lm) * 2) / 4 + 2 * 608 * 2
    assert fsdp["gradients"] == lm * 4 / 4 and fsdp["optimizer"] == lm * 8 / 4
    ckpt = plan.memory_per_gpu(TINY, work, "fsdp", gpus=4, checkpointing=True)
    assert ckpt["activations"] == tokens * (4 * 2 * 8 + 34 * 8 + 8 * 16) + tokens * 12 * 100
    grpo = plan.Workload(sequences=4, prompt_tokens=3, completion_tokens=1, rollout_prompts=1, generations=4,
                         reference=True)
    parts = plan.memory_per_gpu(TINY, grpo, "ddp", gpus=1)
    assert parts["kv_cache"] == 4 * 4 * 2 * 2 * 1 * 4 * 2  # G·tokens · (k, v) · layers · kv dim · bf16
    assert parts["weights"] == lm * 4 + (total - lm) * 2 + total * 2  # + the reference model
    sharded = plan.memory_per_gpu(TINY, grpo, "fsdp", gpus=4)["weights"]
    assert sharded == (lm * 4 + (total - lm) * 2) / 4 + 2 * 608 * 2 + total * 2 / 4  # the reference sharded too
    assert plan.memory_per_gpu(TINY, grpo, "ddp", gpus=1, lora_rank=2)["weights"] == (
        plan.lora_params(TINY, 2) * 4 + total * 2)  # LoRA: the base with adapters off is the reference


def test_audio_tokens_of_a_30_second_clip():
    assert plan.audio_tokens(30) == 750 and plan.audio_tokens(1) == 25


def test_plan_command_on_the_presets(capsys):
    assert main(["plan", "--config", "pipelines/train/sari-qwen2-audio.yaml", "--gpus", "8", "--gpu-memory", "80"]) == 0
    out = capsys.readouterr().out
    assert "Qwen/Qwen2-Audio-7B-Instruct: 8.40B parameters" in out and "zero3" not in out
    assert out.count("<- as written") == 2 and out.count("fits on 8 × 80 GiB") == 2  # sft and grpo
    assert main(["plan", "--config", "pipelines/train/r1-aqa.yaml", "--model", "Qwen/Qwen2.5-Omni-7B"]) == 0
    assert "vision 0.677B" in capsys.readouterr().out
    assert main(["plan", "--config", "pipelines/train/r1-aqa.yaml", "--model", "nowhere"]) == 2


PRESETS_7B = ["r1-aqa", "sari-qwen2-audio", "sari-omni"]


@pytest.mark.parametrize("preset", PRESETS_7B)
def test_every_7b_preset_fits_eight_80_gib_gpus_as_written(preset):
    import yaml

    stages = plan.preset_stages(yaml.safe_load(open(f"pipelines/train/{preset}.yaml")))
    for stage, config in stages.items():
        setup = plan.preset_setup(config)
        assert setup.launcher and setup.gpus == 8 and setup.checkpointing and config.get("save_total_limit")
        work = plan.workload(stage, config)
        dims = plan.load_dims(plan.stage_model(stages, stage))
        rows = plan.plan_rows(dims, work, setup.gpus, 80, preset=setup)
        mine = [r for r in rows if r["preset"]]
        assert len(mine) == 1 and mine[0]["fits"] == "yes", (stage, mine)


def test_disk_counts_the_kept_checkpoints_and_final():
    work = plan.Workload(sequences=1, prompt_tokens=1, completion_tokens=1, mixed=True)
    total, lm = plan.parameter_counts(TINY).total, 2824
    each, final = plan.checkpoint_bytes(TINY, work, None)
    assert final == total * 2 and each == total * 2 + lm * (4 + 8)
    line = plan.disk_line(TINY, work, {"save_total_limit": 2, "save_every": 10, "max_steps": 100}, plan.Setup())
    assert line.startswith("disk: 2 checkpoint(s)")
    assert "10 checkpoint(s)" in plan.disk_line(TINY, work, {"save_every": 10, "max_steps": 100}, plan.Setup())


def test_step_time_estimate_by_hand():
    n = plan.parameter_counts(TINY).total
    sft = plan.Workload(sequences=2, prompt_tokens=3, completion_tokens=1)
    assert plan.step_seconds(TINY, sft, {"grad_accum": 2}, plan.Setup(checkpointing=True)) == pytest.approx(
        2 * 8 * n * 2 * 4 / (plan.GPU_FLOPS * plan.MFU))
    grpo = plan.Workload(sequences=4, prompt_tokens=3, completion_tokens=2, rollout_prompts=1, generations=4)
    compute = (6 + 2) * n * (1 * 3 + 4 * 2) / (plan.GPU_FLOPS * plan.MFU)  # policy + reference, prompt once
    assert plan.step_seconds(TINY, grpo, {"beta": 0.04}, plan.Setup()) == pytest.approx(
        compute + 2 * 2 * n / plan.GPU_BANDWIDTH)
