"""What a push sends: content comparison with the repo, and which stale files it deletes."""

import hashlib

from corpus.hub import model_weights, plan_push, same_content


def test_plan_compares_git_blob_ids_and_lfs_hashes(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.parquet").write_bytes(b"abc")
    (tmp_path / "README.md").write_bytes(b"card")
    lfs = (None, hashlib.sha256(b"abc").hexdigest())
    blob = ("0" * 40, None)
    assert same_content(tmp_path / "data" / "a.parquet", lfs)
    assert not same_content(tmp_path / "README.md", blob)
    plan = plan_push(tmp_path, {"data/a.parquet": lfs, "README.md": blob, "data/old.parquet": blob, "extra.png": blob})
    assert plan.unchanged == ["data/a.parquet"] and plan.upload == ["README.md"]
    assert plan.delete == ["data/old.parquet"]  # only stale data files, never other files of the repo


def test_a_model_push_deletes_only_stale_weights(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"w")
    blob = ("0" * 40, None)
    remote = {"model-00001-of-00002.safetensors": blob, "model.safetensors": blob, "notes.md": blob,
              "data/x.parquet": blob}
    plan = plan_push(tmp_path, remote, is_data=model_weights)
    assert plan.upload == ["model.safetensors"] and plan.delete == ["model-00001-of-00002.safetensors"]
