"""`sari-train push RUN_DIR REPO` (and `--push-to-hub REPO` on sft/grpo): upload a run's final model
to a Hub model repo with a model card written from the run.

    HF_TOKEN=... sari-train push runs/grpo me/sari-grpo              # private unless --public
    sari-train push runs/grpo me/sari-grpo --dry-run                 # write the card, list what would be sent
    sari-train grpo --config pipelines/train/r1-aqa.yaml --push-to-hub me/r1-aqa   # push when training ends

The card (README.md) comes from the run folder alone: the base model (followed through our own
checkpoints back to the first model), the data (workspace or dataset id, and that dataset's card),
held-out accuracy by step from metrics.jsonl, the curves (curves.png goes up too), the training
config and the run's provenance. `RUN_DIR/hub/` is the upload folder: hard links to `final/`, the
card and the curves. Only files whose content changed are sent (`corpus/hub.py`); the token comes
from HF_TOKEN or `hf auth login` and never reaches a log, the card or a run record.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import yaml

from corpus.hub import PushPlan, dry_run_plan, model_weights, push
from corpus.store import WorkspaceError
from sari_train.datasets import split_spec
from sari_train.metrics import read_jsonl


def run_config(run_dir: Path) -> dict[str, Any]:
    saved = run_dir / "final" / "config.yaml"
    if not saved.exists():
        raise WorkspaceError(f"{run_dir} holds no finished run (no final/config.yaml); train it first or pass "
                             f"the folder given to --out")
    return yaml.safe_load(saved.read_text()) or {}


def run_record(run_dir: Path) -> dict[str, Any]:
    """The newest sft/grpo provenance record in the run folder ({} when there is none)."""
    records = [json.loads(p.read_text()) for p in sorted((run_dir / "runs").glob("*.json"))]
    records = [r for r in records if r.get("command") in ("sft", "grpo")]
    return records[-1] if records else {}


def lineage(model: str, limit: int = 8) -> list[str]:
    """The model a run started from, followed back through our checkpoints (their config.yaml)."""
    chain = [model]
    while len(chain) < limit:
        saved = Path(chain[-1]) / "config.yaml"
        parent = (yaml.safe_load(saved.read_text()) or {}).get("model") if saved.exists() else None
        if not parent or parent in chain:
            break
        chain.append(parent)
    return chain


def is_hub_id(name: str | None) -> bool:
    return bool(name) and not Path(name).exists() and name.count("/") == 1 and not name.startswith((".", "/"))


def dataset_card_lines(spec: str) -> list[str]:
    """Where the training data's card is: a Hub link, or a local card's title and summary."""
    path, config = split_spec(spec)
    if is_hub_id(path):
        return [f"Dataset card: https://huggingface.co/datasets/{path}"]
    card = Path(path) / "README.md"
    if not card.exists():
        return []
    text = card.read_text()
    body = text.split("---", 2)[2] if text.startswith("---") else text
    paragraphs = [p.strip() for p in body.split("\n\n") if p.strip()]
    title = next((p.lstrip("# ").strip() for p in paragraphs if p.startswith("# ")), path)
    summary = next((p for p in paragraphs if not p.startswith(("#", "|", "-", "`", "<"))), "")
    return [f"Dataset card ({card}): **{title}**", *([f"> {' '.join(summary.split())[:600]}"] if summary else [])]


def data_lines(config: dict[str, Any]) -> list[str]:
    if config.get("dataset"):
        path, name = split_spec(config["dataset"])
        lines = [f"- Dataset `{path}`" + (f", config `{name}`" if name else "") + f", split `{config.get('split')}`"]
    else:
        lines = [f"- Workspace `{config.get('workspace')}`, split `{config.get('split')}`"]
    if config.get("eval_split"):
        # the order training.held_out_source reads them in
        source = (config.get("eval_dataset") or config.get("eval_workspace") or config.get("dataset")
                  or config.get("workspace"))
        lines.append(f"- Held out: split `{config['eval_split']}` of `{source}` "
                     f"(at most {config.get('eval_limit')} items, greedy)")
    if config.get("dataset"):
        lines += ["", *dataset_card_lines(config["dataset"])]
    return lines


def accuracy_lines(rows: list[dict[str, Any]]) -> list[str]:
    evals = [r for r in rows if r.get("eval/accuracy") is not None]
    if not evals:
        return ["No held-out evaluation was run (eval_split: null)."]
    lines = ["| step | exact match (R1-AQA), % | MMAU rule, % |", "|---:|---:|---:|"]
    for r in evals:
        mmau = r.get("eval/accuracy_mmau")
        lines.append(f"| {r['step']} | {r['eval/accuracy']:.1f} | {'' if mmau is None else f'{mmau:.1f}'} |")
    return lines


def model_card(run_dir: Path, repo_id: str) -> str:
    config, record = run_config(run_dir), run_record(run_dir)
    command = record.get("command") or ("grpo" if "num_generations" in config else "sft")
    chain = lineage(str(config.get("model")))
    meta: dict[str, Any] = {"library_name": "transformers", "pipeline_tag": "audio-text-to-text",
                            "tags": ["sari-toolkit", "audio", "audio-question-answering", command]}
    hub_base = next((m for m in chain if is_hub_id(m)), None)
    if hub_base:
        meta["base_model"] = hub_base
    for spec in (config.get("dataset"), config.get("eval_dataset")):
        if spec and is_hub_id(split_spec(spec)[0]):
            meta.setdefault("datasets", []).append(split_spec(spec)[0])
    what = "curriculum-guided GRPO" if command == "grpo" and config.get("sampler") == "curriculum" else \
        "GRPO" if command == "grpo" else f"supervised fine-tuning ({config.get('prompt', {}).get('format')} targets)"
    steps = config.get("max_steps")
    provenance = {k: record.get(k) for k in ("run_id", "started_at", "finished_at", "seconds", "git_commit")
                  if record.get(k)}
    lines = [
        "---", yaml.safe_dump(meta, sort_keys=False).strip(), "---", "",
        f"# {repo_id.split('/')[-1]}", "",
        f"{what.capitalize()} of `{chain[0]}` for {steps} steps with `sari-train {command}` (SARI toolkit: "
        f"structured audio reasoning, arXiv 2504.15900). Prompt format: `{config.get('prompt', {}).get('format')}` "
        f"(answers in `<answer>…</answer>`, the option text).", "",
        "## Base model", "", " ← ".join(f"`{m}`" for m in chain), "",
        "## Data", "", *data_lines(config), "",
        "## Held-out accuracy", "", *accuracy_lines(read_jsonl(run_dir / "metrics.jsonl")), "",
    ]
    if (run_dir / "curves.png").exists():
        lines += ["![training curves](curves.png)", ""]
    lines += ["## Training config", "", "```yaml", yaml.safe_dump(config, sort_keys=False).strip(), "```", ""]
    if provenance or record.get("versions"):
        lines += ["## Provenance", "", "```json", json.dumps({**provenance, "versions": record.get("versions")},
                                                             indent=1), "```", ""]
    lines += ["## Use", "", "```python", "from sari_train.models.adapter import AudioLM",
              f"lm = AudioLM.load(\"{repo_id}\")  # a transformers checkpoint with its tokenizer and feature extractor",
              "```", ""]
    return "\n".join(lines)


def stage(run_dir: Path, repo_id: str) -> Path:
    """RUN_DIR/hub: hard links to final/ (copies across file systems), the card, the curves."""
    final, folder = run_dir / "final", run_dir / "hub"
    card = model_card(run_dir, repo_id)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    files = [p for p in final.iterdir() if p.is_file()] + [p for p in [run_dir / "curves.png"] if p.exists()]
    for path in files:
        try:
            os.link(path, folder / path.name)
        except OSError:
            shutil.copy2(path, folder / path.name)
    (folder / "README.md").write_text(card)
    return folder


def push_run(run_dir: Path, repo_id: str, *, token: str | None, private: bool = True, endpoint: str | None = None,
             dry_run: bool = False) -> tuple[Path, PushPlan]:
    """Stage the run and upload it (or, in a dry run, list what would be sent)."""
    run_dir = Path(run_dir)
    folder = stage(run_dir, repo_id)
    if dry_run:
        return folder, dry_run_plan(folder, repo_id, token, endpoint, repo_type="model", is_data=model_weights)
    if not token:
        raise WorkspaceError("no Hub token: set HF_TOKEN to a write token (https://huggingface.co/settings/tokens) "
                             f"or run `hf auth login`; the upload folder {folder} is ready")
    hint = f"sari-train push {run_dir} {repo_id}" + (f" --endpoint {endpoint}" if endpoint else "")
    plan = push(folder, repo_id, token=token, private=private, endpoint=endpoint, resume_hint=hint,
                repo_type="model", is_data=model_weights, label="sari-train push")
    return folder, plan
