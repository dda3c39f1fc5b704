"""GRPO step cost, measured side by side in one run; the last line is a JSON of the three ratios.

    python bench/bench_grpo_step.py [STEPS]

Times are per-step medians of CPU seconds of this process, run on one thread (wall seconds are
printed beside them): on a shared machine other processes' load stretches wall time, not CPU time.

1. Our GRPO step vs TRL's GRPOTrainer on the same text-only tiny Qwen2 and the same settings
   (G = 8, 2 prompts per step, 32 new tokens, β = 0.04, k3, μ = 1, temperature 1), generation to
   optimizer step. Ours is the step of `sari_train/grpo/train.py` for a text prompt: one prefill per
   prompt whose cache serves the G samples, sampled by `LocalEngine`'s loop (`sample_after_prefill`,
   the tokens `generate` would draw), shared-prefix reference and policy passes. Target:
   ours / TRL ≤ 0.5.
2. One GRPO step (generate, reference pass, policy pass + backward) of a tiny Qwen2-Audio with a
   30-second window (750 audio tokens per prompt), G = 8, completions ≤ 32 tokens. Repeated
   (R1-AQA's trainer): each of the G rows encodes its audio and runs its whole prompt, in
   generation and in both passes. Ours: audio encoded once per prompt, one prefill per prompt,
   shared-prefix passes. Target: repeated / ours ≥ 7.
3. Peak memory of the training passes (reference + policy forward + backward) on the same
   rollout, shared prefix vs the unshared path (`shared_prefix: false`, the audio frames cached in
   both): the peak of live tensor bytes allocated during the passes, from torch.profiler's memory
   events (every CPU allocation and free, summed in time order). Target: ≤ 0.3.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

G, PROMPTS, NEW_TOKENS, BETA = 8, 2, 32, 0.04


PROMPT_TEXTS = ["Is the tone high or low? Please choose the answer from the following options: ['high', 'low'].",
                "Which comes first: the tone or the noise? Please choose the answer from the following options: "
                "['the tone', 'the noise']."]


def length_reward(prompts, completions, **_):
    return [float(len(c) % 5) for c in completions]


class Clock:
    """Wall and CPU seconds of each step. CPU seconds of this single-threaded process are what we
    compare: on a shared machine other processes' load stretches wall time but not them."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def start(self) -> None:
        self._t = (time.perf_counter(), time.process_time())

    def stop(self) -> None:
        self.wall.append(time.perf_counter() - self._t[0])
        self.cpu.append(time.process_time() - self._t[1])

    def skip_first(self) -> Clock:  # the first step pays for warm-up
        self.wall, self.cpu = self.wall[1:], self.cpu[1:]
        return self


def trl_step_times(folder: Path, steps: int) -> Clock:
    """TRL's whole step, generation to optimizer step (its own `step_time` leaves the optimizer out)."""
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    clock = Clock()

    class Timer(TrainerCallback):
        def on_step_begin(self, *_, **__):
            clock.start()

        def on_step_end(self, *_, **__):
            clock.stop()

    args = GRPOConfig(output_dir=str(folder / "trl"), per_device_train_batch_size=G * PROMPTS, num_generations=G,
                      max_completion_length=NEW_TOKENS, beta=BETA, learning_rate=1e-6, temperature=1.0,
                      use_cpu=True, report_to=[], logging_steps=1, max_steps=steps + 1, bf16=False,
                      save_strategy="no", use_bias_correction_kl=False, disable_tqdm=True, log_level="error")
    data = Dataset.from_dict({"prompt": PROMPT_TEXTS * (G * (steps + 1))})
    tokenizer = AutoTokenizer.from_pretrained(folder, padding_side="left")
    trainer = GRPOTrainer(model=str(folder), reward_funcs=length_reward, args=args, train_dataset=data,
                          processing_class=tokenizer, callbacks=[Timer()])
    trainer.train()
    return clock.skip_first()


def our_step_times(folder: Path, steps: int) -> Clock:
    """Our GRPO step for a text prompt, as `sari_train/grpo/train.py` runs it: each prompt prefilled
    once and its cache repeated for the G samples, sampled by `LocalEngine`'s loop, reward, advantage, reference
    and policy passes with the shared prefix, backward, clip, optimizer step."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sari_train.grpo import losses
    from sari_train.rollout import SamplingSettings, completion_mask, row_uniforms, sample_after_prefill
    from sari_train.shared_prefix import shared_prefix_logits

    settings = SamplingSettings(k=G, temperature=1.0, max_new_tokens=NEW_TOKENS)
    tokenizer = AutoTokenizer.from_pretrained(folder, padding_side="left")
    policy = AutoModelForCausalLM.from_pretrained(folder).eval()
    reference = AutoModelForCausalLM.from_pretrained(folder).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-6)
    stop = [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")]
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": t}], tokenize=False,
                                           add_generation_prompt=True) for t in PROMPT_TEXTS]
    prompt = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    ids, mask = prompt["input_ids"], prompt["attention_mask"]

    def completion_logits(model, completion, full_mask):
        embed = model.get_input_embeddings()
        positions = (full_mask.long().cumsum(-1) - 1).clamp(min=0)  # real tokens before each (AudioLM.position_ids)
        inputs = torch.cat([ids[:, -1:].repeat_interleave(G, 0), completion[:, :-1]], 1)
        return shared_prefix_logits(model.model, model, lambda: embed(ids[:, :-1]), inputs, full_mask, positions, G)

    clock = Clock()
    for _ in range(steps + 1):
        clock.start()
        with torch.no_grad():
            positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
            cache = policy.model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=positions[:, :-1],
                                 use_cache=True).cache  # no head
            cache.batch_repeat_interleave(G)
            completion, _ = sample_after_prefill(policy, cache, ids[:, -1:].repeat_interleave(G, 0),
                                                 mask.repeat_interleave(G, 0), positions[:, -1:].repeat_interleave(G, 0),
                                                 row_uniforms(range(len(ids)), G, NEW_TOKENS), settings, stop,
                                                 tokenizer.pad_token_id)
        cmask = completion_mask(completion, stop)
        decoded = tokenizer.batch_decode(completion * cmask, skip_special_tokens=True)
        adv = losses.advantages(torch.tensor(length_reward(None, decoded)), G)
        full_mask = torch.cat([mask.repeat_interleave(G, 0), cmask], 1)
        with torch.no_grad():
            ref_logp = losses.token_logprobs(completion_logits(reference, completion, full_mask), completion)
        logits = completion_logits(policy, completion, full_mask)
        logp = losses.token_logprobs(logits, completion)
        loss, _ = losses.policy_loss(logp, logp.detach(), adv, cmask, beta=BETA, ref_logp=ref_logp)
        loss.backward()
        losses.token_entropy(logits)
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        clock.stop()
    return clock.skip_first()


def training_passes(lm, gen, shared: bool) -> None:
    """The reference pass (no gradient) and the policy pass with its backward, on one rollout."""
    from sari_train.grpo import losses
    from sari_train.grpo.train import completion_logits

    with torch.no_grad():
        ref_logp = losses.token_logprobs(completion_logits(lm, gen, G, shared), gen.completion_ids)
    logp = losses.token_logprobs(completion_logits(lm, gen, G, shared), gen.completion_ids)
    advantages = torch.linspace(-1, 1, len(logp))
    loss, _ = losses.policy_loss(logp, logp.detach(), advantages, gen.completion_mask, beta=BETA, ref_logp=ref_logp)
    loss.backward()
    lm.model.zero_grad(set_to_none=True)


def repeated_step(lm, batch) -> None:
    """R1-AQA's trainer: each of the G rows encodes its audio and runs its whole prompt, in
    generation and in both passes."""
    from sari_train.grpo import losses
    from sari_train.rollout import completion_mask

    rows = batch.repeat(G)
    with torch.no_grad():
        out = lm.model.generate(**rows.model_inputs(), do_sample=True, temperature=1.0, top_k=0,
                                max_new_tokens=NEW_TOKENS, eos_token_id=lm.stop_token_ids,
                                pad_token_id=lm.tokenizer.pad_token_id)
    start = rows.input_ids.shape[1]
    completion = out[:, start:]
    cmask = completion_mask(completion, lm.stop_token_ids)
    mask = torch.cat([rows.attention_mask, cmask], 1)

    def logp():
        logits = lm.model(input_ids=out, attention_mask=mask, input_features=rows.input_features,
                          feature_attention_mask=rows.feature_attention_mask).logits[:, start - 1:-1]
        return losses.token_logprobs(logits, completion)

    with torch.no_grad():
        ref_logp = logp()
    new = logp()
    loss, _ = losses.policy_loss(new, new.detach(), torch.linspace(-1, 1, len(new)), cmask, beta=BETA,
                                 ref_logp=ref_logp)
    loss.backward()
    lm.model.zero_grad(set_to_none=True)


def audio_step_times(lm, batch, ours: bool, repeats: int = 3) -> Clock:
    """One GRPO step's model work on audio prompts: generate G completions, reference pass, policy
    pass + backward. Ours: audio encoded once per prompt, one prefill per prompt (`LocalEngine`),
    shared-prefix passes; repeated: audio and prompt processed G times everywhere."""
    from sari_train.rollout import LocalEngine, SamplingSettings

    settings = SamplingSettings(k=G, temperature=1.0, max_new_tokens=NEW_TOKENS)
    clock = Clock()
    for _ in range(repeats):
        torch.manual_seed(0)
        clock.start()
        if ours:
            training_passes(lm, LocalEngine(lm).generate(batch, settings), shared=True)
        else:
            repeated_step(lm, batch)
        clock.stop()
    return clock


def peak_tensor_bytes(fn) -> int:
    """Peak of live tensor bytes allocated while `fn` runs: torch.profiler's memory events (every
    CPU allocation and free, in time order) summed up. Unlike the process's RSS this is neither
    blurred by the allocator keeping freed pages nor by other processes on the machine."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


def main(steps: int = 16) -> None:
    from corpus.testing import noise_clips
    from sari_train.models.adapter import AudioLM
    from sari_train.models.tiny import build_tiny_qwen2_audio, build_tiny_text_lm
    from sari_train.prompts import messages
    from sari_train.rollout import LocalEngine, SamplingSettings

    torch.set_num_threads(1)  # CPU seconds then measure work, whatever else runs on the machine
    with tempfile.TemporaryDirectory() as tmp:
        build_tiny_text_lm(Path(tmp) / "text", hidden_size=64)
        ours = our_step_times(Path(tmp) / "text", steps)
        trl = trl_step_times(Path(tmp) / "text", steps)
        lm = AudioLM.load(build_tiny_qwen2_audio(Path(tmp) / "audio30", window_seconds=30))
        lm.model.model.audio_tower.requires_grad_(False)  # as in training: the audio path is frozen
        lm.model.model.multi_modal_projector.requires_grad_(False)
        batch = lm.encode_prompts([messages("Is the tone high or low?", ["high", "low"]),
                                   messages("Which comes first: the tone or the noise?", ["the tone", "the noise"])],
                                  noise_clips(PROMPTS, seconds=30.0))
        shared = audio_step_times(lm, batch, ours=True)
        repeated = audio_step_times(lm, batch, ours=False)
        torch.manual_seed(0)
        gen = LocalEngine(lm).generate(batch, SamplingSettings(k=G, temperature=1.0, max_new_tokens=NEW_TOKENS))
        memory = {name: peak_tensor_bytes(lambda: training_passes(lm, gen, shared)) / 2**20
                  for name, shared in (("shared", True), ("unshared", False))}

    def row(name: str, clock: Clock, base: Clock, note: str = "") -> None:
        cpu, wall = statistics.median(clock.cpu), statistics.median(clock.wall)
        print(f"{name:<38}{cpu:>9.3f}{cpu / statistics.median(base.cpu):>8.2f}{wall:>9.3f}"
              f"{wall / statistics.median(base.wall):>8.2f}{note}")

    header = f"{'median seconds per step':<38}{'CPU':>9}{'ratio':>8}{'wall':>9}{'ratio':>8}"
    print(f"GRPO step, text-only tiny Qwen2, G={G}, {PROMPTS} prompts, {NEW_TOKENS} new tokens, beta={BETA}, "
          f"{steps} steps, one thread")
    print(header)
    row("TRL GRPOTrainer", trl, trl)
    row("sari-train grpo step", ours, trl, "   (ours / TRL, target <= 0.5)")
    print(f"\nGRPO step on a tiny Qwen2-Audio, 30-s window ({int(batch.input_ids.shape[1])} prompt tokens), G={G}, "
          f"{PROMPTS} prompts, completions <= {NEW_TOKENS} tokens, {len(shared.cpu)} steps")
    print(header)
    row("repeated (R1-AQA: audio+prompt x G)", repeated, repeated)
    row("ours (audio and prompt once)", shared, repeated)
    speedup = statistics.median(repeated.cpu) / statistics.median(shared.cpu)
    print(f"{'':<38}repeated / ours = {speedup:.2f}   (target >= 7)")
    print("\nPeak tensor memory of the training passes (reference + policy forward + backward), MiB")
    print(f"{'unshared (prompt + completion per row)':<38}{memory['unshared']:>9.1f}{1.0:>8.2f}")
    print(f"{'shared prefix':<38}{memory['shared']:>9.1f}{memory['shared'] / memory['unshared']:>8.2f}"
          f"   (target <= 0.3)")
    print(json.dumps({"repeated_over_ours": round(speedup, 2),
                      "memory_ours_over_unshared": round(memory["shared"] / memory["unshared"], 3),
                      "ours_over_trl": round(statistics.median(ours.cpu) / statistics.median(trl.cpu), 2)}))


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
