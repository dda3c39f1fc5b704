"""`sari-data captions`: describe clips with an audio-capable model.

Two backends: an OpenAI-compatible endpoint that accepts audio in chat (`input_audio` content
parts, base64 16-bit WAV at 16 kHz), or a local Qwen2-Audio / Qwen2.5-Omni checkpoint (folder or hub
id) run on the GPU in bfloat16 when there is one (`--device`, `--dtype`, `--batch-size`).
Two inputs: a clips file (JSONL, one clip per line) or a folder of audio files, captioned into a
clips file that `sari-data questions` reads; or the clips and items of a workspace that have no
caption yet (clips then feed `sari-data questions --workspace W` directly).
Both backends go through the request cache, so a re-run never captions a clip twice.

    sari-data captions --clips clips.jsonl --out captioned.jsonl --workspace W --model qwen2-audio --base-url URL
    sari-data captions --workspace W --split train --local-model models/Qwen2-Audio-7B-Instruct --batch-size 16
    sari-data captions --workspace W --recipe pipelines/sari-32k.yaml    # the workspace's uncaptioned clips and items
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from corpus.clips import read_audio
from corpus.provenance import recorded_run
from corpus.records import Clip as StoredClip, Item, Task
from corpus.store import Workspace
from sari_data.llm.cache import RequestCache
from sari_data.llm.runner import CACHE_FILE, open_client, run_all
from sari_train.openai_client import LLMClient, LLMConfig, audio_part, check_transport

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


def caption_messages(samples: np.ndarray) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [
        audio_part(samples, SAMPLE_RATE),
        {"type": "text", "text": CAPTION_PROMPT}]}]


def caption_problem(text: str) -> tuple[str, str] | None:
    if REFUSAL.match(text.strip()):
        return "refusal", "describe the audio instead of declining"
    if len(text.split()) < 3:
        return "caption_too_short", "the caption needs at least a full sentence"
    return None


class LocalCaptioner:
    """A local audio LM (a Qwen2-Audio or Qwen2.5-Omni folder, or a hub id when online) loaded through
    `AudioLM.load` like eval and difficulty, greedy, batched, cached like the endpoint."""

    def __init__(self, path: str | Path, cache: RequestCache, max_new_tokens: int = 96, device: str = "auto",
                 dtype: str = "auto", batch_size: int = 8):
        from sari_train.models.adapter import AudioLM
        from sari_train.rollout import LocalEngine, SamplingSettings

        self.name = f"local:{Path(path).name}"
        self.cache = cache
        self.max_new_tokens = max_new_tokens
        self.engine = LocalEngine(AudioLM.load(path, device=device, dtype=dtype), batch_size=batch_size)
        self.settings = SamplingSettings(k=1, temperature=0.0, max_new_tokens=max_new_tokens)

    def key(self, samples: np.ndarray) -> str:
        return hashlib.sha256(f"{self.name}\x00{CAPTION_PROMPT}\x00{self.max_new_tokens}".encode()
                              + samples.astype("<f4").tobytes()).hexdigest()

    def captions(self, clips: list[np.ndarray]) -> list[tuple[str | None, str]]:
        """(caption or None, failure reason) per clip; clips already in the cache are not run again."""
        keys = [self.key(c) for c in clips]
        todo = [i for i, k in enumerate(keys) if self.cache.get(k) is None]
        if todo:
            turn = [{"role": "user", "content": [{"type": "audio", "audio_url": "clip"},
                                                 {"type": "text", "text": CAPTION_PROMPT}]}]
            replies = self.engine.sample([turn] * len(todo), [clips[i] for i in todo], self.settings).texts
            fresh = {keys[i]: reply[0].strip() for i, reply in zip(todo, replies)}
            for k, text in fresh.items():
                if caption_problem(text) is None:  # a failed caption is tried again next run
                    self.cache.put(k, {"content": text})
        out = []
        for k in keys:
            text = fresh[k] if k in fresh else self.cache.get(k)["content"]
            problem = caption_problem(text)
            out.append((None, f"{problem[0]}: {problem[1]}") if problem else (text, ""))
        return out

    def caption(self, samples: np.ndarray) -> tuple[str | None, str]:
        return self.captions([samples])[0]


async def _endpoint_caption(client: LLMClient, key: str, samples: np.ndarray) -> tuple[str, str | None, str]:
    outcome = await client.ask(caption_messages(samples), check=caption_problem)
    return key, outcome.value, "" if outcome.ok else f"{outcome.reason}: {outcome.message}"


def caption_all(jobs: dict[str, Path], ws_root: Path, config: LLMConfig, local_model: str | None,
                progress: bool, local: dict | None = None) -> tuple[dict[str, tuple[str | None, str]], str, dict | None]:
    """Caption audio files by key; returns ({key: (caption or None, failure reason)}, caption source, usage).
    `local` holds LocalCaptioner's device/dtype/batch_size."""
    results: dict[str, tuple[str | None, str]] = {}
    if not jobs:
        return results, "", None
    if local_model:
        cache = RequestCache(ws_root / CACHE_FILE)
        captioner = LocalCaptioner(local_model, cache, **(local or {}))
        keys = list(jobs)
        step = captioner.engine.batch_size
        for start in range(0, len(keys), step):
            chunk = keys[start:start + step]
            results.update(zip(chunk, captioner.captions([read_audio(jobs[k]) for k in chunk])))
        cache.close()
        return results, captioner.name, None
    client = open_client(ws_root, config)

    async def stage() -> None:
        def write(batch: list[tuple[str, str | None, str]]) -> None:
            results.update({key: (caption, reason) for key, caption, reason in batch})
        try:
            await run_all((_endpoint_caption(client, k, read_audio(p)) for k, p in jobs.items()), write,
                          total=len(jobs), desc="captions", progress=progress)
        finally:
            await client.close()
            client.cache.close()

    asyncio.run(stage())
    return results, f"llm:{client.config.model}", client.usage.report(client.config)


def run_captions(workspace: str | Path, *, config: LLMConfig = LLMConfig(), clips: Path | None = None,
                 out: Path | None = None, split: str | None = None, local_model: str | None = None,
                 redo: bool = False, progress: bool = True, local: dict | None = None) -> dict[str, Any]:
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
            captions, source, usage = caption_all({k: Path(c.audio) for k, c in todo.items()}, ws.root, config,
                                                  local_model, progress, local)
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
        else:  # the workspace's items and clips (AudioSet, MELD: clips awaiting `sari-data questions`)
            items = [it for it in ws.items(split) if it.audio is not None and (redo or not it.caption)]
            stored = [c for c in ws.records(StoredClip) if split in (None, c.split) and (redo or not c.caption)]
            by_id = {r.id: r for r in [*items, *stored]}
            captions, source, usage = caption_all({k: ws.root / r.audio.path for k, r in by_id.items()}, ws.root,
                                                  config, local_model, progress, local)
            updated = [by_id[k].model_copy(update={"caption": text, "caption_source": source})
                       for k, (text, _) in captions.items() if text is not None]
            failures.update({k: reason for k, (text, reason) in captions.items() if text is None})
            with ws.transaction():
                for kind in (Item, StoredClip):
                    ws.upsert(sorted((r for r in updated if isinstance(r, kind)), key=lambda r: r.id))
        results.update(captioned=sum(1 for text, _ in captions.values() if text), failed=len(failures),
                       failures=failures, caption_source=source, llm_usage=usage, out=str(out) if out else None)
        if usage:
            check_transport(usage)
        return dict(results)
