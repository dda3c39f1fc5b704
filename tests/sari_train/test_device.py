"""The one device/dtype rule of the model commands."""

import pytest
import torch

from sari_train.device import launched, pick, resolve_dtype


def test_auto_is_gpu_bf16_else_cpu_fp32(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick() == ("cpu", "float32")
    assert pick("cpu", "bfloat16") == ("cpu", "bfloat16")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert pick() == ("cuda:3", "bfloat16")
    assert pick("cuda:0", "float16") == ("cuda:0", "float16")
    assert resolve_dtype("auto", "cpu") == "float32"


def test_bad_choices_are_one_line_errors(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available"):
        pick("cuda", "auto")
    with pytest.raises(ValueError, match="choose one of auto, float32, bfloat16, float16"):
        pick("cpu", "fp8")


def test_launched_reads_the_launcher_environment(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert launched() is None
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    assert launched() == (2, 4)


def test_eval_on_a_missing_gpu_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    from corpus.testing import dummy_benchmark
    from sari_train.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    bench = dummy_benchmark(tmp_path, n=1)
    assert main(["eval", "--model", str(tmp_path / "m"), "--benchmark", str(bench), "--device", "cuda",
                 "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip() == ("sari-train eval: error: --device cuda: CUDA is not available on this "
                                                "machine; use --device cpu or auto")


def test_difficulty_on_a_missing_gpu_is_a_difficulty_error(monkeypatch):
    from sari_data.difficulty import DifficultyConfig, DifficultyError, make_engine

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DifficultyError, match="--device cuda:1: CUDA is not available"):
        make_engine(DifficultyConfig(model="any", device="cuda:1"))
