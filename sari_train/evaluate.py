"""`sari-train eval`: accuracy with the official MMAU/MMAR word-set rule.

    sari-train eval --model base=models/base --model grpo=runs/grpo/final --workspace workspaces/demo --split test
    sari-train eval --model PATH --benchmark benchmarks/mmau/mmau-test-mini.v2025-03.json --audio-root data/mmau
    sari-train eval --model PATH --workspace workspaces/eval-mmar --split test    # pipelines/eval-mmar.yaml
    sari-train eval --model PATH --dataset workspaces/demo/exports/hub:eval --split test   # or a Hub id

    sari-train eval --model Qwen/Qwen2-Audio-7B-Instruct --benchmark mmau.json --audio-root DIR --batch-size 32
    vllm serve runs/grpo/final &      # or SGLang: any OpenAI-compatible server that takes input_audio
    sari-train eval --endpoint http://127.0.0.1:8000/v1 --model runs/grpo/final --benchmark mmau.json --audio-root DIR
    accelerate launch --num-processes 8 -m sari_train.cli eval --model ... --benchmark ...   # or torchrun

Runs on the GPU in bfloat16 when there is one (`--device`, `--dtype` override: cpu/cuda[:i], float32/
bfloat16/float16), or through a server: with `--endpoint URL` each `--model` is a model name the
server serves (vLLM names a model after the path it was started with, so a checkpoint's saved prompt
format is still found), asked with the same prompts, greedy (temperature 0), the clip sent as an
`input_audio` WAV, `--batch-size` prompts at a time with at most `--concurrency` requests in flight
(retries with backoff; the key from the variable `--api-key-env` names). Under `accelerate launch` or `torchrun` each process takes every n-th item on
its own GPU and rank 0 gathers the completions, scores and writes everything (same outputs as one
process: the split never changes a greedy answer).

`--model NAME=PATH` names a column (default: the folder's name). Each model is asked in the prompt
format it was trained with (read from the `config.yaml` our trainers save next to the weights;
implicit for other models) unless `--format` sets one for all. Greedy by default. Reports total
and the official scripts' breakdowns (micro averages): MMAU's task, difficulty and sub-category,
MMAR's modality, category (Signal / Perception / Semantic / Cultural Layer) and sub-category, plus
accuracy with the options shuffled (MMAU's gold leans to option A). Every benchmark item is
scored or listed as skipped with its reason (report and printed summary). Writes, per model, the
benchmark's own records plus the prediction field its official `evaluation.py` reads:
`mmau_predictions.json` (`model_output`) for MMAU-style records, `mmar_predictions.json`
(`answer_prediction`, plus `thinking_prediction` for MMAR's rubric scorer) for MMAR's; a report
JSON, and one table and PNG comparing all models.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import ConfigDict, Field
from tqdm import tqdm

from corpus.benchmarks import PREDICTION_FIELD, benchmark_kind, read_benchmark, shown_choices
from corpus.clips import load_clip, read_audio, under_root
from corpus.scoring import extract_answer, mmau_match
from corpus.store import Workspace
from sari_train.config import ConfigError
from sari_train.datasets import DatasetOptions, MissingSplit
from sari_train.device import AttentionName, DtypeName, gather_in_order, launched, pick
from sari_train.models.adapter import AudioLM, PromptTooLong
from sari_train.openai_client import EndpointOptions
from sari_train.prompts import PromptStyle, messages
from sari_train.rollout import LocalEngine, SamplingSettings


class EvalConfig(DatasetOptions, EndpointOptions):
    model_config = ConfigDict(extra="forbid")

    models: list[str] = Field(min_length=1, description="model folders (or hub ids when online) to compare; "
                                                        "NAME=PATH names the column; with --endpoint: served "
                                                        "model names")
    workspace: Path | None = Field(None, description="evaluate the items of this workspace's --split")
    split: str = Field("test", description="workspace or dataset split to evaluate")
    benchmark: Path | None = Field(None, description="an MMAU/MMAR JSON or JSONL file, e.g. "
                                                      "benchmarks/mmau/mmau-test-mini.v2025-03.json")
    audio_root: Path | None = Field(None, description="folder the benchmark's audio paths are relative to "
                                                      "(e.g. data/mmau, holding test-mini-audios/)")
    prompt: PromptStyle | None = Field(None, description="one prompt style for all models (default: each "
                                                          "model's trained style, else implicit)")
    max_new_tokens: int = Field(64, ge=1, description="generation budget (raise it for thinking formats)")
    batch_size: int = Field(8, ge=1, description="prompts per generate call (per process); with --endpoint, "
                                                 "prompts per batch of requests")
    device: str = Field("auto", description="auto (cuda:<LOCAL_RANK> if there is a GPU, else cpu), cpu, cuda, cuda:1")
    dtype: DtypeName = Field("auto", description="auto (bfloat16 on GPU, float32 on CPU), float32, bfloat16, float16")
    attn_implementation: AttentionName = Field("auto", description="auto (flash_attention_2 when installed and on "
                                                "a GPU in 16 bits, else sdpa), sdpa, eager, flash_attention_2")
    shuffled: bool = Field(True, description="also score with every item's options shuffled")
    vllm: bool = Field(False, description="answer with vLLM in this process (the [vllm] extra) instead of "
                                          "transformers: same prompts, same greedy rule")
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


# The official scripts' breakdowns: MMAU's task, difficulty, sub-category; MMAR's modality, category,
# sub-category. Each is read from the benchmark's own record, so our rows are the scripts' rows.
GROUPS = ("task", "modality", "category", "difficulty", "sub-category")


LEVELS = ("easy", "medium", "hard")  # shown in this order, not alphabetically


def difficulty_label(knob: float | None) -> str:
    """Synthetic items carry a numeric difficulty knob; report it as MMAU-style thirds."""
    if knob is None:
        return ""
    return "easy" if knob < 1 / 3 else "medium" if knob < 2 / 3 else "hard"


def workspace_items(root: Path, split: str, limit: int | None) -> list[EvalItem]:
    with Workspace(root, read_only=True) as ws:
        items = [i for i in ws.items(split) if i.audio is not None][:limit]
        splits = Counter(i.split for i in ws.items() if i.audio is not None) if not items else {}
    if not items:
        there = ", ".join(f"{name} ({n})" for name, n in sorted(splits.items())) or "none"
        raise ConfigError(f"workspace {root} has no items with audio in split {split!r} (its splits with audio: "
                          f"{there}); choose one with --split")
    return [corpus_item(item.model_dump(), item.audio.path, load_clip(root, item.audio)) for item in items]


def corpus_item(row: dict[str, Any], audio_id: str, audio: np.ndarray) -> EvalItem:
    """An item of our corpus (a workspace row, or a row of a published dataset) as an EvalItem."""
    meta = row.get("meta") or {}
    meta = json.loads(meta) if isinstance(meta, str) else meta
    family = meta.get("family") or meta.get("sub-category") or row.get("sub_category") or ""
    knob = meta.get("difficulty", row.get("difficulty"))  # MMAU's easy/medium/hard, or the synthetic numeric knob
    difficulty = knob if isinstance(knob, str) else difficulty_label(knob)
    task = row.get("task") or ""
    # Benchmark workspaces keep the record as the benchmark wrote it; other items get MMAU's fields.
    record = meta.get("benchmark_record") or {
        "id": meta.get("benchmark_id", row["id"]), "audio_id": audio_id, "question": row["question"],
        "choices": row["choices"], "answer": row["answer"], "dataset": meta.get("dataset", row.get("source")),
        "task": task, "split": row.get("split"), "category": row.get("category") or "",
        "sub-category": family, "difficulty": difficulty}
    return EvalItem(row["id"], row["question"], row["choices"], row["answer"], task, difficulty, family, audio, record)


def dataset_items(config: EvalConfig) -> list[EvalItem]:
    """The rows of `--dataset`'s `--split` (a published `eval` config, or any dataset through `columns`)."""
    from sari_train.data import data_source

    source = data_source(config)
    try:
        pairs, _ = source.records(config.split, limit=config.limit)
    except MissingSplit as err:
        raise ConfigError(err.hint("--split", "--dataset")) from None
    items = []
    for example, row in pairs:
        fields = {ours: row.get(source.column(ours)) for ours in ("task", "category", "sub_category", "difficulty",
                                                                 "meta", "source")}
        fields.update(id=example.id, question=example.question, choices=example.choices, answer=example.answer,
                      split=config.split)
        items.append(corpus_item(fields, example.id, example.waveform()))
    return items


def workspace_skipped(root: Path, split: str) -> list[dict[str, str]]:
    """The benchmark records of a workspace's eval sources that are not items with audio in `split`:
    each with its reason and where it came from (the build's quarantine record, file:line)."""
    with Workspace(root, read_only=True) as ws:
        items = ws.items()
        quarantine = ws.frame("quarantine")
    sources = {i.source for i in items if i.split == split and "benchmark_id" in i.meta}
    stored = {i.meta.get("locator") for i in items if i.source in sources and i.audio is not None}
    skipped = [{"item": i.meta["benchmark_id"], "reason": "no_audio", "detail": "stored without audio"}
               for i in items if i.source in sources and i.split == split and i.audio is None]
    if len(quarantine):
        rows = quarantine[quarantine.source.isin(sources) & ~quarantine.locator.isin(stored)]
        skipped += [{"item": r.locator, "reason": r.reason, "detail": r.message} for r in rows.itertuples()]
    return skipped


def benchmark_items(path: Path, audio_root: Path | None, limit: int | None
                    ) -> tuple[list[EvalItem], list[dict[str, str]]]:
    """Benchmark items whose audio exists, and every other record with why it was skipped."""
    if not path.exists():
        raise ConfigError(f"benchmark file {path} not found")
    root = audio_root or path.parent
    found: list[EvalItem] = []
    items, problems = read_benchmark(path)
    skipped = [{"item": locator, "reason": "invalid_benchmark_record", "detail": why} for locator, why in problems]
    for item in items[:limit]:
        audio_path = under_root(root, item.audio)
        if audio_path is None or not audio_path.is_file():
            reason = "path_escapes_root" if audio_path is None else "missing_audio"
            skipped.append({"item": item.id, "reason": reason, "detail": f"{item.audio} under {root}"})
            continue
        found.append(EvalItem(item.id, item.question, shown_choices(item.choices), item.answer, item.task,
                              item.difficulty, item.sub_category, read_audio(audio_path), dict(item.record)))
    if not found:
        raise ConfigError(f"none of the {len(items)} items of {path} has its audio under {root}; "
                          f"pass --audio-root with the folder holding e.g. {items[0].audio if items else 'the clips'}")
    return found, skipped


def predict(engine: Any, items: list[EvalItem], style: PromptStyle, settings: SamplingSettings,
            choices: list[list[str]] | None = None, desc: str = "eval", batch_size: int = 8) -> list[str | None]:
    """One greedy completion per item (in batches), with optionally reordered choices; `engine` is a
    LocalEngine or an EndpointEngine. An item whose prompt is over the model's context gets None."""
    choices = choices or [i.choices for i in items]
    outputs: list[str | None] = []
    step = batch_size
    for start in tqdm(range(0, len(items), step), desc=desc, unit="batch", leave=False):
        chunk = items[start:start + step]
        prompts = [messages(i.question, c, style) for i, c in zip(chunk, choices[start:start + step])]
        outputs += answer_batch(engine, prompts, [i.audio for i in chunk], settings)
    return outputs


def answer_batch(engine: Any, prompts: list, audio: list[np.ndarray], settings: SamplingSettings) -> list[str | None]:
    """The batch's greedy answers; a prompt over the context (refused before any forward pass) is
    left out as None and the rest answered, so one over-long item never stops the evaluation."""
    try:
        return [group[0] for group in engine.sample(prompts, audio, settings).texts]
    except PromptTooLong as err:
        rest = [j for j in range(len(prompts)) if j != err.row]
        answers = answer_batch(engine, [prompts[j] for j in rest], [audio[j] for j in rest], settings) if rest else []
        answers.insert(err.row, None)
        return answers


def score(items: list[EvalItem], completions: list[str]) -> pd.DataFrame:
    """One row per item: its groups (from its benchmark record) and whether the extracted answer
    passes the MMAU/MMAR rule."""
    rows = []
    for item, completion in zip(items, completions):
        prediction = extract_answer(completion)
        groups = {g: str(item.record[g]) for g in GROUPS if item.record.get(g) not in (None, "")}
        rows.append(dict(id=item.id, **groups, prediction=prediction,
                         correct=mmau_match(prediction, item.answer, item.choices)))
    return pd.DataFrame(rows)


def accuracy_table(scored: pd.DataFrame, shuffled: pd.DataFrame | None = None) -> pd.Series:
    """Accuracy in % keyed by group (`total`, `task/sound`, `modality/mix-sound-speech`,
    `category/Signal Layer`, `difficulty/easy`, `sub-category/...`)."""
    table = {"total": scored.correct.mean() * 100}
    for column in GROUPS:
        if column not in scored:
            continue
        groups = dict(list(scored.groupby(column)))
        for value in sorted(groups, key=lambda v: (LEVELS.index(v) if v in LEVELS else len(LEVELS), v)):
            if value:
                table[f"{column}/{value}"] = groups[value].correct.mean() * 100
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


def model_columns(models: list[str]) -> list[tuple[str, str]]:
    """(column name, model) per --model; two models that would share a column (`A/final` and
    `B/final`) are refused, since one would overwrite the other's predictions and scores."""
    pairs = list(map(named, models))
    names = [name for name, _ in pairs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        clash = [m for m in models if named(m)[0] == repeated[0]]
        raise ConfigError(f"--model {' and --model '.join(clash)} would share the column {repeated[0]!r}; "
                          f"name them apart with NAME=PATH, e.g. --model a={named(clash[0])[1]}")
    return pairs


def trained_style(model: str) -> PromptStyle:
    """The prompt style a checkpoint of ours was trained with (its saved config); implicit otherwise."""
    from sari_train.checkpoints import saved_prompt_style

    return saved_prompt_style(model) or PromptStyle()


def eval_style(config: EvalConfig, model: str) -> PromptStyle:
    """The model's prompt style, with questions asked as the benchmark wrote them: 75 MMAR questions
    say "video", and neither official protocol rewrites them (a corpus build already rewrites AVQA's)."""
    return (config.prompt or trained_style(model)).model_copy(update={"video_to_audio": False})


def make_engine(model: str, config: EvalConfig) -> Any:
    """The served model behind --endpoint, or the model loaded on this process's device."""
    if config.endpoint:
        from sari_train.rollout.endpoint import EndpointEngine

        return EndpointEngine.from_options(config, model)
    if config.vllm:
        from sari_train.rollout.vllm_engine import VLLMEngine

        return VLLMEngine.from_model(model)
    try:
        device, dtype = pick(config.device, config.dtype)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    lm = AudioLM.load(model, dtype=dtype, device=device, attn_implementation=config.attn_implementation)
    return LocalEngine(lm, batch_size=config.batch_size)


def evaluate_model(model: str, items: list[EvalItem], config: EvalConfig,
                   sharded: bool = True) -> tuple[pd.Series, list[str]] | None:
    """Accuracy table and completions of one model; under a launcher (and `sharded`) each process
    answers every n-th item and only rank 0 gets the result (None elsewhere)."""
    engine = make_engine(model, config)
    style = eval_style(config, model)
    settings = SamplingSettings(k=1, temperature=0.0, max_new_tokens=config.max_new_tokens)
    shard = launched() if sharded else None
    mine = slice(shard[0], None, shard[1]) if shard else slice(None)
    try:
        completions = predict(engine, items[mine], style, settings, desc=f"eval {Path(model).name}",
                              batch_size=config.batch_size)
        reordered = shuffled_choices(items, config.seed) if config.shuffled else None
        shuffled_out = (predict(engine, items[mine], style, settings, reordered[mine], "shuffled", config.batch_size)
                        if reordered is not None else [])
    finally:
        if hasattr(engine, "close"):  # an endpoint's connections
            engine.close()
    if shard:
        completions, shuffled_out = gather_in_order(completions, shard), gather_in_order(shuffled_out, shard)
        if shard[0] != 0:
            return None
    too_long = {i for i, c in enumerate(completions) if c is None} | {i for i, c in enumerate(shuffled_out) if c is None}
    if len(too_long) == len(items):
        raise ConfigError(f"model {model}: every prompt is over the model's context ({len(items)} items, e.g. "
                          f"item {items[0].id}); prompts are never truncated: shorten the questions")
    kept = [i for i in range(len(items)) if i not in too_long]
    scored = score([items[i] for i in kept], [completions[i] for i in kept])
    shuffled = None
    if reordered is not None:
        shuffled_items = [EvalItem(**{**items[i].__dict__, "choices": reordered[i]}) for i in kept]
        shuffled = score(shuffled_items, [shuffled_out[i] for i in kept])
    table = accuracy_table(scored, shuffled)
    table.attrs["too_long"] = [items[i].id for i in sorted(too_long)]  # skipped for this model
    if hasattr(engine, "usage"):  # an endpoint's requests, retries, tokens and failures, for the report
        table.attrs["endpoint_usage"] = engine.usage
    return table, completions


_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)


def prediction_record(item: EvalItem, completion: str) -> dict[str, Any]:
    """The benchmark's record plus the field its official script reads (and the raw completion)."""
    kind = benchmark_kind(item.record)
    record = {**item.record, PREDICTION_FIELD[kind]: extract_answer(completion), "raw_output": completion}
    if kind == "mmar":  # MMAR's rubric scorer also reads the reasoning
        thinking = _THINK.search(completion)
        record["thinking_prediction"] = thinking.group(1).strip() if thinking else ""
    return record


def write_predictions(items: list[EvalItem], completions: list[str], folder: Path) -> None:
    """`mmau_predictions.json` for MMAU-style records, `mmar_predictions.json` for MMAR's: each
    one the official evaluation.py of that benchmark reads unedited."""
    folder.mkdir(parents=True, exist_ok=True)
    for kind in PREDICTION_FIELD:
        records = [prediction_record(i, c) for i, c in zip(items, completions) if benchmark_kind(i.record) == kind]
        path = folder / f"{kind}_predictions.json"
        if records:
            path.write_text(json.dumps(records, indent=1, ensure_ascii=False))
        elif path.exists():  # left from an earlier run on another benchmark
            path.unlink()


def write_chart(table: pd.DataFrame, path: Path, chance: float | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = accuracy_figure(table, chance)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def accuracy_figure(table: pd.DataFrame, chance: float | None = None) -> Any:
    """Accuracy by task per model, each bar labelled with its value, and the chance level (the mean
    of 1 / options over the items) as a dashed line."""
    rows = [r for r in table.index if r == "total" or r.startswith("task/") or r.startswith("total (")]
    ax = table.loc[rows].plot.bar(rot=20, figsize=(8, 4.2))
    for bars in ax.containers:
        ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=1)
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label=f"chance ({chance:.1f} %)")
    ax.set_ylim(0, 105)
    ax.set_ylabel("accuracy (%)")
    ax.set_title("accuracy by task (MMAU rule)")
    ax.legend(fontsize=8)
    ax.figure.tight_layout()
    return ax.figure


def printed_table(table: pd.DataFrame) -> str:
    """The comparison as printed: accuracies to one decimal, item counts as whole numbers."""
    shown = table.round(1).astype(object)
    if "n" in shown.index:
        shown.loc["n"] = table.loc["n"].astype(int)
    return shown.to_string()


def run_eval(config: EvalConfig) -> pd.DataFrame | None:
    """Evaluate every model on the same items; returns the comparison table (rows: groups, columns:
    models) on rank 0 (None on the other ranks of a launched run, which write nothing)."""
    if [config.workspace, config.benchmark, config.dataset].count(None) != 2:
        raise ConfigError("give exactly one of --workspace, --dataset or --benchmark")
    models = model_columns(config.models)
    skipped: list[dict[str, str]] = []
    if config.workspace is not None:
        items = workspace_items(config.workspace, config.split, config.limit)
        skipped = workspace_skipped(config.workspace, config.split)
    elif config.dataset is not None:
        items = dataset_items(config)
    else:
        items, skipped = benchmark_items(config.benchmark, config.audio_root, config.limit)
    columns = {}
    records_skipped = len(skipped)  # benchmark records without usable audio: skipped for every model
    for name, model in models:
        result = evaluate_model(model, items, config)
        if result is None:  # not rank 0: rank 0 writes the outputs
            continue
        columns[name], completions = result
        too_long = set(columns[name].attrs.get("too_long", []))
        skipped += [{"item": i, "reason": "prompt_too_long", "model": name,
                     "detail": f"the prompt is over {name}'s context; prompts are never truncated"} for i in too_long]
        strict_n = len(items) + records_skipped
        if strict_n > columns[name]["n"]:  # the strict figure: every skipped item counted as wrong
            columns[name]["total (skipped counted wrong)"] = columns[name]["total"] * columns[name]["n"] / strict_n
        kept = [(i, c) for i, c in zip(items, completions) if i.id not in too_long]
        write_predictions([i for i, _ in kept], [c for _, c in kept], config.out / name)
    if not columns:
        return None
    comparison = pd.DataFrame(columns)
    config.out.mkdir(parents=True, exist_ok=True)
    reasons = dict(Counter(s["reason"] for s in skipped))
    report = {"config": config.model_dump(mode="json"), "n_items": len(items), "n_skipped": len(skipped),
              "skipped_reasons": reasons, "skipped": skipped, "accuracy": comparison.to_dict()}
    if config.endpoint:
        report["endpoint_usage"] = {name: column.attrs.get("endpoint_usage") for name, column in columns.items()}
    (config.out / "report.json").write_text(json.dumps(report, indent=2))
    chance = 100 * float(np.mean([1 / len(i.choices) for i in items]))
    write_chart(comparison.drop(index="n"), config.out / "accuracy.png", chance)
    first = comparison.iloc[:, 0]  # the printed summary's counts are the first model's
    first_skipped = [s for s in skipped if s.get("model") in (None, comparison.columns[0])]
    comparison.attrs.update(n_skipped=len(items) + records_skipped - int(first["n"]),
                            skipped_reasons=dict(Counter(s["reason"] for s in first_skipped)))
    return comparison
