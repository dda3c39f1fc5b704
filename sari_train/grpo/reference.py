"""The GRPO reference model: the starting model, frozen, whose log-probs the KL term pulls towards
(β > 0). Under LoRA there is none to load: the reference is the policy with its adapters off.

Under FSDP2 it is sharded like the policy, by accelerate's own `fsdp2_prepare_model` (the same
units, mesh and mixed precision), and every unit, the root included, frees its gathered weights
after each forward (the reference never runs backward), so a GPU holds 1/N of it plus the layer
being computed instead of a whole `dtype` copy. Its forward passes are then collective, as the
policy's are: every process runs the same number of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sari_train.models.adapter import AudioLM

if TYPE_CHECKING:
    from sari_train.grpo.train import GRPOConfig


def load_reference(config: GRPOConfig, accelerator: Any) -> AudioLM | None:
    """The reference of a GRPO run, or None (β = 0, or LoRA)."""
    if config.beta == 0 or config.lora is not None:
        return None
    reference = AudioLM.load(config.model, dtype=config.dtype, device=str(accelerator.device),
                             attn_implementation=config.attn_implementation)
    reference.model.requires_grad_(False).eval()
    if accelerator.is_fsdp2:
        from accelerate.utils import fsdp2_prepare_model

        reference.model = fsdp2_prepare_model(accelerator, reference.model)
        reference.model.set_reshard_after_forward(True)  # FSDP keeps the root gathered for a backward; none comes
    return reference
