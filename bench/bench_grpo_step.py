"""GRPO step cost, measured side by side in one run.

    python bench/bench_grpo_step.py [STEPS]

1. Our GRPO step vs TRL's GRPOTrainer on the same text-only tiny Qwen2 and the same settings
   (G = 8, 2 prompts per step, 32 new tokens, β = 0.04, k3, μ = 1, temperature 1): median seconds
   per step (generation + rewards + reference + loss + backward + optimizer). Ours is the step of
   `sari_train/grpo/train.py` (same functions, minus the audio prompt encoding: the model has no audio).
   Target: ours / TRL ≤ 1.0.
2. Shared vs repeated audio encoding for one GRPO step of a tiny Qwen2-Audio with a 30-second
   window (750 audio tokens per prompt), G = 8: our path encodes each clip once and reuses the
   frames for generation, the policy pass and the reference pass; the repeated path (R1-AQA's
   trainer) re-encodes the clip for each of the G samples in every pass. Target: ≥ 2×.
"""

from __future__ import annotations

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


def trl_step_times(folder: Path, steps: int) -> list[float]:
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    args = GRPOConfig(output_dir=str(folder / "trl"), per_device_train_batch_size=G * PROMPTS, num_generations=G,
                      max_completion_length=NEW_TOKENS, beta=BETA, learning_rate=1e-6, temperature=1.0,
                      use_cpu=True, report_to=[], logging_steps=1, max_steps=steps + 1, bf16=False,
                      save_strategy="no", use_bias_correction_kl=False, disable_tqdm=True, log_level="error")
    data = Dataset.from_dict({"prompt": PROMPT_TEXTS * (G * (steps + 1))})
    tokenizer = AutoTokenizer.from_pretrained(folder, padding_side="left")
    trainer = GRPOTrainer(model=str(folder), reward_funcs=length_reward, args=args, train_dataset=data,
                          processing_class=tokenizer)
    trainer.train()
    times = [row["step_time"] for row in trainer.state.log_history if "step_time" in row]
    return times[1:]  # the first step pays for warm-up


def our_step_times(folder: Path, steps: int) -> list[float]:
    """The GRPO loop's step for a text prompt: sample → reward → advantage → ref → loss → step."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sari_train.grpo import losses
    from sari_train.rollout import completion_mask

    tokenizer = AutoTokenizer.from_pretrained(folder, padding_side="left")
    policy = AutoModelForCausalLM.from_pretrained(folder).eval()
    reference = AutoModelForCausalLM.from_pretrained(folder).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-6)
    stop = [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")]
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": t}], tokenize=False,
                                           add_generation_prompt=True) for t in PROMPT_TEXTS]
    prompt = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    ids, mask = prompt["input_ids"].repeat_interleave(G, 0), prompt["attention_mask"].repeat_interleave(G, 0)
    times = []
    for step in range(steps + 1):
        t0 = time.perf_counter()
        with torch.no_grad():
            out = policy.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_k=0,
                                  max_new_tokens=NEW_TOKENS, eos_token_id=stop, pad_token_id=tokenizer.pad_token_id)
        completion = out[:, ids.shape[1]:]
        cmask = completion_mask(completion, stop)
        decoded = tokenizer.batch_decode(completion * cmask, skip_special_tokens=True)
        rewards = torch.tensor(length_reward(None, decoded))
        adv = losses.advantages(rewards, G)
        full, full_mask = torch.cat([ids, completion], 1), torch.cat([mask, cmask], 1)
        with torch.no_grad():
            ref_logits = reference(input_ids=full, attention_mask=full_mask).logits[:, ids.shape[1] - 1:-1]
            ref_logp = losses.token_logprobs(ref_logits, completion)
        logits = policy(input_ids=full, attention_mask=full_mask).logits[:, ids.shape[1] - 1:-1]
        logp = losses.token_logprobs(logits, completion)
        loss, _ = losses.policy_loss(logp, logp.detach(), adv, cmask, beta=BETA, ref_logp=ref_logp)
        loss.backward()
        losses.token_entropy(logits)
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return times[1:]


def audio_step_time(lm, batch, shared: bool, repeats: int = 3) -> float:
    """One GRPO step's model work (generate, reference pass, policy pass + backward) on audio prompts."""
    from sari_train.grpo import losses
    from sari_train.rollout import LocalEngine, SamplingSettings

    settings = SamplingSettings(k=G, temperature=1.0, max_new_tokens=16)
    engine = LocalEngine(lm, shared_encoder=shared)
    times = []
    for _ in range(repeats):
        torch.manual_seed(0)
        t0 = time.perf_counter()
        gen = engine.generate(batch, settings)
        ids = torch.cat([gen.prompt.input_ids, gen.completion_ids], 1)
        mask = torch.cat([gen.prompt.attention_mask, gen.completion_mask], 1)
        start = gen.prompt.input_ids.shape[1] - 1

        def logits():
            if shared:  # the cached frames: no encoder run
                return lm.logits(ids, mask, gen.prompt_embeds, gen.prompt.feature_attention_mask)[:, start:-1]
            return lm.model(input_ids=ids, attention_mask=mask, input_features=gen.prompt.input_features,
                            feature_attention_mask=gen.prompt.feature_attention_mask).logits[:, start:-1]

        with torch.no_grad():
            ref_logp = losses.token_logprobs(logits(), gen.completion_ids)
        logp = losses.token_logprobs(logits(), gen.completion_ids)
        loss, _ = losses.policy_loss(logp, logp.detach(), torch.randn(len(ids)), gen.completion_mask, beta=BETA,
                                     ref_logp=ref_logp)
        loss.backward()
        lm.model.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(steps: int = 16) -> None:
    from corpus.testing import noise_clips
    from sari_train.models.adapter import AudioLM
    from sari_train.models.tiny import build_tiny_qwen2_audio, build_tiny_text_lm
    from sari_train.prompts import messages

    with tempfile.TemporaryDirectory() as tmp:
        build_tiny_text_lm(Path(tmp) / "text", hidden_size=64)
        ours_times = our_step_times(Path(tmp) / "text", steps)
        trl_times = trl_step_times(Path(tmp) / "text", steps)
        lm = AudioLM.load(build_tiny_qwen2_audio(Path(tmp) / "audio30", window_seconds=30))
        batch = lm.encode_prompts([messages("Is the tone high or low?", ["high", "low"])] * PROMPTS,
                                  noise_clips(PROMPTS, seconds=30.0))
        shared = audio_step_time(lm, batch, shared=True)
        repeated = audio_step_time(lm, batch, shared=False)
    print(f"GRPO step, text-only tiny Qwen2, G={G}, {PROMPTS} prompts, {NEW_TOKENS} new tokens, beta={BETA}")
    # The median is what a run feels like; the minimum is least disturbed by other load on the machine.
    ours, trl = statistics.median(ours_times), statistics.median(trl_times)
    print(f"{'':<34}{'median s':>10}{'ratio':>10}{'min s':>10}{'ratio':>10}")
    print(f"{'TRL GRPOTrainer':<34}{trl:>10.3f}{1.0:>10.2f}{min(trl_times):>10.3f}{1.0:>10.2f}")
    print(f"{'sari-train grpo step':<34}{ours:>10.3f}{ours / trl:>10.2f}{min(ours_times):>10.3f}"
          f"{min(ours_times) / min(trl_times):>10.2f}   (ours / TRL, target <= 1.0)")
    print(f"\nGRPO step on a tiny Qwen2-Audio, 30-s window ({int(batch.input_ids.shape[1])} prompt tokens), G={G}")
    print(f"{'repeated audio (encode per sample)':<34}{repeated:>10.3f}{1.0:>10.2f}")
    print(f"{'shared audio (encode per prompt)':<34}{shared:>10.3f}{repeated / shared:>10.2f}   "
          f"(speed-up, target >= 2.0)")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
