"""Reward functions with TRL's calling convention: `fn(prompts, completions, **columns) -> list[float]`.

Columns passed to every function: `answer` (gold option text), `choices`, `question`, `item_id`.
Built-ins (R1-AQA's rules; docs/design-notes.md, "Rewards"):
- `accuracy`: the first one-line `<answer>…</answer>` equals the gold text exactly;
  `accuracy_normalised` forgives case, punctuation and spacing.
- `format`: the whole completion full-matches `<answer>.*?</answer>` (implicit prompts) or
  `<think>.*?</think>\\s*<answer>.*?</answer>` (thinking prompts), DOTALL.
- `structure`: the think block holds the four sections planning, caption, reasoning, summary in order.
- `accuracy_r1aqa`, `format_r1aqa`: R1-AQA's published rewards exactly, guards off (its
  symbolic math check first, through `math_verify` as R1-AQA does, then the string rule).
Guards against known hacks (both score 0 on accuracy and format): an empty answer, and repeated
tag blocks (several `<answer>`s let a policy list every option; `.*?` would still full-match).
A user function plugs in by dotted path, `package.module.function` or `package.module:function`.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from corpus.scoring import exact_match, extract_answer, normalised_match
from sari_train.prompts import structured_sections

RewardFn = Callable[..., list[float]]

_IMPLICIT = re.compile(r"<answer>.*?</answer>", re.DOTALL)
_EXPLICIT = re.compile(r"<think>.*?</think>\s*<answer>.*?</answer>", re.DOTALL)
_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)


def hacked(completion: str) -> bool:
    """An empty answer, or more than one answer or think block."""
    answers = re.findall(r"<answer>(.*?)</answer>", completion, re.DOTALL)
    return (any(not a.strip() for a in answers) or completion.count("<answer>") > 1
            or completion.count("<think>") > 1)


def accuracy(prompts: list[Any], completions: list[str], answer: list[str], **_: Any) -> list[float]:
    return [float(exact_match(c, a) and not hacked(c)) for c, a in zip(completions, answer)]


def accuracy_normalised(prompts: list[Any], completions: list[str], answer: list[str], **_: Any) -> list[float]:
    return [float(normalised_match(c, a) and not hacked(c)) for c, a in zip(completions, answer)]


def accuracy_r1aqa(prompts: list[Any], completions: list[str], answer: list[str], **_: Any) -> list[float]:
    """R1-AQA's `accuracy_reward`: its gold is `<answer>{option}</answer>`; a symbolic match of the
    two (math_verify, any error ignored) or the extracted answers being equal scores 1. No guards."""
    from math_verify import parse, verify

    rewards = []
    for completion, gold in zip(completions, answer):
        solution = f"<answer>{gold}</answer>"
        try:
            symbolic = float(verify(parse(completion), parse(solution))) > 0
        except Exception:  # R1-AQA swallows every failure of the symbolic check
            symbolic = False
        rewards.append(float(symbolic or extract_answer(completion) == extract_answer(solution)))
    return rewards


def format_reward(prompts: list[Any], completions: list[str], *, explicit: bool = False, guarded: bool = True,
                  **_: Any) -> list[float]:
    pattern = _EXPLICIT if explicit else _IMPLICIT
    return [float(bool(pattern.fullmatch(c)) and not (guarded and hacked(c))) for c in completions]


def format_r1aqa(prompts: list[Any], completions: list[str], *, explicit: bool = False, **_: Any) -> list[float]:
    """R1-AQA's `format_reward` (and its commented-out thinking pattern): the full match alone, no guards."""
    return format_reward(prompts, completions, explicit=explicit, guarded=False)


def structure(prompts: list[Any], completions: list[str], **_: Any) -> list[float]:
    def ok(c: str) -> bool:
        think = _THINK.search(c)
        return think is not None and structured_sections(think.group(1)) is not None and not hacked(c)
    return [float(ok(c)) for c in completions]


BUILTIN: dict[str, RewardFn] = {"accuracy": accuracy, "accuracy_normalised": accuracy_normalised,
                                "format": format_reward, "structure": structure,
                                "accuracy_r1aqa": accuracy_r1aqa, "format_r1aqa": format_r1aqa}
FOLLOWS_PROMPT = ("format", "format_r1aqa")  # need the think block when the prompt asks for one


@dataclass
class Reward:
    name: str
    weight: float
    fn: RewardFn


def load_function(path: str) -> RewardFn:
    """`package.module.function` or `package.module:function` -> the function (one-line errors)."""
    module_name, sep, attr = path.partition(":") if ":" in path else path.rpartition(".")
    if not sep or not module_name:
        raise ValueError(f"reward {path!r}: give a built-in ({', '.join(BUILTIN)}) or a dotted path "
                         f"like mypackage.rewards.my_reward")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"reward {path!r} cannot be imported ({err}); is its package on PYTHONPATH?") from err
    if not callable(fn):
        raise ValueError(f"reward {path!r} is not a function")
    return fn


def make_rewards(weights: dict[str, float], explicit: bool) -> list[Reward]:
    """Reward functions from a {name or dotted path: weight} mapping; `format` follows the prompt
    format (thinking prompts need the think block)."""
    rewards = []
    for name, weight in weights.items():
        if name in FOLLOWS_PROMPT:
            fn = partial(BUILTIN[name], explicit=explicit)
        else:
            fn = BUILTIN.get(name) or load_function(name)
        label = name if name in BUILTIN else getattr(fn, "__name__", name)
        rewards.append(Reward(label, float(weight), fn))
    return rewards


def score(rewards: list[Reward], prompts: list[Any], completions: list[str],
          columns: dict[str, list[Any]]) -> tuple[list[float], dict[str, list[float]]]:
    """The weighted total per completion, and each function's raw values (for `rewards/<name>/mean`)."""
    parts: dict[str, list[float]] = {}
    for reward in rewards:
        values = [float(v) for v in reward.fn(prompts=prompts, completions=completions, **columns)]
        if len(values) != len(completions):
            raise ValueError(f"reward {reward.name} returned {len(values)} values for {len(completions)} completions")
        parts[reward.name] = values
    totals = [sum(r.weight * parts[r.name][i] for r in rewards) for i in range(len(completions))]
    return totals, parts
