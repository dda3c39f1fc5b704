"""Independent check: our GRPO loss and its gradient equal TRL's GRPOTrainer._compute_loss for a
text-only tiny Qwen2 with fixed completions, rewards (as advantages), old and reference log-probs.
TRL is a test-only dependency; its trainer is built for real (no stand-in) and only the loss
computation is called."""

import pytest
import torch

pytestmark = pytest.mark.slow  # ~20 s: builds a TRL trainer per case
trl = pytest.importorskip("trl")
from datasets import Dataset  # noqa: E402

from sari_train.grpo import losses  # noqa: E402
from sari_train.models.tiny import build_tiny_text_lm, build_tokenizer  # noqa: E402

G, MAX_LEN, TEMPERATURE = 4, 6, 0.7


@pytest.fixture(scope="module")
def text_model(tmp_path_factory):
    folder = build_tiny_text_lm(tmp_path_factory.mktemp("tiny-text"), hidden_size=32)
    return folder, build_tokenizer()


@pytest.fixture(scope="module")
def batch(text_model):
    """Two prompts (left-padded) × G completions of uneven length, fixed rewards and log-probs."""
    _, tokenizer = text_model
    gen = torch.Generator().manual_seed(1)
    n = 2 * G
    prompt_ids = torch.randint(20, 200, (n, 5), generator=gen)
    prompt_mask = torch.ones(n, 5, dtype=torch.long)
    prompt_mask[G:, :2] = 0  # the second prompt is shorter: left padding
    prompt_ids[G:, :2] = tokenizer.pad_token_id or 0
    completion_ids = torch.randint(20, 200, (n, MAX_LEN), generator=gen)
    lengths = torch.tensor([6, 3, 5, 1, 6, 6, 2, 4])
    completion_mask = (torch.arange(MAX_LEN) < lengths[:, None]).long()
    rewards = torch.tensor([1.0, 0.0, 2.0, 1.0, 0.0, 0.0, 1.0, 0.5])
    noise = torch.randn(n, MAX_LEN, generator=gen)
    return dict(prompt_ids=prompt_ids, prompt_mask=prompt_mask, completion_ids=completion_ids,
                completion_mask=completion_mask, advantages=losses.advantages(rewards, G), noise=noise)


def trl_trainer(folder, tokenizer, tmp_path, **kw):
    args = trl.GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=2 * G, num_generations=G,
                          max_completion_length=MAX_LEN, temperature=TEMPERATURE, use_cpu=True, report_to=[],
                          bf16=False, **kw)
    data = Dataset.from_dict({"prompt": ["a b"] * 8})
    trainer = trl.GRPOTrainer(model=str(folder), reward_funcs=lambda completions, **_: [0.0] * len(completions),
                              args=args, train_dataset=data, processing_class=tokenizer)
    trainer.current_gradient_accumulation_steps = 1
    trainer.model.train()
    return trainer


def ours(model, b, old, ref, loss_type, beta, eps_low, eps_high, kl_ratio_weight=False):
    ids = torch.cat([b["prompt_ids"], b["completion_ids"]], 1)
    mask = torch.cat([b["prompt_mask"], b["completion_mask"]], 1)
    logits = model(input_ids=ids, attention_mask=mask).logits[:, b["prompt_ids"].shape[1] - 1:-1]
    logp = losses.token_logprobs(logits, b["completion_ids"], TEMPERATURE)
    if old is None:
        return None, logp
    loss, _ = losses.policy_loss(logp, old, b["advantages"], b["completion_mask"], loss_type=loss_type,
                                 epsilon_low=eps_low, epsilon_high=eps_high, beta=beta, ref_logp=ref,
                                 kl_estimator="k3", max_completion_length=MAX_LEN,
                                 step_tokens=float(b["completion_mask"].sum()), kl_ratio_weight=kl_ratio_weight)
    return loss, logp


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
@pytest.mark.parametrize("beta,eps_low,eps_high,weighted", [(0.0, 0.2, 0.2, False), (0.04, 0.2, 0.2, False),
                                                            (0.04, 0.1, 0.28, False), (0.04, 0.2, 0.2, True)])
def test_loss_and_gradient_equal_trl(text_model, batch, tmp_path, loss_type, beta, eps_low, eps_high, weighted):
    folder, tokenizer = text_model
    trainer = trl_trainer(folder, tokenizer, tmp_path, loss_type=loss_type, beta=beta, epsilon=eps_low,
                          epsilon_high=eps_high, use_bias_correction_kl=weighted)
    model = trainer.model
    with torch.no_grad():  # an "old" policy off by noise (so clipping bites) and a reference further off
        _, logp = ours(model, batch, None, None, "grpo", 0.0, 0.2, 0.2)
        old = logp + 0.3 * batch["noise"]
        ref = logp - 0.5 * batch["noise"].abs()
    inputs = {k: batch[k] for k in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "advantages")}
    inputs.update(old_per_token_logps=old, ref_per_token_logps=ref, num_items_in_batch=batch["completion_mask"].sum())

    theirs = trainer._compute_loss(model, inputs)
    theirs.backward()
    their_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    mine, _ = ours(model, batch, old, ref if beta else None, loss_type, beta, eps_low, eps_high, weighted)
    mine.backward()

    torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)
    assert abs(theirs.item()) > 1e-3  # a real, non-trivial value
    for a, b in zip(their_grads, [p.grad for p in model.parameters()]):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)
    assert sum(g.abs().sum() for g in their_grads) > 0
