"""Shared training pieces: the schedule, and checkpoints that resume exactly."""

import json
import shutil

import pytest
import torch

from sari_train.config import ConfigError
from sari_train.grpo.train import GRPOConfig, train_grpo
from sari_train.models.adapter import AudioLM
from sari_train.sft import SFTConfig, train_sft
from sari_train.checkpoints import load_plain
from sari_train.training import lr_schedule, schedule_state


def lrs(kind, warmup, total):
    """The factor of the peak lr each of `total` optimizer steps trains with, then after the last."""
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = lr_schedule(optimizer, kind, warmup, total)
    factors = []
    for _ in range(total + 1):
        factors.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return factors


def test_lr_schedule_by_hand():
    # warm-up 2 of 10 steps: (s+1)/3, then linear 1 → 0 over the remaining 8, or half a cosine
    assert lrs("linear", 2, 10) == pytest.approx([1 / 3, 2 / 3, 1, 7 / 8, 6 / 8, 5 / 8, 0.5, 3 / 8, 2 / 8, 1 / 8, 0])
    assert [lrs("cosine", 2, 10)[s] for s in (2, 6, 10)] == pytest.approx([1, 0.5, 0])
    assert lrs("constant", 0, 10) == [1] * 11
    assert lrs("constant", 3, 6) == pytest.approx([1 / 4, 2 / 4, 3 / 4, 1, 1, 1, 1])
    assert lrs("linear", 0, 4) == pytest.approx([1, 3 / 4, 2 / 4, 1 / 4, 0])


def stepped(kind, warmup, total, steps):
    """A schedule after `steps` optimizer steps."""
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = lr_schedule(optimizer, kind, warmup, total)
    for _ in range(steps):
        optimizer.step()
        scheduler.step()
    return scheduler


def test_lr_schedule_resumes_from_its_state():
    scheduler = stepped("cosine", 2, 10, 4)
    state = torch.load(save_to_bytes(scheduler.state_dict()), weights_only=True)
    fresh = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    resumed = lr_schedule(fresh, "cosine", 2, 10)
    resumed.load_state_dict(state)
    assert resumed.get_last_lr() == scheduler.get_last_lr() == pytest.approx([lrs("cosine", 2, 10)[4]])
    fresh.step()
    resumed.step()
    assert resumed.get_last_lr() == pytest.approx([lrs("cosine", 2, 10)[5]])


def test_a_checkpoint_saved_before_the_transformers_schedule_resumes_on_its_learning_rates():
    scheduler = stepped("linear", 2, 10, 4)
    old = {**scheduler.state_dict(), "last_epoch": 4}  # the old LambdaLR counted the 4 steps only
    for trainer_state in ({"scheduler": old}, {"scheduler": scheduler.state_dict(), "schedule_version": 2}):
        resumed = lr_schedule(torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0), "linear", 2, 10)
        resumed.load_state_dict(schedule_state(trainer_state))
        resumed.step()
        assert resumed.get_last_lr() == pytest.approx([lrs("linear", 2, 10)[5]])


def save_to_bytes(state):
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer


def metrics(out):
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "step_time"} for r in rows]


def kill_and_resume(train, config, tmp_path, at):
    """Run straight through; then, in a fresh folder holding only the checkpoint at `at` and the
    killed run's logs, resume. Returns both runs' metrics."""
    whole = tmp_path / "whole"
    train(config.model_copy(update={"out": whole, "save_every": at}))
    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(whole / "checkpoints" / f"step-{at:06d}", resumed / "checkpoints" / f"step-{at:06d}")
    shutil.copy(whole / "metrics.jsonl", resumed / "metrics.jsonl")  # it had logged past the checkpoint
    train(config.model_copy(update={"out": resumed, "save_every": at, "resume": True}))
    return metrics(whole), metrics(resumed)


def length_reward(prompts, completions, **_):
    return [len(c) / 10 for c in completions]


@pytest.mark.slow
def test_grpo_resume_gives_identical_metrics(tiny_model_dir, train_workspace, tmp_path):
    config = GRPOConfig(model=str(tiny_model_dir), workspace=train_workspace, out=tmp_path, max_steps=4, lr=1e-3,
                        num_generations=4, prompts_per_batch=2, max_completion_length=5, beta=0.04, num_iterations=2,
                        band=(0.0, 0.9), eval_split=None, rewards={f"{__name__}:length_reward": 1.0},
                        tensorboard=False, schedule="cosine", warmup_steps=1)
    whole, resumed = kill_and_resume(train_grpo, config, tmp_path, at=2)
    assert [r["step"] for r in whole] == [1, 2, 3, 4]
    assert resumed == whole
    assert whole[3]["kl"] > 0  # the weights really moved between the halves
    AudioLM.load(tmp_path / "resumed" / "checkpoints" / "step-000004")


@pytest.mark.slow
def test_sft_resume_gives_identical_metrics(tiny_model_dir, train_workspace, tmp_path):
    config = SFTConfig(model=str(tiny_model_dir), workspace=train_workspace, out=tmp_path, max_steps=4, lr=3e-3,
                       batch_size=4, eval_limit=4, eval_max_new_tokens=4, tensorboard=False)
    whole, resumed = kill_and_resume(train_sft, config, tmp_path, at=2)
    assert resumed == whole and len([r for r in whole if "loss" in r]) == 4


def test_a_run_folder_is_not_overwritten_by_accident(tiny_model_dir, train_workspace, tmp_path):
    (tmp_path / "checkpoints" / "step-000001").mkdir(parents=True)
    (tmp_path / "checkpoints" / "step-000001" / "trainer_state.pt").write_bytes(b"")
    config = SFTConfig(model=str(tiny_model_dir), workspace=train_workspace, out=tmp_path)
    with pytest.raises(ConfigError, match="--resume"):
        train_sft(config)
    with pytest.raises(ConfigError, match="no checkpoint"):
        train_sft(config.model_copy(update={"out": tmp_path / "empty", "resume": True}))


@pytest.mark.slow
def test_bfloat16_lora_resume_restores_the_float32_master_weights(tiny_model_dir, train_workspace, tmp_path):
    from sari_train.training import LoraSettings

    config = SFTConfig(model=str(tiny_model_dir), workspace=train_workspace, out=tmp_path, max_steps=4, lr=3e-3,
                       batch_size=4, eval_split=None, tensorboard=False, dtype="bfloat16", lora=LoraSettings(r=4))
    whole, resumed = kill_and_resume(train_sft, config, tmp_path, at=2)
    assert resumed == whole and len(whole) == 4
    state = load_plain(tmp_path / "whole" / "checkpoints" / "step-000002" / "trainer_state.pt")
    assert state["weights"] and all(v.dtype == torch.float32 and "lora_" in k for k, v in state["weights"].items())


def test_merge_lora_equals_peft_merge(tiny_model_dir):
    from types import SimpleNamespace

    from sari_train.checkpoints import merge_lora
    from sari_train.training import LoraSettings, load_policy

    config = SimpleNamespace(model=str(tiny_model_dir), dtype="float32", attn_implementation="sdpa", lora=LoraSettings(r=4, alpha=8),
                             gradient_checkpointing=False)
    lm, peft_model = load_policy(config, torch.device("cpu"))
    with torch.no_grad():
        for name, param in lm.model.named_parameters():
            if "lora_B" in name:
                param.normal_()  # B starts at 0: make the adapters do something
    merged = merge_lora({k: v.clone() for k, v in lm.model.state_dict().items()}, scale=8 / 4)
    expected = peft_model.merge_and_unload().state_dict()
    assert merged.keys() == expected.keys()
    assert all(torch.allclose(merged[k], expected[k], atol=1e-6) for k in expected)


@pytest.mark.parametrize("lora", [False, True])
def test_checkpointing_works_in_policy_mode_and_gives_the_same_gradients(tiny_model_dir, lora):
    from types import SimpleNamespace

    from sari_train.training import LoraSettings, load_policy, policy_mode, trainable

    def gradients(checkpointing):
        torch.manual_seed(0)
        config = SimpleNamespace(model=str(tiny_model_dir), dtype="float32", attn_implementation="sdpa", gradient_checkpointing=checkpointing,
                                 lora=LoraSettings(r=4) if lora else None)
        lm, _ = load_policy(config, torch.device("cpu"))
        policy_mode(lm.model, checkpointing)  # as GRPO trains: eval mode, the audio tower frozen
        weights = {p.untyped_storage().data_ptr() for p in lm.model.parameters()}
        kept = {}  # activations autograd keeps for the backward pass, by storage

        def pack(t):
            if t.untyped_storage().data_ptr() not in weights:
                kept[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        ids = torch.randint(20, 300, (2, 48))
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = lm.model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits.square().mean()
        loss.backward()
        return [p.grad.clone() for p in trainable(lm.model)], sum(kept.values())

    plain, plain_bytes = gradients(False)
    recomputed, recomputed_bytes = gradients(True)
    assert recomputed_bytes < 0.6 * plain_bytes  # the layers' insides were not kept
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(plain, recomputed))
