"""`sari-train sft`: supervised warm-up on answers or chains of thought, loss on the completion only.

    sari-train sft --model models/tiny-qwen2-audio --workspace workspaces/demo --max-steps 300 --lr 1e-3  # CPU smoke
    sari-train sft --config pipelines/train/sari-qwen2-audio.yaml                                         # one GPU
    accelerate launch --config_file pipelines/accelerate/fsdp2.yaml -m sari_train.cli sft --config pipelines/train/sari-qwen2-audio.yaml

Formats (`prompt.format`): `implicit` trains on `<answer>…</answer>`; `free` and `structured` on
`<think>chain</think>\\n<answer>…</answer>` with the item's valid chain of that style from the
`cots` table (items without one are left out and counted). The prompt, its audio placeholders and
padding get label −100; the loss is the mean cross-entropy over target tokens (plus `<|im_end|>`).

The loop, in order: draw a batch → forward → loss → backward (×grad_accum) → clip → step →
log → eval → checkpoint.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from pydantic import Field
from tqdm import tqdm

from sari_train.config import ConfigError
from sari_train.data import Example, data_source
from sari_train.grpo.curriculum import CurriculumSampler
from sari_train.models.adapter import AudioLM, PromptTooLong
from sari_train.prompts import PromptStyle, messages, target
from sari_train.training import TrainConfig, make_accelerator, seed_everything, start_run

IGNORE = -100
END_OF_TURN = "<|im_end|>"


class SFTConfig(TrainConfig):
    batch_size: int = Field(8, ge=1, description="examples per micro-batch and process")


def sft_batch(lm: AudioLM, examples: list[Example], style: PromptStyle,
              max_prompt_length: int | None = None) -> dict[str, torch.Tensor]:
    """Prompt (left-padded, with audio) + target (right-padded) and labels on the target only."""
    try:
        prompt = lm.encode_prompts([messages(e.question, e.choices, style) for e in examples],
                                   [e.waveform() for e in examples], max_prompt_tokens=max_prompt_length)
    except PromptTooLong as err:
        raise ConfigError(f"item {examples[err.row].id}: {err}") from None
    targets = [target(e.answer, style, e.thinking) + END_OF_TURN for e in examples]
    lm.tokenizer.padding_side = "right"
    completion = lm.tokenizer(targets, return_tensors="pt", padding=True, add_special_tokens=False)
    lm.tokenizer.padding_side = "left"
    labels = completion["input_ids"].masked_fill(completion["attention_mask"] == 0, IGNORE)
    return dict(input_ids=torch.cat([prompt.input_ids, completion["input_ids"]], dim=1),
                attention_mask=torch.cat([prompt.attention_mask, completion["attention_mask"]], dim=1),
                labels=torch.cat([torch.full_like(prompt.input_ids, IGNORE), labels], dim=1),
                input_features=prompt.input_features, feature_attention_mask=prompt.feature_attention_mask)


def completion_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Mean next-token cross-entropy over labelled positions, and how many there were."""
    shifted = labels[:, 1:]
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), shifted.flatten(),
                                             ignore_index=IGNORE)
    return loss, int((shifted != IGNORE).sum())


def train_sft(config: SFTConfig) -> dict[str, Any]:
    accelerator = make_accelerator(config.dtype)
    rank, world = accelerator.process_index, accelerator.num_processes
    seed_everything(config.seed)
    style = config.prompt
    cot_style = None if style.format == "implicit" else style.format
    examples, left_out = data_source(config).examples(config.split, cot_style)
    config = config.with_steps(len(examples), config.batch_size * config.grad_accum * world)
    sampler = CurriculumSampler([e.id for e in examples], mode="random", seed=config.seed)
    by_id = {e.id: e for e in examples}
    run = start_run(config, accelerator, sampler, config.max_steps, train_audio=not config.freeze_audio_tower)
    lm, model, scheduler, log = run.lm, run.model, run.scheduler, run.log

    per_step = config.batch_size * config.grad_accum * world
    for step in tqdm(range(run.start + 1, config.max_steps + 1), desc="sft", initial=run.start,
                     total=config.max_steps, disable=not accelerator.is_main_process):
        t0 = time.perf_counter()
        model.train()
        ids = sampler.take(per_step)  # the same on every process; each takes its share
        mine = ids[rank * config.batch_size * config.grad_accum:(rank + 1) * config.batch_size * config.grad_accum]
        total, tokens = torch.zeros((), device=accelerator.device), 0
        for micro in range(config.grad_accum):
            chunk = [by_id[i] for i in mine[micro * config.batch_size:(micro + 1) * config.batch_size]]
            batch = {k: v.to(accelerator.device) for k, v in sft_batch(lm, chunk, style, config.max_prompt_length).items()}
            labels = batch.pop("labels")
            with run.micro_batch(last=micro == config.grad_accum - 1):
                loss, n = completion_loss(model(**batch, use_cache=False).logits, labels)
                run.backward(loss / config.grad_accum)
            total += loss.detach() / config.grad_accum
            tokens += n
        grad_norm = run.step()  # clip → optimizer step → schedule → zero grads

        if step % config.log_every == 0:
            log.log(step, {"loss": float(accelerator.reduce(total, "mean")), "grad_norm": float(grad_norm),
                           "learning_rate": scheduler.get_last_lr()[0], "num_tokens": float(tokens * world),
                           "epoch": sampler.epochs_done, "step_time": time.perf_counter() - t0})
        if config.eval_every and step % config.eval_every == 0 and step != config.max_steps:
            run.evaluate(step)
        if config.save_every and step % config.save_every == 0:
            run.checkpoint(step, sampler)
    return {**run.finish(), "examples": len(examples), "left_out": left_out}
