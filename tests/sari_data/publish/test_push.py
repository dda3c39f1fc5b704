import json
import os
import socket
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
from huggingface_hub import _commit_api as commit_api
from huggingface_hub import _upload_pipeline as upload_pipeline
from huggingface_hub.utils import http_backoff

from corpus.hub import PushError
from corpus.store import Workspace
from sari_data import cli
from sari_data.publish.export import ExportOptions, manifest
from sari_data.publish.run import publish

REPO = "me/sari-small"
ROOT = Path(__file__).resolve().parents[3]


def test_push_sends_everything_then_only_what_changed_and_deletes_stale_shards(corpus, fake_hub, tmp_path):
    out = tmp_path / "hub"
    first = publish(corpus, out, repo_id=REPO, token=fake_hub.token, endpoint=fake_hub.endpoint, progress=False)
    assert fake_hub.private[REPO] is True  # private by default
    assert {p: b for p, b in fake_hub.repos[REPO].items()} == {p: (out / p).read_bytes() for p in manifest(out)}
    assert sorted(first.plan.upload) == sorted(manifest(out)) and first.plan.unchanged == []

    again = publish(corpus, out, repo_id=REPO, token=fake_hub.token, endpoint=fake_hub.endpoint, progress=False)
    assert again.plan.upload == [] and again.plan.delete == []  # deterministic export: nothing to send
    n_commits = len(fake_hub.commits)

    # Smaller shards: the `all` train split now has several files, the old single shard is stale.
    smaller = ExportOptions(shard_mb=0.1)
    third = publish(corpus, out, smaller, repo_id=REPO, token=fake_hub.token, endpoint=fake_hub.endpoint,
                    progress=False)
    assert "data/all/train-00000-of-00001.parquet" in third.plan.delete
    assert set(fake_hub.repos[REPO]) == set(manifest(out))
    assert "data/sft/train-00000-of-00001.parquet" in third.plan.unchanged  # small split, same bytes
    assert len(fake_hub.commits) > n_commits


def test_interrupted_push_resumes_without_resending(corpus, fake_hub, tmp_path, monkeypatch):
    out = tmp_path / "hub"
    monkeypatch.setattr(upload_pipeline, "COMMIT_SIZE_SCALE", [2] * 10)  # upload_folder: 2 files a commit
    monkeypatch.setattr(commit_api, "http_backoff", partial(http_backoff, base_wait_time=0, max_wait_time=0))
    fake_hub.fail_commits_from = 1  # the second commit fails, however often the library retries it
    with pytest.raises(PushError, match=r"failed \(.*simulated outage.*is intact; resume with: .*--no-export"):
        publish(corpus, out, repo_id=REPO, token=fake_hub.token, endpoint=fake_hub.endpoint, progress=False)
    sent_before = set(fake_hub.repos[REPO])
    assert len(sent_before) == 2
    files = manifest(out)
    assert len(files) == 7  # the export is complete on disk

    fake_hub.fail_commits_from = None
    resumed = publish(corpus, out, repo_id=REPO, token=fake_hub.token, endpoint=fake_hub.endpoint,
                      do_export=False, progress=False)
    assert set(resumed.plan.unchanged) == sent_before
    assert set(resumed.plan.upload) == set(files) - sent_before
    assert fake_hub.repos[REPO] == {p: (out / p).read_bytes() for p in files}


def test_cli_push_and_dry_run_never_show_the_token(corpus, fake_hub, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", fake_hub.token)
    out = tmp_path / "hub"
    base = ["publish", str(corpus), "--out", str(out), "--repo-id", REPO, "--endpoint", fake_hub.endpoint, "--quiet"]
    assert cli.main(base) == 0
    assert cli.main([*base, "--dry-run"]) == 0
    printed = capsys.readouterr()
    assert "pushed to me/sari-small (private): sent 7" in printed.out
    assert "would send 0 file(s), keep 7, delete 0" in printed.out
    assert f"Bearer {fake_hub.token}" in fake_hub.auth_seen  # the token was used ...
    with Workspace(corpus, read_only=True) as ws:
        runs = ws.frame("runs").to_json(date_format="iso")
    texts = [printed.out, printed.err, runs] + [p.read_text() for p in (corpus / "runs").glob("*.json")]
    texts += [p.read_bytes().decode("latin-1") for p in out.rglob("*") if p.is_file()]
    assert all(fake_hub.token not in text for text in texts)  # ... and never written anywhere


def test_failed_upload_keeps_the_export_and_says_how_to_resume(corpus, tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = "hf_ClosedPortSecret987654321"
    out = tmp_path / "hub"
    env = {**os.environ, "HF_TOKEN": token, "HF_ENDPOINT": f"http://127.0.0.1:{port}", "HF_HUB_OFFLINE": "0",
           "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-m", "sari_data.cli", "publish", str(corpus), "--out", str(out),
                          "--repo-id", REPO, "--quiet"], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 2
    assert "is intact; resume with: sari-data publish" in run.stderr and "--no-export" in run.stderr
    assert token not in run.stdout + run.stderr
    assert len(manifest(out)) == 7 and (out / "README.md").read_text().startswith("---\n")
    records = [json.loads(p.read_text()) for p in (corpus / "runs").glob("*.json")]
    assert [r["status"] for r in records] == ["failed"]
    assert all(token not in json.dumps(r) for r in records)


def test_push_without_a_token_says_what_to_set(corpus, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(Exception, match="set HF_TOKEN"):
        publish(corpus, tmp_path / "hub", repo_id=REPO, token=None, progress=False)
    assert (tmp_path / "hub" / "README.md").exists()
