"""GRPO maths as pure tensor functions: log-probs, advantages, KL estimators, policy losses.

Shapes: N completions (prompts × G, grouped consecutively), L completion positions; `mask` is 1
on real completion tokens (stop token included). Conventions follow TRL's GRPOTrainer so numbers
compare one to one (see tests/sari_train/grpo/test_trl_parity.py):

    ratio    r_t   = exp(logp_t − old_logp_t)                            token level (GRPO)
             r     = exp(Σ_t (logp_t − old_logp_t)·m_t / Σ_t m_t), every t    sequence level (GSPO)
    token    ℓ_t   = −min(r_t·A, clip(r_t, 1−ε_low, 1+ε_high)·A) + β·KL_t
    grpo     mean over sequences of (Σ_t ℓ_t·m_t / Σ_t m_t)           R1-AQA, DeepSeekMath
    bnpo     Σ ℓ·m / Σ m over the micro-batch                          token mean
    dr_grpo  Σ ℓ·m / (N · max_completion_length)                       Dr. GRPO
    dapo     Σ ℓ·m / tokens of the whole step (all micro-batches, all ranks)   DAPO
"""

from __future__ import annotations

from typing import Literal

import torch

LossType = Literal["grpo", "bnpo", "dr_grpo", "dapo"]
KLEstimator = Literal["k1", "k2", "k3"]
AdvantageScale = Literal["group", "batch", "none"]
RatioLevel = Literal["token", "sequence"]
STD_EPS = 1e-4  # R1-AQA / TRL: A = (r − mean) / (std + 1e-4)


def token_logprobs(logits: torch.Tensor, ids: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log π(id_t) under `logits / temperature` (TRL scores under the sampling temperature too).

    `logits[:, t]` must predict `ids[:, t]` (the caller aligns them)."""
    logits = _scaled(logits, temperature)
    picked = logits.gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


@torch.no_grad()
def token_entropy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    logp = _scaled(logits, temperature).log_softmax(-1)
    return -(logp.exp() * logp).sum(-1)


def _scaled(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """float32 logits / temperature; at temperature 1 the logits themselves (x / 1 == x exactly),
    which spares a copy of the whole vocabulary's logits and its backward."""
    logits = logits.float()
    return logits if temperature == 1.0 else logits / temperature


def advantages(rewards: torch.Tensor, group_size: int, scale: AdvantageScale = "group",
               batch_std: torch.Tensor | None = None) -> torch.Tensor:
    """Group-relative advantages: reward minus its group's mean, scaled by the group's std
    (R1-AQA), the batch's std (`batch_std` when the batch spans processes), or not at all.
    Stds are unbiased (torch default, as TRL)."""
    grouped = rewards.view(-1, group_size)
    centred = (grouped - grouped.mean(dim=1, keepdim=True)).reshape(-1)
    if scale == "group":
        return centred / (grouped.std(dim=1).repeat_interleave(group_size) + STD_EPS)
    if scale == "batch":
        return centred / ((rewards.std() if batch_std is None else batch_std) + STD_EPS)
    return centred


def zero_variance_groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """One bool per group: all of its G rewards are equal (no learning signal without KL)."""
    grouped = rewards.view(-1, group_size)
    return (grouped == grouped[:, :1]).all(dim=1)


def kl_per_token(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: KLEstimator = "k3") -> torch.Tensor:
    """Per-token estimators of KL(π‖π_ref) on samples from π (Schulman's k1/k2/k3)."""
    log_ratio = ref_logp - logp
    if estimator == "k1":
        return -log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio ** 2
    return torch.exp(log_ratio) - log_ratio - 1


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, loss_type: LossType,
              max_completion_length: int | None = None, step_tokens: float | None = None) -> torch.Tensor:
    """Reduce per-token losses to one number (see the module docstring for each type)."""
    mask = mask.to(per_token.dtype)
    summed = per_token * mask
    if loss_type == "grpo":
        return (summed.sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    if loss_type == "bnpo":
        return summed.sum() / mask.sum().clamp(min=1.0)
    if loss_type == "dr_grpo":
        if max_completion_length is None:
            raise ValueError("dr_grpo needs max_completion_length")
        return summed.sum() / (per_token.shape[0] * max_completion_length)
    if loss_type == "dapo":
        return summed.sum() / (mask.sum().clamp(min=1.0) if step_tokens is None else max(step_tokens, 1.0))
    raise ValueError(f"unknown loss type {loss_type!r}; use grpo, bnpo, dr_grpo or dapo")


def policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor, *,
                loss_type: LossType = "grpo", epsilon_low: float = 0.2, epsilon_high: float = 0.2,
                beta: float = 0.0, ref_logp: torch.Tensor | None = None, kl_estimator: KLEstimator = "k3",
                max_completion_length: int | None = None, step_tokens: float | None = None,
                kl_ratio_weight: bool = False, sampling_weight: torch.Tensor | None = None,
                ratio_level: RatioLevel = "token") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The clipped surrogate plus β·KL, aggregated by `loss_type`; also the masked statistics
    TRL logs (`kl`, `clip_ratio/*`) as (sum, count) pairs so ranks and micro-batches can pool them.

    `kl_ratio_weight` multiplies the KL by the (differentiable) ratio, DeepSeek-V3.2's unbiased
    reverse-KL gradient and TRL ≥ 1.0's default; R1-AQA's TRL did not (our default).
    `sampling_weight` (`sampling_correction`) scales the surrogate, not the KL, as TRL does.
    `ratio_level: sequence` is GSPO (TRL's `importance_sampling_level`): one ratio per completion,
    the exp of its mean token log-ratio, clipped as a whole."""
    adv = adv.unsqueeze(1)
    m = mask.to(logp.dtype)
    log_ratio = logp - old_logp
    if ratio_level == "sequence":
        log_ratio = (log_ratio * m).sum(-1, keepdim=True) / m.sum(-1, keepdim=True).clamp(min=1.0)
    ratio = torch.exp(log_ratio).expand_as(logp)
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    per_token = -torch.min(ratio * adv, clipped * adv)
    if sampling_weight is not None:
        per_token = per_token * sampling_weight
    stats: dict[str, torch.Tensor] = {}
    if beta != 0.0:
        if ref_logp is None:
            raise ValueError("beta > 0 needs reference log-probs")
        kl = kl_per_token(logp, ref_logp, kl_estimator)
        per_token = per_token + beta * (kl * ratio if kl_ratio_weight else kl)
        stats["kl"] = _masked_sum(kl.detach(), m)
    low = ((ratio < 1 - epsilon_low) & (adv < 0)).to(m.dtype)
    high = ((ratio > 1 + epsilon_high) & (adv > 0)).to(m.dtype)
    stats["clip_ratio/low_mean"] = _masked_sum(low, m)
    stats["clip_ratio/high_mean"] = _masked_sum(high, m)
    stats["clip_ratio/region_mean"] = _masked_sum(low + high, m)
    loss = aggregate(per_token, mask, loss_type, max_completion_length, step_tokens)
    return loss, stats


SamplingCorrection = Literal["token_truncate", "token_mask", "sequence_truncate", "sequence_mask"]


def sampling_correction(trained: torch.Tensor, sampled: torch.Tensor, mask: torch.Tensor,
                        mode: SamplingCorrection = "sequence_mask", cap: float = 3.0) -> torch.Tensor:
    """TRL's truncated importance sampling for a sampler (vLLM) that is not exactly the trained policy:
    w = π_train / π_sampler = exp(trained − sampled) per token (`token_*`, shape (N, L)) or per
    sequence (`sequence_*`, the summed log-ratio, shape (N, 1)); `*_truncate` caps w at `cap`,
    `*_mask` sets a w over `cap` to 0 (that token or sequence leaves the loss). Padding counts as
    log-ratio 0, and so does a NaN log-prob (no correction where the sampler gave none)."""
    log_ratio = torch.nan_to_num((trained - sampled.to(trained)) * mask, nan=0.0)
    if mode.startswith("sequence"):
        log_ratio = log_ratio.sum(-1, keepdim=True)
    weight = log_ratio.exp()
    if mode.endswith("truncate"):
        return weight.clamp(max=cap)
    if mode.endswith("mask"):
        return weight.masked_fill(weight > cap, 0.0)
    raise ValueError(f"unknown sampling correction {mode!r}; use token_truncate, token_mask, sequence_truncate "
                     "or sequence_mask")


def _masked_sum(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.stack([(values.detach() * mask).sum(), mask.sum()])
