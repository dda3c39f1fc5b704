"""TRL's truncated importance sampling for a sampler that is not exactly the trained policy, by hand."""

import math

import pytest
import torch

from sari_train.grpo.losses import policy_loss, sampling_correction

# two completions of two tokens; the second row's last position is padding
TRAINED = torch.tensor([[-1.0, -2.0], [-0.5, -3.0]])
SAMPLED = torch.tensor([[-1.5, -1.0], [-2.0, -9.0]])
MASK = torch.tensor([[1.0, 1.0], [1.0, 0.0]])


def test_token_truncate_caps_each_tokens_ratio():
    w = sampling_correction(TRAINED, SAMPLED, MASK, "token_truncate", cap=2.0)
    # exp(0.5) = 1.6487, exp(-1) = 0.3679, exp(1.5) = 4.48 -> capped at 2, padding exp(0) = 1
    torch.testing.assert_close(w, torch.tensor([[math.exp(0.5), math.exp(-1.0)], [2.0, 1.0]]))


def test_token_mask_drops_tokens_over_the_cap():
    w = sampling_correction(TRAINED, SAMPLED, MASK, "token_mask", cap=2.0)
    torch.testing.assert_close(w, torch.tensor([[math.exp(0.5), math.exp(-1.0)], [0.0, 1.0]]))


def test_sequence_modes_use_the_summed_log_ratio():
    # row 0: 0.5 - 1.0 = -0.5; row 1: 1.5 (the padded position does not count)
    truncated = sampling_correction(TRAINED, SAMPLED, MASK, "sequence_truncate", cap=3.0)
    torch.testing.assert_close(truncated, torch.tensor([[math.exp(-0.5)], [3.0]]))
    masked = sampling_correction(TRAINED, SAMPLED, MASK, "sequence_mask", cap=3.0)
    torch.testing.assert_close(masked, torch.tensor([[math.exp(-0.5)], [0.0]]))


def test_a_missing_sampler_log_prob_means_no_correction():
    sampled = SAMPLED.clone()
    sampled[0, 0] = float("nan")
    w = sampling_correction(TRAINED, sampled, MASK, "token_truncate", cap=2.0)
    assert w[0, 0] == 1.0


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="unknown sampling correction"):
        sampling_correction(TRAINED, SAMPLED, MASK, "token_clip", cap=2.0)


def test_the_weight_scales_the_surrogate_not_the_kl():
    logp = torch.tensor([[-1.0, -1.0]])
    adv, mask = torch.tensor([2.0]), torch.ones(1, 2)
    weight = torch.tensor([[0.5, 2.0]])
    ref = torch.tensor([[-2.0, -2.0]])
    plain, _ = policy_loss(logp, logp, adv, mask, beta=0.1, ref_logp=ref)
    weighted, _ = policy_loss(logp, logp, adv, mask, beta=0.1, ref_logp=ref, sampling_weight=weight)
    # ratio 1: surrogate -2 per token -> -1 and -4 weighted; k3 KL = e^-1 - (-1) - 1 = e^-1 per token, unweighted
    kl = 0.1 * math.exp(-1.0)
    assert plain.item() == pytest.approx(-2.0 + kl) and weighted.item() == pytest.approx(-2.5 + kl)
