"""`sari-train plan`'s arithmetic against measured peak memory of two SFT steps on CPU.

    python bench/bench_plan.py                 # float32 and bfloat16, with and without checkpointing

The models are the replicas as `sari-train tiny-model --replica qwen2-audio|qwen2.5-omni`
writes them (their own config.json, tokenizer and feature extractor; a 30-s clip: 750 audio
tokens a prompt; the Omni thinker loaded from the full checkpoint): at their default size (hidden
32, one layer: the real 156,032 / 152,064-token vocabulary, so the logits dominate), then with
hidden 256 and 4 layers; last, not a replica, a Qwen2-Audio model on a small vocabulary with 8
layers (the decoder layers' activations dominate, so checkpointing shows). What is
measured: the resident set of a fresh child process, sampled every 2 ms through two optimizer
steps (forward, backward, AdamW step; the second runs with AdamW's moments allocated), minus
its resident set once the libraries are imported, before the model is loaded, and minus the
batch's own tensors (log-mels, ids: not in the plan) (glibc told to
return freed memory, so the resident set follows live tensors). Printed side by side with the
plan's total for one GPU (no DDP
buckets with one process); the plan should be within 20 %.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# glibc keeps freed blocks (and raises its mmap threshold as big blocks come and go), so the
# resident set would stay at old high-water marks; fixed low thresholds make it follow what is live.
os.environ.update(MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="65536")


def build(folder: Path, replica: str, hidden: int, layers: int) -> Path:
    """What `sari-train tiny-model FOLDER --replica NAME --hidden-size H --layers L` writes, or
    (replica "small-vocab") a Qwen2-Audio model on the tiny tokenizer's vocabulary."""
    if replica == "small-vocab":
        return build_small_vocab(folder, hidden, layers)
    from sari_train.models.replica import build_replica

    return build_replica(replica, folder, hidden_size=hidden, layers=layers)


def build_small_vocab(folder: Path, hidden: int, layers: int) -> Path:
    import torch
    from transformers import Qwen2AudioConfig, Qwen2AudioForConditionalGeneration

    from sari_train.models.tiny import _feature_extractor, build_tokenizer

    tokenizer = build_tokenizer()
    config = Qwen2AudioConfig(
        audio_config=dict(model_type="qwen2_audio_encoder", d_model=64, encoder_layers=1, encoder_attention_heads=2,
                          encoder_ffn_dim=128, num_mel_bins=128, max_source_positions=1500),
        text_config=dict(model_type="qwen2", vocab_size=len(tokenizer), hidden_size=hidden,
                         intermediate_size=3 * hidden, num_hidden_layers=layers, num_attention_heads=4,
                         num_key_value_heads=4, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id),
        audio_token_index=tokenizer.convert_tokens_to_ids("<|AUDIO|>"))
    torch.manual_seed(0)
    Qwen2AudioForConditionalGeneration(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    _feature_extractor(30).save_pretrained(folder)
    return folder


def step(model_dir: str, dtype: str, checkpointing: bool, batch: int, queue: mp.Queue) -> None:
    import numpy as np
    import psutil
    import torch

    torch.set_num_threads(1)
    from transformers.utils import logging

    logging.set_verbosity_error()  # the Omni replica's talker config warns about token ids, as the real one does
    # imported before the baseline
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration, Qwen2AudioForConditionalGeneration  # noqa: F401

    from sari_train.sft import completion_loss
    from sari_train.training import TrainConfig, load_policy, make_accelerator, optimizer_and_schedule

    process = psutil.Process()
    base = process.memory_info().rss  # libraries loaded: what follows is the model, its state and the step
    config = TrainConfig(model=model_dir, workspace=Path("."), dtype=dtype, gradient_checkpointing=checkpointing)
    accelerator = make_accelerator(dtype)
    lm, _ = load_policy(config, accelerator.device)
    optimizer, scheduler = optimizer_and_schedule(lm.model, config, 10)
    model, optimizer, scheduler = accelerator.prepare(lm.model, optimizer, scheduler)
    messages = [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": "Which tone is higher?"}]}]
    before_inputs = process.memory_info().rss
    prompt = lm.encode_prompts([messages] * batch, [np.zeros(16000 * 30, dtype=np.float32)] * batch)
    completion = torch.randint(100, 1000, (batch, 64))  # ordinary tokens: no special or audio ids
    ids = torch.cat([prompt.input_ids, completion], 1)
    labels = torch.cat([torch.full_like(prompt.input_ids, -100), completion], 1)
    base += process.memory_info().rss - before_inputs  # the batch itself (mels, ids) is not in the plan
    peak, running = [process.memory_info().rss], True

    def sample() -> None:
        while running:
            peak.append(process.memory_info().rss)
            time.sleep(0.002)

    thread = threading.Thread(target=sample)
    thread.start()
    model.train()
    for _ in range(2):  # the second step holds AdamW's moments through forward and backward
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), input_features=prompt.input_features,
                    feature_attention_mask=prompt.feature_attention_mask, use_cache=False)
        loss, _ = completion_loss(out.logits, labels)
        del out
        accelerator.backward(loss)
        del loss
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    running = False
    thread.join()
    queue.put((max(peak) - base, prompt.input_ids.shape[1], completion.shape[1]))


# (replica, hidden, layers, batch): each replica as `sari-train tiny-model --replica` writes it
# (hidden 32, one layer: the real 156,032 / 152,064-row vocabulary is nearly all of it, so the
# logits dominate), then wider and deeper (hidden 256, 4 layers: the decoder layers count too).
# Last, not a replica: a small vocabulary, 8 layers and 3 sequences, where the decoder layers'
# activations dominate (as in a 7B model) and checkpointing shows.
MODELS = (("qwen2-audio", 32, 1, 1), ("qwen2.5-omni", 32, 1, 1), ("qwen2-audio", 256, 4, 1), ("qwen2.5-omni", 256, 4, 1),
          ("small-vocab", 256, 8, 3))


def main() -> None:
    for replica, hidden, layers, batch in MODELS:
        compare(replica, hidden, layers, batch)


def compare(replica: str, hidden: int, layers: int, batch: int) -> None:
    from transformers.utils import logging

    from sari_train import plan

    logging.set_verbosity_error()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = str(build(Path(tmp) / "model", replica, hidden, layers))
        dims = plan.load_dims(model_dir)
        name = "small-vocabulary Qwen2-Audio" if replica == "small-vocab" else f"{replica} replica"
        print(f"\n{name}: {plan.parameter_counts(dims).total / 1e6:.1f}M parameters (vocab {dims.vocab}, hidden "
              f"{dims.hidden}, {dims.layers} layers); two SFT steps, batch {batch}")
        print(f"{'dtype':>9} {'ckpt':>5} {'tokens':>7} {'measured MiB':>13} {'plan MiB':>9} {'plan/measured':>14}")
        for dtype in ("float32", "bfloat16"):
            for checkpointing in (False, True):
                queue = mp.get_context("spawn").Queue()
                child = mp.get_context("spawn").Process(target=step, args=(model_dir, dtype, checkpointing, batch, queue))
                child.start()
                measured, prompt_tokens, completion_tokens = queue.get()
                child.join()
                work = plan.Workload(sequences=batch, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                                     mixed=dtype != "float32")
                estimate = plan.peak(plan.memory_per_gpu(dims, work, "ddp", gpus=1, checkpointing=checkpointing))
                print(f"{dtype:>9} {'yes' if checkpointing else '-':>5} {batch * (prompt_tokens + completion_tokens):>7} "
                      f"{measured / 2**20:>13.0f} {estimate / 2**20:>9.0f} {estimate / measured:>14.2f}")


if __name__ == "__main__":
    main()
