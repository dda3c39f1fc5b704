import pytest
import torch
from safetensors.torch import load_file

from sari_train.data import load_examples
from sari_train.models.adapter import AudioLM
from sari_train.prompts import PromptStyle
from sari_train.sft import IGNORE, SFTConfig, completion_loss, sft_batch, train_sft


def config(model, ws, out, **kw):
    base = dict(model=str(model), workspace=ws, out=out, max_steps=8, lr=3e-3, batch_size=8, eval_limit=4,
                eval_max_new_tokens=6, tensorboard=False, warmup_steps=1)
    return SFTConfig(**{**base, **kw})


@pytest.mark.parametrize("fmt", ["implicit", "structured"])
def test_labels_cover_the_target_only(tiny_qwen2_audio, train_workspace, fmt):
    lm, style = tiny_qwen2_audio, PromptStyle(format=fmt)
    examples, _ = load_examples(train_workspace, "train", None if fmt == "implicit" else fmt, limit=3)
    batch = sft_batch(lm, examples, style)
    prompt_len = batch["input_ids"].shape[1] - (batch["labels"][0] != IGNORE).sum()  # first row: longest target?
    audio = batch["input_ids"] == lm.audio_token_id
    assert (batch["labels"][audio] == IGNORE).all() and audio.any()
    for row, example in zip(range(3), examples):
        labelled = batch["labels"][row][batch["labels"][row] != IGNORE]
        text = lm.tokenizer.decode(labelled)
        assert text.endswith(f"<answer>{example.answer}</answer><|im_end|>")
        assert ("<think><planning>" in text) == (fmt == "structured")
        # the labelled tokens are exactly the tail of the sequence's real tokens
        real = batch["input_ids"][row][batch["attention_mask"][row].bool()]
        assert real[-len(labelled):].tolist() == labelled.tolist()
    assert prompt_len > 0


def test_completion_loss_by_hand():
    # two positions predict labels; position 0's label is ignored. uniform logits over 4 → log 4 each
    logits = torch.zeros(1, 3, 4)
    logits[0, 1] = torch.tensor([0.0, 0.0, 2.0, 0.0])  # predicts label 2 at position 2: −log(e²/(e²+3))
    labels = torch.tensor([[IGNORE, 1, 2]])
    loss, n = completion_loss(logits, labels)
    expected = (torch.log(torch.tensor(4.0)) - (2 - torch.log(torch.exp(torch.tensor(2.0)) + 3))) / 2
    assert n == 2 and loss.item() == pytest.approx(expected.item(), abs=1e-6)


@pytest.mark.slow
def test_sft_learns_saves_a_loadable_model_and_keeps_the_audio_tower(tiny_model_dir, train_workspace, tmp_path):
    out = tmp_path / "sft"
    result = train_sft(config(tiny_model_dir, train_workspace, out, schedule="cosine"))
    rows = [r for r in map(__import__("json").loads, (out / "metrics.jsonl").read_text().splitlines())]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 8 and losses[-1] < losses[0] - 1.0
    evals = [r for r in rows if "eval/accuracy" in r]
    assert [r["step"] for r in evals] == [0, 8]
    lrs = [r["learning_rate"] for r in rows if "learning_rate" in r]
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12) and max(lrs) == pytest.approx(3e-3)
    loaded = AudioLM.load(result["final"])
    before, after = load_file(f"{tiny_model_dir}/model.safetensors"), load_file(f"{result['final']}/model.safetensors")
    tower = [k for k in before if "audio_tower" in k]
    assert tower and all(torch.equal(before[k], after[k]) for k in tower)
    assert not torch.equal(before["language_model.model.embed_tokens.weight"],
                           after["language_model.model.embed_tokens.weight"])
    assert "lr: 0.003" in (out / "final" / "config.yaml").read_text()
    assert loaded.kind == "qwen2_audio" and (out / "curves.png").exists() and list((out / "runs").glob("*.json")) == []


@pytest.mark.slow
def test_lora_structured_sft_trains_adapters_only(tiny_model_dir, train_workspace, tmp_path):
    cfg = config(tiny_model_dir, train_workspace, tmp_path / "lora", max_steps=2, lr=1e-2, eval_split=None,
                 lora={"r": 4, "alpha": 8}, prompt={"format": "structured"})
    result = train_sft(cfg)
    assert result["examples"] == 14 and result["left_out"]["no valid chain of thought"] == 2
    before, after = load_file(f"{tiny_model_dir}/model.safetensors"), load_file(f"{result['final']}/model.safetensors")
    assert set(before) == set(after)  # merged: a plain model again
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.split(".")[-2] in {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                  "down_proj"} and "language_model" in k for k in changed)
