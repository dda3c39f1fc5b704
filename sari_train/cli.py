"""`sari-train`: train and evaluate audio language models on a corpus workspace or a dataset.

    sari-train tiny-model models/tiny-qwen2-audio --kind qwen2_audio      # offline random-weight model
    sari-train tiny-model models/replica-omni --replica qwen2.5-omni       # the hub repo's files, small weights
    sari-train eval --model models/tiny-qwen2-audio --workspace workspaces/demo --split test
    sari-train eval --model PATH --benchmark benchmarks/mmau/mmau-test-mini.v2025-03.json --audio-root data/mmau
    sari-train eval --model PATH --workspace workspaces/eval-mmar --out artifacts/eval/mmar   # MMAR eval workspace
    sari-train eval --model PATH --benchmark benchmarks/mmau/mmau-test-mini.v2025-03.json --audio-root data/mmau --device cuda --dtype bfloat16
    sari-train eval --endpoint http://127.0.0.1:8000/v1 --model runs/grpo/final --workspace workspaces/demo   # vLLM/SGLang serving it
    accelerate launch --num-processes 8 -m sari_train.cli eval --model Qwen/Qwen2-Audio-7B-Instruct --benchmark ...
    sari-train sft --config pipelines/train/sari-qwen2-audio.yaml --model models/tiny-qwen2-audio
    sari-train grpo --config pipelines/train/r1-aqa.yaml --model runs/sft/final --workspace workspaces/demo
    sari-train experiment --config pipelines/experiments/ablations.yaml       # SARI's ablations, several seeds
    sari-train sft --dataset me/sari-corpus:sft --model models/tiny-qwen2-audio   # from a Hub dataset or folder
    sari-train push runs/grpo me/sari-grpo                                    # final model + model card to the Hub
    sari-train plan --config pipelines/train/sari-qwen2-audio.yaml --gpus 8 --gpu-memory 80   # memory per GPU

Each subcommand parses a typed config (YAML via --config, then flags), calls one function, prints.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from corpus.provenance import RunFailed
from corpus.store import WorkspaceError
from sari_train.config import ConfigError, add_config_flags, load_config
from sari_train.openai_client import EndpointError
from sari_train.evaluate import EvalConfig
from sari_train.evaluate import __doc__ as EVAL_DOC


def prefer_flagged_source(args: argparse.Namespace) -> None:
    """`--dataset` on the command line replaces a preset's `workspace:` (and `--workspace` its `dataset:`)."""
    if args.cfg_dataset and not args.cfg_workspace:
        args.set.append("workspace=null")
    elif args.cfg_workspace and not args.cfg_dataset:
        args.set.append("dataset=null")


def cmd_tiny_model(args: argparse.Namespace) -> None:
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise ConfigError(f"{args.out} is an existing file; pass a folder for the model (it is created)")
    if args.replica:
        from sari_train.models.replica import HUB_IDS, build_replica

        try:
            path = build_replica(args.replica, Path(args.out), hidden_size=args.hidden_size or 32,
                                 layers=args.layers or 1, seed=args.seed)
        except ValueError as err:  # a width the replica cannot have
            raise ConfigError(str(err)) from err
        print(f"replica of {HUB_IDS[args.replica]} (random weights) written to {path}")
        return
    from sari_train.models.tiny import build_tiny_omni_thinker, build_tiny_qwen2_audio

    builder = {"qwen2_audio": build_tiny_qwen2_audio, "qwen2_5_omni_thinker": build_tiny_omni_thinker}[args.kind]
    path = builder(Path(args.out), window_seconds=args.window_seconds, hidden_size=args.hidden_size or 64,
                   layers=args.layers or 2, seed=args.seed)
    print(f"tiny random-weight {args.kind} written to {path}")


def cmd_eval(args: argparse.Namespace) -> None:
    from corpus.provenance import recorded_run
    from sari_train.evaluate import EvalConfig, printed_table, run_eval

    if args.model:
        args.set.append(f"models={json.dumps(args.model)}")
    if args.format:
        args.set.append(f"prompt.format={args.format}")
    prefer_flagged_source(args)
    from sari_train.device import launched

    config = load_config(EvalConfig, args)
    shard = launched()
    if shard and shard[0] != 0:  # rank 0 gathers, scores, records and prints
        run_eval(config)
        return
    with recorded_run(None, "eval", folder=config.out, config=config.model_dump(mode="json")) as results:
        table = run_eval(config)
        results["accuracy"] = table.to_dict()
        results["processes"] = shard[1] if shard else 1
    print(printed_table(table))
    n, skipped = int(table.loc["n"].iloc[0]), table.attrs.get("n_skipped", 0)
    reasons = ", ".join(f"{why} {count}" for why, count in table.attrs.get("skipped_reasons", {}).items())
    print(f"\nscored {n} of {n + skipped} items" + (f"; skipped {skipped} ({reasons}), listed in report.json"
                                                    if skipped else "; none skipped"))
    print(f"predictions, report.json and accuracy.png written to {config.out}")


def cmd_train(args: argparse.Namespace) -> None:
    from corpus.provenance import recorded_run

    if args.command == "sft":
        from sari_train.sft import SFTConfig as Config, train_sft as train
    else:
        from sari_train.grpo.train import GRPOConfig as Config, train_grpo as train
    from sari_train.device import launched

    prefer_flagged_source(args)
    config = load_config(Config, args, stage=args.command)
    if args.command == "grpo":
        from sari_train.checkpoints import inherit_prompt_format

        config = inherit_prompt_format(config)  # recorded resolved, in the run and its checkpoints
    shard = launched()
    if shard and shard[0] != 0:  # every rank trains; rank 0 records, prints and pushes
        trained(train, config)
        return
    with recorded_run(None, args.command, folder=config.out, config=config.model_dump(mode="json")) as results:
        results.update(trained(train, config))
    rows = {k: v for k, v in results.items() if k != "left_out"}
    print("\n".join(f"{k:>10}  {v}" for k, v in rows.items()))
    left_out = ", ".join(f"{n} ({why})" for why, n in results["left_out"].items() if n)
    print(f"{'left out':>10}  {left_out or 'none'}")
    if config.push_to_hub:
        push_and_report(config.out, config.push_to_hub, private=config.hub_private)


def trained(train, config):
    """`train(config)`; a split the dataset lacks is named with the flag that chooses it."""
    from sari_train.datasets import MissingSplit

    try:
        return train(config)
    except MissingSplit as err:
        if err.split == config.eval_split and err.split != config.split:
            raise ConfigError(err.hint("--eval-split (or none: no held-out eval)", "--eval-dataset")) from None
        raise ConfigError(err.hint("--split", "--dataset")) from None


def push_and_report(run_dir: Path, repo_id: str, private: bool = True, endpoint: str | None = None,
                    dry_run: bool = False) -> None:
    from huggingface_hub import get_token

    from corpus.provenance import recorded_run
    from sari_train.hub import push_run

    with recorded_run(None, "push", folder=run_dir, repo_id=repo_id, private=private, endpoint=endpoint,
                      dry_run=dry_run) as results:
        folder, plan = push_run(run_dir, repo_id, token=get_token(), private=private, endpoint=endpoint,
                                dry_run=dry_run)
        results.update(sent=plan.upload, unchanged=len(plan.unchanged), deleted=plan.delete)
    verb = "would send" if dry_run else "sent"
    print(f"{repo_id}: {verb} {len(plan.upload)} file(s), {len(plan.unchanged)} unchanged, "
          f"{len(plan.delete)} stale deleted; model card in {folder / 'README.md'}")


def cmd_push(args: argparse.Namespace) -> None:
    push_and_report(Path(args.run_dir), args.repo, private=not args.public, endpoint=args.endpoint,
                    dry_run=args.dry_run)


def cmd_experiment(args: argparse.Namespace) -> None:
    from corpus.provenance import recorded_run
    from sari_train.experiment import ExperimentConfig, run_experiment

    config = load_config(ExperimentConfig, args)
    command = " ".join(["sari-train", *sys.argv[1:]]) if sys.argv[0].endswith("sari-train") else "sari-train experiment"
    with recorded_run(None, "experiment", folder=config.out, config=config.model_dump(mode="json")) as results:
        outcome = run_experiment(config, command)
        results.update(gains=outcome["gains"], table=outcome["table"].to_dict("records"),
                       comparisons=outcome["comparisons"])
    print(outcome["table"].to_string(index=False))
    for arm, gain in outcome["gains"].items():
        print(f"{arm:>14}: {gain['gain_over_base']:+.1f} points over the base (seed std {gain['seed_std']:.1f})")
    for c in outcome["comparisons"]:
        print(f"{c['a']} - {c['b']}: {c['gap']:+.1f} points (per seed {c['per_seed']}; larger seed std "
              f"{c['larger_std']:.1f}; {'more' if c['separated'] else 'not more'} than 2 std apart)")
    print(f"\nresults.csv, table.md and accuracy.png written to {config.out}")


def cmd_plan(args: argparse.Namespace) -> None:
    import yaml

    from sari_train import plan

    path = Path(args.config)
    if not path.exists():
        raise ConfigError(f"config file {path} not found (presets live in pipelines/train/)")
    stages = plan.preset_stages(yaml.safe_load(path.read_text()) or {})
    for stage in [args.stage] if args.stage else list(stages):
        if stage not in stages:
            raise ConfigError(f"{path} has no {stage} stage (it has: {', '.join(stages)})")
        try:
            model = args.model or plan.stage_model(stages, stage)
            dims = plan.load_dims(model)
            setup = plan.preset_setup(stages[stage])
        except ValueError as err:
            raise ConfigError(str(err)) from err
        work = plan.workload(stage, stages[stage], args.clip_seconds, args.text_tokens, args.completion_tokens)
        gpus = args.gpus or (setup.gpus if setup.launcher else 8)
        print(plan.describe(model, dims, work, stage, gpus, args.gpu_memory, config=stages[stage]))


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="sari-train", description=__doc__.split("\n")[0],
                                  formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    tiny = commands.add_parser("tiny-model", help="write a tiny random-weight audio LM for offline runs and tests")
    tiny.add_argument("out", help="output folder")
    tiny.add_argument("--kind", choices=["qwen2_audio", "qwen2_5_omni_thinker"], default="qwen2_audio")
    tiny.add_argument("--replica", choices=["qwen2-audio", "qwen2.5-omni"],
                      help="write the files of Qwen/Qwen2-Audio-7B-Instruct or Qwen/Qwen2.5-Omni-7B (real tokenizer, "
                           "templates, preprocessor and config; full Omni checkpoint) with small random weights")
    tiny.add_argument("--window-seconds", type=int, default=4,
                      help="audio window the encoder sees (whole seconds; replicas use the repo's: 30 / 300)")
    tiny.add_argument("--hidden-size", type=int, help="width (default 64; replicas 32)")
    tiny.add_argument("--layers", type=int, help="layers per stack (default 2; replicas 1)")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.set_defaults(run=cmd_tiny_model)

    evaluate = commands.add_parser("eval", help="evaluate checkpoints with the official MMAU/MMAR rule",
                                   description=EVAL_DOC, formatter_class=argparse.RawDescriptionHelpFormatter)
    evaluate.add_argument("--model", action="append", default=[],
                          help="model folder, or NAME=FOLDER to name its column; repeat to compare models; "
                               "with --endpoint: the served model name (NAME=SERVED)")
    evaluate.add_argument("--format", choices=["implicit", "free", "structured"],
                          help="prompt format for every model (default: each model's trained format, else implicit)")
    add_config_flags(evaluate, EvalConfig)
    evaluate.set_defaults(run=cmd_eval)

    from sari_train.grpo.train import GRPOConfig
    from sari_train.grpo.train import __doc__ as GRPO_DOC
    from sari_train.sft import SFTConfig
    from sari_train.sft import __doc__ as SFT_DOC

    for name, cls, doc, text in (("sft", SFTConfig, SFT_DOC, "supervised warm-up on answers or chains of thought"),
                                 ("grpo", GRPOConfig, GRPO_DOC, "curriculum-guided GRPO")):
        sub = commands.add_parser(name, help=text, description=doc,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        add_config_flags(sub, cls)
        sub.set_defaults(run=cmd_train)

    from sari_train.hub import __doc__ as PUSH_DOC

    push = commands.add_parser("push", help="upload a run's final model with a model card to the Hub",
                               description=PUSH_DOC, formatter_class=argparse.RawDescriptionHelpFormatter)
    push.add_argument("run_dir", help="the training run's folder (its --out)")
    push.add_argument("repo", help="Hub model repo id, e.g. me/sari-grpo")
    push.add_argument("--public", action="store_true", help="create the repo public (default: private)")
    push.add_argument("--endpoint", help="Hub endpoint (default: HF_ENDPOINT or huggingface.co)")
    push.add_argument("--dry-run", action="store_true", help="write the card and list what would be sent")
    push.set_defaults(run=cmd_push)

    from sari_train.experiment import ExperimentConfig
    from sari_train.experiment import __doc__ as EXPERIMENT_DOC

    experiment = commands.add_parser("experiment", help="SARI's ablations: arms x seeds, mean ± std table",
                                     description=EXPERIMENT_DOC, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_flags(experiment, ExperimentConfig)
    experiment.set_defaults(run=cmd_experiment)

    from sari_train.plan import __doc__ as PLAN_DOC

    planner = commands.add_parser("plan", help="GPU memory per device for a preset: DDP / FSDP2, LoRA, "
                                  "checkpointing", description=PLAN_DOC, formatter_class=argparse.RawDescriptionHelpFormatter)
    planner.add_argument("--config", required=True, help="training preset (YAML) (required)")
    planner.add_argument("--model", help="model folder, config.json, or Qwen/Qwen2-Audio-7B-Instruct | "
                         "Qwen/Qwen2.5-Omni-7B (default: the preset's)")
    planner.add_argument("--stage", choices=["sft", "grpo"], help="one stage of a two-stage preset (default: all)")
    planner.add_argument("--gpus", type=int, help="GPUs the run shards over (default: the preset's accelerate_config "
                                                  "num_processes, else 8)")
    planner.add_argument("--gpu-memory", type=float, default=80, help="GiB per GPU (default: 80)")
    planner.add_argument("--clip-seconds", type=float, default=30, help="audio per prompt (default: 30 s = 750 tokens)")
    planner.add_argument("--text-tokens", type=int, default=120, help="prompt tokens besides the audio (default: 120)")
    planner.add_argument("--completion-tokens", type=int, help="tokens per completion (default: GRPO "
                         "max_completion_length; SFT 32 for answers, eval_max_new_tokens for chains)")
    planner.set_defaults(run=cmd_plan)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        args.run(args)
    except (ConfigError, WorkspaceError, EndpointError) as err:
        print(f"sari-train {args.command}: error: {err}", file=sys.stderr)
        return 2
    except RunFailed as err:
        print(f"sari-train {args.command}: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
