"""Difficulty scoring. Fast tests drive the real EndpointEngine against a local fake server (answers
vary per clip, so pass rates spread over 0..1) and the tiny model in-process; the slow ones run the
CLI in subprocesses: SIGKILL mid-run then resume, and a 2-process torchrun."""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from corpus.records import Difficulty
from corpus.store import Workspace
from corpus.testing import dummy_item
from sari_data.cli import main
from sari_data.curriculum import BucketConfig
from sari_data.difficulty import DifficultyConfig, DifficultyError, item_seed, run_difficulty, shard_dir
from sari_train.fake_endpoint import serve
from sari_train.rollout.endpoint import EndpointEngine

ROOT = Path(__file__).resolve().parents[2]


def make_workspace(root: Path, n: int = 12) -> Path:
    with Workspace(root, create=True) as ws:
        ws.upsert([dummy_item(i, workspace=root) for i in range(n)])
        ws.upsert([dummy_item(100, workspace=root, split="test")])  # out of scope: never scored
    return root


def tables(root: Path) -> dict[str, pd.DataFrame]:
    with Workspace(root, read_only=True) as ws:
        found = {name: ws.frame(name) for name in ("rollouts", "difficulty", "quarantine")}
    found.update({name: pd.read_parquet(root / "exports" / f"{name}.parquet")
                  for name in ("curriculum", "curriculum_random")})
    return found


def assert_same_tables(a: Path, b: Path) -> None:
    left, right = tables(a), tables(b)
    for name in left:
        pd.testing.assert_frame_equal(left[name], right[name], obj=name)


class Counting(EndpointEngine):
    """An EndpointEngine that counts prompts and can stop (like a kill) after some calls."""

    def __init__(self, *args, stop_after: int | None = None, on_stop=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.prompts, self.calls, self.stop_after, self.on_stop = 0, 0, stop_after, on_stop

    def sample(self, messages, waveforms, settings, seeds=None):
        if self.stop_after is not None and self.calls == self.stop_after:
            if self.on_stop is None:
                raise KeyboardInterrupt
            self.on_stop()
        self.calls += 1
        self.prompts += len(messages)
        return super().sample(messages, waveforms, settings, seeds=seeds)


@pytest.fixture
def server():
    with serve() as endpoint:
        yield endpoint


def config(server, **overrides) -> DifficultyConfig:
    fields = dict(model="fake-audio-lm", endpoint=server.url, k=4, batch_items=3, retries=0,
                  buckets=BucketConfig(method="quantile", count=3))
    return DifficultyConfig(**(fields | overrides))


def test_pass_rates_are_the_stored_rollouts_mean_and_buckets_follow_them(tmp_path, server):
    root = make_workspace(tmp_path / "ws")
    outcome = run_difficulty(root, config(server, silence_probe=True), progress=False)
    with Workspace(root, read_only=True) as ws:
        rollouts, difficulty = ws.frame("rollouts"), ws.frame("difficulty").set_index(["item_id", "model"])
        scope = ws.item_ids("train")
    assert outcome.counts["items_scored"] == 12 and outcome.counts["rollouts"] == 12 * 4 * 2
    assert set(rollouts.item_id) == scope and (rollouts.groupby(["item_id", "model"]).size() == 4).all()
    means = rollouts.groupby(["item_id", "model"]).correct.mean()
    pd.testing.assert_series_equal(difficulty.pass_rate.sort_index(), means.sort_index(), check_names=False)
    main_rows = difficulty.xs("fake-audio-lm", level="model")
    assert main_rows.pass_rate.nunique() >= 3  # the fake server's answers spread the pass rates
    # SARI's rule: 0/k gets no bucket; otherwise a higher pass rate never sits in a harder bucket.
    assert main_rows.bucket[main_rows.pass_rate == 0].isna().all()
    solved = main_rows[main_rows.pass_rate > 0].sort_values("pass_rate")
    assert solved.bucket.notna().all() and solved.bucket.is_monotonic_decreasing and solved.bucket.min() == 0
    # The silence probe: its own rows, no bucket; the fake server answers silence wrongly.
    silence = difficulty.xs("fake-audio-lm:silence", level="model")
    assert set(silence.index) == scope and (silence.pass_rate == 0).all() and silence.bucket.isna().all()
    assert outcome.tables["by task"].mean_silence_pass_rate.tolist() == [0.0]
    assert outcome.report_png.stat().st_size > 0
    curriculum = pd.read_parquet(outcome.exports["curriculum"])
    assert set(curriculum.id) == set(solved.index) and curriculum.bucket.is_monotonic_increasing


def test_without_sari_rule_unsolved_items_take_the_hardest_bucket(tmp_path, server):
    root = make_workspace(tmp_path / "ws")
    run_difficulty(root, config(server, drop_unsolved=False, buckets=BucketConfig(method="fixed", count=2)),
                   progress=False)
    with Workspace(root, read_only=True) as ws:
        rows = list(ws.records(Difficulty))
    assert all(r.bucket == (0 if r.pass_rate >= 0.5 else 1) for r in rows) and any(r.pass_rate == 0 for r in rows)


def test_an_interrupted_run_resumes_to_the_same_tables_and_a_finished_one_samples_nothing(tmp_path, server):
    reference = make_workspace(tmp_path / "reference")
    run_difficulty(reference, config(server), progress=False)

    root = make_workspace(tmp_path / "ws")
    stopping = Counting(server.url, "fake-audio-lm", retries=0, stop_after=2)
    with pytest.raises(KeyboardInterrupt):
        run_difficulty(root, config(server), progress=False, engine=stopping)
    with Workspace(root, read_only=True) as ws:
        assert ws.frame("rollouts").item_id.nunique() == 6  # two batches of 3 were stored
    resumed = Counting(server.url, "fake-audio-lm", retries=0)
    run_difficulty(root, config(server), progress=False, engine=resumed)
    assert resumed.prompts == 6  # only the items that were not finished
    assert_same_tables(root, reference)
    # Finished: no engine is even built (no model given would be an error if it were).
    outcome = run_difficulty(root, config(server, model="fake-audio-lm", endpoint=None), progress=False)
    assert outcome.counts["items_scored"] == 0
    assert_same_tables(root, reference)


def test_shards_merge_to_the_single_process_result(tmp_path, server):
    single = make_workspace(tmp_path / "single", n=10)
    run_difficulty(single, config(server, silence_probe=True), progress=False)
    sharded = make_workspace(tmp_path / "sharded", n=10)
    counts = [run_difficulty(sharded, config(server, silence_probe=True), shard=(i, 2), progress=False).counts
              for i in range(2)]
    assert counts[0]["items_scored"] + counts[1]["items_scored"] == 10 and min(c["items_scored"] for c in counts) > 0
    assert (shard_dir(sharded, 1, 2) / "corpus.duckdb").exists()
    with Workspace(sharded, read_only=True) as ws:
        assert ws.count("rollouts") == 0  # shards never write the main store
    outcome = run_difficulty(sharded, config(server, silence_probe=True), progress=False)
    assert outcome.counts["items_scored"] == 0 and outcome.counts["shard_rows_merged"] > 0
    assert not any((sharded / "shards").iterdir())
    assert_same_tables(sharded, single)
    with Workspace(sharded, read_only=True) as ws:
        assert set(ws.frame("runs").command) >= {"difficulty shard 0 of 2", "difficulty shard 1 of 2", "difficulty"}


def test_missing_audio_is_quarantined_and_the_run_goes_on(tmp_path, server):
    root = make_workspace(tmp_path / "ws", n=6)
    with Workspace(root) as ws:
        victim = ws.items("train")[2]
        ws.upsert([dummy_item(50)])  # an item without any audio reference
    (root / victim.audio.path).unlink()
    outcome = run_difficulty(root, config(server), progress=False)
    assert outcome.counts["quarantined"] == 2 and outcome.counts["items_scored"] == 5
    with Workspace(root, read_only=True) as ws:
        quarantine = ws.frame("quarantine")
        assert ws.count("difficulty") == 5 and victim.id not in set(ws.frame("rollouts").item_id)
    assert set(quarantine.reason) == {"missing_audio"} and victim.id in set(quarantine.locator)
    assert quarantine.message.str.contains(victim.audio.path).any()


def test_an_endpoint_that_goes_away_keeps_what_was_scored(tmp_path):
    root = make_workspace(tmp_path / "ws", n=9)
    with serve() as endpoint:
        cfg = DifficultyConfig(model="m", endpoint=endpoint.url, k=2, batch_items=3, retries=0)
        dying = Counting(endpoint.url, "m", retries=0, stop_after=1, on_stop=endpoint.stop)
        with pytest.raises(DifficultyError, match="cannot reach the endpoint .*re-run to resume"):
            run_difficulty(root, cfg, progress=False, engine=dying)
    with Workspace(root, read_only=True) as ws:
        assert ws.frame("rollouts").item_id.nunique() == 3


def test_bad_input_gives_one_line_errors(tmp_path, capsys):
    empty = tmp_path / "empty"
    Workspace(empty, create=True).close()
    base = ["difficulty", "--recipe", str(ROOT / "pipelines/demo.yaml"), "--quiet"]
    assert main(base + ["--workspace", str(empty), "--model", "m"]) == 2
    assert main(base + ["--workspace", str(empty), "--k", "0"]) == 2
    assert main(base + ["--workspace", str(empty), "--shard", "2/2"]) == 2
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = make_workspace(tmp_path / "ws", n=2)
    assert main(base + ["--workspace", str(root), "--model", "m", "--endpoint", f"http://127.0.0.1:{port}/v1",
                        "--set", "difficulty.retries=0"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 4
    assert re.match(r"sari-data difficulty: error: workspace .*empty has no items in split 'train' \(0 items", lines[0])
    assert "difficulty.k: Input should be greater than or equal to 1" in lines[1]
    assert "--shard '2/2' must look like i/n" in lines[2]
    assert f"cannot reach the endpoint http://127.0.0.1:{port}/v1" in lines[3] and "re-run to resume" in lines[3]


def test_item_seeds_make_results_independent_of_batching_and_sharding(tmp_path, tiny_model_dir):
    from sari_train.models.adapter import AudioLM
    from sari_train.rollout import LocalEngine

    engine = LocalEngine(AudioLM.load(tiny_model_dir), batch_size=1)
    cfg = DifficultyConfig(model=str(tiny_model_dir), k=2, max_new_tokens=5, batch_items=1)
    one = make_workspace(tmp_path / "one", n=4)
    run_difficulty(one, cfg, progress=False, engine=engine)
    batched = make_workspace(tmp_path / "batched", n=4)
    for i in range(2):
        run_difficulty(batched, cfg.model_copy(update={"batch_items": 3}), shard=(i, 2), progress=False, engine=engine)
    run_difficulty(batched, cfg, progress=False, engine=engine)
    assert_same_tables(one, batched)
    rollouts = tables(one)["rollouts"]
    assert rollouts.completion.nunique() > 4  # real sampled text, not a constant
    assert item_seed(0, "a") != item_seed(1, "a") != item_seed(0, "b")


# --- the CLI in subprocesses, with the tiny model ---------------------------------------------------

@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    from sari_train.models.tiny import build_tiny_qwen2_audio

    return build_tiny_qwen2_audio(tmp_path_factory.mktemp("tiny"), window_seconds=4)


@pytest.fixture(scope="module")
def synthetic_workspace(tmp_path_factory) -> Path:
    from sari_data.build import build
    from sari_data.recipe import load_recipe

    root = tmp_path_factory.mktemp("synthetic") / "ws"
    build(load_recipe(ROOT / "pipelines/demo.yaml", ["sources.0.n_items=45"]), root, progress=False)
    return root


OVERRIDES = ["difficulty.k=3", "difficulty.max_new_tokens=6", "difficulty.batch_items=2"]


def cli(root: Path, model: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "sari_data.cli", "difficulty", "--recipe", str(ROOT / "pipelines/demo.yaml"),
            "--workspace", str(root), "--model", str(model), *(f for o in OVERRIDES for f in ("--set", o)), *extra]


ENV = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")


def run_in_process(root: Path, model: Path) -> None:
    """What `cli` runs, in this process (saves an interpreter start) and on one thread like the
    subprocesses: results are bit-identical only at equal thread counts."""
    import torch

    from sari_data.recipe import load_recipe

    recipe = load_recipe(ROOT / "pipelines/demo.yaml", [f"difficulty.model={model}", *OVERRIDES])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_difficulty(root, recipe.difficulty, progress=False)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, synthetic_workspace, tiny_model_dir) -> Path:
    """The uninterrupted single-process run."""
    root = tmp_path_factory.mktemp("reference") / "ws"
    shutil.copytree(synthetic_workspace, root)
    run_in_process(root, tiny_model_dir)
    return root


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_equals_an_uninterrupted_run(tmp_path, synthetic_workspace, tiny_model_dir,
                                                                 reference_run):
    root = tmp_path / "ws"
    shutil.copytree(synthetic_workspace, root)
    total = len(Workspace(root, read_only=True).item_ids("train"))
    proc = subprocess.Popen(cli(root, tiny_model_dir), env=ENV, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    seen = b""
    while proc.poll() is None:  # kill once the progress bar shows a few stored batches
        seen += os.read(proc.stderr.fileno(), 4096)
        done = [int(n) for n in re.findall(rb"difficulty:.*?\| *(\d+)/\d+", seen)]
        if done and max(done) >= 6:
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    with Workspace(root, read_only=True) as ws:
        stored = ws.frame("rollouts").item_id.nunique()
    assert 6 <= stored < total
    run_in_process(root, tiny_model_dir)
    assert_same_tables(root, reference_run)


@pytest.mark.slow
def test_two_process_torchrun_equals_one_process(tmp_path, synthetic_workspace, tiny_model_dir, reference_run):
    root = tmp_path / "ws"
    shutil.copytree(synthetic_workspace, root)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    command = cli(root, tiny_model_dir, "--quiet")
    done = subprocess.run(torchrun + command[1:], env=ENV, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert_same_tables(root, reference_run)
    with Workspace(root, read_only=True) as ws:
        runs = ws.frame("runs")
    assert {"difficulty shard 0 of 2", "difficulty shard 1 of 2", "difficulty"} <= set(runs.command)
