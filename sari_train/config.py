"""Typed command configs (cleanrl-style): a pydantic model per command, loaded from YAML, then
overridden by flags generated from its fields (each field's description is its --help).
Unknown keys and wrong types are rejected with one readable line."""

from __future__ import annotations

import argparse
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import AliasChoices, BaseModel, ValidationError

from corpus.settings import apply_override, parse_yaml, read_yaml_mapping
from sari_train.trl_names import SWITCHES, TRL_NAMES, UNSUPPORTED

C = TypeVar("C", bound=BaseModel)


class ConfigError(Exception):
    """A config the user must fix; the message says which field and why."""


def _is_scalar(annotation: Any) -> bool:
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return all(_is_scalar(a) for a in args if a is not type(None))
    if typing.get_origin(annotation) is typing.Literal:
        return True
    if typing.get_origin(annotation) is list and args and typing.get_origin(args[0]) is typing.Literal:
        return True  # a list of choices: --flag a,b or --flag "[a, b]"
    return annotation in (int, float, str, bool, Path)


def add_config_flags(parser: argparse.ArgumentParser, cls: type[BaseModel]) -> None:
    """`--config FILE`, `--set a.b=v`, and one `--field-name` flag per scalar field of `cls`."""
    parser.add_argument("--config", help="YAML file with the config (flags override it)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any field, nested ones too: --set prompt.format=structured")
    for name, field in cls.model_fields.items():
        if not _is_scalar(field.annotation):
            continue
        flags = _spellings(_names(name, field.validation_alias))
        default = "required" if field.is_required() else f"default: {'none' if field.default is None else field.default}"
        help_text = f"{field.description or ''} ({default})".strip()
        if name in SWITCHES:  # TRL's bare switch (--push_to_hub), or our value (--push-to-hub me/model)
            parser.add_argument(*flags, dest=f"cfg_{name}", nargs="?", const="true", default=None,
                                help=f"{help_text}; bare: TRL's switch (true)", metavar=name.upper())
        elif field.annotation is bool:
            parser.add_argument(*flags, dest=f"cfg_{name}", action=argparse.BooleanOptionalAction, default=None,
                                help=help_text)
        elif bool in typing.get_args(field.annotation):  # a switch that may also take a value (--resume [PATH])
            parser.add_argument(*flags, dest=f"cfg_{name}", nargs="?", const="true", default=None, help=help_text,
                                metavar=name.upper())
        else:
            parser.add_argument(*flags, dest=f"cfg_{name}", default=None, help=help_text,
                                metavar=name.upper())
    for name, help_text in TRL_ONLY_FLAGS.items():  # TRL spellings converted by the config (trl_names.to_ours)
        if name in FLAG_FIELD and FLAG_FIELD[name] not in cls.model_fields:  # e.g. --reward_funcs: GRPO only
            continue
        if name in ("use_peft", "bf16", "fp16"):
            parser.add_argument(*_spellings([name]), dest=f"trl_{name}", action="store_const", const=True,
                                default=None, help=help_text)
        else:
            parser.add_argument(*_spellings([name]), dest=f"trl_{name}", default=None, help=help_text,
                                metavar=name.upper(), nargs="+" if name in LIST_FLAGS else None)
    for name in UNSUPPORTED:  # TRL flags we cannot honour: hidden, so that they get the config's one-line reason
        if name not in cls.model_fields:
            parser.add_argument(*_spellings([name]), dest=f"trl_{name}", nargs="?", const="true", default=None,
                                help=argparse.SUPPRESS)


# TRL flags that are not a field's name: converted into our fields (see sari_train/trl_names.py)
TRL_ONLY_FLAGS = {"use_peft": "TRL: train LoRA adapters (with --lora_r, --lora_alpha, ...)",
                  "lora_r": "TRL: LoRA rank (with --use_peft)", "lora_alpha": "TRL: LoRA alpha (with --use_peft)",
                  "lora_dropout": "TRL: LoRA dropout (with --use_peft)",
                  "lora_target_modules": "TRL: LoRA target modules (with --use_peft)",
                  "bf16": "TRL: same as --dtype bfloat16", "fp16": "TRL: same as --dtype float16",
                  "torch_dtype": "TRL: same as --dtype", "eval_strategy": "TRL: no (no held-out eval) or steps",
                  "reward_funcs": "TRL: reward names (accuracy_reward is our accuracy), with --reward_weights",
                  "reward_weights": "TRL: one weight per reward of --reward_funcs",
                  "hub_model_id": "TRL: the Hub repo of --push_to_hub"}
FLAG_FIELD = {"reward_funcs": "rewards", "reward_weights": "rewards", "hub_model_id": "push_to_hub"}  # what they set
LIST_FLAGS = ("lora_target_modules", "reward_funcs", "reward_weights")  # TRL's list arguments: --flag a b


def _spellings(names: list[str]) -> list[str]:
    """Each name as a flag with hyphens and, as TRL's command lines write it, with underscores."""
    flags = []
    for name in names:
        for flag in ("--" + name.replace("_", "-"), "--" + name):
            if flag not in flags:
                flags.append(flag)
    return flags


def _names(name: str, alias: object) -> list[str]:
    """A field's name, then its documented aliases (e.g. TRL's), each one a flag."""
    extra = [a for a in alias.choices if isinstance(a, str) and a != name] if isinstance(alias, AliasChoices) else []
    return [name, *extra]


def flag_value(cls: type[BaseModel], name: str, value: Any) -> Any:
    """A flag's text as YAML; `none` also means null for a field that may be None (as --help says)."""
    if not isinstance(value, str):
        return value
    field = cls.model_fields[name]
    if value.strip().lower() == "none" and type(None) in typing.get_args(field.annotation):
        return None
    return parse_yaml(value, f"--{name.replace('_', '-')} {value!r}", ConfigError)


STAGES = ("sft", "grpo")  # a multi-stage preset holds shared keys plus one block per stage


def load_config(cls: type[C], args: argparse.Namespace, stage: str | None = None) -> C:
    data: dict[str, Any] = {}
    if args.config:
        data = read_yaml_mapping(args.config, ConfigError, hint=" (presets live in pipelines/train/)")
        if stage is not None and isinstance(data.get(stage), dict):
            data = {**{k: v for k, v in data.items() if k not in STAGES}, **data[stage]}
    flagged = []
    for key, value in vars(args).items():
        if key.startswith("cfg_") and value is not None:
            data[key[4:]] = flag_value(cls, key[4:], value)
            flagged.append(key[4:])
        elif key.startswith("trl_") and value is not None:
            data[key[4:]] = ([parse_yaml(v, f"--{key[4:]} {v!r}", ConfigError) for v in value] if isinstance(value, list)
                             else parse_yaml(value, f"--{key[4:]} {value!r}", ConfigError) if isinstance(value, str)
                             else value)
            flagged.append(key[4:])
    for override in args.set:
        apply_override(data, override, ConfigError)
        flagged.append(override.split("=", 1)[0].split(".", 1)[0])
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        keys = {str(e["loc"][0]) for e in err.errors() if e["loc"]}
        where = "flags" if not args.config or (keys and keys <= set(flagged)) else args.config
        lines = [f"{_shown(e['loc'], data) or '(top)'}: "
                 f"{'unknown key' if e['type'] == 'extra_forbidden' else e['msg']}" for e in err.errors()]
        raise ConfigError(f"{where}: " + "; ".join(lines)) from err


def _shown(loc: tuple, given: dict[str, Any]) -> str:
    """An error's field as the user spelled it: TRL's name (ours in brackets) when the YAML used TRL's."""
    name = ".".join(map(str, loc))
    first = str(loc[0]) if loc else ""
    if first in TRL_NAMES and first not in given and TRL_NAMES[first] in given:
        return f"{TRL_NAMES[first]} ({name})"
    return name


def save_config(config: BaseModel, path: Path) -> Path:
    """The resolved config, saved next to a run's outputs and in every checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    return path
