"""What a push sends (what changed, by huggingface_hub's own check) and which stale files it deletes."""

import pytest

from corpus.hub import PushError, dataset_data, dry_run_plan, model_weights, push, stale

REPO = "me/hub-test"


def test_only_stale_data_files_are_deleted(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.parquet").write_bytes(b"abc")
    remote = dict.fromkeys(["data/a.parquet", "README.md", "data/old.parquet", "extra.png"], "0" * 40)
    assert stale(remote, tmp_path, dataset_data) == ["data/old.parquet"]  # never other files of the repo


def test_a_model_push_deletes_only_stale_weights(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"w")
    remote = dict.fromkeys(["model-00001-of-00002.safetensors", "model.safetensors", "notes.md", "data/x.parquet",
                            "original/consolidated.pt"], "0" * 40)
    assert stale(remote, tmp_path, model_weights) == ["model-00001-of-00002.safetensors"]


def test_push_sends_only_changes_and_deletes_only_stale_data(fake_hub, tmp_path):
    folder = tmp_path / "hub"
    (folder / "data").mkdir(parents=True)
    for name, data in {"data/a.parquet": b"a", "data/old[1].parquet": b"old", "README.md": b"# v1\n"}.items():
        (folder / name).write_bytes(data)
    auth = {"token": fake_hub.token, "endpoint": fake_hub.endpoint}
    first = push(folder, REPO, **auth)
    assert first.upload == sorted(fake_hub.repos[REPO]) and fake_hub.private[REPO] is True
    fake_hub.repos[REPO]["notes.md"] = b"added on the Hub"
    (folder / "data" / "old[1].parquet").unlink()  # a glob pattern's brackets in a stale name
    (folder / "README.md").write_bytes(b"# v2\n")
    planned, n_commits = dry_run_plan(folder, REPO, **auth), len(fake_hub.commits)
    done = push(folder, REPO, **auth)
    assert (planned.upload, planned.unchanged, planned.delete) == (done.upload, done.unchanged, done.delete) \
           == (["README.md"], ["data/a.parquet"], ["data/old[1].parquet"])
    assert fake_hub.commits[n_commits:] == [["data/old[1].parquet", "README.md"]]  # one commit, the change only
    assert set(fake_hub.repos[REPO]) == {"README.md", "data/a.parquet", "notes.md"}
    assert push(folder, REPO, **auth).upload == [] and len(fake_hub.commits) == n_commits + 1  # nothing to send


def test_a_refused_token_is_a_one_line_error_without_the_token(fake_hub, tmp_path):
    (tmp_path / "README.md").write_text("# card\n")
    wrong = "hf_WrongSecret0123456789"
    with pytest.raises(PushError) as refused:
        push(tmp_path, REPO, token=wrong, endpoint=fake_hub.endpoint, resume_hint="sari-data publish ws --no-export")
    message = str(refused.value)
    assert "401" in message and "resume with: sari-data publish ws --no-export" in message
    assert "\n" not in message and wrong not in message and REPO not in fake_hub.repos
