"""`sari-train experiment`: SARI's ablations at toy scale, several seeds per arm.

    sari-train experiment --config pipelines/experiments/ablations.yaml
    sari-train experiment --config pipelines/experiments/ablations.yaml --set seeds=[0] --set arms.sari.sft=false

An arm is one way to train from the same base model: the prompt format (implicit: answer only;
free: a free-form chain; structured: planning, caption, reasoning, summary), whether an SFT
warm-up on that format comes first, and whether GRPO follows and in which order it meets the items
(the curriculum, easy → hard by the base model's pass rates, or random). Each arm runs once per
seed (the seed drives data order, sampling and dropout; the base model and the corpus stay fixed)
and is scored greedily on the held-out split with the MMAU rule, in its own prompt format.

Stages are shared and kept: the SFT of one format and seed serves every arm that needs it, and a
stage whose final model was made with the same settings is not run again (scores likewise), so a
stopped experiment continues where it stopped and re-running a finished one only re-prints its table. Writes, in `out`:
`results.csv` (one row per arm and seed), `table.md` (mean ± sample std over seeds, per task, then the
`compare:` pairs: a − b per seed and whether the gap exceeds twice the larger seed std),
`accuracy.png`, and the runs themselves (`sft-<format>-seed<N>/`, `sft-<format>-<S>steps-seed<N>/` for an
arm with its own `sft_steps`, `<arm>-seed<N>/`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from corpus.provenance import recorded_run
from corpus.settings import read_yaml_mapping
from sari_train.config import STAGES, ConfigError
from sari_train.evaluate import EvalConfig, EvalItem, evaluate_model, workspace_items
from sari_train.prompts import PromptFormat

GROUPS = ("total", "task/sound", "task/music", "task/speech")


class Arm(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: PromptFormat = Field("structured", description="implicit | free | structured")
    sft: bool = Field(True, description="SFT warm-up on this format first (from the base model)")
    grpo: bool = Field(True, description="then GRPO")
    sft_steps: int | None = Field(None, ge=1, description="this arm's SFT length (default: the preset's max_steps)")
    sampler: Literal["curriculum", "random"] = Field("curriculum", description="GRPO's prompt order")
    label: str = Field("", description="one line for the table")


class ExperimentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workspace: Path = Field(description="corpus workspace with chains of thought and the base model's difficulty")
    base: str = Field(description="the base model every arm starts from (the one difficulty was measured with)")
    seeds: list[int] = Field([0, 1, 2], min_length=1, description="one run per arm and seed")
    arms: dict[str, Arm] = Field(min_length=1, description="arm name -> how it trains")
    preset: Path | None = Field(None, description="a training preset (pipelines/train/*.yaml) whose shared keys "
                                                  "and sft/grpo blocks every stage starts from")
    sft: dict[str, Any] = Field(default_factory=dict, description="SFTConfig fields for every SFT stage (over the preset)")
    grpo: dict[str, Any] = Field(default_factory=dict, description="GRPOConfig fields for every GRPO stage (over the preset)")
    compare: list[tuple[str, str]] = Field(
        default_factory=list, description="pairs of arms [a, b] to set side by side: a - b per seed, the gap "
                                          "of the means, and whether it exceeds 2 seed std of either arm")
    eval_split: str = Field("test", description="held-out split the arms are scored on")
    eval_limit: int | None = Field(None, ge=1, description="score at most N held-out items")
    eval_max_new_tokens: int = Field(320, ge=1, description="generation budget of the scoring pass")
    out: Path = Field(Path("artifacts/experiment"), description="experiment folder")

    @model_validator(mode="after")
    def _compared_arms_exist(self) -> "ExperimentConfig":
        unknown = sorted({arm for pair in self.compare for arm in pair} - set(self.arms))
        if unknown:
            raise ValueError(f"compare names arms {unknown} that `arms` does not define ({', '.join(self.arms)})")
        return self


def stage_fields(config: ExperimentConfig, stage: str) -> dict[str, Any]:
    """A stage's settings: the preset's shared keys, its block for the stage, then the experiment's."""
    fields: dict[str, Any] = {}
    if config.preset is not None:
        preset = read_yaml_mapping(config.preset, ConfigError, hint=" (presets live in pipelines/train/)")
        fields = {**{k: v for k, v in preset.items() if k not in STAGES}, **(preset.get(stage) or {})}
    return {**fields, **getattr(config, stage)}


def sft_stage(config: ExperimentConfig, fmt: str, seed: int, steps: int | None = None) -> Path:
    """The SFT of one format and seed (and length, when an arm sets its own), shared by the arms that need it."""
    from sari_train.sft import SFTConfig, train_sft

    fields = stage_fields(config, "sft")
    length = {} if steps is None else {"max_steps": steps}
    folder = f"sft-{fmt}-seed{seed}" if steps is None else f"sft-{fmt}-{steps}steps-seed{seed}"
    stage = SFTConfig.model_validate({
        **fields, **length, "model": config.base, "workspace": config.workspace,
        "prompt": {**fields.get("prompt", {}), "format": fmt}, "seed": seed,
        "out": config.out / folder, "eval_split": None})
    target = "answers only" if fmt == "implicit" else f"{fmt} chains"
    return run_stage(stage, train_sft, f"SFT warm-up on {target}, seed {seed}")


def grpo_stage(config: ExperimentConfig, name: str, arm: Arm, seed: int, start: str) -> Path:
    from sari_train.grpo.train import GRPOConfig, train_grpo

    fields = stage_fields(config, "grpo")
    stage = GRPOConfig.model_validate({
        **fields, "model": start, "workspace": config.workspace, "sampler": arm.sampler,
        "prompt": {**fields.get("prompt", {}), "format": arm.format}, "seed": seed,
        "out": config.out / f"{name}-seed{seed}", "eval_split": None})
    return run_stage(stage, train_grpo, f"GRPO for arm {name} ({arm.sampler} order), seed {seed}")


def run_stage(stage: Any, train: Any, what: str) -> Path:
    """Train unless the stage's final model was already made with exactly this config."""
    final = stage.out / "final"
    saved = final / "config.yaml"
    if saved.exists() and yaml.safe_load(saved.read_text()) == stage.model_dump(mode="json"):
        return final
    print(f"== {what} -> {stage.out}", flush=True)
    with recorded_run(None, "experiment-stage", folder=stage.out, config=stage.model_dump(mode="json")) as results:
        results.update({k: v for k, v in train(stage).items() if k != "left_out"})
    return final


def arm_model(config: ExperimentConfig, name: str, arm: Arm, seed: int) -> str:
    """Train (or reuse) the arm's stages for one seed; the model folder to score."""
    model = str(sft_stage(config, arm.format, seed, arm.sft_steps)) if arm.sft else config.base
    return str(grpo_stage(config, name, arm, seed, model)) if arm.grpo else model


def score_model(config: ExperimentConfig, model: str, items: list[EvalItem], fmt: str | None) -> dict[str, float]:
    """Greedy held-out accuracy (%) by group, kept in `scores/<run>.json` and reused while the
    model and the scoring settings are the same."""
    run = Path(model).parent.name if Path(model).name == "final" else Path(model).name
    cache = config.out / "scores" / f"{run}.json"
    settings = {"model": model, "split": config.eval_split, "limit": config.eval_limit, "format": fmt,
                "max_new_tokens": config.eval_max_new_tokens, "items": len(items),
                "model_config": (Path(model) / "config.yaml").read_text() if (Path(model) / "config.yaml").exists()
                else None}
    if cache.exists():
        kept = json.loads(cache.read_text())
        if kept.get("settings") == settings:
            return kept["scores"]
    evaluation = EvalConfig(models=[model], workspace=config.workspace, split=config.eval_split,
                            prompt={"format": fmt} if fmt else None, shuffled=False,
                            max_new_tokens=config.eval_max_new_tokens)
    table, _ = evaluate_model(model, items, evaluation, sharded=False)  # every process scores the arm
    scores = {k: float(v) for k, v in table.items()}
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"settings": settings, "scores": scores}, indent=1))
    return scores


def summarise(results: pd.DataFrame) -> pd.DataFrame:
    """Mean ± sample std over seeds per arm, for the accuracy columns present."""
    groups = [g for g in GROUPS if g in results.columns and results[g].notna().any()]
    rows = []
    for arm, runs in results.groupby("arm", sort=False):
        row = {"arm": arm, "label": runs["label"].iloc[0], "seeds": len(runs)}
        for g in groups:  # a single run (the base) has no spread to show
            row[g] = f"{runs[g].mean():.1f} ± {runs[g].std(ddof=1):.1f}" if len(runs) > 1 else f"{runs[g].mean():.1f}"
        rows.append(row)
    return pd.DataFrame(rows)


def comparison(results: pd.DataFrame, a: str, b: str, column: str = "total") -> dict[str, Any]:
    """Arm a against arm b on the seeds both ran: a - b per seed, the gap of the means, each arm's
    sample std over seeds, and whether the gap is more than twice the larger of the two stds."""
    runs = {arm: results[results.arm == arm].set_index("seed")[column] for arm in (a, b)}
    seeds = sorted(set(runs[a].index) & set(runs[b].index))
    diffs = [round(float(runs[a][s] - runs[b][s]), 1) for s in seeds]
    std = max(float(runs[arm][seeds].std(ddof=1)) if len(seeds) > 1 else float("nan") for arm in (a, b))
    gap = float(runs[a][seeds].mean() - runs[b][seeds].mean()) if seeds else float("nan")
    return {"a": a, "b": b, "seeds": seeds, "per_seed": diffs, "gap": round(gap, 1), "larger_std": round(std, 1),
            "gap_over_std": round(gap / std, 1) if std > 0 else float("nan"), "separated": bool(abs(gap) > 2 * std)}


def comparison_lines(comparisons: list[dict[str, Any]]) -> str:
    if not comparisons:
        return ""
    lines = ["| a − b | per seed | gap of means | larger seed std | gap ÷ std | more than 2 std apart |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {c['a']} − {c['b']} | {', '.join(f'{d:+.1f}' for d in c['per_seed'])} | {c['gap']:+.1f} | "
              f"{c['larger_std']:.1f} | {c['gap_over_std']:+.1f} | {'yes' if c['separated'] else 'no'} |"
              for c in comparisons]
    return "\n" + "\n".join(lines) + "\n"


def markdown(summary: pd.DataFrame, config: ExperimentConfig, command: str) -> str:
    """The summary as a Markdown table, headed by what was measured and the command that measures it."""
    table = summary.rename(columns={"label": "what it does"})
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return (f"Held-out accuracy (%, MMAU rule, greedy) on split `{config.eval_split}`, mean ± sample std over "
            f"seeds {config.seeds}.\nRegenerate: `{command}`\n\n" + "\n".join(lines) + "\n")


def plot(results: pd.DataFrame, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = results.groupby("arm", sort=False)["total"].agg(["mean", "std"]).fillna(0.0)
    fig, ax = plt.subplots(figsize=(1.2 * len(stats) + 2, 3.5))
    ax.bar(stats.index, stats["mean"], yerr=stats["std"], capsize=4, color="tab:blue")
    for arm, runs in results.groupby("arm", sort=False):
        ax.scatter([arm] * len(runs), runs["total"], color="black", s=10, zorder=3)
    ax.set_ylabel("held-out accuracy (%)")
    ax.set_title("ablations: mean ± std over seeds (dots: seeds)")
    ax.tick_params(axis="x", rotation=20)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def run_experiment(config: ExperimentConfig, command: str = "sari-train experiment") -> dict[str, Any]:
    if not Path(config.base).exists():
        raise ConfigError(f"base model {config.base} not found (make demo builds workspaces/runs/base/final)")
    items = workspace_items(config.workspace, config.eval_split, config.eval_limit)
    rows = [{"arm": "base", "label": "the base model, no further training", "seed": None,
             **score_model(config, config.base, items, None)}]
    for seed in config.seeds:
        for name, arm in config.arms.items():
            model = arm_model(config, name, arm, seed)
            rows.append({"arm": name, "label": arm.label, "seed": seed, **score_model(config, model, items, arm.format)})
            print(f"-- {name} seed {seed}: {rows[-1]['total']:.1f}%", flush=True)
    results = pd.DataFrame(rows)
    config.out.mkdir(parents=True, exist_ok=True)
    results.to_csv(config.out / "results.csv", index=False)
    summary = summarise(results)
    comparisons = [comparison(results, a, b) for a, b in config.compare]
    (config.out / "table.md").write_text(markdown(summary, config, command) + comparison_lines(comparisons))
    plot(results, config.out / "accuracy.png")
    base = float(results.loc[results.arm == "base", "total"].iloc[0])
    gains = {arm: {"gain_over_base": round(runs.total.mean() - base, 1),
                   "seed_std": round(runs.total.std(ddof=1), 1) if len(runs) > 1 else 0.0}
             for arm, runs in results[results.arm != "base"].groupby("arm", sort=False)}
    return {"table": summary, "gains": gains, "comparisons": comparisons, "results": str(config.out / "results.csv"),
            "markdown": str(config.out / "table.md"), "plot": str(config.out / "accuracy.png")}
