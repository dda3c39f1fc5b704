"""The `r1aqa` rewards equal R1-AQA's published reward code (xiaomi-research/r1-aqa,
src/utils/rewards.py), restated here as an oracle, on the completions where our guarded
rewards differ: two answers, empty answers, nested tags, spacing, case."""

import re
from pathlib import Path

import pytest
import yaml
from math_verify import parse, verify

from sari_train.grpo.rewards import make_rewards, score

PRESET = Path(__file__).parents[3] / "pipelines" / "train" / "r1-aqa.yaml"


def oracle_accuracy(contents: list[str], golds: list[str]) -> list[float]:
    """R1-AQA's rule in our words: the gold is `<answer>option</answer>`. A symbolic match
    (math_verify's parse and verify, every error ignored) scores 1; failing that, the first
    one-line `<answer>` of each side (else the whole text), stripped, must be equal."""
    def first_answer(text: str) -> str:
        found = re.search(r"<answer>(.*?)</answer>", text)
        return (found.group(1) if found else text).strip()

    out = []
    for text, gold in zip(contents, golds):
        solution = f"<answer>{gold}</answer>"
        try:
            symbolic = float(verify(parse(text), parse(solution))) > 0
        except Exception:
            symbolic = False
        out.append(1.0 if symbolic or first_answer(text) == first_answer(solution) else 0.0)
    return out


def oracle_format(contents: list[str], thinking: bool = False) -> list[float]:
    """R1-AQA's format rule: the whole text full-matches the pattern, the dot crossing newlines."""
    pattern = r"<think>.*?</think>\s*<answer>.*?</answer>" if thinking else r"<answer>.*?</answer>"
    return [1.0 if re.fullmatch(pattern, text, re.DOTALL) else 0.0 for text in contents]


TRICKY = [
    ("<answer>Two</answer>", "Two"),
    ("<answer>Two</answer><answer>Three</answer>", "Two"),        # two answers: both rewards 1 in R1-AQA
    ("<answer>Three</answer><answer>Two</answer>", "Two"),
    ("<answer></answer>", "Two"),                                  # empty answer: format 1
    ("<answer> </answer>", " "),
    ("<answer><answer>Two</answer></answer>", "Two"),             # nested tags
    ("<answer>  Two \t</answer>", "Two"),                          # spacing is stripped
    ("<answer>two</answer>", "Two"),                               # case counts
    ("<answer>Two\n</answer>", "Two"),                             # no DOTALL in the answer pattern
    ("Two", "Two"),                                                # no tags: the whole text
    ("  Two  ", "Two"),
    ("The answer: <answer>Two</answer>", "Two"),                   # leading text: format 0
    ("<answer>Two</answer>\n", "Two"),
    ("<think>x</think><answer>Two</answer>", "Two"),
    ("<answer>The answer is 3</answer>", "The answer is 3"),       # the symbolic branch
    ("3", "The answer is 3"),
    ("so $3$", "x = 3"),
    ("<answer>1/2</answer>", "$0.5$"),
]


@pytest.mark.parametrize("text,gold", TRICKY)
def test_r1aqa_preset_rewards_equal_r1aqas_code(text, gold):
    weights = yaml.safe_load(PRESET.read_text())["rewards"]
    assert weights == {"accuracy_r1aqa": 1.0, "format_r1aqa": 1.0}
    rewards = make_rewards(weights, explicit=False)
    total, parts = score(rewards, [None], [text], {"answer": [gold], "choices": [[gold]], "question": ["q"],
                                                    "item_id": ["i"]})
    assert parts["accuracy_r1aqa"] == oracle_accuracy([text], [gold])
    assert parts["format_r1aqa"] == oracle_format([text])
    assert total == [oracle_accuracy([text], [gold])[0] + oracle_format([text])[0]]


def test_the_guards_are_what_differs():
    """Our default rewards refuse what R1-AQA rewards: several answers and empty ones."""
    texts = ["<answer>Two</answer><answer>Three</answer>", "<answer></answer>"]
    golds = ["Two", ""]
    guarded = make_rewards({"accuracy": 1.0, "format": 1.0}, explicit=False)
    exact = make_rewards({"accuracy_r1aqa": 1.0, "format_r1aqa": 1.0}, explicit=False)
    columns = {"answer": golds, "choices": [["Two", "Three"]] * 2, "question": ["q"] * 2, "item_id": ["a", "b"]}
    assert score(guarded, [None] * 2, texts, columns)[0] == [0.0, 0.0]
    assert score(exact, [None] * 2, texts, columns)[0] == [2.0, 2.0]


def test_thinking_prompts_use_r1aqas_commented_pattern():
    texts = ["<think>a</think>\n<answer>x</answer>", "<answer>x</answer>", "<think>a</think><think>b</think><answer>x</answer>"]
    fn = make_rewards({"format_r1aqa": 1.0}, explicit=True)[0].fn
    assert fn(prompts=[None] * 3, completions=texts) == oracle_format(texts, thinking=True) == [1.0, 0.0, 1.0]
