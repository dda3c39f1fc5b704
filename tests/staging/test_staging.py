"""Staging: the README's commands for `sari-32k` and `r1-aqa-avqa`, exactly as written there, on
miniature files in every real format, from raw sources to trained models evaluated on MMAU (both
files) and MMAR. Only the models and sizes are swapped: a local test LLM server for the LLM
stages, a fake audio endpoint for difficulty, a tiny Qwen2-Audio for training and eval, a few steps.
Counts are checked after every step: every input row is an item, a clip or a quarantine record
(with its reason and file:line), and the planted copies of benchmark items are kept out."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from corpus.records import ChainOfThought, Clip, Item
from corpus.store import Workspace
from sari_data.cli import main as data_main
from sari_data.llm.testing import FakeChatServer
from sari_train.cli import main as train_main
from sari_train.fake_endpoint import serve as audio_endpoint
from staging_fixtures import lay_out, llm

REPO = Path(__file__).resolve().parents[2]
TRAIN_SIZE = ["--max-steps", "1", "--eval-limit", "2", "--eval-max-new-tokens", "4", "--dtype", "float32",
              "--report-to", "none", "--save-every", "0", "--grad-accum", "1"]
GRPO_SIZE = ["--num-generations", "2", "--max-completion-length", "8", "--prompts-per-batch", "1"]
LOCATOR = re.compile(r".+(:\d+|#\d+)$")


def readme_commands(recipe: str) -> list[list[str]]:
    """The lines of the README's bash block that starts with `# recipe: <recipe>`."""
    text = (REPO / "README.md").read_text()
    block = re.search(rf"```bash\n# recipe: {re.escape(recipe)}\n(.*?)```", text, re.DOTALL)
    assert block, f"README has no bash block for {recipe}"
    return [shlex.split(line, comments=True) for line in block.group(1).splitlines() if line.strip()]


def swap_models_and_sizes(argv: list[str], llm_url: str, audio_url: str, tiny: Path) -> list[str]:
    """The README's command with the hub models replaced by local stand-ins and the sizes cut."""
    program, command, *rest = argv
    if command in ("captions", "questions", "cot"):
        rest += ["--base-url", llm_url, "--model", "test-llm", "--quiet"]
    elif command == "difficulty":
        rest[rest.index("--model") + 1] = "fake-base"
        rest += ["--endpoint", audio_url, "--k", "4", "--set", "difficulty.max_new_tokens=8", "--quiet"]
    elif command == "sft":
        rest += ["--model", str(tiny), *TRAIN_SIZE, "--batch-size", "2"]
    elif command == "grpo":
        rest += (["--model", str(tiny)] if "r1-aqa" in " ".join(rest) else []) + TRAIN_SIZE + GRPO_SIZE
    elif command == "eval":
        rest += ["--max-new-tokens", "8"]
    elif command == "build":
        # The miniature eval sets bring a few of the benchmarks' clips, so most records are quarantined
        # (missing_audio): a size cut, accepted as such.
        rest += ["--quiet"] + (["--allow-empty"] if "/eval-" in rest[rest.index("--recipe") + 1] else [])
    elif command == "publish":
        rest += ["--quiet"]
    return [program, command, *rest]


def run(argv: list[str]) -> None:
    main = {"sari-data": data_main, "sari-train": train_main}[argv[0]]
    assert main(argv[1:]) == 0, shlex.join(argv)


def rows_by_source(root: Path) -> dict[str, int]:
    """Items + clips + quarantine records per source: every input row is exactly one of them."""
    with Workspace(root, read_only=True) as ws:
        counts = ws.query("SELECT source, count(*) AS n FROM (SELECT source FROM items UNION ALL SELECT source "
                          "FROM clips UNION ALL SELECT source FROM quarantine) GROUP BY source")
        bad_locators = [q for q in ws.frame("quarantine").locator if not LOCATOR.match(q)]
    assert not bad_locators, bad_locators
    return dict(zip(counts.source, counts.n))


def quarantine_reasons(root: Path, source: str) -> dict[str, int]:
    with Workspace(root, read_only=True) as ws:
        q = ws.frame("quarantine", "source = ?", [source])
    return q.reason.value_counts().to_dict()


def check_eval_report(folder: Path, total: int, kind: str) -> dict:
    report = json.loads((folder / "report.json").read_text())
    assert report["n_items"] + report["n_skipped"] == total, folder
    assert (folder / "sari" / f"{kind}_predictions.json").exists() or \
        (folder / "r1-aqa" / f"{kind}_predictions.json").exists()
    return report


@pytest.mark.slow
def test_readme_runs_from_raw_files_to_evaluated_models(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for folder in ("pipelines", "benchmarks"):  # the repository's own recipes and benchmark files
        (tmp_path / folder).symlink_to(REPO / folder)
    planted = lay_out(tmp_path, REPO / "benchmarks" / "mmau" / "mmau-test-mini.v2025-03.json")
    tiny = tmp_path / "models" / "tiny"
    run(["sari-train", "tiny-model", str(tiny)])
    ws = tmp_path / "workspaces" / "sari-32k"

    with FakeChatServer(llm) as chat, audio_endpoint() as audio:
        steps = iter(readme_commands("sari-32k"))

        def step(expected: str) -> None:
            argv = next(steps)
            assert shlex.join(argv[:4]).startswith(expected), (argv, expected)
            run(swap_models_and_sizes(argv, chat.base_url, audio.url, tiny))

        # eval workspaces: every benchmark record is an item or a quarantine record with its reason
        for recipe, total, with_audio in (("eval-mmau-test-mini.yaml", 1000, planted.mmau_with_audio),
                                          ("eval-mmau-test-mini-v05.15.25.yaml", 1000, planted.mmau_with_audio),
                                          ("eval-mmar.yaml", planted.mmar_rows, planted.mmar_with_audio)):
            step(f"sari-data build --recipe pipelines/{recipe}")
            root = tmp_path / "workspaces" / recipe.removesuffix(".yaml")
            assert sum(rows_by_source(root).values()) == total
            with Workspace(root, read_only=True) as w:
                assert len(w.items("test")) == with_audio
                assert set(w.frame("quarantine").reason) == {"missing_audio"}

        step("sari-data build --recipe pipelines/sari-32k.yaml")
        counts = rows_by_source(ws)
        assert counts == planted.rows, counts
        for source, reasons in planted.bad.items():
            got = quarantine_reasons(ws, source)
            assert all(got.get(reason) == n for reason, n in reasons.items()), (source, got)
        with Workspace(ws, read_only=True) as w:
            kept_ids = {r.source_id for r in [*w.records(Item), *w.records(Clip)]}
            hits = w.frame("contamination")
            items_after_build = len(w.items())
            clips = list(w.records(Clip))
        assert not set(planted.overlaps) & kept_ids  # the planted copies were excluded ...
        assert set(hits.benchmark) >= {"mmau-test-mini.v2025-03", "mmar"}  # ... because of the benchmarks
        assert items_after_build == planted.rows["avqa"] - 2 and len(clips) == 10

        step("sari-data captions --workspace workspaces/sari-32k")
        with Workspace(ws, read_only=True) as w:
            assert all(c.caption for c in w.records(Clip))
            assert all(i.caption for i in w.items())

        step("sari-data questions --workspace workspaces/sari-32k")
        with Workspace(ws, read_only=True) as w:
            items = w.items()
        assert len(items) == items_after_build + len(clips)  # one question per clip, as the recipe says
        assert {i.source for i in items} == {"avqa", "audioset", "meld", "musicbench"}

        step("sari-data build --recipe pipelines/sari-32k.yaml")
        assert rows_by_source(ws)["avqa"] == planted.rows["avqa"]  # a rebuild adds nothing
        step("sari-data difficulty --recipe pipelines/sari-32k.yaml")
        with Workspace(ws, read_only=True) as w:
            difficulty = w.frame("difficulty")
            assert len(difficulty) == len(items) and set(difficulty.k) == {4}
            assert w.count("rollouts") == 4 * len(items)

        step("sari-data build --recipe pipelines/sari-32k.yaml")
        with Workspace(ws, read_only=True) as w:
            splits = w.frame("items").split.value_counts().to_dict()
        n = len(items)  # 2k / 30k of 32k, scaled to what there is; the rest is `unused`
        expected = {"sft": int(2000 * n / 32000), "rl": int(30000 * n / 32000)}
        expected["unused"] = n - sum(expected.values())
        assert splits == {k: v for k, v in expected.items() if v} and expected["sft"] >= 2, splits

        step("sari-data cot --workspace workspaces/sari-32k")
        with Workspace(ws, read_only=True) as w:
            sft_ids = w.item_ids("sft")
            chains = list(w.records(ChainOfThought, "valid"))
        assert {c.item_id for c in chains} == sft_ids and {c.style for c in chains} == {"structured", "free"}

        step("sari-train sft --config pipelines/train/sari-qwen2-audio.yaml")
        sft = tmp_path / "artifacts" / "sari-qwen2-audio" / "sft" / "final"
        assert "split: sft" in (sft / "config.yaml").read_text()
        step("sari-train grpo --config pipelines/train/sari-qwen2-audio.yaml")
        grpo = tmp_path / "artifacts" / "sari-qwen2-audio" / "grpo" / "final"
        saved = (grpo / "config.yaml").read_text()
        assert "split: rl" in saved and "sampler: curriculum" in saved and "eval-mmau-test-mini" in saved

        for folder, total, kind in (("mmau-test-mini", 1000, "mmau"), ("mmau-test-mini-v05.15.25", 1000, "mmau"),
                                    ("mmar", planted.mmar_rows, "mmar")):
            step("sari-train eval --model")
            report = check_eval_report(tmp_path / "artifacts" / "eval" / "sari" / folder, total, kind)
            assert report["n_items"] == (planted.mmar_with_audio if kind == "mmar" else planted.mmau_with_audio)
        step("sari-data publish workspaces/sari-32k --dry-run")
        assert (ws / "exports" / "hub" / "README.md").exists()
        assert next(steps, None) is None  # every README line ran

        # R1-AQA: AVQA as R1-AQA trains on it, overlaps recorded but kept; its GRPO, then the same evals.
        for argv in readme_commands("r1-aqa-avqa"):
            run(swap_models_and_sizes(argv, chat.base_url, audio.url, tiny))
    r1 = tmp_path / "workspaces" / "r1-aqa-avqa"
    assert rows_by_source(r1) == {"avqa": planted.rows["avqa"]}
    with Workspace(r1, read_only=True) as w:
        assert {i.source_id for i in w.items()} >= {"900"}  # kept, as R1-AQA did ...
        assert "900" in set(w.query("SELECT i.source_id FROM contamination c JOIN items i ON i.id = c.item_id").source_id)
        assert all("video" not in i.question for i in w.items())
    assert "accuracy_r1aqa" in (tmp_path / "artifacts" / "r1-aqa" / "final" / "config.yaml").read_text()
    for folder, total, kind in (("mmau-test-mini", 1000, "mmau"), ("mmau-test-mini-v05.15.25", 1000, "mmau"),
                                ("mmar", planted.mmar_rows, "mmar")):
        check_eval_report(tmp_path / "artifacts" / "eval" / "r1-aqa" / folder, total, kind)
    assert (r1 / "exports" / "hub" / "README.md").exists()
