"""Pushing a trained run to a (fake, local) Hub: the final model, the card made from the run, the
token never written anywhere; a re-push sends nothing."""

import pytest
import yaml

from sari_train.cli import main
from sari_train.hub import dataset_card_lines, is_hub_id, lineage, model_card

REPO = "me/tiny-sft"


@pytest.fixture
def hub_env(fake_hub, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", fake_hub.endpoint)
    monkeypatch.setenv("HF_TOKEN", fake_hub.token)
    return fake_hub


@pytest.mark.slow
def test_push_to_hub_after_training_then_push_again_sends_nothing(hub_env, tiny_model_dir, train_workspace,
                                                                  tmp_path, capsys):
    out = tmp_path / "sft"
    assert main(["sft", "--model", str(tiny_model_dir), "--workspace", str(train_workspace), "--out", str(out),
                 "--max-steps", "2", "--batch-size", "4", "--eval-limit", "4", "--eval-max-new-tokens", "4",
                 "--report-to", "none", "--push-to-hub", REPO]) == 0
    repo = hub_env.repos[REPO]
    assert hub_env.private[REPO] is True and hub_env.types[REPO] == "model"
    assert {"model.safetensors", "config.json", "tokenizer.json", "config.yaml", "README.md", "curves.png"} <= set(repo)
    assert repo["model.safetensors"] == (out / "final" / "model.safetensors").read_bytes()
    card = repo["README.md"].decode()
    assert "| step | exact match (R1-AQA), % | MMAU rule, % |" in card and "\n| 0 | " in card and "\n| 2 | " in card
    assert "![training curves](curves.png)" in card and f"Workspace `{train_workspace}`, split `train`" in card
    assert f"`{tiny_model_dir}`" in card and f"\nmodel: {tiny_model_dir}\n" in card.split("```yaml")[1]
    assert len(hub_env.commits) == 1  # a small model goes up in one commit, its card included

    n_commits = len(hub_env.commits)
    assert main(["push", str(out), REPO]) == 0
    assert "sent 0 file(s)" in capsys.readouterr().out and len(hub_env.commits) == n_commits

    pushes = [yaml.safe_load(p.read_text()) for p in sorted((out / "runs").glob("*push*.json"))]
    assert sorted((r["repo_id"], r["private"], len(r["results"]["sent"])) for r in pushes) == \
           [(REPO, True, 0), (REPO, True, len(repo))]  # each push is recorded next to the run
    written = "".join(p.read_text(errors="ignore") for p in out.rglob("*") if p.is_file() and p.suffix != ".safetensors")
    assert hub_env.token not in written + capsys.readouterr().out + card


def test_push_without_a_token_or_a_finished_run_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # no stored login either
    assert main(["push", str(tmp_path / "nothing"), REPO]) == 2
    assert "no finished run" in capsys.readouterr().err
    final = tmp_path / "run" / "final"
    final.mkdir(parents=True)
    (final / "config.yaml").write_text("model: base\nworkspace: ws\nsplit: train\neval_split: null\n")
    assert main(["push", str(tmp_path / "run"), REPO]) == 2
    err = capsys.readouterr().err
    assert "no Hub token: set HF_TOKEN" in err and len(err.strip().splitlines()) == 1
    assert main(["push", str(tmp_path / "run"), REPO, "--dry-run"]) == 0  # no token needed to look
    assert f"{REPO}: would send 2 file(s)" in capsys.readouterr().out  # config.yaml and the card
    assert (tmp_path / "run" / "hub" / "README.md").exists()


def test_card_follows_our_checkpoints_to_the_base_and_links_the_dataset(tmp_path):
    sft = tmp_path / "sft" / "final"
    sft.mkdir(parents=True)
    (sft / "config.yaml").write_text(yaml.safe_dump({"model": "Qwen/Qwen2-Audio-7B-Instruct"}))
    final = tmp_path / "grpo" / "final"
    final.mkdir(parents=True)
    config = {"model": str(sft), "dataset": "me/sari-corpus:rl", "eval_dataset": "me/sari-corpus:eval",
              "split": "train", "eval_split": "test", "num_generations": 8, "sampler": "curriculum",
              "max_steps": 60, "prompt": {"format": "structured"}}
    (final / "config.yaml").write_text(yaml.safe_dump(config))
    assert lineage(str(sft)) == [str(sft), "Qwen/Qwen2-Audio-7B-Instruct"]
    card = model_card(tmp_path / "grpo", "me/sari-grpo")
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["base_model"] == "Qwen/Qwen2-Audio-7B-Instruct" and meta["datasets"] == ["me/sari-corpus"] * 2
    assert "Curriculum-guided grpo of" in card and "https://huggingface.co/datasets/me/sari-corpus" in card
    assert "No held-out evaluation was run" in card


def test_a_local_dataset_card_is_summarised(tmp_path):
    (tmp_path / "hub").mkdir()
    (tmp_path / "hub" / "README.md").write_text("---\nlicense: mit\n---\n# Demo corpus\n\n| a |\n\nTones, high or low.\n")
    assert dataset_card_lines(f"{tmp_path / 'hub'}:rl") == [
        f"Dataset card ({tmp_path / 'hub' / 'README.md'}): **Demo corpus**", "> Tones, high or low."]
    assert is_hub_id("me/corpus") and not is_hub_id(str(tmp_path)) and not is_hub_id("models/a/b")


def test_card_names_the_held_out_source_training_scored_on():
    from sari_train.hub import data_lines

    config = {"workspace": "workspaces/sari-32k", "split": "rl", "eval_split": "test", "eval_limit": 200,
              "eval_workspace": "workspaces/eval-mmau-test-mini"}
    assert "of `workspaces/eval-mmau-test-mini`" in data_lines(config)[1]
    assert "of `workspaces/sari-32k`" in data_lines({**config, "eval_workspace": None})[1]
