"""The `sari-data` subcommands of the LLM stages: captions, questions, cot, blind.

Thin: parse flags, resolve the endpoint (flags > recipe `llm:` block > environment), call one
stage function, print its summary. The API key is only ever read from the environment variable
named by `api_key_env` (default OPENAI_API_KEY).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sari_train.openai_client import LLMConfig
from sari_data.llm.runner import format_rows, usage_table
from sari_data.recipe import STAGE_OPTIONS, RecipeError, load_recipe


def stage_settings(args: argparse.Namespace, kind: str) -> Any:
    """The command's settings: its flags, else the recipe step's `options:` (with --recipe), else defaults."""
    settings = load_recipe(args.recipe).stage_settings(kind) if args.recipe else STAGE_OPTIONS[kind]()
    flags = {k: getattr(args, k) for k in type(settings).model_fields if getattr(args, k, None) is not None}
    return settings.model_copy(update=flags)


def llm_config(args: argparse.Namespace) -> LLMConfig:
    config = (load_recipe(args.recipe).llm if args.recipe else None) or LLMConfig()
    flags = {"base_url": args.base_url, "model": args.model, "concurrency": args.concurrency,
             "timeout_s": args.timeout, "deadline_s": args.deadline}
    return config.model_copy(update={k: v for k, v in flags.items() if v is not None})


def _print_summary(results: dict[str, Any], rows: list[tuple[Any, ...]], header: tuple[str, ...]) -> None:
    for note in results.get("notes", []):
        print(f"note: {note}")
    if rows:
        print(format_rows(rows, header))
    if results.get("llm_usage"):
        print(usage_table(results["llm_usage"]))


def cmd_cot(args: argparse.Namespace) -> None:
    from sari_data.llm.cot import run_cot

    s = stage_settings(args, "cot")
    results = run_cot(args.workspace, config=llm_config(args), writer=s.writer, split=s.split or None, n=s.n,
                      seed=s.seed, redo=args.redo, progress=not args.quiet)
    rows = [tuple(key.split("/")) + (count,) for key, count in results["chains"].items()]
    _print_summary(results, rows, ("style", "outcome", "chains"))
    print(f"cot: {results['selected']} items selected, {results['skipped_done']} already done, "
          f"{results['template']} by template, {results['llm']} by LLM")


def cmd_questions(args: argparse.Namespace) -> None:
    from sari_data.llm.questions import run_questions

    if args.clips and not Path(args.clips).exists():
        raise RecipeError(f"clips file {args.clips} not found; write one with `sari-data captions --clips DIR --out FILE`")
    s = stage_settings(args, "questions")
    clips = Path(args.clips) if args.clips else None
    results = run_questions(args.workspace, clips, config=llm_config(args), per_clip=s.per_clip,
                            seed=s.seed, split=s.split, progress=not args.quiet)
    _print_summary(results, sorted(results["reasons"].items()), ("quarantine reason", "records"))
    print(f"questions: {results['items']} items written, {results['quarantined']} quarantined "
          f"from {results['clips']} clips")


def cmd_captions(args: argparse.Namespace) -> None:
    from sari_data.llm.captions import run_captions

    if args.clips and not args.out:
        raise RecipeError("--clips needs --out: the captioned clips file to write")
    if args.clips and not Path(args.clips).exists():
        raise RecipeError(f"clips file or folder {args.clips} not found")
    results = run_captions(args.workspace, config=llm_config(args), clips=Path(args.clips) if args.clips else None,
                           out=Path(args.out) if args.out else None, split=stage_settings(args, "captions").split,
                           local_model=args.local_model,
                           redo=args.redo, progress=not args.quiet,
                           local=dict(device=args.device, dtype=args.dtype, batch_size=args.batch_size))
    rows = sorted((reason.split(":")[0], where) for where, reason in results["failures"].items())[:20]
    _print_summary(results, rows, ("failure", "clip or item"))
    print(f"captions: {results['captioned']} captioned by {results['caption_source'] or '-'}, {results['failed']} failed"
          + (f"; written to {results['out']}" if results["out"] else ""))


def cmd_blind(args: argparse.Namespace) -> None:
    from sari_data.llm.blind import run_blind

    s = stage_settings(args, "blind")
    results = run_blind(args.workspace, config=llm_config(args), k=s.k, temperature=s.temperature,
                        split=s.split, n=s.n, seed=s.seed, max_pass_rate=s.max_pass_rate,
                        progress=not args.quiet)
    _print_summary(results, list(results["pass_rates"].items()), ("blind correct", "items"))
    print(f"blind: {results['scored']} items scored, {results['failed']} failed, "
          f"{results['quarantined']} quarantined as answerable without audio")


def _llm_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workspace", required=True, help="workspace folder")
    parser.add_argument("--recipe", help="take the endpoint from this recipe's `llm:` block and this command's "
                                         "settings from its step's `options:` (flags win)")
    parser.add_argument("--base-url", help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1 "
                                           "(default: $SARI_LLM_BASE_URL or $OPENAI_BASE_URL)")
    parser.add_argument("--model", help="model name (default: $SARI_LLM_MODEL)")
    parser.add_argument("--concurrency", type=int, help="requests in flight at once (default 16)")
    parser.add_argument("--timeout", type=float, help="seconds per request before it is retried (default 120); "
                                                      "after concurrency + 2 timeouts in a row the run stops")
    parser.add_argument("--deadline", type=float, metavar="SECONDS",
                        help="stop the run after this long in all, keeping what finished (default: no limit)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def add_llm_commands(commands: Any) -> None:
    """Register the LLM subcommands on `sari-data`'s subparsers."""
    cap = commands.add_parser("captions", help="caption clips with an audio-capable model (endpoint or local)")
    _llm_flags(cap)
    cap.add_argument("--clips", help="clips JSONL or a folder of audio files (default: the workspace's uncaptioned items)")
    cap.add_argument("--out", help="captioned clips JSONL to write (with --clips)")
    cap.add_argument("--split", help="with workspace items: only this split")
    cap.add_argument("--local-model", help="a Qwen2-Audio or Qwen2.5-Omni checkpoint (folder, or hub id when online) "
                                           "instead of an endpoint")
    cap.add_argument("--device", default="auto", help="--local-model: auto (cuda:<LOCAL_RANK> if a GPU is there, "
                                                      "else cpu), cpu, cuda, cuda:1")
    cap.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                     help="--local-model: auto (bfloat16 on a GPU, float32 on a CPU)")
    cap.add_argument("--batch-size", type=int, default=8, help="--local-model: clips per generate call (default 8)")
    cap.add_argument("--redo", action="store_true", help="caption again what already has a caption")
    cap.set_defaults(run=cmd_captions)

    q = commands.add_parser("questions", help="write multiple-choice questions from captioned clips")
    _llm_flags(q)
    q.add_argument("--clips", help="captioned clips JSONL (from `sari-data captions --clips`); default: the "
                                   "workspace's captioned clips")
    q.add_argument("--per-clip", type=int, help="questions per clip (default 1)")
    q.add_argument("--split", help="split of the new items (default train)")
    q.add_argument("--seed", type=int, help="seed of the answer-position balancing (default 0)")
    q.set_defaults(run=cmd_questions)

    cot = commands.add_parser("cot", help="write structured and free-form chains of thought")
    _llm_flags(cot)
    cot.add_argument("--split", help="items of this split ('' for all; default train)")
    cot.add_argument("--n", type=int, help="a seeded sample of n items (default: all selected)")
    cot.add_argument("--seed", type=int, help="seed of the sample (default 0)")
    cot.add_argument("--writer", choices=["auto", "llm", "template"],
                     help="auto (default): the LLM when an endpoint is configured, else the template writer for "
                          "synthetic items")
    cot.add_argument("--redo", action="store_true", help="rewrite items that already have both chains (cached replies are reused; failures never are)")
    cot.set_defaults(run=cmd_cot)

    blind = commands.add_parser("blind", help="text-only pass rate: answer each question without the audio")
    _llm_flags(blind)
    blind.add_argument("--k", type=int, help="samples per item (default 4)")
    blind.add_argument("--temperature", type=float, help="default 1.0")
    blind.add_argument("--split", help="only this split")
    blind.add_argument("--n", type=int, help="a seeded sample of n items")
    blind.add_argument("--seed", type=int, help="default 0")
    blind.add_argument("--max-pass-rate", type=float,
                       help="quarantine items whose blind pass rate is above this (e.g. 0.75)")
    blind.set_defaults(run=cmd_blind)
