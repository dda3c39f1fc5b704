"""`sari-data`: build and inspect audio QA corpora.

    sari-data build --recipe pipelines/demo.yaml --workspace workspaces/demo
    sari-data build --recipe pipelines/demo.yaml --set sources.0.n_items=500
    sari-data stats workspaces/demo --png workspaces/demo/stats.png
    sari-data publish workspaces/demo [--repo-id me/sari-demo] [--dry-run]
    sari-data view workspaces/demo --port 8765
    sari-data cot --workspace workspaces/demo --split train --n 500   # template writer without an endpoint
    sari-data difficulty --recipe pipelines/demo.yaml --workspace workspaces/demo --model models/tiny --k 4
    sari-data build --recipe pipelines/eval-mmau-test-mini.yaml      # MMAU eval workspace (audio: data/mmau/)
    sari-data questions --workspace workspaces/sari-32k --recipe pipelines/sari-32k.yaml   # settings from the recipe

The README's "Real corpora" section runs the sari-32k and r1-aqa-avqa recipes command by command.

Each subcommand parses its flags, calls one function, and prints. Errors a user can fix are
printed as one line (what, where, what to do) with exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from corpus.provenance import RunFailed
from corpus.store import SCHEMA_VERSION, Workspace, WorkspaceError
from sari_data.cluster import ClusterError
from sari_data.difficulty import DifficultyError
from sari_data.difficulty import __doc__ as DIFFICULTY_DOC
from sari_data.recipe import RecipeError, load_recipe
from sari_data.sources.common import SourceError
from sari_train.openai_client import EndpointError


def cmd_build(args: argparse.Namespace) -> None:
    from sari_data.build import build, summary_lines
    from sari_data.stats import format_tables, summary_tables

    recipe = load_recipe(args.recipe, args.set)
    workspace = args.workspace or recipe.workspace
    if workspace is None:
        raise RecipeError(f"{args.recipe}: no workspace given; pass --workspace DIR or set `workspace:` in the recipe")
    counts = build(recipe, Path(workspace), progress=not args.quiet, allow_empty=args.allow_empty)
    with Workspace(workspace, read_only=True) as ws:
        print(format_tables(summary_tables(ws)))
        print("\n".join(["", *summary_lines(counts, ws)]))
    print(f"\nbuilt {workspace}: {counts.get('items', 0)} items written, "
          f"{counts.get('quarantined', 0)} quarantined (recipe {recipe.name}, seed {recipe.seed})")


def cmd_stats(args: argparse.Namespace) -> None:
    from sari_data.stats import format_tables, summary_tables, write_chart

    with Workspace(args.workspace, read_only=True) as ws:
        tables = summary_tables(ws)
    print(format_tables(tables))
    if args.png:
        print(f"chart written to {write_chart(tables, Path(args.png))}")


def cmd_publish(args: argparse.Namespace) -> None:
    from huggingface_hub import get_token

    from sari_data.publish.card import configs_frame, md_table
    from sari_data.publish.export import ExportOptions
    from sari_data.publish.run import publish

    options = ExportOptions(eval_splits=tuple(args.eval_split or ("test",)), difficulty_model=args.difficulty_model,
                            min_correct=args.min_correct, shard_mb=args.shard_mb)
    result = publish(Path(args.workspace), args.out, options, name=args.name, description=args.description,
                     repo_id=args.repo_id, token=get_token() if args.repo_id else None, private=not args.public,
                     endpoint=args.endpoint, dry_run=args.dry_run, do_export=not args.no_export,
                     progress=not args.quiet)
    if result.configs:
        print(md_table(configs_frame(result.configs)))
    size = sum(result.files.values()) / 2**20
    print(f"\nexport {result.folder}: {len(result.files)} files, {size:.1f} MiB")
    if result.plan and args.dry_run:
        against = f"compared with {args.repo_id}" if result.plan.remote_known else "no remote to compare with"
        print(f"dry run ({against}): would send {len(result.plan.upload)} file(s), keep "
              f"{len(result.plan.unchanged)}, delete {len(result.plan.delete)}")
        for path in result.plan.upload:
            print(f"  send    {path}  ({result.files[path]} bytes)")
        for path in result.plan.delete:
            print(f"  delete  {path}")
    elif result.pushed and result.plan:
        print(f"pushed to {args.repo_id} ({'public' if args.public else 'private'}): sent {len(result.plan.upload)}, "
              f"unchanged {len(result.plan.unchanged)}, deleted {len(result.plan.delete)}")
    else:
        print("ready to upload: pass --repo-id (token from HF_TOKEN), or upload the folder yourself")


def cmd_migrate(args: argparse.Namespace) -> None:
    with Workspace(args.workspace) as ws:  # opening for writing migrates
        print(f"{ws.root}: schema version {SCHEMA_VERSION}")


def port_number(text: str) -> int:
    """A TCP port for argparse: 0..65535."""
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535; 0 picks a free one)")
    return int(text)


def cmd_view(args: argparse.Namespace) -> None:
    from sari_data.view.server import serve

    serve(Path(args.workspace), args.host, args.port, verbose=args.verbose)
def cmd_difficulty(args: argparse.Namespace) -> None:
    from sari_data.difficulty import parse_shard, run_difficulty
    from sari_data.difficulty_report import format_tables

    flags = {"model": args.model, "endpoint": args.endpoint, "k": args.k, "device": args.device, "dtype": args.dtype,
             "vllm": args.vllm or None}
    overrides = [f"difficulty.{key}={json.dumps(value)}" for key, value in flags.items() if value is not None]
    recipe = load_recipe(args.recipe, overrides + args.set)
    workspace = args.workspace or recipe.workspace
    if workspace is None:
        raise RecipeError(f"{args.recipe}: no workspace given; pass --workspace DIR or set `workspace:` in the recipe")
    shard = parse_shard(args.shard) if args.shard else None
    outcome = run_difficulty(Path(workspace), recipe.difficulty, shard=shard, progress=not args.quiet)
    counts = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in sorted(outcome.counts.items())) or "nothing to do"
    if outcome.shard is not None:
        then = ("rank 0 merges and finishes." if outcome.launched else
                "when every shard is done, run the same command without --shard to merge and finish.")
        print(f"shard {outcome.shard[0]}/{outcome.shard[1]} of {workspace}: {counts}; {then}")
        return
    print(format_tables(outcome.tables))
    for warning in outcome.warnings:
        print(f"sari-data difficulty: warning: {warning}", file=sys.stderr)
    print(f"\ndifficulty of {workspace} ({recipe.difficulty.model_name}, k={recipe.difficulty.k}): {counts}")
    print("written: " + ", ".join(str(p) for p in [*outcome.exports.values(), outcome.report_png] if p))


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="sari-data", description=__doc__.split("\n")[0],
                                  formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    build = commands.add_parser("build", help="build or refresh a corpus workspace from a recipe")
    build.add_argument("--recipe", required=True, help="recipe YAML, e.g. pipelines/demo.yaml")
    build.add_argument("--workspace", help="workspace folder (default: the recipe's `workspace`)")
    build.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a recipe field, e.g. --set seed=3 --set sources.0.n_items=500")
    build.add_argument("--allow-empty", action="store_true",
                       help="accept a source that yields no items or quarantines more than the recipe's "
                            "max_quarantined_fraction of its rows (else the build fails, keeping what it read)")
    build.add_argument("--quiet", action="store_true", help="no progress bars")
    build.set_defaults(run=cmd_build)

    migrate = commands.add_parser("migrate", help="bring a workspace written by an older toolkit to this schema")
    migrate.add_argument("workspace", help="workspace folder")
    migrate.set_defaults(run=cmd_migrate)

    stats = commands.add_parser("stats", help="print counts by task, family, split, answer position")
    stats.add_argument("workspace", help="workspace folder")
    stats.add_argument("--png", help="also write a bar chart to this PNG file")
    stats.set_defaults(run=cmd_stats)

    pub = commands.add_parser("publish", help="export Hub-ready Parquet configs and a data card; optionally push")
    pub.add_argument("workspace", help="workspace folder")
    pub.add_argument("--out", type=Path, help="export folder (default: WORKSPACE/exports/hub); replaced atomically")
    pub.add_argument("--repo-id", help="push to this Hub dataset repo (token from HF_TOKEN or `hf auth login`)")
    pub.add_argument("--public", action="store_true", help="create the repo public (default: private)")
    pub.add_argument("--dry-run", action="store_true", help="export, then list what a push would send; send nothing")
    pub.add_argument("--no-export", action="store_true", help="push the existing export as it is (resume a push)")
    pub.add_argument("--endpoint", help="Hub endpoint (default: HF_ENDPOINT or https://huggingface.co)")
    pub.add_argument("--name", help="dataset name in the card (default: the workspace folder name)")
    pub.add_argument("--description", default="", help="one paragraph for the card")
    pub.add_argument("--eval-split", action="append", default=None,
                     help="split(s) of the `eval` config (default: test, left out when the workspace has none); "
                          "a split with no items is an error")
    pub.add_argument("--difficulty-model", help="whose pass rates the `rl` config carries (needed if several)")
    pub.add_argument("--min-correct", type=int, default=1,
                     help="leave out of `rl` items with fewer correct answers (default 1: SARI drops 0/k)")
    pub.add_argument("--shard-mb", type=float, default=500.0, help="target Parquet shard size in MiB")
    pub.add_argument("--quiet", action="store_true", help="no progress bars")
    pub.set_defaults(run=cmd_publish)
    view = commands.add_parser("view", help="browse a workspace in a local web page (read-only): filter, listen, read")
    view.add_argument("workspace", help="workspace folder")
    view.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; others warn: no auth)")
    view.add_argument("--port", type=port_number, default=8765, help="port (default 8765; 0 picks a free one)")
    view.add_argument("--verbose", action="store_true", help="log every request")
    view.set_defaults(run=cmd_view)

    from sari_data.llm.commands import add_llm_commands

    add_llm_commands(commands)  # captions, questions, cot, blind
    difficulty = commands.add_parser("difficulty", help="pass rates of a base model, buckets, curriculum views",
                                     description=DIFFICULTY_DOC,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    difficulty.add_argument("--recipe", required=True, help="recipe YAML; its `difficulty:` section holds the settings")
    difficulty.add_argument("--workspace", help="workspace folder (default: the recipe's `workspace`)")
    difficulty.add_argument("--model", help="local model folder, or the served model name with --endpoint")
    difficulty.add_argument("--endpoint", help="OpenAI-compatible base URL of a server that takes audio (vLLM, "
                            "SGLang), e.g. http://127.0.0.1:8000/v1; requests go through the LLM stages' client "
                            "(--set difficulty.concurrency/retries/timeout/api_key_env)")
    difficulty.add_argument("--vllm", action="store_true", help="sample with vLLM in this process (the [vllm] extra; "
                            "same prompts and seeds as the transformers engine)")
    difficulty.add_argument("--k", type=int, help="answers per item (default 16)")
    difficulty.add_argument("--device", help="local model: auto (default: cuda:<LOCAL_RANK> if a GPU is there, "
                                             "else cpu), cpu, cuda, cuda:1")
    difficulty.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"],
                            help="local model: auto (default: bfloat16 on a GPU, float32 on a CPU)")
    difficulty.add_argument("--shard", metavar="I/N", help="score only shard I of N into <workspace>/shards/")
    difficulty.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                            help="override a recipe field, e.g. --set difficulty.silence_probe=true")
    difficulty.add_argument("--quiet", action="store_true", help="no progress bars")
    difficulty.set_defaults(run=cmd_difficulty)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        args.run(args)
    except (RecipeError, WorkspaceError, SourceError, DifficultyError, EndpointError, ClusterError) as err:
        print(f"sari-data {args.command}: error: {err}", file=sys.stderr)
        return 2
    except RunFailed as err:
        print(f"sari-data {args.command}: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
