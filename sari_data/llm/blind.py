"""`sari-data blind`: can a text-only LLM answer the question without the audio?

Each item is asked k times (temperature 1, seeds 0..k-1) with the question and options only.
Each sample is stored as a Rollout and the item's text-only pass rate as a Difficulty record
with model `blind:<model>`, scored with the official MMAU rule. An item answered blind too often
teaches nothing about listening: `--max-pass-rate` moves such items to quarantine (reason
`answerable_without_audio`, the item kept in the message as JSON, so nothing is lost).

    sari-data blind --workspace W --k 4 --base-url URL --model Qwen2.5-7B-Instruct --max-pass-rate 0.75
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from pathlib import Path
from typing import Any

from corpus.provenance import recorded_run
from corpus.records import Difficulty, Item, Quarantine, Rollout
from corpus.scoring import extract_answer, mmau_match
from corpus.store import Workspace
from sari_data.llm.runner import open_client, run_all, select_items
from sari_train.openai_client import LLMClient, LLMConfig
from sari_train.prompts import PromptStyle, user_text

SYSTEM = ("You cannot hear the audio the question refers to. Answer from the question and the options alone; "
          "if you cannot tell, make your best guess. Always give one of the options.")
PROMPT_VERSION = "blind-v1"  # part of the settings hash: a new prompt never mixes with old samples


def blind_messages(item: Item) -> list[dict[str, Any]]:
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": user_text(item.question, item.choices, PromptStyle(format="implicit"))}]


def settings_hash(k: int, temperature: float) -> str:
    return hashlib.sha256(f"{PROMPT_VERSION}:{k}:{temperature}".encode()).hexdigest()[:12]


async def blind_item(client: LLMClient, item: Item, k: int, temperature: float
                     ) -> tuple[Item, list[Rollout], Difficulty | None, str]:
    """(item, rollouts, pass rate, failure reason); nothing is stored for an item with a failed sample."""
    outcomes = await asyncio.gather(*(client.ask(blind_messages(item), temperature=temperature, seed=i)
                                      for i in range(k)))
    failed = next((o for o in outcomes if not o.ok), None)
    if failed is not None:
        return item, [], None, f"{failed.reason}: {failed.message}"
    model, settings = f"blind:{client.config.model}", settings_hash(k, temperature)
    rollouts = [Rollout(item_id=item.id, model=model, settings=settings, sample_index=i, completion=o.value,
                        correct=mmau_match(extract_answer(o.value), item.answer, item.choices))
                for i, o in enumerate(outcomes)]
    n = sum(r.correct for r in rollouts)
    return item, rollouts, Difficulty(item_id=item.id, model=model, k=k, n_correct=n, pass_rate=n / k), ""


def answerable_quarantine(item: Item, difficulty: Difficulty) -> Quarantine:
    return Quarantine(source=item.source, locator=item.id, reason="answerable_without_audio",
                      message=f"{difficulty.n_correct}/{difficulty.k} blind answers correct by {difficulty.model}; "
                              f"item: {item.model_dump_json()}")


def run_blind(workspace: str | Path, *, config: LLMConfig = LLMConfig(), k: int = 4, temperature: float = 1.0,
              split: str | None = None, n: int | None = None, seed: int = 0, max_pass_rate: float | None = None,
              progress: bool = True) -> dict[str, Any]:
    """Blind-answer the selected items; store rollouts and pass rates; optionally quarantine the answerable."""
    config = config.resolved()
    with Workspace(workspace) as ws, recorded_run(ws, "blind", llm=config.model_dump(), k=k, temperature=temperature,
                                                  split=split, n=n, seed=seed, max_pass_rate=max_pass_rate) as results:
        items = select_items(ws, split, n, seed)
        client = open_client(ws.root, config)
        failures: dict[str, str] = {}
        rates: Counter = Counter()
        dropped: list[str] = []

        def write(batch: list[tuple[Item, list[Rollout], Difficulty | None, str]]) -> None:
            failures.update({item.id: reason for item, _, diff, reason in batch if diff is None})
            done = [(item, rollouts, diff) for item, rollouts, diff, _ in batch if diff is not None]
            drop = [(item, diff) for item, _, diff in done if max_pass_rate is not None and diff.pass_rate > max_pass_rate]
            with ws.transaction():
                ws.upsert([r for _, rollouts, _ in done for r in rollouts])
                ws.upsert([diff for _, _, diff in done])
                ws.upsert([answerable_quarantine(item, diff) for item, diff in drop])
                ws.remove_items([item.id for item, _ in drop])
            rates.update(f"{diff.n_correct}/{diff.k}" for _, _, diff in done)
            dropped.extend(item.id for item, _ in drop)

        async def stage() -> None:
            try:
                await run_all((blind_item(client, it, k, temperature) for it in items), write, total=len(items),
                              desc="blind", progress=progress)
            finally:
                await client.close()
                client.cache.close()

        asyncio.run(stage())
        results.update(selected=len(items), scored=sum(rates.values()), failed=len(failures), failures=failures,
                       pass_rates=dict(sorted(rates.items())), quarantined=len(dropped),
                       llm_usage=client.usage.report(client.config))
        client.check_transport()
        return dict(results)
