"""`sari-data publish`: export a workspace as a Hub dataset folder, write its card, optionally push.

    sari-data publish workspaces/demo                              # -> workspaces/demo/exports/hub
    sari-data publish workspaces/demo --dry-run --repo-id me/sari-demo
    HF_TOKEN=... sari-data publish workspaces/demo --repo-id me/sari-demo   # private by default
    HF_TOKEN=... sari-data publish workspaces/demo --repo-id me/sari-demo --no-export   # resume a push
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from corpus.provenance import recorded_run
from corpus.publishing import card_frame
from corpus.store import Workspace, WorkspaceError
from sari_data.publish.card import render_card
from sari_data.publish.export import (ConfigExport, ExportOptions, check_replaceable, export, manifest,
                                      staging_folder, swap_in)
from corpus.hub import PushPlan, dry_run_plan, push


@dataclass
class PublishResult:
    folder: Path
    configs: list[ConfigExport] = field(default_factory=list)
    files: dict[str, int] = field(default_factory=dict)  # path -> bytes, in the folder
    plan: PushPlan | None = None  # what was (or, in a dry run, would be) sent
    pushed: bool = False


def resolve_options(ws: Workspace, options: ExportOptions) -> ExportOptions:
    """Pick the difficulty model when there is exactly one; several need --difficulty-model. An eval
    split the workspace does not have is refused (only the default `test` may be absent)."""
    present = set(ws.query("SELECT DISTINCT split FROM items")["split"])
    absent = [split for split in options.eval_splits if split not in present]
    if absent and list(options.eval_splits) != ["test"]:
        raise WorkspaceError(f"{ws.root}: no items in eval split(s) {', '.join(map(repr, absent))}; the workspace's "
                             f"splits are {', '.join(sorted(present)) or 'none'}: pass one of them to --eval-split")
    models = sorted(card_frame(ws, "difficulty")["model"])
    if options.difficulty_model is None and len(models) > 1:
        raise WorkspaceError(f"{ws.root}: difficulty was scored with several models ({', '.join(models)}); "
                             f"choose one with --difficulty-model")
    if options.difficulty_model is None and models:
        options.difficulty_model = models[0]
    if options.difficulty_model is not None and options.difficulty_model not in models:
        raise WorkspaceError(f"{ws.root}: no difficulty rows for model {options.difficulty_model!r}; "
                             f"scored models: {', '.join(models) or 'none'}")
    if options.difficulty_model is None:
        options.configs = tuple(c for c in options.configs if c != "rl")
    return options


def publish(workspace: Path, out: Path | None = None, options: ExportOptions | None = None, *,
            name: str | None = None, description: str = "", repo_id: str | None = None,
            token: str | None = None, private: bool = True, endpoint: str | None = None,
            dry_run: bool = False, do_export: bool = True, progress: bool = True) -> PublishResult:
    """Export (unless `do_export` is False), then push when `repo_id` is given; a dry run exports
    the local folder and lists what a push would send, sending nothing."""
    options = options or ExportOptions()
    out = Path(out) if out else Path(workspace) / "exports" / "hub"
    result = PublishResult(out)
    with Workspace(workspace) as ws, recorded_run(
            ws, "publish", options=asdict(options), out=str(out), repo_id=repo_id, private=private,
            endpoint=endpoint, dry_run=dry_run, export=do_export) as record:
        if do_export:
            options = resolve_options(ws, options)
            check_replaceable(out)
            tmp = staging_folder(out)
            try:
                result.configs = export(ws, tmp, options, progress=progress)
                if not result.configs:
                    raise WorkspaceError(f"{workspace}: nothing to publish (no items); build the corpus first")
                card = render_card(ws, result.configs, options, name=name or Path(workspace).resolve().name,
                                   description=description, repo_id=repo_id)
                (tmp / "README.md").write_text(card)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)  # the previous export, if any, stays as it was
                raise
            swap_in(tmp, out)
        elif not (out / "README.md").exists():
            raise WorkspaceError(f"no export at {out}; run `sari-data publish {workspace}` without --no-export first")
        result.files = manifest(out)
        if dry_run:
            result.plan = dry_run_plan(out, repo_id, token, endpoint)
        elif repo_id:
            if not token:
                raise WorkspaceError("no Hub token: set HF_TOKEN to a write token (https://huggingface.co/settings/"
                                     f"tokens) or run `hf auth login`; the export in {out} is ready to upload")
            hint = f"sari-data publish {workspace} --out {out} --repo-id {repo_id} --no-export"
            result.plan = push(out, repo_id, token=token, private=private, endpoint=endpoint, resume_hint=hint)
            result.pushed = True
        record.update(configs={c.name: c.splits for c in result.configs}, files=len(result.files),
                      bytes=sum(result.files.values()), pushed=result.pushed,
                      sent=result.plan.upload if result.plan else [], deleted=result.plan.delete if result.plan else [])
    return result
