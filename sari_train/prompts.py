"""Prompt formats: the one definition of what the model is asked and what it should answer,
shared by SFT targets, GRPO prompts, difficulty rollouts and evaluation (docs/design-notes.md, "Prompt and answer format").

R1-AQA's user text is the question, a space, `Please choose the answer from the following
options: ` with the Python list repr of the options and a period, then an output instruction.
The target is always the option *text* inside `<answer>…</answer>`, never a letter.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

PromptFormat = Literal["implicit", "free", "structured"]

IMPLICIT = " Output the final answer in <answer> </answer>."
EXPLICIT = " Output the thinking process in <think> </think> and final answer in <answer> </answer>."
STRUCTURED = (" Output the thinking process in <think> </think> with the sections <planning> </planning>,"
              " <caption> </caption>, <reasoning> </reasoning> and <summary> </summary>, and the final"
              " answer in <answer> </answer>.")
SECTIONS = ("planning", "caption", "reasoning", "summary")


class PromptStyle(BaseModel):
    """How prompts are rendered; the defaults are R1-AQA's exact text."""

    model_config = ConfigDict(extra="forbid")

    format: PromptFormat = "implicit"
    system: str | None = None  # a system turn, if the model wants one
    options_intro: str = "Please choose the answer from the following options: "
    video_to_audio: bool = True  # R1-AQA rewrites AVQA's "video" as "audio"

    @property
    def instruction(self) -> str:
        return {"implicit": IMPLICIT, "free": EXPLICIT, "structured": STRUCTURED}[self.format]


def user_text(question: str, choices: list[str], style: PromptStyle = PromptStyle()) -> str:
    if style.video_to_audio:
        question = re.sub(r"\bvideo\b", "audio", question)
    return f"{question} {style.options_intro}{choices!r}.{style.instruction}"


def messages(question: str, choices: list[str], style: PromptStyle = PromptStyle(),
             audio: Any = "audio") -> list[dict[str, Any]]:
    """Chat messages: one user turn holding one audio part and the text (plus an optional system turn).
    `audio` is whatever the consumer wants in the audio part (a path, a URL, or a placeholder)."""
    turns: list[dict[str, Any]] = []
    if style.system:
        turns.append({"role": "system", "content": [{"type": "text", "text": style.system}]})
    turns.append({"role": "user", "content": [
        {"type": "audio", "audio": audio},
        {"type": "text", "text": user_text(question, choices, style)},
    ]})
    return turns


def target(answer: str, style: PromptStyle = PromptStyle(), thinking: str | None = None) -> str:
    """The assistant turn SFT trains on: the answer in tags, after the thinking when the format has one."""
    if style.format == "implicit":
        return f"<answer>{answer}</answer>"
    if thinking is None:
        raise ValueError(f"the {style.format!r} format needs a chain of thought for its target")
    return f"<think>{thinking}</think>\n<answer>{answer}</answer>"


def structured_sections(thinking: str) -> dict[str, str] | None:
    """The four sections of a structured chain, in order; None when any is missing, repeated or out of order."""
    found = re.findall(r"<(planning|caption|reasoning|summary)>(.*?)</\1>", thinking, flags=re.DOTALL)
    if tuple(name for name, _ in found) != SECTIONS:
        return None
    return {name: body.strip() for name, body in found}
