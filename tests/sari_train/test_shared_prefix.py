"""The shared-prefix forward gives the plain forward's log-probs, GRPO losses and gradients (float32,
1e-5) for both model kinds, full weights and LoRA, every loss type, with prompts of different
lengths (left padding) and completions that stop early; also under gradient checkpointing and DDP."""

import copy
import os
import socket
from datetime import timedelta

import pytest
import torch

from corpus.testing import noise_clips
from sari_train.grpo import losses
from sari_train.models.adapter import AudioLM
from sari_train.prompts import messages
from sari_train.rollout import Generated
from sari_train.shared_prefix import completion_logits
from sari_train.training import LM_PROJECTIONS

G, L = 3, 5


def ragged_rollout(lm: AudioLM, seed: int = 0) -> Generated:
    """Two prompts of different lengths (clips of 1 s and 3 s, different questions) × G completions
    of lengths 5, 2, 1 | 4, 5, 3 (the mask ends at each row's stop token)."""
    batch = lm.encode_prompts([messages("Which tone is higher?", ["a", "b"]),
                               messages("How many beeps do you hear in this clip?", ["2", "3", "4"])],
                              noise_clips(1, 1.0, seed) + noise_clips(1, 3.0, seed + 1))
    with torch.no_grad():
        embeds = lm.prompt_embeddings(batch)
    completion = torch.randint(20, 300, (2 * G, L), generator=torch.Generator().manual_seed(seed))
    mask = (torch.arange(L) < torch.tensor([5, 2, 1, 4, 5, 3])[:, None]).long()
    return Generated(batch.repeat(G), embeds.repeat_interleave(G, dim=0), completion, mask)


def plain_logits(lm: AudioLM, gen: Generated) -> torch.Tensor:
    """Every row's prompt + completion in one pass (what `shared_prefix: false` runs)."""
    ids = torch.cat([gen.prompt.input_ids, gen.completion_ids], dim=1)
    mask = torch.cat([gen.prompt.attention_mask, gen.completion_mask], dim=1)
    logits = lm.logits(ids, mask, gen.prompt_embeds, gen.prompt.feature_attention_mask)
    return logits[:, gen.prompt.input_ids.shape[1] - 1:-1]


def grpo_loss(logits: torch.Tensor, gen: Generated, loss_type: str) -> torch.Tensor:
    logp = losses.token_logprobs(logits, gen.completion_ids, temperature=0.7)
    noise = torch.randn(logp.shape, generator=torch.Generator().manual_seed(1))
    advantages = losses.advantages(torch.tensor([1.0, 0.0, 2.0, 0.0, 0.0, 1.0]), G)
    loss, _ = losses.policy_loss(logp, logp.detach() + 0.1 * noise, advantages, gen.completion_mask,
                                 loss_type=loss_type, beta=0.04, ref_logp=logp.detach() - 0.2 * noise,
                                 max_completion_length=L, step_tokens=40.0)
    return loss


def loss_and_grads(lm: AudioLM, logits_fn, gen: Generated, loss_type: str):
    lm.model.zero_grad(set_to_none=True)
    loss = grpo_loss(logits_fn(lm, gen), gen, loss_type)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in lm.model.named_parameters() if p.grad is not None}


def with_lora(lm: AudioLM) -> AudioLM:
    """A copy with LoRA adapters whose B is not zero (so every adapter weight gets a gradient)."""
    from peft import LoraConfig, get_peft_model

    lm = copy.deepcopy(lm)
    get_peft_model(lm.model, LoraConfig(r=4, lora_alpha=8, target_modules=LM_PROJECTIONS))
    with torch.no_grad():
        for name, param in lm.model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.1)
    return lm


def assert_grads_equal(ours: dict, plain: dict) -> None:
    assert ours.keys() == plain.keys() and plain
    for name in plain:
        torch.testing.assert_close(ours[name], plain[name], rtol=1e-5, atol=1e-5, msg=name)


def test_the_rollout_is_ragged(tiny_lm):
    gen = ragged_rollout(tiny_lm)
    assert gen.prompt.attention_mask.sum(-1).unique().numel() == 2 and (gen.prompt.attention_mask == 0).any()
    assert gen.completion_mask.sum(-1).tolist() == [5, 2, 1, 4, 5, 3]


def test_log_probs_equal_the_plain_pass(tiny_lm):
    gen = ragged_rollout(tiny_lm)
    with torch.no_grad():
        plain = losses.token_logprobs(plain_logits(tiny_lm, gen), gen.completion_ids) * gen.completion_mask
        ours = losses.token_logprobs(completion_logits(tiny_lm, gen, G), gen.completion_ids) * gen.completion_mask
    torch.testing.assert_close(ours, plain, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
@pytest.mark.parametrize("weights", ["full", "lora"])
def test_loss_and_gradient_equal_the_plain_pass(tiny_lm, weights, loss_type):
    lm = with_lora(tiny_lm) if weights == "lora" else tiny_lm
    gen = ragged_rollout(lm)
    plain_loss, plain = loss_and_grads(lm, plain_logits, gen, loss_type)
    our_loss, ours = loss_and_grads(lm, lambda m, x: completion_logits(m, x, G), gen, loss_type)
    torch.testing.assert_close(our_loss, plain_loss, rtol=1e-5, atol=1e-6)
    assert_grads_equal(ours, plain)
    if weights == "lora":
        assert all("lora_" in name for name in ours)  # only the adapters train
    else:
        assert any("embed_tokens" in name for name in ours)  # the prompt's text embeddings are trained too


def test_positions_continue_from_the_prompt(tiny_lm):
    gen = ragged_rollout(tiny_lm)
    ids = torch.cat([gen.prompt.input_ids, gen.completion_ids], dim=1)
    mask = torch.cat([gen.prompt.attention_mask, gen.completion_mask], dim=1)
    positions = tiny_lm.position_ids(ids, mask, gen.prompt.feature_attention_mask)
    first = gen.prompt.input_ids.shape[1]  # the first completion column
    real = gen.prompt.attention_mask.sum(-1).tolist()  # both kinds count only real tokens: left pads do not count
    if tiny_lm.kind == "qwen2_5_omni_thinker":  # 3-D
        assert positions.shape == (3, *ids.shape)
        assert positions[:, :, first].tolist() == [real] * 3
    else:
        assert positions[:, first].tolist() == real


def test_gradient_checkpointing_keeps_the_prompt_states(tiny_lm):
    lm = copy.deepcopy(tiny_lm)
    gen = ragged_rollout(lm)
    _, plain = loss_and_grads(lm, plain_logits, gen, "grpo")
    lm.model.activation_checkpointing_enable()
    lm.model.train()  # transformers checkpoints in training mode only (the tiny models have no dropout)
    calls = []
    lm.language_model.layers[0].self_attn.register_forward_hook(lambda *_: calls.append(1))
    _, ours = loss_and_grads(lm, lambda m, x: completion_logits(m, x, G), gen, "grpo")
    assert len(calls) == 4  # prompt and completion pass, each replayed in the backward
    assert_grads_equal(ours, plain)


def test_rows_that_are_not_groups_are_refused(tiny_lm):
    gen = ragged_rollout(tiny_lm)
    with pytest.raises(ValueError, match="not groups of 2"):
        completion_logits(tiny_lm, gen, 2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def language_model_only(lm: AudioLM) -> AudioLM:
    """Freeze the audio path, as the trainers do (DDP waits for a gradient of every trainable weight)."""
    for name, param in lm.model.named_parameters():
        param.requires_grad_("language_model" in name or "lm_head" in name)
    return lm


def _ddp_rank(rank: int, folder: str, port: int, results: dict) -> None:
    """Each of 2 processes takes one micro-batch (its own prompts) through the DDP-wrapped model and
    the shared-prefix forward; DDP averages the gradients in one backward."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2, timeout=timedelta(seconds=120))
    torch.set_num_threads(1)
    lm = language_model_only(AudioLM.load(folder))
    ddp = torch.nn.parallel.DistributedDataParallel(lm.model)
    gen = ragged_rollout(lm, seed=rank)
    grpo_loss(completion_logits(lm, gen, G, model=ddp), gen, "grpo").backward()
    if rank == 0:
        results.update({n: p.grad.clone() for n, p in lm.model.named_parameters() if p.grad is not None})
    torch.distributed.barrier()
    # No teardown: freeing DDP's reducer can deadlock gloo's worker threads on the GIL (seen here).
    os._exit(0)


@pytest.mark.slow
def test_ddp_one_backward_per_micro_batch_averages_the_plain_gradients(tiny_model_dir):
    import torch.multiprocessing as mp

    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_ddp_rank, args=(str(tiny_model_dir), _free_port(), results), nprocs=2)
        ours = dict(results)
    lm = language_model_only(AudioLM.load(tiny_model_dir))
    plain = [loss_and_grads(lm, plain_logits, ragged_rollout(lm, seed=rank), "grpo")[1] for rank in (0, 1)]
    assert_grads_equal(ours, {n: (plain[0][n] + plain[1][n]) / 2 for n in plain[0]})
