"""The README's shell blocks marked `# runnable: NAME` run as written, in order, in a fresh folder
(only the sizes are cut, as tests/staging does for the real recipes), and the demo block is the
Makefile's demo target: a block that fails when pasted is a failing test."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from sari_data.cli import main as data_main
from sari_train.cli import main as train_main

REPO = Path(__file__).resolve().parents[1]
TRAIN_SIZE = ["--max-steps", "1", "--eval-limit", "2", "--eval-max-new-tokens", "4", "--report-to", "none",
              "--grad-accum", "1"]
# The stand-in base model is a random-weight tiny one, so it answers (nearly) every item 0/k: keep
# those items in the curriculum and in the `rl` config, or GRPO would (rightly) find them empty.
SIZES = {
    "build": ["--set", "sources.0.n_items=48", "--quiet"],
    "cot": ["--quiet"],
    "tiny-model": ["--hidden-size", "32", "--layers", "1"],
    "sft": [*TRAIN_SIZE, "--batch-size", "2"],
    "grpo": [*TRAIN_SIZE, "--num-generations", "2", "--max-completion-length", "8", "--prompts-per-batch", "1"],
    "difficulty": ["--k", "2", "--set", "difficulty.max_new_tokens=4", "--set", "difficulty.drop_unsolved=false",
                   "--quiet"],
    "eval": ["--max-new-tokens", "4", "--limit", "3"],
    "publish": ["--min-correct", "0", "--quiet"],
}


def runnable_blocks() -> dict[str, list[str]]:
    """name -> the lines of each ```bash block whose first line is `# runnable: name`."""
    text = (REPO / "README.md").read_text()
    found = re.findall(r"```bash\n# runnable: ([^\n]+)\n(.*?)```", text, re.DOTALL)
    return {name.strip(): [line for line in body.splitlines() if line.strip()] for name, body in found}


def commands(lines: list[str]) -> list[list[str]]:
    """Each line as argv, with `NAME=value` lines setting variables the later lines use as $NAME."""
    variables: dict[str, str] = {}
    argvs = []
    for line in lines:
        words = shlex.split(line, comments=True)
        if len(words) == 1 and re.fullmatch(r"[A-Z_]+=\S+", words[0]):
            name, value = words[0].split("=", 1)
            variables[name] = value
            continue
        argvs.append([re.sub(r"\$(\w+)", lambda m: variables[m.group(1)], w) for w in words])
    return argvs


def run(argv: list[str]) -> None:
    program, command, *rest = argv
    main = {"sari-data": data_main, "sari-train": train_main}[program]
    assert main([command, *rest, *SIZES.get(command, [])]) == 0, shlex.join(argv)


def makefile_demo() -> list[list[str]]:
    """The demo target's commands, with the Makefile's variables written out (the card's
    --description left aside)."""
    text = (REPO / "Makefile").read_text().replace("\\\n", " ")
    target = text.split("\ndemo:")[1].split("\n\n")[0]
    names = {"$(BIN)/": "", "$(DEMO)": "workspaces/demo", "$(RUNS)": "workspaces/runs"}
    argvs = []
    for line in target.splitlines():
        line = line.strip()
        if line.startswith("$(BIN)/"):
            for name, value in names.items():
                line = line.replace(name, value)
            words = shlex.split(line)
            if "--description" in words:
                del words[words.index("--description"):words.index("--description") + 2]
            argvs.append(words)
    return argvs


def test_the_readme_demo_block_is_the_makefile_demo():
    assert commands(runnable_blocks()["demo"]) == makefile_demo()


@pytest.mark.slow
def test_the_runnable_readme_blocks_run_as_written(tmp_path, monkeypatch):
    blocks = runnable_blocks()
    assert list(blocks) == ["demo", "after demo"]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pipelines").symlink_to(REPO / "pipelines")
    for name in blocks:
        for argv in commands(blocks[name]):
            run(argv)
    assert (tmp_path / "workspaces" / "demo" / "stats.png").exists()
    assert (tmp_path / "workspaces" / "eval" / "report.json").exists()
    assert (tmp_path / "runs" / "grpo" / "final" / "config.yaml").exists()  # where the block's eval line reads it
    assert len(list((tmp_path / "workspaces" / "runs" / "grpo" / "runs").glob("*.json"))) == 1  # the demo's only
