"""report_to: TensorBoard, wandb (offline) and trackio (local) receive TRL's metric keys."""

import glob
import json
import os
import sqlite3
import struct
from pathlib import Path

import pytest

from sari_train.config import ConfigError
from sari_train.metrics import MetricsLog
from sari_train.trackers import open_trackers, run_id, tracker_key


def test_tracker_keys_are_trls():
    assert [tracker_key(k) for k in ("reward", "rewards/accuracy/mean", "eval/accuracy")] == \
           ["train/reward", "train/rewards/accuracy/mean", "eval/accuracy"]


def log_two_steps(folder, report_to):
    log = MetricsLog(folder, report_to=report_to, run_name="demo", config={"lr": 1e-3})
    log.log(1, {"reward": 0.5, "rewards/accuracy/mean": 0.25, "kl": float("nan")})
    log.log(2, {"reward": 1.0, "rewards/accuracy/mean": 0.5, "kl": None})
    log.log(2, {"eval/accuracy": 50.0})
    log.close()
    return log


EXPECTED = [(1, {"train/reward": 0.5, "train/rewards/accuracy/mean": 0.25}),
            (2, {"train/reward": 1.0, "train/rewards/accuracy/mean": 0.5}), (2, {"eval/accuracy": 50.0})]


def test_tensorboard_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log_two_steps(tmp_path / "run", ["tensorboard"])
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard")).Reload()
    assert sorted(events.Tags()["scalars"]) == ["eval/accuracy", "train/reward", "train/rewards/accuracy/mean"]
    assert [(e.step, e.value) for e in events.Scalars("train/reward")] == [(1, 0.5), (2, 1.0)]


def test_wandb_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from wandb.proto import wandb_internal_pb2

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    log_two_steps(tmp_path / "run", ["wandb"])
    [path] = glob.glob(str(tmp_path / "run" / "wandb" / "offline-run-*" / "*.wandb"))
    rows = []
    for raw in leveldb_records(open(path, "rb").read()):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "history":
            items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
            rows.append({k: v for k, v in items.items() if not k.startswith("_")})
    assert rows == [EXPECTED[0][1], {**EXPECTED[1][1], **EXPECTED[2][1]}]  # wandb merges a step's logs
    assert run_id(tmp_path / "run") in path  # a resumed run continues the same wandb run


def leveldb_records(data: bytes):
    """The records of a .wandb file: a 7-byte header, then LevelDB log blocks of 32 KiB."""
    pos, buffer = 7, b""
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        buffer += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            yield buffer
            buffer = b""


def test_trackio_local(tmp_path):
    trackio = pytest.importorskip("trackio")
    log_two_steps(tmp_path / "run", ["trackio"])
    db = Path(os.environ["TRACKIO_DIR"]) / "sari.db"  # set for the session by tests/conftest.py
    assert db.exists(), f"trackio wrote elsewhere ({trackio.__file__})"
    rows = sqlite3.connect(db).execute("SELECT step, metrics FROM metrics WHERE run_name = ? ORDER BY id",
                                       [run_id(tmp_path / "run")]).fetchall()
    assert [(step, json.loads(metrics)) for step, metrics in rows] == EXPECTED


def test_a_missing_tracker_is_a_one_line_error(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_wandb(name, *args, **kwargs):
        if name == "wandb":
            raise ImportError("no wandb", name="wandb")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_wandb)
    with pytest.raises(ConfigError, match=r"report_to: wandb is not installed .*sari-toolkit\[trackers\]"):
        open_trackers(["wandb"], tmp_path)


class FakeTrackerModule:
    """Stands in for `wandb` / `trackio` (optional extras, absent from `.[test]`), recording what the
    toolkit calls, so these tests run on every machine; the real packages are tested above when present."""

    def __init__(self):
        self.inits, self.logged, self.finished = [], [], 0

    def init(self, **kwargs):
        self.inits.append(kwargs)
        return self

    def log(self, metrics, step):
        self.logged.append((step, dict(metrics)))

    def finish(self):
        self.finished += 1


@pytest.mark.parametrize("name", ["wandb", "trackio"])
def test_wandb_and_trackio_get_trls_keys_steps_and_a_stable_run_id(tmp_path, monkeypatch, name):
    import sys

    fake = FakeTrackerModule()
    monkeypatch.setitem(sys.modules, name, fake)
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    monkeypatch.delenv("TRACKIO_PROJECT", raising=False)
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    log = log_two_steps(tmp_path / "run", [name])
    assert [type(t) for t in log.trackers] == [LOGGER_TYPE_TO_CLASS[name]]  # accelerate's own tracker
    assert fake.logged == EXPECTED and fake.finished == 1  # NaN and None left out, eval/ kept apart
    [init] = fake.inits
    assert init["project"] == "sari" and init["resume"] == "allow" and init["config"]["lr"] == 1e-3
    stable = run_id(tmp_path / "run")
    assert (init["id"] if name == "wandb" else init["name"]) == stable  # --resume continues the same run
    assert (init["name"] if name == "wandb" else init["config"]["run_name"]) == "demo"


@pytest.mark.parametrize("name", ["tensorboard", "wandb"])
def test_only_the_main_process_opens_trackers(tmp_path, monkeypatch, name):
    import sys

    fake = FakeTrackerModule()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    log = MetricsLog(tmp_path / "run", enabled=False, report_to=[name])
    log.log(1, {"reward": 0.5})
    log.close()
    assert log.trackers == [] and fake.inits == [] and not (tmp_path / "run").exists()
