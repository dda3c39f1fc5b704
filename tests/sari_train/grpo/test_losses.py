"""GRPO maths against values worked out by hand (scalar arithmetic in the comments)."""

import math

import pytest
import torch

from sari_train.grpo import losses

# Two completions: 3 tokens, and 2 tokens + padding. ratio = exp(logp − old):
# row 0: e^0.1 = 1.105171, e^-0.1 = 0.904837, 1;  row 1: 1, e^-0.2 = 0.818731, (pad).
LOGP = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -1.2, 0.0]])
OLD = torch.tensor([[-1.1, -1.9, -0.5], [-0.3, -1.0, 0.0]])
REF = torch.tensor([[-1.2, -2.0, -0.4], [-0.5, -1.2, 0.0]])
MASK = torch.tensor([[1, 1, 1], [1, 1, 0]])
ADV = torch.tensor([1.0, -0.5])
E = math.exp


def loss(**kw):
    return losses.policy_loss(LOGP, OLD, ADV, MASK, **kw)


@pytest.mark.parametrize("loss_type,kw,expected", [
    # unclipped token losses: row 0 −(1.105171, 0.904837, 1), row 1 +(0.5, 0.409365)
    ("grpo", {}, ((-(E(.1) + E(-.1) + 1) / 3) + (0.5 + 0.5 * E(-.2)) / 2) / 2),   # −0.274327
    ("bnpo", {}, (-(E(.1) + E(-.1) + 1) + 0.5 + 0.5 * E(-.2)) / 5),              # −0.420129
    ("dr_grpo", {"max_completion_length": 4}, (-(E(.1) + E(-.1) + 1) + 0.5 + 0.5 * E(-.2)) / 8),
    ("dapo", {"step_tokens": 10.0}, (-(E(.1) + E(-.1) + 1) + 0.5 + 0.5 * E(-.2)) / 10),
    ("dapo", {}, (-(E(.1) + E(-.1) + 1) + 0.5 + 0.5 * E(-.2)) / 5),  # alone: its own tokens
])
def test_loss_types(loss_type, kw, expected):
    value, _ = loss(loss_type=loss_type, **kw)
    assert value.item() == pytest.approx(expected, abs=1e-6)


def test_loss_type_values_by_hand():
    assert loss(loss_type="grpo")[0].item() == pytest.approx(-0.2743267, abs=1e-6)
    assert loss(loss_type="bnpo")[0].item() == pytest.approx(-0.4201286, abs=1e-6)
    assert loss(loss_type="dr_grpo", max_completion_length=4)[0].item() == pytest.approx(-0.2625804, abs=1e-6)


def test_symmetric_clip():
    # ε = 0.05: row 0 token 0 clipped high to 1.05 (A > 0); row 1 token 1 clipped low to 0.95 (A < 0)
    value, stats = loss(epsilon_low=0.05, epsilon_high=0.05)
    assert value.item() == pytest.approx(((-1.05 - E(-.1) - 1) / 3 + (0.5 + 0.475) / 2) / 2, abs=1e-6)
    assert value.item() == pytest.approx(-0.2487229, abs=1e-6)
    ratios = {k: (v[0] / v[1]).item() for k, v in stats.items()}
    # row 0 token 1 has ratio 0.905 < 0.95 but A > 0: the min picks the unclipped term, not counted
    assert ratios == pytest.approx({"clip_ratio/low_mean": 0.2, "clip_ratio/high_mean": 0.2,
                                    "clip_ratio/region_mean": 0.4})


def test_asymmetric_clip_dapo_style():
    # ε_low 0.05, ε_high 0.28: 1.105 is inside (0.95, 1.28), only the low clip of row 1 bites
    value, stats = loss(epsilon_low=0.05, epsilon_high=0.28)
    assert value.item() == pytest.approx(-0.2579181, abs=1e-6)
    assert (stats["clip_ratio/high_mean"][0]).item() == 0
    assert (stats["clip_ratio/low_mean"][0]).item() == 1


@pytest.mark.parametrize("estimator,per_token", [
    ("k1", [0.2, 0.0, -0.1, 0.2, 0.0]),                                   # logp − ref
    ("k2", [0.02, 0.0, 0.005, 0.02, 0.0]),                                # ½(ref − logp)²
    ("k3", [E(-.2) + .2 - 1, 0.0, E(.1) - .1 - 1, E(-.2) + .2 - 1, 0.0]),  # e^x − x − 1, x = ref − logp
])
def test_kl_estimators(estimator, per_token):
    kl = losses.kl_per_token(LOGP, REF, estimator)
    assert kl[MASK.bool()].tolist() == pytest.approx(per_token, abs=1e-6)
    beta = 0.04
    value, stats = loss(beta=beta, ref_logp=REF, kl_estimator=estimator)
    row0 = (-(E(.1) + E(-.1) + 1) + beta * sum(per_token[:3])) / 3
    row1 = (0.5 + 0.5 * E(-.2) + beta * sum(per_token[3:])) / 2
    assert value.item() == pytest.approx((row0 + row1) / 2, abs=1e-6)
    assert (stats["kl"][0] / stats["kl"][1]).item() == pytest.approx(sum(per_token) / 5, abs=1e-6)


def test_k3_value_and_no_kl_without_beta():
    assert loss(beta=0.04, ref_logp=REF)[0].item() == pytest.approx(-0.2739801, abs=1e-6)
    assert "kl" not in loss()[1]
    with pytest.raises(ValueError, match="reference"):
        loss(beta=0.1)


def test_first_pass_gradient_is_advantage_times_score():
    # μ = 1: old = logp.detach(), so ∂ℓ/∂logp_t = −A / |o| for grpo
    logp = LOGP.clone().requires_grad_()
    value, _ = losses.policy_loss(logp, logp.detach(), ADV, MASK)
    value.backward()
    expected = torch.tensor([[-1 / 3, -1 / 3, -1 / 3], [0.5 / 2, 0.5 / 2, 0.0]]) / 2
    torch.testing.assert_close(logp.grad, expected)


def test_advantages_by_hand():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0])
    # group 0: mean 0.5, unbiased std √(1/3) = 0.57735 → ±0.5 / 0.57745 = ±0.865875; group 1: all equal → 0
    group = losses.advantages(rewards, 4, "group")
    assert group.tolist() == pytest.approx([0.8658754, -0.8658754, -0.8658754, 0.8658754, 0, 0, 0, 0], abs=1e-6)
    # batch std: mean 1.25, Σ(x − mean)² = 5.5, /7 → std 0.886405
    batch = losses.advantages(rewards, 4, "batch")
    assert batch.tolist() == pytest.approx([0.5640124, -0.5640124, -0.5640124, 0.5640124, 0, 0, 0, 0], abs=1e-6)
    assert losses.advantages(rewards, 4, "none").tolist() == [0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0]
    assert losses.advantages(rewards, 4, "batch", torch.tensor(1.0))[0].item() == pytest.approx(0.5 / 1.0001)
    assert losses.zero_variance_groups(rewards, 4).tolist() == [False, True]


def test_token_logprobs_and_entropy_under_temperature():
    logits = torch.tensor([[[2.0, 0.0, 0.0]]])
    # T = 2: logits (1, 0, 0) → log p(0) = 1 − log(e + 2)
    assert losses.token_logprobs(logits, torch.tensor([[0]]), 2.0).item() == pytest.approx(1 - math.log(E(1) + 2))
    uniform = torch.zeros(1, 1, 4)
    assert losses.token_entropy(uniform).item() == pytest.approx(math.log(4))


def test_sequence_level_ratio_is_gspo():
    # one ratio per row: row 0 exp(mean(0.1, −0.1, 0)) = 1; row 1 exp(mean(0, −0.2)) = e^−0.1 = 0.904837 (pad ignored)
    value, _ = loss(ratio_level="sequence")
    assert value.item() == pytest.approx((-1 + 0.5 * E(-.1)) / 2, abs=1e-6)  # −0.2737906
    # ε 0.05: row 1's ratio 0.905 < 0.95 with A < 0 is clipped as a whole, both its tokens counted
    value, stats = loss(ratio_level="sequence", epsilon_low=0.05, epsilon_high=0.05)
    assert value.item() == pytest.approx((-1 + 0.5 * 0.95) / 2, abs=1e-6)
    assert (stats["clip_ratio/low_mean"][0] / stats["clip_ratio/low_mean"][1]).item() == pytest.approx(2 / 5)
    # the gradient reaches every token through the mean: row 0's loss −r·A, dr/dlogp_t = r/3, halved by the mean
    logp = LOGP.clone().requires_grad_()
    losses.policy_loss(logp, OLD, ADV, MASK, ratio_level="sequence")[0].backward()
    assert logp.grad[0].tolist() == pytest.approx([-1 / 6] * 3, abs=1e-6)
    assert logp.grad[1, 2].item() == 0  # padding
