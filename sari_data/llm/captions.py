"""`sari-data captions`: describe clips with an audio-capable model.

Two backends: an OpenAI-compatible endpoint that accepts audio in chat (`input_audio` content
parts, base64 16-bit WAV at 16 kHz), or a local transformers Qwen2-Audio checkpoint folder.
Two inputs: a clips file (JSONL, one clip per line) or a folder of audio files, captioned into a
clips file that `sari-data questions` reads; or the items of a workspace that have no caption yet.
Both backends go through the request cache, so a re-run never captions a clip twice.

    sari-data captions --clips clips.jsonl --out captioned.jsonl --workspace W --model qwen2-audio --base-url URL
    sari-data captions --workspace W --split train --local-model models/Qwen2-Audio-7B-Instruct
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import os
import re
from pathlib import Path
from typing import Any

import librosa
import numpy as np
import soundfile as sf
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from corpus.provenance import recorded_run
from corpus.records import Task
from corpus.store import Workspace
from sari_data.llm.client import LLMClient, check_transport
from sari_data.llm.config import LLMConfig
from sari_data.llm.runner import CACHE_FILE, open_client, run_all
from sari_data.llm.cache import RequestCache

SAMPLE_RATE = 16000
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3"}
CAPTION_PROMPT = ("Describe this audio clip in one or two sentences: the sound events, music (instruments, genre, "
                  "tempo, mood) or speech (speakers, emotion, what is said), and their order. Describe only what "
                  "you hear.")
REFUSAL = re.compile(r"^(i'?m sorry|sorry|i can(no|')t|as an ai|i am unable|i'm unable)", re.IGNORECASE)


class Clip(BaseModel):
    """One clip to caption or to write questions about (a line of a clips file)."""

    model_config = ConfigDict(extra="forbid")
    source: str = Field(min_length=1)
    source_id: str = Field(min_length=1)
    audio: str | None = None  # a path, relative to the clips file's folder or absolute
    caption: str | None = None
    caption_source: str | None = None
    task: Task | None = None  # a hint for question writing
    license: str = "unknown"
    meta: dict[str, Any] = Field(default_factory=dict)


def read_clips(path: Path) -> list[tuple[str, Clip | str]]:
    """(locator, clip or error message) per clip; a folder yields every audio file in it."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
        return [(str(p), Clip(source=path.name, source_id=p.relative_to(path).as_posix(), audio=str(p.resolve())))
                for p in files]
    found: list[tuple[str, Clip | str]] = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        locator = f"{path}:{number}"
        try:
            clip = Clip.model_validate_json(line)
        except ValidationError as err:
            found.append((locator, f"not a clip record: {err.errors()[0]['msg']} at {err.errors()[0]['loc']}"))
            continue
        if clip.audio and not Path(clip.audio).is_absolute():
            clip = clip.model_copy(update={"audio": str((path.parent / clip.audio).resolve())})
        found.append((locator, clip))
    return found


def write_clips(path: Path, clips: list[Clip]) -> Path:
    """Write a clips file atomically (temp file + rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text("".join(c.model_dump_json() + "\n" for c in clips))
    os.replace(tmp, path)
    return path


def load_audio(path: str | Path) -> np.ndarray:
    """A file as float32 mono at 16 kHz."""
    samples, rate = sf.read(path, dtype="float32", always_2d=True)
    mono = samples.mean(axis=1)
    return librosa.resample(mono, orig_sr=rate, target_sr=SAMPLE_RATE) if rate != SAMPLE_RATE else mono


def wav_base64(samples: np.ndarray) -> str:
    buffer = io.BytesIO()
    sf.write(buffer, samples, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return base64.b64encode(buffer.getvalue()).decode()


def caption_messages(samples: np.ndarray) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": wav_base64(samples), "format": "wav"}},
        {"type": "text", "text": CAPTION_PROMPT}]}]


def caption_problem(text: str) -> tuple[str, str] | None:
    if REFUSAL.match(text.strip()):
        return "refusal", "describe the audio instead of declining"
    if len(text.split()) < 3:
        return "caption_too_short", "the caption needs at least a full sentence"
    return None


class LocalCaptioner:
    """A local Qwen2-Audio checkpoint folder (processor + model), greedy decoding, cached like the endpoint."""

    def __init__(self, path: str | Path, cache: RequestCache, max_new_tokens: int = 96):
        from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

        self.name = f"local:{Path(path).name}"
        self.cache = cache
        self.max_new_tokens = max_new_tokens
        self.processor = AutoProcessor.from_pretrained(path)
        self.model = Qwen2AudioForConditionalGeneration.from_pretrained(path).eval()

    def caption(self, samples: np.ndarray) -> tuple[str | None, str]:
        import torch

        key = hashlib.sha256(f"{self.name}\x00{CAPTION_PROMPT}\x00{self.max_new_tokens}".encode()
                             + samples.astype("<f4").tobytes()).hexdigest()
        cached = self.cache.get(key)
        if cached is None:
            turn = [{"role": "user", "content": [{"type": "audio", "audio_url": "clip"},
                                                 {"type": "text", "text": CAPTION_PROMPT}]}]
            text = self.processor.apply_chat_template(turn, add_generation_prompt=True, tokenize=False)
            inputs = self.processor(text=text, audio=[samples], sampling_rate=SAMPLE_RATE, return_tensors="pt")
            with torch.no_grad():
                out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
            reply = self.processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)[0]
            cached = {"content": reply.strip()}
            if caption_problem(cached["content"]) is None:  # a failed caption is tried again next run
                self.cache.put(key, cached)
        problem = caption_problem(cached["content"])
        return (None, f"{problem[0]}: {problem[1]}") if problem else (cached["content"], "")


async def _endpoint_caption(client: LLMClient, key: str, samples: np.ndarray) -> tuple[str, str | None, str]:
    outcome = await client.ask(caption_messages(samples), check=caption_problem)
    return key, outcome.value, "" if outcome.ok else f"{outcome.reason}: {outcome.message}"


def caption_all(jobs: dict[str, Path], ws_root: Path, config: LLMConfig, local_model: str | None,
                progress: bool) -> tuple[dict[str, tuple[str | None, str]], str, dict | None]:
    """Caption audio files by key; returns ({key: (caption or None, failure reason)}, caption source, usage)."""
    results: dict[str, tuple[str | None, str]] = {}
    if not jobs:
        return results, "", None
    if local_model:
        cache = RequestCache(ws_root / CACHE_FILE)
        captioner = LocalCaptioner(local_model, cache)
        for key, path in jobs.items():
            results[key] = captioner.caption(load_audio(path))
        cache.close()
        return results, captioner.name, None
    client = open_client(ws_root, config)

    async def stage() -> None:
        def write(batch: list[tuple[str, str | None, str]]) -> None:
            results.update({key: (caption, reason) for key, caption, reason in batch})
        try:
            await run_all((_endpoint_caption(client, k, load_audio(p)) for k, p in jobs.items()), write,
                          total=len(jobs), desc="captions", progress=progress)
        finally:
            await client.close()
            client.cache.close()

    asyncio.run(stage())
    return results, f"llm:{client.config.model}", client.usage.report(client.config)


def run_captions(workspace: str | Path, *, config: LLMConfig = LLMConfig(), clips: Path | None = None,
                 out: Path | None = None, split: str | None = None, local_model: str | None = None,
                 redo: bool = False, progress: bool = True) -> dict[str, Any]:
    """Caption a clips file/folder into `out`, or (no `clips`) the workspace items without a caption."""
    config = config.resolved()
    with Workspace(workspace) as ws, recorded_run(ws, "captions", llm=config.model_dump(), local_model=local_model,
                                                  clips=str(clips) if clips else None, split=split) as results:
        failures: dict[str, str] = {}
        if clips is not None:
            if out is None:
                raise ValueError("captioning a clips file needs --out for the captioned clips file")
            entries = read_clips(clips)
            failures.update({loc: f"bad_clip: {c}" for loc, c in entries if isinstance(c, str)})
            todo = {loc: c for loc, c in entries if isinstance(c, Clip) and c.audio and (redo or not c.caption)}
            failures.update({loc: "missing_audio: the clip names no audio file" for loc, c in entries
                             if isinstance(c, Clip) and not c.audio})
            captions, source, usage = caption_all({k: Path(c.audio) for k, c in todo.items()}, ws.root,
                                                          config, local_model, progress)
            kept = []
            for loc, clip in entries:
                if isinstance(clip, Clip) and loc in captions:
                    text, reason = captions[loc]
                    if text is None:
                        failures[loc] = reason
                    clip = clip.model_copy(update={"caption": text, "caption_source": source if text else None})
                if isinstance(clip, Clip):
                    kept.append(clip)
            write_clips(out, kept)
        else:
            items = [it for it in ws.items(split) if it.audio is not None and (redo or not it.caption)]
            by_id = {it.id: it for it in items}
            captions, source, usage = caption_all({it.id: ws.root / it.audio.path for it in items},
                                                          ws.root, config, local_model, progress)
            updated = [by_id[k].model_copy(update={"caption": text, "caption_source": source})
                       for k, (text, _) in captions.items() if text is not None]
            failures.update({k: reason for k, (text, reason) in captions.items() if text is None})
            with ws.transaction():
                ws.upsert(sorted(updated, key=lambda it: it.id))
        results.update(captioned=sum(1 for text, _ in captions.values() if text), failed=len(failures),
                       failures=failures, caption_source=source, llm_usage=usage, out=str(out) if out else None)
        if usage:
            check_transport(usage)
        return dict(results)
