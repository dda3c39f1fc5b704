"""`sari-data questions`: multiple-choice questions written by an LLM from clip captions.

Each captioned clip (a clips file: see captions.py) gets questions with one correct option and
plausible distractors, in the sound / music / speech families SARI uses. A question is kept only
if the answer is among the options, the options are distinct, its family fits its task, and it
is not answerable from the options alone by a trivial rule (the answer is the only option that
repeats words of the question, or is much longer than every distractor, or a catch-all option
is offered). Otherwise it is re-asked with the reason, then quarantined with it. Gold positions
are balanced over the run (the LLM tends to put the answer first).

    sari-data questions --clips captioned.jsonl --workspace W --base-url URL --model Qwen2.5-72B-Instruct
    sari-data questions --workspace W --recipe pipelines/sari-32k.yaml    # the workspace's captioned clips
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, create_model

from corpus.clips import read_audio, save_clip
from corpus.provenance import recorded_run
from corpus.records import AudioRef, Clip as StoredClip, Item, Quarantine, make_item_id
from corpus.scoring import normalise, words
from corpus.store import Workspace
from sari_data.llm.captions import SAMPLE_RATE, Clip, read_clips
from sari_data.llm.runner import open_client, run_all
from sari_data.sources import item_or_quarantine
from sari_data.steps import balance_positions
from sari_train.openai_client import LLMClient, LLMConfig, check_transport, schema_instructions

FAMILIES: dict[str, tuple[str, ...]] = {
    "sound": ("event identification", "sound source", "counting", "temporal order", "acoustic scene",
              "loudness and distance"),
    "music": ("instrument", "genre", "mood", "tempo and rhythm", "melody and pitch", "vocals"),
    "speech": ("emotion", "content", "speaker count", "speaker traits", "intent"),
}
N_CHOICES = 4
CATCH_ALL = ("all of the above", "none of the above", "both", "neither", "all of them", "none of them")
STOPWORDS = frozenset("the a an of in on at to is are was were what which who whom how many much does do did "
                      "this that these those it its be by for from with and or clip audio sound heard hear you "
                      "there their can most best".split())


class GeneratedQuestion(BaseModel):
    model_config = ConfigDict(extra="forbid")
    question: str
    # Declared in the JSON schema so grammar-constrained servers (llama.cpp, vLLM, SGLang) enforce it;
    # a reply that breaks it anyway gets our own reason code (question_problem) and a re-ask.
    choices: list[str] = Field(json_schema_extra={"minItems": N_CHOICES, "maxItems": N_CHOICES})
    answer: str
    task: Literal["sound", "music", "speech"]
    category: str


class QuestionSet(BaseModel):
    model_config = ConfigDict(extra="forbid")
    questions: list[GeneratedQuestion]


def question_set(per_clip: int) -> type[QuestionSet]:
    """QuestionSet whose JSON schema holds exactly `per_clip` questions (minItems = maxItems)."""
    return create_model(QuestionSet.__name__, __base__=QuestionSet, questions=(
        list[GeneratedQuestion], Field(json_schema_extra={"minItems": per_clip, "maxItems": per_clip})))


SYSTEM = ("You write multiple-choice questions for a listening test about audio clips. A question must need "
          "the audio to answer: one option is correct according to the clip description, the other options "
          "are plausible distractors of the same kind and similar length.")


def question_messages(clip: Clip, per_clip: int) -> list[dict[str, Any]]:
    families = "; ".join(f"{task}: {', '.join(names)}" for task, names in FAMILIES.items())
    hint = f"The clip is mainly {clip.task}." if clip.task else "Decide whether it is about sound, music or speech."
    user = (f"Clip description: {clip.caption}\nSource metadata: {json.dumps(clip.meta, sort_keys=True)}\n{hint}\n\n"
            f"Write {per_clip} question(s), each with exactly {N_CHOICES} distinct options and the exact text of "
            f"the correct option as the answer. Set task to sound, music or speech and category to one of its "
            f"families ({families}). Do not make the correct option the only one that repeats words of the "
            f"question, nor clearly the longest; no catch-all options such as 'all of the above'.\n"
            f"{schema_instructions(question_set(per_clip))}")
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def _content_words(text: str) -> set[str]:
    return {w for w in words(text) if w not in STOPWORDS}


def question_problem(q: GeneratedQuestion) -> tuple[str, str] | None:
    """Why a generated question cannot join the corpus, or None. Pure, so the rules are testable."""
    if len(q.choices) != N_CHOICES:
        return "wrong_choice_count", f"give exactly {N_CHOICES} options, not {len(q.choices)}"
    if q.answer not in q.choices:
        return "answer_not_in_choices", f"the answer {q.answer!r} must be one of the options, verbatim"
    if len({normalise(c) for c in q.choices}) != len(q.choices) or any(not normalise(c) for c in q.choices):
        return "duplicate_choices", "the options must be distinct and non-empty"
    if q.category not in FAMILIES[q.task]:
        return "unknown_family", f"category must be one of {', '.join(FAMILIES[q.task])} for task {q.task}"
    if any(normalise(c) in CATCH_ALL for c in q.choices):
        return "catch_all_option", "do not offer catch-all options such as 'all of the above'"
    others = [c for c in q.choices if c != q.answer]
    asked = _content_words(q.question)
    if _content_words(q.answer) & asked and not any(_content_words(c) & asked for c in others):
        return ("answer_echoes_question", "the answer is the only option that repeats words of the question; "
                "reword the question or the options")
    longest_other = max(len(c) for c in others)
    if len(q.answer) >= 1.6 * longest_other and len(q.answer) - longest_other >= 8:
        return "answer_much_longer", "the answer is much longer than every distractor; make the options similar in length"
    return None


def set_check(per_clip: int):
    def check(qs: QuestionSet) -> tuple[str, str] | None:
        if len(qs.questions) != per_clip:
            return "wrong_question_count", f"write exactly {per_clip} question(s), not {len(qs.questions)}"
        return next(filter(None, (question_problem(q) for q in qs.questions)), None)
    return check


def clip_items(clip: Clip, audio: AudioRef | None, qs: QuestionSet, locator: str, generator: str) -> list[Item | Quarantine]:
    out = []
    for k, q in enumerate(qs.questions):
        source_id = f"{clip.source_id}#q{k}"
        out.append(item_or_quarantine(
            locator, id=make_item_id(clip.source, source_id), source=clip.source, source_id=source_id, audio=audio,
            question=q.question.strip(), choices=[c.strip() for c in q.choices], answer=q.answer.strip(),
            answer_index=[c.strip() for c in q.choices].index(q.answer.strip()), task=q.task, category=q.category,
            caption=clip.caption, caption_source=clip.caption_source or "dataset", license=clip.license,
            meta={**clip.meta, "question_generator": generator}))
    return out


async def _clip_job(client: LLMClient, locator: str, clip: Clip, audio: AudioRef | None,
                    per_clip: int) -> list[Item | Quarantine]:
    outcome = await client.ask(question_messages(clip, per_clip), schema=question_set(per_clip),
                               check=set_check(per_clip))
    if outcome.transient:  # the server never answered: nothing stored, the next run asks again
        return []
    if not outcome.ok:
        return [Quarantine(source=clip.source, locator=locator, reason=outcome.reason, message=outcome.message)]
    return clip_items(clip, audio, outcome.value, locator, f"llm:{client.config.model}")


def stored_audio(ws: Workspace, clip: Clip) -> AudioRef | None:
    samples: np.ndarray = read_audio(clip.audio, SAMPLE_RATE)
    return save_clip(ws.audio_dir, samples, SAMPLE_RATE)


def workspace_clips(ws: Workspace) -> list[tuple[str, Clip | str]]:
    """The workspace's clips (from `captions` sources) as clips-file entries, audio already stored."""
    return [(f"clips:{c.id}", Clip(source=c.source, source_id=c.source_id, caption=c.caption,
                                    caption_source=c.caption_source, task=c.task, license=c.license, meta=c.meta))
            for c in ws.records(StoredClip)]


def run_questions(workspace: str | Path, clips: Path | None = None, *, config: LLMConfig = LLMConfig(),
                  per_clip: int = 1, seed: int = 0, split: str = "train", progress: bool = True) -> dict[str, Any]:
    """Write questions for every captioned clip of a clips file (or of the workspace's clips table)
    into the workspace."""
    config = config.resolved()
    with Workspace(workspace, create=True) as ws, recorded_run(ws, "questions", llm=config.model_dump(),
                                                               clips=str(clips) if clips else "workspace",
                                                               per_clip=per_clip, seed=seed) as results:
        jobs: list[tuple[str, Clip, AudioRef | None]] = []
        bad: list[Quarantine] = []
        stored = {f"clips:{c.id}": c.audio for c in ws.records(StoredClip)} if clips is None else {}
        for locator, clip in (read_clips(clips) if clips is not None else workspace_clips(ws)):
            if isinstance(clip, str):
                bad.append(Quarantine(source="?", locator=locator, reason="bad_clip", message=clip))
            elif not clip.caption:
                bad.append(Quarantine(source=clip.source, locator=locator, reason="missing_caption",
                                      message="caption the clip first: sari-data captions"))
            else:
                try:
                    audio = stored[locator] if locator in stored else stored_audio(ws, clip) if clip.audio else None
                    jobs.append((locator, clip, audio))
                except (OSError, RuntimeError, ValueError) as err:
                    bad.append(Quarantine(source=clip.source, locator=locator, reason="missing_audio", message=str(err)))
        records: list[Item | Quarantine] = []
        usage = asyncio.run(_llm_stage(open_client(ws.root, config), jobs, per_clip, records, progress)) if jobs else None
        items = sorted((r for r in records if isinstance(r, Item)), key=lambda it: it.id)
        # Sorted first, so the same run always writes the same positions; then this run's split.
        items = [it.model_copy(update={"split": split}) for it in balance_positions(seed)(items)]
        quarantined = bad + [r for r in records if isinstance(r, Quarantine)]
        with ws.transaction():
            ws.upsert(items)
            ws.upsert(quarantined)
        results.update(clips=len(jobs) + len(bad), items=len(items), quarantined=len(quarantined),
                       reasons=dict(Counter(q.reason for q in quarantined)), llm_usage=usage)
        if usage:
            check_transport(usage)
        return dict(results)


async def _llm_stage(client: LLMClient, jobs, per_clip: int, records: list, progress: bool) -> dict[str, Any]:
    try:
        await run_all((_clip_job(client, loc, clip, audio, per_clip) for loc, clip, audio in jobs),
                      lambda batch: records.extend(r for per_clip_records in batch for r in per_clip_records),
                      total=len(jobs), desc="questions", progress=progress)
    finally:
        await client.close()
        client.cache.close()
    return client.usage.report(client.config)

