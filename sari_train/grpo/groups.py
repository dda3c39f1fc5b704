"""The GRPO step's bookkeeping, kept out of the loop: sampled groups (and dropping some of them), the
micro-batches they train in, and metrics summed over micro-batches and pooled over processes into
TRL-named means."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from sari_train.data import Example
from sari_train.grpo.losses import zero_variance_groups
from sari_train.rollout import Generated


@dataclass
class Groups:
    """G sampled and rewarded completions for each of some prompts."""

    examples: list[Example]
    generated: Generated
    texts: list[str]
    rewards: torch.Tensor  # (n·G,)
    parts: dict[str, list[float]]
    correct: torch.Tensor  # (n·G,) exact-match accuracy, for pass rates

    def keep(self, rows: list[int]) -> Groups:
        """Only the groups at `rows` (prompt indices)."""
        g = len(self.texts) // max(len(self.examples), 1)
        idx = torch.tensor([r * g + j for r in rows for j in range(g)], dtype=torch.long)
        return Groups([self.examples[r] for r in rows], self.generated.rows(idx), [self.texts[i] for i in idx],
                      self.rewards[idx], {k: [v[i] for i in idx] for k, v in self.parts.items()}, self.correct[idx])

    def varied(self) -> Groups:
        """Only the groups whose rewards are not all equal (the others carry no signal without KL)."""
        g = len(self.texts) // len(self.examples)
        return self.keep([i for i, same in enumerate(zero_variance_groups(self.rewards, g).tolist()) if not same])


@dataclass
class MicroBatch:
    """Completions that train together (one forward and backward per pass), with their advantages."""

    generated: Generated
    advantages: torch.Tensor
    group_size: int  # consecutive rows that share a prompt: the shared-prefix passes run it once
    old_logp: torch.Tensor | None = None
    ref_logp: torch.Tensor | None = None


def split_rows(generated: Generated, advantages: torch.Tensor, start: int, rows: int, count: int,
               group_size: int) -> list[MicroBatch]:
    """`count` micro-batches of `rows` consecutive completions from row `start` (TRL's per-device
    batches: a group may span micro-batches). Each `group_size` block of rows shares one prompt."""
    pieces = [torch.arange(start + m * rows, start + (m + 1) * rows) for m in range(count)]
    return [MicroBatch(generated.rows(idx), advantages[idx], group_size) for idx in pieces]


def cat(groups: list[Groups], field: str) -> torch.Tensor:
    return torch.cat([getattr(x, field) for x in groups])


class Tally:
    """(sum, count) per metric, added up over micro-batches; `means` pools them over processes."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.maxima: dict[str, torch.Tensor] = {}

    def add(self, pairs: dict[str, torch.Tensor]) -> None:
        """Add (sum, count) pairs, e.g. `losses.policy_loss`'s statistics; a key ending in `max` keeps
        the largest value instead (its count stays 1)."""
        for key, pair in pairs.items():
            pair = pair.detach().float().cpu()
            if key.endswith("max"):
                self.maxima[key] = torch.maximum(self.maxima.get(key, pair), pair)
            else:
                self.sums[key] = self.sums.get(key, torch.zeros(2)) + pair

    def add_values(self, values: dict[str, torch.Tensor]) -> None:
        """Add observations (each tensor's elements are counted one by one)."""
        self.add({k: torch.stack([v.float().sum(), torch.tensor(float(v.numel()))]) for k, v in values.items()})

    def means(self, accelerator: Any) -> dict[str, float | None]:
        keys = sorted(self.sums)
        pooled = accelerator.reduce(torch.stack([self.sums[k] for k in keys]).to(accelerator.device), "sum").cpu()
        row = {k: float(s / c) if c > 0 else None for k, (s, c) in zip(keys, pooled.tolist())}
        for key in sorted(self.maxima):  # every process has each key: they all run the same micro-batch steps
            row[key] = float(accelerator.gather(self.maxima[key][:1].to(accelerator.device)).max())
        return row


def pooled_std(values: torch.Tensor, accelerator: Any) -> torch.Tensor:
    """Unbiased std over every process's values."""
    sums = accelerator.reduce(torch.stack([values.sum(), (values ** 2).sum(), torch.tensor(float(len(values)))])
                              .to(accelerator.device), "sum").cpu()
    n = sums[2]
    return ((sums[1] - sums[0] ** 2 / n) / (n - 1).clamp(min=1)).clamp(min=0).sqrt()


def step_metrics(tally: Tally, groups: list[Groups], reward_names: list[str], g: int,
                 accelerator: Any) -> dict[str, float | None]:
    """The step's logged row: the tally plus reward spread, lengths, accuracy and each reward's mean."""
    rewards = cat(groups, "rewards")
    lengths = torch.cat([x.generated.completion_mask.sum(-1) for x in groups]).float()
    tally.add_values({"reward_std": rewards.view(-1, g).std(dim=1), "completions/mean_length": lengths,
                      "accuracy": cat(groups, "correct")})
    tally.add_values({f"rewards/{name}/mean": torch.tensor([v for x in groups for v in x.parts[name]])
                      for name in reward_names})
    row = tally.means(accelerator)
    # a process may own no group when groups span processes (TRL's per-device batches)
    local = torch.stack([lengths.max(), lengths.min()]) if len(lengths) else torch.tensor([-torch.inf, torch.inf])
    extremes = accelerator.gather(local.to(accelerator.device)).view(-1, 2)
    row["completions/max_length"] = float(extremes[:, 0].max())
    row["completions/min_length"] = float(extremes[:, 1].min())
    return row
