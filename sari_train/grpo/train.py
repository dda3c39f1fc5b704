"""`sari-train grpo`: group-relative policy optimisation for audio LMs, easy → hard.

    sari-train grpo --model runs/sft/final --workspace workspaces/demo --max-steps 50 --num-generations 4  # CPU smoke
    sari-train grpo --config pipelines/train/r1-aqa.yaml                                                    # one process
    accelerate launch --config_file pipelines/accelerate/fsdp2.yaml -m sari_train.cli grpo --config pipelines/train/sari-omni.yaml

One step, in order (the loop below reads the same way): take prompts from the curriculum sampler
→ 1. sample G completions per prompt and reward them (the audio is encoded once per prompt; its
frames serve the G samples and every pass) → 2. group-relative advantages → 3. old-policy (μ > 1)
and reference (β > 0) log-probs → 4. μ policy passes, backward per micro-batch → 5. clip →
optimizer step → 6. curriculum feedback, log, checkpoint. Every pass runs each prompt once per
group and the G completions on its key/value states (shared_prefix.py; `shared_prefix: false`
runs prompt + completion per row, same numbers, for comparison). The micro-batch bookkeeping
(dropping zero-variance groups, metrics pooled over processes) lives in groups.py.

Batch sizes: a micro-batch holds `prompts_per_batch` whole groups, or, with TRL's
`per_device_train_batch_size` (here `completions_per_batch`), that many completions; a step
trains on it × grad_accum × processes completions, which must make whole groups of G. When a
micro-batch's completions are not whole groups, a group spans micro-batches (and processes, as in
TRL): each process then samples, in one round, the whole groups its completions belong to (a
group split over two processes is sampled by both, from the same seeds) and trains on its share.

How it differs from the papers: R1-AQA/SARI ran TRL's GRPOTrainer of early 2025 (loss `grpo`,
k3 KL, μ = 1, std-scaled advantages); those are the defaults here. The audio encoder and
projector are frozen by default (their cached rollout output is reused); `freeze_audio_tower:
false` trains them as R1-AQA did, the encoder rerunning once per prompt in the policy pass. The
prompt runs once per group in every pass (R1-AQA ran audio and prompt G times, same maths).
Log-probs are taken under logits / temperature, as TRL does. Options beyond the papers: bnpo,
dr_grpo and dapo losses, GSPO's sequence-level ratio, DAPO's overlong masking, asymmetric
clipping, top-k sampling, μ > 1, β = 0 without a reference model, batch-std
or no advantage scaling, zero-variance group filtering, online band-pass of the curriculum.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import replace
from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from tqdm import tqdm

from corpus.scoring import exact_match
from sari_train import shared_prefix
from sari_train.config import ConfigError
from sari_train.data import Example, data_source
from sari_train.grpo import losses
from sari_train.grpo.curriculum import CurriculumSampler
from sari_train.grpo.groups import Groups, MicroBatch, Tally, cat, pooled_std, split_rows, step_metrics
from sari_train.grpo.reference import load_reference
from sari_train.grpo.rewards import Reward, hacked, make_rewards, score
from sari_train.models.adapter import AudioLM, PromptTooLong
from sari_train.prompts import messages
from sari_train.rollout import Generated, LocalEngine, SamplingSettings, strip_stop
from sari_train.training import TrainConfig, make_accelerator, seed_everything, start_run


class GRPOConfig(TrainConfig):
    lr: float = Field(1e-6, gt=0, description="peak learning rate (AdamW)")
    num_generations: int = Field(8, ge=2, description="G: completions per prompt")
    prompts_per_batch: int = Field(1, ge=1, description="prompts per micro-batch and process (G completions each)")
    completions_per_batch: int | None = Field(
        None, ge=1, description="TRL's per_device_train_batch_size: completions per micro-batch and process, in "
                                "place of prompts_per_batch × G; a step's completions (this × grad_accum × "
                                "processes) must be whole groups, a group may span micro-batches and processes")
    temperature: float = Field(1.0, gt=0, description="sampling temperature (log-probs use it too)")
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0, description="sample from the k most likely tokens (0: off); log-probs stay the "
                                            "full distribution's under the temperature, as TRL's")
    max_completion_length: int = Field(256, ge=1, description="generation budget per completion")
    rewards: dict[str, float] = Field({"accuracy": 1.0, "format": 1.0},
                                      description="reward name or dotted path -> weight")
    loss_type: losses.LossType = Field("grpo", description="grpo | bnpo | dr_grpo | dapo")
    scale_rewards: losses.AdvantageScale = Field("group", description="advantage scaling: group | batch | none")
    beta: float = Field(0.04, ge=0, description="KL weight (0: no reference model)")
    kl_estimator: losses.KLEstimator = Field("k3", description="k1 | k2 | k3")
    kl_ratio_weight: bool = Field(False, description="weight the KL by the policy ratio (DeepSeek-V3.2, TRL ≥ 1.0)")
    epsilon_low: float = Field(0.2, ge=0, description="clip below 1 − ε_low")
    epsilon_high: float = Field(0.2, ge=0, description="clip above 1 + ε_high (DAPO: 0.28)")
    importance_sampling_level: losses.RatioLevel = Field("token", description="token: a ratio per token (GRPO); "
                                                         "sequence: one per completion (GSPO)")
    mask_truncated_completions: bool = Field(False, description="leave completions cut at max_completion_length "
                                                                "(no stop token) out of the loss (DAPO)")
    num_iterations: int = Field(1, ge=1, description="μ: update passes per generation round")
    filter_zero_variance: bool = Field(False, description="drop groups whose rewards are all equal, re-sample")
    max_resample_rounds: int = Field(2, ge=0, description="re-sampling rounds when filtering")
    sampler: Literal["curriculum", "random"] = Field("curriculum", description="easy → hard, or random order")
    difficulty_model: str | None = Field(None, description="whose difficulty buckets to use (if several)")
    band: tuple[float, float] | None = Field(None, description="online band-pass [low, high] on running pass rates")
    log_completions: int = Field(2, ge=0, description="sample completions written per logged step")
    shared_prefix: bool = Field(True, description="training passes run each prompt once per group (false: prompt "
                                                  "+ completion per row, the plain path, for comparison)")
    use_vllm: bool = Field(False, description="sample with vLLM in this process (the [vllm] extra), weights synced "
                                              "after every optimizer step")
    vllm_mode: Literal["colocate"] = Field("colocate", description="colocate: vLLM runs in the training process "
                                                                   "(TRL's server mode is not offered)")
    vllm_gpu_memory_utilization: float = Field(0.3, gt=0, le=1, description="share of the GPU vLLM may take")
    vllm_enable_sleep_mode: bool = Field(False, description="GPU: vLLM frees its memory during the training passes")
    vllm_importance_sampling_correction: bool = Field(True, description="weight the surrogate by π_train/π_vLLM, "
                                                                        "truncated (TRL)")
    vllm_importance_sampling_mode: losses.SamplingCorrection = Field(
        "sequence_mask", description="token_truncate | token_mask | sequence_truncate | sequence_mask (TRL's)")
    vllm_importance_sampling_clip_max: float = Field(3.0, gt=0, description="the cap C of the correction "
                                                                             "(TRL's older name: …_cap)")

    @model_validator(mode="before")
    @classmethod
    def _trl_cap_name(cls, data: Any) -> Any:
        if isinstance(data, dict) and "vllm_importance_sampling_cap" in data:  # TRL < 1.6's name
            data = {**data}
            data.setdefault("vllm_importance_sampling_clip_max", data.pop("vllm_importance_sampling_cap"))
        return data


def sample_groups(lm: AudioLM, examples: list[Example], config: GRPOConfig, rewards: list[Reward],
                  seeds: list[int], engine: Any = None) -> Groups:
    """Encode the prompts (audio once each), sample G completions per prompt (prompt i from seeds[i])
    with the local engine or `engine` (a VLLMEngine), score them."""
    style = config.prompt
    prompts, waveforms = [messages(e.question, e.choices, style) for e in examples], [e.waveform() for e in examples]
    try:
        batch = lm.encode_prompts(prompts, waveforms, max_prompt_tokens=config.max_prompt_length)
    except PromptTooLong as err:
        raise ConfigError(f"item {examples[err.row].id}: {err}") from None
    settings = SamplingSettings(k=config.num_generations, temperature=config.temperature, top_p=config.top_p,
                                top_k=config.top_k,
                                max_new_tokens=config.max_completion_length)
    # a prompt's seed names (seed, step, its place in the step): the same completions on any number of
    # processes and micro-batches
    torch.manual_seed(seeds[0])
    if engine is not None:
        generated = engine.generate(batch, waveforms, prompts, settings, seeds)
    else:
        generated = LocalEngine(lm).generate(batch, settings, with_logprobs=True, seeds=seeds)
    rows = [strip_stop(ids[mask.bool()], lm.stop_token_ids)
            for ids, mask in zip(generated.completion_ids, generated.completion_mask)]
    texts = lm.tokenizer.batch_decode(rows, skip_special_tokens=True)
    g = config.num_generations
    columns = {"answer": [e.answer for e in examples for _ in range(g)],
               "choices": [e.choices for e in examples for _ in range(g)],
               "question": [e.question for e in examples for _ in range(g)],
               "item_id": [e.id for e in examples for _ in range(g)]}
    prompts = [messages(e.question, e.choices, style) for e in examples for _ in range(g)]
    totals, parts = score(rewards, prompts, texts, columns)
    correct = [float(exact_match(t, a) and not hacked(t)) for t, a in zip(texts, columns["answer"])]
    return Groups(examples, generated, texts, torch.tensor(totals), parts, torch.tensor(correct))


def completion_logits(lm: AudioLM, gen: Generated, group_size: int, shared: bool = True,
                      model: torch.nn.Module | None = None, fresh_audio: bool = False) -> torch.Tensor:
    """Logits at the positions that predict each completion token, shape (N, L, V). Shared: each
    prompt runs once per group (shared_prefix.py); plain: every row runs prompt + completion.
    `fresh_audio`: the audio encoder reruns (once per prompt) inside the graph, so it is trained;
    otherwise the rollout's cached frames are reused."""
    if fresh_audio:
        gen = with_fresh_audio(lm, gen, group_size)
    if shared:
        return shared_prefix.completion_logits(lm, gen, group_size, model)
    ids = torch.cat([gen.prompt.input_ids, gen.completion_ids], dim=1)
    mask = torch.cat([gen.prompt.attention_mask, gen.completion_mask], dim=1)
    logits = lm.logits(ids, mask, gen.prompt_embeds, gen.prompt.feature_attention_mask, model=model)
    return logits[:, gen.prompt.input_ids.shape[1] - 1:-1]


def with_fresh_audio(lm: AudioLM, gen: Generated, group_size: int) -> Generated:
    """`gen` with its prompt embeddings recomputed, the encoder run once per prompt and its output
    repeated for the G rows (a repeat's backward sums their gradients into the one encoder pass)."""
    embeds = lm.prompt_embeddings(gen.prompt.rows(slice(None, None, group_size)))
    embeds = embeds.repeat_interleave(group_size, dim=0)
    return replace(gen, prompt_embeds=embeds)


def micro_batch_loss(lm: AudioLM, model: torch.nn.Module, x: MicroBatch, config: GRPOConfig, step_tokens: float,
                     micro_batches: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The policy pass over one micro-batch: its share of the step's loss (ready for backward) and
    its (sum, count) statistics."""
    gen = x.generated
    logits = completion_logits(lm, gen, x.group_size, config.shared_prefix, model,
                               fresh_audio=not config.freeze_audio_tower)
    logp = losses.token_logprobs(logits, gen.completion_ids, config.temperature)
    old_logp = logp.detach() if x.old_logp is None else x.old_logp  # the trained policy at sampling time
    kept = loss_mask(x, config, lm.stop_token_ids)
    mask = kept.float()
    weight = None
    if config.use_vllm and config.vllm_importance_sampling_correction:
        weight = losses.sampling_correction(old_logp, gen.logprobs, mask, config.vllm_importance_sampling_mode,
                                            config.vllm_importance_sampling_clip_max)
    loss, stats = losses.policy_loss(
        logp, old_logp, x.advantages, kept, ratio_level=config.importance_sampling_level,
        loss_type=config.loss_type, epsilon_low=config.epsilon_low, epsilon_high=config.epsilon_high,
        beta=config.beta, ref_logp=x.ref_logp, kl_estimator=config.kl_estimator,
        max_completion_length=config.max_completion_length, step_tokens=step_tokens,
        kl_ratio_weight=config.kl_ratio_weight, sampling_weight=weight)
    # dapo already divides by the step's tokens; the others average the micro-batches
    share = loss if config.loss_type == "dapo" else loss / micro_batches
    if gen.logprobs is not None:  # the sampler's log-probs vs the training pass's under the sampling weights
        stats.update(sampling_mismatch(gen.logprobs, old_logp, mask))
    if weight is not None:
        rows = mask if weight.shape[-1] > 1 else mask[:, :1]
        stats["sampling/importance_sampling_ratio/mean"] = torch.stack([(weight * rows).sum(), rows.sum()])
        stats["sampling/importance_sampling_ratio/max"] = torch.stack([(weight * rows).max(), rows.new_tensor(1.0)])
    stats["entropy"] = torch.stack([(losses.token_entropy(logits, config.temperature) * mask).sum(), mask.sum()])
    stats["loss"] = torch.stack([share.detach().cpu(), torch.tensor(1.0 / micro_batches)])  # the step's objective
    return share, stats


def loss_mask(x: MicroBatch, config: GRPOConfig, stop_ids: list[int]) -> torch.Tensor:
    """The completion tokens the loss counts: all, or with `mask_truncated_completions` only those of
    completions that ended on a stop token (DAPO's overlong filtering)."""
    gen = x.generated
    if not config.mask_truncated_completions:
        return gen.completion_mask
    stopped = torch.isin(gen.completion_ids, torch.tensor(list(stop_ids), device=gen.completion_ids.device))
    ended = (stopped & gen.completion_mask.bool()).any(dim=-1, keepdim=True)
    return gen.completion_mask * ended


def sampling_mismatch(sampled: torch.Tensor, trained: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """|Δ log-prob| between the sampler and the training pass over completion tokens, as (sum, count)
    pairs: the mean, and the max (carried as a sum over one count; `Tally` keeps the max of `…max`)."""
    diff = (sampled.to(trained) - trained).abs() * mask
    return {"sampling/logprob_diff_mean": torch.stack([diff.sum(), mask.sum()]),
            "sampling/logprob_diff_max": torch.stack([diff.max(), diff.new_tensor(1.0)])}


def train_grpo(config: GRPOConfig) -> dict[str, Any]:
    from accelerate.utils import gather_object

    accelerator = make_accelerator(config.dtype)
    rank, world, device = accelerator.process_index, accelerator.num_processes, accelerator.device
    seed_everything(config.seed)
    reward_fns = make_rewards(config.rewards, explicit=config.prompt.format != "implicit")
    examples, left_out = data_source(config).examples(config.split)
    sampler = make_sampler(config, examples)
    g = config.num_generations
    rows = micro_batch_rows(config, world)  # completions per micro-batch and process
    per_rank = rows * config.grad_accum  # completions per process and step
    prompts_per_step = per_rank * world // g
    config = config.with_steps(len(sampler.ids), prompts_per_step)
    by_id = {e.id: e for e in examples if e.id in set(sampler.ids)}

    reference = load_reference(config, accelerator)  # None when β = 0 or under LoRA
    run = start_run(config, accelerator, sampler, config.max_steps * config.num_iterations,
                    train_audio=not config.freeze_audio_tower)
    lm, peft_model, model, scheduler, log = run.lm, run.peft_model, run.model, run.scheduler, run.log
    run.policy_mode()  # no dropout in RL: sampling and the loss see the same function
    engine = start_vllm(config, lm, peft_model, world) if config.use_vllm else None
    for step in tqdm(range(run.start + 1, config.max_steps + 1), desc="grpo", initial=run.start,
                     total=config.max_steps, disable=not accelerator.is_main_process):
        t0 = time.perf_counter()
        # 1. sample and reward: the groups of this process's share of the step's completions
        ids = sampler.take(prompts_per_step)
        split = None  # when groups span micro-batches: (the groups sampled, this process's first row in them)
        if rows % g == 0:  # whole groups per micro-batch, sampled one micro-batch at a time
            per_micro, first = rows // g, rank * per_rank // g
            groups = [sample_groups(lm, [by_id[i] for i in ids[first + k:first + k + per_micro]], config, reward_fns,
                                    [_seed(config.seed, step, first + q) for q in range(k, k + per_micro)], engine)
                      for k in range(0, per_rank // g, per_micro)]
        else:  # one sampling round; `groups` are the ones this process owns (metrics, curriculum)
            owned, split = spanned_groups(lm, ids, by_id, rank * per_rank, per_rank, config, reward_fns, step, engine)
            groups = [owned]
        tally = Tally()
        tally.add_values({"reward": cat(groups, "rewards"), "frac_reward_zero_std": torch.cat(
            [losses.zero_variance_groups(x.rewards, g) for x in groups])})
        if config.filter_zero_variance:
            groups = refill(groups, config, sampler, by_id, lm, reward_fns, step, accelerator, engine)
        if engine is not None:
            engine.sleep()  # GPU sleep mode: the training passes get vLLM's memory
        # 2. advantages: group-relative (batch std pooled over processes), then the micro-batches
        batch_std = pooled_std(cat(groups, "rewards"), accelerator) if config.scale_rewards == "batch" else None
        micro = micro_batches(groups, split, rows, config, batch_std)
        # 3. log-probs of the sampling policy (needed when μ > 1) and of the reference (β > 0)
        with torch.no_grad():
            for x in micro:
                x.advantages = x.advantages.to(device)
                if config.num_iterations > 1:
                    x.old_logp = _logp(lm, x.generated, x.group_size, config)
                if config.beta > 0:
                    with peft_model.disable_adapter() if peft_model is not None else nullcontext():
                        x.ref_logp = _logp(reference or lm, x.generated, x.group_size, config)
        step_tokens = float(accelerator.reduce(sum(loss_mask(x, config, lm.stop_token_ids).sum() for x in micro)
                                               .float(), "sum")) / world
        for _ in range(config.num_iterations):
            # 4. policy pass and backward, one micro-batch at a time (DDP syncs on the last)
            for k, x in enumerate(micro):
                with run.micro_batch(last=k == len(micro) - 1):
                    loss, stats = micro_batch_loss(lm, model, x, config, step_tokens, len(micro))
                    run.backward(loss)
                tally.add(stats)
            # 5. optimizer step
            grad_norm = run.step()  # clip → optimizer step → schedule → zero grads
        sync_s = sync_vllm(engine, peft_model) if engine is not None else None
        # 6. curriculum feedback, logs, checkpoints
        for item_id, rate in gather_object([(e.id, float(x.correct[i * g:(i + 1) * g].mean()))
                                            for x in groups for i, e in enumerate(x.examples)]):
            sampler.observe(item_id, rate)
        if step % config.log_every == 0:
            row = step_metrics(tally, groups, [r.name for r in reward_fns], g, accelerator)
            row.update({"grad_norm": float(grad_norm), "learning_rate": scheduler.get_last_lr()[0],
                        "curriculum/bucket": sampler.stage(ids), "epoch": float(sampler.epoch),
                        "step_time": time.perf_counter() - t0})
            if sync_s is not None:
                row["sampling/weight_sync_s"] = sync_s
            log.log(step, row)
            x = groups[0]  # rank 0 owns the step's first group
            log.samples(step, [{"item_id": x.examples[i // g].id, "answer": x.examples[i // g].answer,
                                "completion": x.texts[i], "reward": float(x.rewards[i])}
                               for i in range(min(config.log_completions, len(x.texts)))])
        if config.eval_every and step % config.eval_every == 0 and step != config.max_steps:
            run.evaluate(step)
        if config.save_every and step % config.save_every == 0:
            run.checkpoint(step, sampler)
    return {**run.finish(), "examples": len(by_id), "left_out": left_out}


def micro_batch_rows(config: GRPOConfig, world: int) -> int:
    """Completions per micro-batch and process; a step's completions must make whole groups (TRL's rule)."""
    g = config.num_generations
    rows = config.completions_per_batch or config.prompts_per_batch * g
    if rows * config.grad_accum * world % g:
        raise ConfigError(f"per_device_train_batch_size {rows} × gradient_accumulation_steps {config.grad_accum} × "
                          f"{world} process(es) = {rows * config.grad_accum * world} completions per step, not a "
                          f"multiple of num_generations {g}: the step must hold whole groups")
    if rows % g and config.filter_zero_variance:
        raise ConfigError(f"filter_zero_variance re-samples whole groups per micro-batch: give a "
                          f"per_device_train_batch_size that is a multiple of num_generations {g} (not {rows})")
    return rows


def spanned_groups(lm: AudioLM, ids: list[str], by_id: dict[str, Example], first: int, count: int,
                   config: GRPOConfig, reward_fns: list[Reward], step: int,
                   engine: Any = None) -> tuple[Groups, tuple[Groups, int]]:
    """Sample the whole groups that the step's completions [first, first + count) belong to: (the
    groups this process owns, i.e. whose first completion is its own, for metrics and the curriculum;
    (every group sampled, the offset of this process's first completion in it))."""
    g = config.num_generations
    lo, hi = first // g, -(-(first + count) // g)
    sampled = sample_groups(lm, [by_id[i] for i in ids[lo:hi]], config, reward_fns,
                            [_seed(config.seed, step, p) for p in range(lo, hi)], engine)
    owned = sampled.keep([p - lo for p in range(lo, hi) if p * g >= first])
    return owned, (sampled, first - lo * g)


def micro_batches(groups: list[Groups], split: tuple[Groups, int] | None, rows: int, config: GRPOConfig,
                  batch_std: torch.Tensor | None) -> list[MicroBatch]:
    """The step's micro-batches with their advantages: the groups as sampled, or (`split`) `rows`
    completions each from this process's share of the spanned groups."""
    g = config.num_generations

    def advantages(x: Groups) -> torch.Tensor:
        return losses.advantages(x.rewards, g, config.scale_rewards, batch_std)

    if split is None:
        return [MicroBatch(x.generated, advantages(x), g) for x in groups]
    sampled, offset = split
    return split_rows(sampled.generated, advantages(sampled), offset, rows, config.grad_accum, math.gcd(rows, g))


def start_vllm(config: GRPOConfig, lm: AudioLM, peft_model: Any, world: int) -> Any:
    """The colocated vLLM engine, holding the policy's current weights (LoRA merged)."""
    from sari_train.rollout.vllm_engine import VLLMEngine, VLLMOptions

    if world > 1:
        raise ConfigError("use_vllm runs on one process for now (one engine per rank is not built); launch one "
                          "process or set use_vllm: false")
    options = VLLMOptions(gpu_memory_utilization=config.vllm_gpu_memory_utilization,
                          enable_sleep_mode=config.vllm_enable_sleep_mode)
    return VLLMEngine(lm, options, peft_model)


def sync_vllm(engine: Any, peft_model: Any) -> float:
    """After every optimizer step: vLLM takes the new weights (seconds it took)."""
    t0 = time.perf_counter()
    engine.wake_up()
    engine.sync_weights(peft_model)
    return time.perf_counter() - t0


def make_sampler(config: GRPOConfig, examples: list[Example]) -> CurriculumSampler:
    """The prompt order; curriculum mode uses items with a bucket (items at 0/k have none). Random
    order needs difficulty only for a band-pass (else its buckets are logged when there is one model's)."""
    try:
        difficulty = data_source(config).difficulty(config.split, config.difficulty_model)
    except ConfigError:  # e.g. scores from several models: random order does not care whose
        if config.sampler == "curriculum" or config.band is not None:
            raise
        difficulty = {}
    ids = [e.id for e in examples]
    if config.sampler == "curriculum":
        scored = [i for i in ids if i in difficulty]
        ids = [i for i in scored if difficulty[i].bucket is not None]
        if scored and not ids:
            raise ConfigError(f"the curriculum is empty: all {len(scored)} scored items of split {config.split!r} "
                              f"were never answered correctly (0/k) and left out (SARI's rule); score with a "
                              f"model that answers some correctly, or set sampler: random")
        if not ids:
            fix = "use its `rl` config (a `bucket` column)" if config.dataset else "run `sari-data difficulty` first"
            raise ConfigError(f"no item of split {config.split!r} in {config.dataset or config.workspace} has a "
                              f"difficulty bucket; {fix} or set sampler: random")
    buckets = {i: d.bucket for i, d in difficulty.items() if d.bucket is not None}
    rates = {i: d.pass_rate for i, d in difficulty.items() if d.pass_rate is not None}
    return CurriculumSampler(ids, buckets, config.sampler, config.seed, config.band, rates)


def refill(groups: list[Groups], config: GRPOConfig, sampler: CurriculumSampler, by_id: dict[str, Example],
           lm: AudioLM, reward_fns: list[Reward], step: int, accelerator: Any, engine: Any = None) -> list[Groups]:
    """Drop zero-variance groups and sample replacements, up to `max_resample_rounds` rounds.
    All processes draw from the shared sampler together, so their orders stay in step."""
    rank = accelerator.process_index
    kept = [x.varied() for x in groups]
    kept = [x for x in kept if x.examples]
    wanted = micro_batch_rows(config, accelerator.num_processes) * config.grad_accum // config.num_generations
    for round_ in range(config.max_resample_rounds):
        have = sum(len(x.examples) for x in kept)
        missing = accelerator.gather(torch.tensor([wanted - have], device=accelerator.device)).tolist()
        if sum(missing) == 0:
            break
        ids = sampler.take(sum(missing))
        first = sum(missing[:rank])
        mine = [by_id[i] for i in ids[first:sum(missing[:rank + 1])]]
        if mine:
            seeds = [_seed(config.seed, step, 10_000 * (round_ + 1) + first + q) for q in range(len(mine))]
            fresh = sample_groups(lm, mine, config, reward_fns, seeds, engine).varied()
            if fresh.examples:
                kept.append(fresh)
    return kept or groups[:1]  # never an empty step: every process must join the gradient sync


def _seed(seed: int, step: int, stream: int) -> int:
    return (seed * 1_000_003 + step * 100_003 + stream) % 2**63


@torch.no_grad()
def _logp(lm: AudioLM, gen: Generated, group_size: int, config: GRPOConfig) -> torch.Tensor:
    logits = completion_logits(lm, gen, group_size, config.shared_prefix)
    return losses.token_logprobs(logits, gen.completion_ids, config.temperature)
