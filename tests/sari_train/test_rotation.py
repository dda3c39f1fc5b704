"""`save_total_limit` keeps the newest N checkpoints; `final/` and unfinished saves are not counted."""

import pytest

from sari_train.checkpoints import checkpoint_dir, latest_checkpoint, rotate_checkpoints


def make(out, step, complete=True):
    folder = checkpoint_dir(out, step)
    folder.mkdir(parents=True)
    if complete:
        (folder / "trainer_state.pt").write_bytes(b"x")
    return folder


def test_rotation_keeps_the_newest_complete_checkpoints(tmp_path):
    for step in (10, 20, 30, 40):
        make(tmp_path, step)
    cut_short = make(tmp_path, 50, complete=False)
    deleted = rotate_checkpoints(tmp_path, 2)
    assert [p.name for p in deleted] == ["step-000010", "step-000020"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-000030", "step-000040", "step-000050"]
    assert cut_short.exists() and latest_checkpoint(tmp_path).name == "step-000040"
    assert rotate_checkpoints(tmp_path, None) == []


@pytest.mark.slow
def test_a_run_leaves_save_total_limit_checkpoints(tiny_model_dir, train_workspace, tmp_path):
    from sari_train.sft import SFTConfig, train_sft

    train_sft(SFTConfig(model=str(tiny_model_dir), workspace=train_workspace, out=tmp_path / "r", max_steps=5,
                        save_every=1, save_total_limit=2, batch_size=2, eval_split=None, report_to=[]))
    kept = sorted(p.name for p in (tmp_path / "r" / "checkpoints").iterdir())
    assert kept == ["step-000004", "step-000005"] and (tmp_path / "r" / "final").exists()
