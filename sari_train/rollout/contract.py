"""The contract every rollout engine keeps: prompts in, k completions per prompt out, with the
per-token log-probs of the sampling distribution when asked.

`sample(messages, waveforms, settings, with_logprobs, seeds) -> Rollouts` is what difficulty and eval
call on any engine (local.py: transformers in this process; endpoint.py: an OpenAI-compatible
server; vllm_engine.py: vLLM colocated in this process). The GRPO trainer also needs the prompt batch
its training passes run on: `Generated`, which the local and vLLM engines produce from the same
prompt token ids and audio.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from sari_train.models.adapter import PromptBatch


class SamplingSettings(BaseModel):
    """How completions are sampled; `key()` names the settings in stored rollouts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    k: int = Field(1, ge=1, description="completions per prompt")
    temperature: float = Field(1.0, ge=0, description="0 means greedy")
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0, description="the k most likely tokens only (0: off)")
    max_new_tokens: int = Field(64, ge=1)
    seed: int = 0

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def key(self) -> str:
        unset = {"top_k"} if self.top_k == 0 else set()  # rollouts stored before top_k keep their key
        payload = json.dumps(self.model_dump(exclude={"k"} | unset), sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


@dataclass
class Rollouts:
    """Completions grouped by prompt: `texts[i][j]` is sample j of prompt i."""

    texts: list[list[str]]
    token_ids: list[list[torch.Tensor]] = field(default_factory=list)  # without padding or stop tokens
    logprobs: list[list[torch.Tensor]] | None = None  # per generated token, under the sampling distribution


@dataclass
class Generated:
    """What one batched generate call produced, in the layout trainers consume."""

    prompt: PromptBatch  # repeated k times
    prompt_embeds: torch.Tensor  # (B*k, T, H), audio encoded once per prompt
    completion_ids: torch.Tensor  # (B*k, L), padded after the stop token
    completion_mask: torch.Tensor  # (B*k, L), 1 up to and including the stop token
    logprobs: torch.Tensor | None = None  # (B*k, L)

    def rows(self, index: torch.Tensor) -> Generated:
        """Only the rows at `index`."""
        return Generated(self.prompt.rows(index), self.prompt_embeds[index], self.completion_ids[index],
                         self.completion_mask[index], None if self.logprobs is None else self.logprobs[index])


class Engine(Protocol):
    def sample(self, messages: Sequence[list[dict[str, Any]]], waveforms: Sequence[np.ndarray],
               settings: SamplingSettings, with_logprobs: bool = False,
               seeds: Sequence[int] | None = None) -> Rollouts: ...


def completion_mask(completion: torch.Tensor, stop_ids: Sequence[int]) -> torch.Tensor:
    """1 for every token up to and including the first stop token of each row, 0 after it."""
    is_stop = torch.isin(completion, torch.tensor(list(stop_ids), device=completion.device))
    after_stop = (is_stop.cumsum(dim=1) - is_stop.long()) > 0
    return (~after_stop).long()


def strip_stop(ids: torch.Tensor, stop_ids: Sequence[int]) -> torch.Tensor:
    return ids[:-1] if len(ids) and int(ids[-1]) in stop_ids else ids
