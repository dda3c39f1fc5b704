"""The `sari-data` subcommands of the LLM stages: captions, questions, cot, blind.

Thin: parse flags, resolve the endpoint (flags > recipe `llm:` block > environment), call one
stage function, print its summary. The API key is only ever read from the environment variable
named by `api_key_env` (default OPENAI_API_KEY).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sari_data.llm.config import LLMConfig
from sari_data.llm.runner import format_rows, usage_table
from sari_data.recipe import RecipeError, load_recipe


def llm_config(args: argparse.Namespace) -> LLMConfig:
    config = (load_recipe(args.recipe).llm if args.recipe else None) or LLMConfig()
    flags = {"base_url": args.base_url, "model": args.model, "concurrency": args.concurrency,
             "timeout_s": args.timeout}
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

    results = run_cot(args.workspace, config=llm_config(args), writer=args.writer, split=args.split or None, n=args.n,
                      seed=args.seed, redo=args.redo, progress=not args.quiet)
    rows = [tuple(key.split("/")) + (count,) for key, count in results["chains"].items()]
    _print_summary(results, rows, ("style", "outcome", "chains"))
    print(f"cot: {results['selected']} items selected, {results['skipped_done']} already done, "
          f"{results['template']} by template, {results['llm']} by LLM")


def cmd_questions(args: argparse.Namespace) -> None:
    from sari_data.llm.questions import run_questions

    if not Path(args.clips).exists():
        raise RecipeError(f"clips file {args.clips} not found; write one with `sari-data captions --clips DIR --out FILE`")
    results = run_questions(args.workspace, Path(args.clips), config=llm_config(args), per_clip=args.per_clip,
                            seed=args.seed, split=args.split, progress=not args.quiet)
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
                           out=Path(args.out) if args.out else None, split=args.split, local_model=args.local_model,
                           redo=args.redo, progress=not args.quiet)
    rows = sorted((reason.split(":")[0], where) for where, reason in results["failures"].items())[:20]
    _print_summary(results, rows, ("failure", "clip or item"))
    print(f"captions: {results['captioned']} captioned by {results['caption_source'] or '-'}, {results['failed']} failed"
          + (f"; written to {results['out']}" if results["out"] else ""))


def cmd_blind(args: argparse.Namespace) -> None:
    from sari_data.llm.blind import run_blind

    results = run_blind(args.workspace, config=llm_config(args), k=args.k, temperature=args.temperature,
                        split=args.split, n=args.n, seed=args.seed, max_pass_rate=args.max_pass_rate,
                        progress=not args.quiet)
    _print_summary(results, list(results["pass_rates"].items()), ("blind correct", "items"))
    print(f"blind: {results['scored']} items scored, {results['failed']} failed, "
          f"{results['quarantined']} quarantined as answerable without audio")


def _llm_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workspace", required=True, help="workspace folder")
    parser.add_argument("--recipe", help="take the endpoint settings from this recipe's `llm:` block")
    parser.add_argument("--base-url", help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1 "
                                           "(default: $SARI_LLM_BASE_URL or $OPENAI_BASE_URL)")
    parser.add_argument("--model", help="model name (default: $SARI_LLM_MODEL)")
    parser.add_argument("--concurrency", type=int, help="requests in flight at once (default 16)")
    parser.add_argument("--timeout", type=float, help="seconds per request before it is retried (default 120)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def add_llm_commands(commands: Any) -> None:
    """Register the LLM subcommands on `sari-data`'s subparsers."""
    cap = commands.add_parser("captions", help="caption clips with an audio-capable model (endpoint or local)")
    _llm_flags(cap)
    cap.add_argument("--clips", help="clips JSONL or a folder of audio files (default: the workspace's uncaptioned items)")
    cap.add_argument("--out", help="captioned clips JSONL to write (with --clips)")
    cap.add_argument("--split", help="with workspace items: only this split")
    cap.add_argument("--local-model", help="a local Qwen2-Audio checkpoint folder instead of an endpoint")
    cap.add_argument("--redo", action="store_true", help="caption again what already has a caption")
    cap.set_defaults(run=cmd_captions)

    q = commands.add_parser("questions", help="write multiple-choice questions from captioned clips")
    _llm_flags(q)
    q.add_argument("--clips", required=True, help="captioned clips JSONL (from `sari-data captions`)")
    q.add_argument("--per-clip", type=int, default=1, help="questions per clip")
    q.add_argument("--split", default="train", help="split of the new items")
    q.add_argument("--seed", type=int, default=0, help="seed of the answer-position balancing")
    q.set_defaults(run=cmd_questions)

    cot = commands.add_parser("cot", help="write structured and free-form chains of thought")
    _llm_flags(cot)
    cot.add_argument("--split", default="train", help="items of this split ('' for all)")
    cot.add_argument("--n", type=int, help="a seeded sample of n items (default: all selected)")
    cot.add_argument("--seed", type=int, default=0, help="seed of the sample")
    cot.add_argument("--writer", choices=["auto", "llm", "template"], default="auto",
                     help="auto: the LLM when an endpoint is configured, else the template writer for synthetic items")
    cot.add_argument("--redo", action="store_true", help="rewrite items that already have both chains (cached replies are reused; failures never are)")
    cot.set_defaults(run=cmd_cot)

    blind = commands.add_parser("blind", help="text-only pass rate: answer each question without the audio")
    _llm_flags(blind)
    blind.add_argument("--k", type=int, default=4, help="samples per item")
    blind.add_argument("--temperature", type=float, default=1.0)
    blind.add_argument("--split", help="only this split")
    blind.add_argument("--n", type=int, help="a seeded sample of n items")
    blind.add_argument("--seed", type=int, default=0)
    blind.add_argument("--max-pass-rate", type=float,
                       help="quarantine items whose blind pass rate is above this (e.g. 0.75)")
    blind.set_defaults(run=cmd_blind)
