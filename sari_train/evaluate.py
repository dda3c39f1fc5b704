"""`sari-train eval`: accuracy with the official MMAU/MMAR word-set rule.

    sari-train eval --model base=models/base --model grpo=runs/grpo/final --workspace workspaces/demo --split test
    sari-train eval --model PATH --benchmark mmau-test-mini.json --audio-root DIR

`--model NAME=PATH` names a column (default: the folder's name). Each model is asked in the prompt
format it was trained with (read from the `config.yaml` our trainers save next to the weights;
implicit for other models) unless `--format` sets one for all. Greedy by default. Reports total,
per task, per difficulty and per sub-category (micro averages), plus accuracy with the options
shuffled (MMAU's gold leans to option A). Writes, per model, the
MMAU-format predictions (`model_output`, readable by MMAU's evaluation.py), the MMAR-format ones
(`answer_prediction`), a report JSON, and one table and PNG comparing all models.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm

from corpus.benchmarks import read_benchmark
from corpus.clips import load_clip, read_audio
from corpus.scoring import extract_answer, mmau_match
from corpus.store import Workspace
from sari_train.config import ConfigError
from sari_train.models.adapter import AudioLM, PromptTooLong
from sari_train.prompts import PromptStyle, messages
from sari_train.rollout import LocalEngine, SamplingSettings


class EvalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[str] = Field(min_length=1, description="model folders (or hub ids when online) to compare; "
                                                        "NAME=PATH names the column")
    workspace: Path | None = Field(None, description="evaluate the items of this workspace's --split")
    split: str = Field("test", description="workspace split to evaluate")
    benchmark: Path | None = Field(None, description="an MMAU/MMAR JSON or JSONL file")
    audio_root: Path | None = Field(None, description="folder the benchmark's audio paths are relative to")
    prompt: PromptStyle | None = Field(None, description="one prompt style for all models (default: each "
                                                          "model's trained style, else implicit)")
    max_new_tokens: int = Field(64, ge=1, description="generation budget (raise it for thinking formats)")
    batch_size: int = Field(8, ge=1)
    shuffled: bool = Field(True, description="also score with every item's options shuffled")
    seed: int = Field(0, description="seed of the option shuffle")
    limit: int | None = Field(None, ge=1, description="evaluate only the first N items")
    out: Path = Field(Path("artifacts/eval"), description="output folder")


@dataclass
class EvalItem:
    id: str
    question: str
    choices: list[str]
    answer: str
    task: str
    difficulty: str
    sub_category: str
    audio: np.ndarray
    record: dict[str, Any]  # the benchmark-format record the prediction files extend


def difficulty_label(knob: float | None) -> str:
    """Synthetic items carry a numeric difficulty knob; report it as MMAU-style thirds."""
    if knob is None:
        return ""
    return "easy" if knob < 1 / 3 else "medium" if knob < 2 / 3 else "hard"


def workspace_items(root: Path, split: str, limit: int | None) -> list[EvalItem]:
    with Workspace(root, read_only=True) as ws:
        items = [i for i in ws.items(split) if i.audio is not None][:limit]
    if not items:
        raise ConfigError(f"workspace {root} has no items with audio in split {split!r}")
    out = []
    for item in items:
        meta = item.meta
        family = meta.get("family") or meta.get("sub-category") or item.sub_category
        knob = meta.get("difficulty")  # MMAU's easy/medium/hard, or the synthetic numeric knob
        difficulty = knob if isinstance(knob, str) else difficulty_label(knob)
        # Benchmark workspaces keep the benchmark's own id and dataset, so predictions match its files.
        record = {"id": meta.get("benchmark_id", item.id), "audio_id": item.audio.path, "question": item.question,
                  "choices": item.choices, "answer": item.answer, "dataset": meta.get("dataset", item.source),
                  "task": item.task, "split": item.split, "category": item.category, "sub-category": family,
                  "difficulty": difficulty}
        out.append(EvalItem(item.id, item.question, item.choices, item.answer, item.task, difficulty,
                            family, load_clip(root, item.audio), record))
    return out


def benchmark_items(path: Path, audio_root: Path | None, limit: int | None) -> tuple[list[EvalItem], list[str]]:
    """Benchmark items whose audio exists; the ids of those skipped (missing audio) come back too."""
    if not path.exists():
        raise ConfigError(f"benchmark file {path} not found")
    root = audio_root or path.parent
    found, skipped = [], []
    items, problems = read_benchmark(path)
    skipped += [locator for locator, _ in problems]
    for item in items[:limit]:
        audio_path = root / item.audio
        if not audio_path.exists():
            skipped.append(item.id)
            continue
        found.append(EvalItem(item.id, item.question, item.choices, item.answer, item.task, item.difficulty,
                              item.sub_category, read_audio(audio_path), dict(item.record)))
    if not found:
        raise ConfigError(f"none of the {len(items)} items of {path} has its audio under {root}; "
                          f"pass --audio-root with the folder holding e.g. {items[0].audio if items else 'the clips'}")
    return found, skipped


def predict(engine: LocalEngine, items: list[EvalItem], style: PromptStyle, settings: SamplingSettings,
            choices: list[list[str]] | None = None, desc: str = "eval") -> list[str]:
    """One greedy completion per item (in batches), with optionally reordered choices."""
    choices = choices or [i.choices for i in items]
    outputs: list[str] = []
    step = engine.batch_size
    for start in tqdm(range(0, len(items), step), desc=desc, unit="batch", leave=False):
        chunk = items[start:start + step]
        prompts = [messages(i.question, c, style) for i, c in zip(chunk, choices[start:start + step])]
        try:
            rollouts = engine.sample(prompts, [i.audio for i in chunk], settings)
        except PromptTooLong as err:
            raise ConfigError(f"item {chunk[err.row].id}: {err}") from None
        outputs += [group[0] for group in rollouts.texts]
    return outputs


def score(items: list[EvalItem], completions: list[str]) -> pd.DataFrame:
    """One row per item: its groups and whether the extracted answer passes the MMAU rule."""
    rows = []
    for item, completion in zip(items, completions):
        prediction = extract_answer(completion)
        rows.append(dict(id=item.id, task=item.task, difficulty=item.difficulty, sub_category=item.sub_category,
                         prediction=prediction, correct=mmau_match(prediction, item.answer, item.choices)))
    return pd.DataFrame(rows)


def accuracy_table(scored: pd.DataFrame, shuffled: pd.DataFrame | None = None) -> pd.Series:
    """Accuracy in % keyed by group (`total`, `task/sound`, `difficulty/easy`, `sub-category/...`)."""
    table = {"total": scored.correct.mean() * 100}
    for column, prefix in (("task", "task"), ("difficulty", "difficulty"), ("sub_category", "sub-category")):
        for value, group in scored.groupby(column):
            if value:
                table[f"{prefix}/{value}"] = group.correct.mean() * 100
    if shuffled is not None:
        table["total (shuffled options)"] = shuffled.correct.mean() * 100
    table["n"] = len(scored)
    return pd.Series(table)


def shuffled_choices(items: list[EvalItem], seed: int) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    return [[i.choices[j] for j in rng.permutation(len(i.choices))] for i in items]


def named(model: str) -> tuple[str, str]:
    """`NAME=PATH` -> (NAME, PATH); a bare path is named after its folder."""
    name, sep, path = model.partition("=")
    return (name, path) if sep else (Path(model).name or model, model)


def trained_style(model: str) -> PromptStyle:
    """The prompt style a checkpoint of ours was trained with (its saved config); implicit otherwise."""
    saved = Path(model) / "config.yaml"
    if saved.exists():
        prompt = (yaml.safe_load(saved.read_text()) or {}).get("prompt")
        if isinstance(prompt, dict):
            return PromptStyle.model_validate(prompt)
    return PromptStyle()


def evaluate_model(model: str, items: list[EvalItem], config: EvalConfig) -> tuple[pd.Series, list[str]]:
    lm = AudioLM.load(model)
    engine = LocalEngine(lm, batch_size=config.batch_size)
    style = config.prompt or trained_style(model)
    settings = SamplingSettings(k=1, temperature=0.0, max_new_tokens=config.max_new_tokens)
    completions = predict(engine, items, style, settings, desc=f"eval {Path(model).name}")
    scored = score(items, completions)
    shuffled = None
    if config.shuffled:
        reordered = shuffled_choices(items, config.seed)
        shuffled_items = [EvalItem(**{**i.__dict__, "choices": c}) for i, c in zip(items, reordered)]
        shuffled = score(shuffled_items, predict(engine, items, style, settings, reordered, "shuffled"))
    return accuracy_table(scored, shuffled), completions


def write_predictions(items: list[EvalItem], completions: list[str], folder: Path) -> None:
    """MMAU format (`model_output`) and MMAR format (`answer_prediction`) side by side."""
    folder.mkdir(parents=True, exist_ok=True)
    mmau = [{**i.record, "model_output": extract_answer(c), "raw_output": c} for i, c in zip(items, completions)]
    mmar = [{**i.record, "answer_prediction": extract_answer(c)} for i, c in zip(items, completions)]
    (folder / "mmau_predictions.json").write_text(json.dumps(mmau, indent=1, ensure_ascii=False))
    (folder / "mmar_predictions.json").write_text(json.dumps(mmar, indent=1, ensure_ascii=False))


def write_chart(table: pd.DataFrame, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in table.index if r == "total" or r.startswith("task/") or r.startswith("total (")]
    ax = table.loc[rows].plot.bar(rot=20, figsize=(8, 4))
    ax.set_ylabel("accuracy (%)")
    ax.set_title("accuracy by task (MMAU rule)")
    ax.figure.tight_layout()
    ax.figure.savefig(path, dpi=90)
    plt.close(ax.figure)
    return path


def run_eval(config: EvalConfig) -> pd.DataFrame:
    """Evaluate every model on the same items; returns the comparison table (rows: groups, columns: models)."""
    if (config.workspace is None) == (config.benchmark is None):
        raise ConfigError("give exactly one of --workspace or --benchmark")
    skipped: list[str] = []
    if config.workspace is not None:
        items = workspace_items(config.workspace, config.split, config.limit)
    else:
        items, skipped = benchmark_items(config.benchmark, config.audio_root, config.limit)
    columns = {}
    for name, model in map(named, config.models):
        table, completions = evaluate_model(model, items, config)
        columns[name] = table
        write_predictions(items, completions, config.out / name)
    comparison = pd.DataFrame(columns)
    config.out.mkdir(parents=True, exist_ok=True)
    report = {"config": config.model_dump(mode="json"), "n_items": len(items), "skipped": skipped,
              "accuracy": comparison.to_dict()}
    (config.out / "report.json").write_text(json.dumps(report, indent=2))
    write_chart(comparison.drop(index="n"), config.out / "accuracy.png")
    return comparison
