"""`sari-data cot`: structured and free-form chains of thought for a chosen subset of items.

The writer sees the caption, the question, the options and the gold answer. A chain is kept only
if it reasons before concluding (free style: two sentences at least; structured style: the four
sections planning, caption, reasoning, summary in order, none empty) and its ending names the gold
option and no other option; otherwise it is re-asked with the reason, then stored with valid=False
and that reason. Chains the server never answered (down, restarting) are not stored: the next run
asks again. Synthetic items can be written by the deterministic template writer
(templates.py), which is what runs when no endpoint is configured.

    sari-data cot --workspace workspaces/demo --split train --n 2000
    sari-data cot --workspace W --base-url http://localhost:8000/v1 --model Qwen2.5-72B-Instruct
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from corpus.provenance import recorded_run
from corpus.records import ChainOfThought, Item
from corpus.scoring import normalise, normalised_match
from corpus.store import Workspace
from sari_data.llm.runner import open_client, run_all, select_items
from sari_data.llm.templates import is_synthetic, template_chains
from sari_train.openai_client import EndpointError, LLMClient, LLMConfig, schema_instructions
from sari_train.prompts import structured_sections

STYLES = ("structured", "free")
Writer = Literal["auto", "llm", "template"]
FORBIDDEN_TAGS = re.compile(r"</?(think|answer)>")


class Chain(BaseModel):
    """What the LLM returns for one chain."""

    model_config = ConfigDict(extra="forbid")
    thinking: str
    answer: str


SYSTEM = ("You write reasoning chains that teach a model to answer questions about audio clips. You are given "
          "a description of the clip, the question, the options and the correct answer. Write the reasoning a "
          "careful listener goes through, as if hearing the clip, ending on the correct answer. Never mention "
          "that you were given the answer or a description.")
STYLE_INSTRUCTIONS = {
    "structured": ('In "thinking" write four sections in this order, each inside its tags: <planning>how you will '
                   'approach the question</planning>, <caption>what you hear in the clip</caption>, <reasoning>'
                   'step-by-step reasoning from what you hear to the answer</reasoning>, <summary>one sentence '
                   'that ends on the answer</summary>.'),
    "free": 'In "thinking" write one free-form paragraph of reasoning, with no tags, whose last sentence names the answer.',
}


def cot_messages(item: Item, style: str) -> list[dict[str, Any]]:
    user = (f"Clip description: {item.caption}\nQuestion: {item.question}\nOptions: {item.choices}\n"
            f"Correct answer: {item.answer}\n\n{STYLE_INSTRUCTIONS[style]} In \"answer\" put the exact text of "
            f"the correct option.\n{schema_instructions(Chain)}")
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def _names(text: str, option: str) -> bool:
    """Whether `text` names `option` as whole words (after lower-casing and dropping punctuation)."""
    return re.search(rf"(?<!\w){re.escape(normalise(option))}(?!\w)", normalise(text)) is not None


def chain_problem(thinking: str, item: Item, style: str) -> tuple[str, str] | None:
    """Why a chain is unusable for `item`, or None. Shared by LLM and template chains."""
    if FORBIDDEN_TAGS.search(thinking):
        return "stray_tags", "the chain must not contain <think> or <answer> tags"
    if style == "structured":
        sections = structured_sections(thinking)
        if sections is None:
            return ("sections_missing_or_out_of_order", "the chain needs <planning>, <caption>, <reasoning>, "
                    "<summary> in this order, each once")
        empty = [name for name, body in sections.items() if not body]
        if empty:
            return "empty_sections", f"every section needs content; empty: {', '.join(empty)}"
        ending = sections["summary"]
    else:
        if structured_sections(thinking) is not None or "<planning>" in thinking:
            return "tags_in_free_chain", "the free-form chain must not use section tags"
        sentences = re.split(r"(?<=[.!?])\s+", thinking.strip())
        if len(sentences) < 2:
            return "no_reasoning", "write the reasoning before the conclusion: at least two sentences"
        ending = sentences[-1]
    return conclusion_problem(ending, item, "summary" if style == "structured" else "last sentence")


def conclusion_problem(ending: str, item: Item, where: str) -> tuple[str, str] | None:
    """The ending must name the gold option and no other option (once the gold's own words are set aside,
    so a distractor inside the gold text does not count): "high, but indeed low" contradicts itself."""
    if not _names(ending, item.answer):
        return "wrong_conclusion", f"the {where} must conclude on the correct option {item.answer!r}"
    rest = re.sub(rf"(?<!\w){re.escape(normalise(item.answer))}(?!\w)", " ", normalise(ending))
    named = [c for c in item.choices if c != item.answer and _names(rest, c)]
    if named:
        return ("contradictory_conclusion", f"the {where} also names {', '.join(map(repr, named))}; conclude on "
                f"the correct option {item.answer!r} alone")
    return None


def chain_check(item: Item, style: str):
    def check(chain: Chain) -> tuple[str, str] | None:
        if not normalised_match(chain.answer, item.answer):
            return "wrong_conclusion", f"the answer must be the correct option {item.answer!r}, got {chain.answer!r}"
        return chain_problem(chain.thinking, item, style)
    return check


async def llm_chains(client: LLMClient, item: Item) -> list[ChainOfThought]:
    outcomes = await asyncio.gather(*(client.ask(cot_messages(item, s), schema=Chain, check=chain_check(item, s))
                                      for s in STYLES))
    generator = f"llm:{client.config.model}"
    # A chain the server never answered (down, restarting) is not stored: the next run asks again.
    return [ChainOfThought(item_id=item.id, style=s, text=o.value.thinking, generator=generator) if o.ok else
            ChainOfThought(item_id=item.id, style=s, text=o.raw, generator=generator, valid=False,
                           reason=f"{o.reason}: {o.message}")
            for s, o in zip(STYLES, outcomes) if not o.transient]


def templated_chains(item: Item) -> list[ChainOfThought]:
    chains = []
    for style, text in template_chains(item).items():
        problem = chain_problem(text, item, style)
        chains.append(ChainOfThought(item_id=item.id, style=style, text=text, generator="template",
                                     valid=problem is None, reason=f"{problem[0]}: {problem[1]}" if problem else ""))
    return chains


def done_ids(ws: Workspace) -> set[str]:
    """Items with a valid chain in both styles: skipped by a re-run (unless redo)."""
    frame = ws.frame("cots", "valid")
    counts = frame.groupby("item_id")["style"].nunique()
    return set(counts[counts == len(STYLES)].index)


def run_cot(workspace: str | Path, *, config: LLMConfig = LLMConfig(), writer: Writer = "auto",
            split: str | None = "train", n: int | None = None, seed: int = 0, redo: bool = False,
            progress: bool = True) -> dict[str, Any]:
    """Write both chain styles for the selected items; returns counts, notes and LLM usage."""
    config = config.resolved()
    with Workspace(workspace) as ws, recorded_run(ws, "cot", llm=config.model_dump(), writer=writer, split=split,
                                                  n=n, seed=seed) as results:
        items = select_items(ws, split, n, seed)
        skip = set() if redo else done_ids(ws)
        todo = [it for it in items if it.id not in skip]
        use_template = writer == "template" or (writer == "auto" and not config.configured)
        by_template = [it for it in todo if use_template and is_synthetic(it)]
        by_llm = [it for it in todo if not (use_template and is_synthetic(it))]
        notes = []
        if by_template:
            notes.append(f"{'no LLM endpoint configured: ' if not config.configured else ''}"
                         f"{len(by_template)} synthetic items written by the deterministic template writer")
        if by_llm and not config.configured:
            raise EndpointError(f"{len(by_llm)} selected items are not synthetic and need an LLM: pass --base-url "
                                "and --model (or set SARI_LLM_BASE_URL and SARI_LLM_MODEL)")
        written: Counter = Counter()

        def write(chains_per_item: list[list[ChainOfThought]]) -> None:
            chains = [c for per_item in chains_per_item for c in per_item]
            with ws.transaction():
                ws.upsert(chains)
            written.update((c.style, "valid" if c.valid else c.reason.split(":")[0]) for c in chains)

        for start in range(0, len(by_template), 256):
            write([templated_chains(it) for it in by_template[start:start + 256]])
        usage = None
        if by_llm:
            client = open_client(ws.root, config)
            usage = asyncio.run(_llm_stage(client, by_llm, write, progress))
        results.update(selected=len(items), skipped_done=len(items) - len(todo), template=len(by_template),
                       llm=len(by_llm), chains={f"{s}/{r}": c for (s, r), c in sorted(written.items())},
                       llm_usage=usage, notes=notes)
        if by_llm:
            client.check_transport()
        return dict(results)


async def _llm_stage(client: LLMClient, items: list[Item], write, progress: bool) -> dict[str, Any]:
    try:
        await run_all((llm_chains(client, it) for it in items), write, total=len(items), desc="cot", progress=progress)
    finally:
        await client.close()
        client.cache.close()
    return client.usage.report(client.config)
