"""Answer scoring: one definition shared by data building, rewards, difficulty and evaluation.

Pure functions only. `extract_answer` and `exact_match` follow R1-AQA; `mmau_match` is the
official MMAU/MMAR word-set rule (docs/design-notes.md, Scoring).
"""

from __future__ import annotations

import re
import string

_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>")  # no DOTALL, as in R1-AQA
_WORD = re.compile(r"\b\w+\b")
_PUNCT = str.maketrans({c: " " for c in string.punctuation})


def extract_answer(completion: str) -> str:
    """The text of the first `<answer>…</answer>` on one line, stripped; the whole completion if absent.

    A multi-line answer does not match the tag pattern (R1-AQA uses no DOTALL), so it falls back
    to the whole completion, which then fails exact match: that is the reference behaviour.
    """
    found = _ANSWER_TAG.search(completion)
    return (found.group(1) if found else completion).strip()


def exact_match(completion: str, gold: str) -> bool:
    """R1-AQA's accuracy: the extracted answer equals the gold option text exactly."""
    return extract_answer(completion) == gold.strip()


def normalise(text: str) -> str:
    """Case-folded, punctuation replaced by spaces, whitespace collapsed."""
    return " ".join(text.casefold().translate(_PUNCT).split())


def normalised_match(completion: str, gold: str) -> bool:
    """Like `exact_match` but forgiving of case, punctuation and spacing. Empty never matches."""
    predicted = normalise(extract_answer(completion))
    return bool(predicted) and predicted == normalise(gold)


def words(text: str) -> set[str]:
    """The lower-cased word tokens of the MMAU rule."""
    return set(_WORD.findall(text.lower()))


def mmau_match(prediction: str, answer: str, choices: list[str]) -> bool:
    """The official MMAU/MMAR rule: every word of the gold answer is in the prediction, and the
    prediction has no word that occurs only in wrong options. An empty prediction is wrong.

    `prediction` is the model's answer text (extract it from tags first if needed).
    """
    predicted, gold = words(prediction), words(answer)
    if not predicted:
        return False
    wrong_only: set[str] = set()
    for choice in choices:
        tokens = words(choice)
        if tokens != gold:
            wrong_only |= tokens - gold
    return gold <= predicted and predicted.isdisjoint(wrong_only)
