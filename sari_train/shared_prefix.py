"""Shared-prefix forward: each prompt runs through the language model once per group, not once per completion.

GRPO scores n prompts × G completions. The plain way runs every completion with its full prompt,
n·G·(P + C) positions, although the G rows of a group share their first P. Here (as in "Prefix
Grouper", arXiv 2506.05433) the step is split in two passes of the same model:

    1. prompt pass      the n prompts, all but their last token: keep every layer's keys and values
                        K_p, V_p (n, heads, P−1, d), with their autograd graph
    2. completion pass  the n·G rows [last prompt token, completion[:-1]] (the L positions whose
                        outputs predict the L completion tokens), each attending to
                        [repeat_G(K_p), K_c] and [repeat_G(V_p), V_c]

Attention is the only place a position looks at another, so each completion position sees the
same keys and values, masks and rotary positions as in the plain pass, and its logits are the same
up to float rounding; n·(P − 1) + n·G·L positions are computed instead of n·G·(P + L). The repeat
is an ordinary differentiable op: its backward sums the G rows' gradients, so the prompt pass
receives one gradient per prompt and runs backward once.

Masks and positions are those of the plain pass, sliced: the attention mask is [prompt mask,
completion mask] (left-padded prompts, completions padded after their stop token), and the rotary
positions are the ones the model gives the whole sequence (`AudioLM.position_ids`; the Omni
thinker's 3-D positions continue from the prompt's real tokens).

Gradient checkpointing: transformers drops a layer's cache under checkpointing, since replaying a
layer would write it twice. Our two caches never grow (the prompt pass records, the completion
pass prepends without storing), so a replay reads and writes the same states and we keep them.

One forward of the model: the completion pass goes through the model (or its DDP wrapper) as any
pass does, and a pre-hook on the decoder stack runs the prompt pass there, just before the
completion pass enters it. So both passes run inside the root's forward: under FSDP2 the root's own
weights (the final norm; the embeddings too unless accelerate made them a unit of their own) are
gathered and their gradients reduce-scattered after the whole backward, autocast covers both, and
DDP sees one forward per backward. One more FSDP2 detail: the prompt states' gradients reach each
layer through its keys and values, not its output, so they ask for the layer's weights themselves
(`_gather_for_their_backward`).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
from transformers.cache_utils import Cache, DynamicLayer

from sari_train.models.adapter import AudioLM
from sari_train.rollout import Generated


class _PromptStates(DynamicLayer):
    """One layer's keys and values of the prompt pass, kept as computed (graph included). A replay
    of the layer (gradient checkpointing) records them again instead of appending."""

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self.keys, self.values = key_states, value_states
        return key_states, value_states


class _AfterPrompt(DynamicLayer):
    """One layer's prompt keys and values, each row's G times; every call attends to them followed
    by its own states, and nothing is stored, so a replay sees the same keys."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor):
        super().__init__()
        self.lazy_initialization(keys, values)
        self.keys, self.values = keys, values

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.cat([self.keys, key_states], dim=-2), torch.cat([self.values, value_states], dim=-2)


def shared_prefix_logits(language_model: torch.nn.Module, model: torch.nn.Module,
                         prompt_embeds: Callable[[], torch.Tensor], completion_ids: torch.Tensor, mask: torch.Tensor,
                         positions: torch.Tensor, group_size: int) -> torch.Tensor:
    """Logits of the n·G completion positions, the n prompts run once.

    `prompt_embeds()` gives the n prompts' input embeddings but the last token's, (n, P − 1, H) (it
    is called inside the model's forward); `completion_ids` (n·G, L) the last prompt token, then
    the completion's tokens but the last (the L positions that predict the completion); `mask`
    (n·G, P + L) and `positions` ((…,) n·G, P + L): what the plain pass over prompt + completion
    uses. `language_model` is the decoder stack (it returns hidden states), `model` the causal LM
    around it (or its DDP wrapper). Returns (n·G, L, V): row r, column t predicts completion token t."""
    g, p = group_size, mask.shape[1] - completion_ids.shape[1]
    if any(t != "full_attention" for t in getattr(language_model.config, "layer_types", None) or []):
        raise NotImplementedError("shared_prefix: sliding-window layers are not supported; set shared_prefix: false")

    def prompt_pass() -> Cache:
        """Each layer's keys and values of the n prompts, repeated for the G rows of each group."""
        states = Cache(layers=[_PromptStates() for _ in language_model.layers])
        language_model(inputs_embeds=prompt_embeds(), attention_mask=mask[::g, :p - 1],
                       position_ids=positions[..., ::g, :p - 1], cache=states, use_cache=True)
        for layer, state in zip(language_model.layers, states.layers):
            _gather_for_their_backward(layer, state.keys, state.values)
        return Cache(layers=[_AfterPrompt(s.keys.repeat_interleave(g, dim=0), s.values.repeat_interleave(g, dim=0))
                             for s in states.layers])

    with _checkpointing_keeps_cache(language_model), _first(language_model, prompt_pass):
        out = model(input_ids=completion_ids, attention_mask=mask[:, :-1], position_ids=positions[..., p - 1:-1],
                    use_cache=True)
    return out.logits


def completion_logits(lm: AudioLM, gen: Generated, group_size: int,
                      model: torch.nn.Module | None = None) -> torch.Tensor:
    """Logits (n·G, L, V) predicting each completion token of a rollout whose rows repeat each
    prompt G times in a row (as the rollout engine returns them); the audio frames come from the
    cached prompt embeddings, each prompt runs once. `model` is `lm.model` behind a wrapper (DDP),
    or `lm.model` itself (FSDP2 shards it in place)."""
    g, prompt = group_size, gen.prompt
    grouped = prompt.input_ids.view(-1, g, prompt.input_ids.shape[1]) if len(prompt.input_ids) % g == 0 else None
    if grouped is None or not bool((grouped == grouped[:, :1]).all()):
        raise ValueError(f"shared_prefix: the {len(prompt.input_ids)} rows are not groups of {g} rows with one prompt")
    ids = torch.cat([prompt.input_ids, gen.completion_ids], dim=1)
    mask = torch.cat([prompt.attention_mask, gen.completion_mask], dim=1)
    positions = lm.position_ids(ids, mask, prompt.feature_attention_mask)

    def prompts() -> torch.Tensor:  # the text embedded afresh (so it is trained), the audio frames cached
        return lm.embed(prompt.input_ids[::g, :-1], gen.prompt_embeds[::g, :-1])

    completions = torch.cat([prompt.input_ids[:, -1:], gen.completion_ids[:, :-1]], dim=1)
    return shared_prefix_logits(lm.language_model, model or lm.model, prompts, completions, mask, positions, g)


@contextmanager
def _first(language_model: torch.nn.Module, prompt_pass: Callable[[], Cache]) -> Iterator[None]:
    """Run the prompt pass inside the model's forward, when the completion pass reaches the decoder
    stack, and hand its states to that pass as its cache: the root's weights (FSDP2 gathers them in
    the root's forward), autocast and DDP's one forward per backward then cover both passes."""

    def hook(_module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        handle.remove()  # the prompt pass enters the same module
        return args, {**kwargs, "cache": prompt_pass()}

    handle = language_model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def _gather_for_their_backward(layer: torch.nn.Module, *states: torch.Tensor) -> None:
    """FSDP2 gathers a layer's weights for its backward when a gradient reaches the layer's output,
    but the prompt pass's gradients enter each layer through its keys and values (the completion
    pass attends to them), after the completion pass has resharded the layer. Their gradients now
    trigger the layer's pre-backward too: a second gather, and a second reduce-scatter (after the
    layer's input gradient, or at the end of the backward) that adds them to the sharded gradients.
    `_pre_backward` is the hook FSDP2 itself puts on a layer's outputs (private; test_fsdp.py runs it)."""
    from torch.distributed.fsdp import FSDPModule

    if isinstance(layer, FSDPModule) and torch.is_grad_enabled():
        for tensor in states:
            if tensor.requires_grad:
                tensor.register_hook(layer._get_fsdp_state()._pre_backward)


@contextmanager
def _checkpointing_keeps_cache(language_model: torch.nn.Module) -> Iterator[None]:
    """Let checkpointed decoder layers keep our caches (safe: replaying a layer does not grow them)."""
    layers = list(language_model.layers)
    before = [layer.__dict__.get("_can_checkpoint_with_cache") for layer in layers]
    for layer in layers:
        layer._can_checkpoint_with_cache = True
    try:
        yield
    finally:
        for layer, value in zip(layers, before):
            if value is None:
                del layer._can_checkpoint_with_cache
            else:
                layer._can_checkpoint_with_cache = value
