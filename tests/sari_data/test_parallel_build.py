"""The per-clip work on all local cores, or on a Dask cluster, builds the corpus one process builds."""

import json
import os

import pytest

from corpus.store import Workspace
from corpus.testing import scene_clip
from sari_data.build import build
from sari_data.cli import main
from sari_data.recipe import AudioSettings, Recipe
from sari_data.testing import dirty_avqa, write

TABLES = ("items", "clips", "quarantine", "contamination")


def source(tmp_path):
    """A dirty AVQA source (every bad-row kind, duplicates) and a benchmark one of whose clips it holds."""
    path, _ = dirty_avqa(tmp_path / "src", n_good=10)
    bench = tmp_path / "bench"
    write(bench / "b0.wav", scene_clip(4, 4.0))  # the 5th good clip of the source, in other formats
    write(bench / "b1.wav", scene_clip(9999, 4.0))
    (bench / "bench.json").write_text(json.dumps([
        {"id": f"b{i}", "audio_id": f"b{i}.wav", "question": f"What is heard in benchmark clip {i}?",
         "choices": ["owl", "crow", "frog", "goat"], "answer": "owl", "task": "sound"} for i in range(2)]))
    return path, bench


def recipe(path, bench, **audio):
    return Recipe.model_validate({
        "name": "parallel", "audio": {"min_seconds": 0.5, **audio}, "max_quarantined_fraction": 1,
        "sources": [{"kind": "avqa", "name": "avqa", "path": str(path), "audio_root": str(path.parent / "audio")}],
        "steps": [{"kind": "normalise_text"}, {"kind": "option_sanity"}, {"kind": "dedup"},
                  {"kind": "decontaminate", "exclude": False, "benchmarks": [
                      {"name": "bench", "path": str(bench / "bench.json"), "audio_root": str(bench)}]},
                  {"kind": "split_counts", "counts": {"train": 6, "test": 3}}]})


def tables(root):
    with Workspace(root, read_only=True) as ws:
        return {table: json.loads(ws.frame(table).to_json(orient="records")) for table in TABLES}


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("one")
    path, bench = source(tmp)
    build(recipe(path, bench, workers=1), tmp / "ws", progress=False)
    return path, bench, tables(tmp / "ws")


def test_the_default_uses_every_local_core():
    assert AudioSettings().pool() == len(os.sched_getaffinity(0))
    assert AudioSettings(workers=3).pool() == 3 and AudioSettings(cluster="tcp://h:1").pool() == "tcp://h:1"


def test_a_build_on_every_core_is_the_one_process_build(one_process, tmp_path):
    path, bench, expected = one_process
    assert len(expected["items"]) >= 8 and len(expected["quarantine"]) >= 10 and expected["contamination"]
    build(recipe(path, bench, workers=2), tmp_path / "ws", progress=False)
    assert tables(tmp_path / "ws") == expected


@pytest.mark.slow
def test_a_build_on_a_two_worker_dask_cluster_is_the_one_process_build(one_process, tmp_path):
    distributed = pytest.importorskip("distributed")
    path, bench, expected = one_process
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            build(recipe(path, bench, cluster=cluster.scheduler_address), tmp_path / "ws", progress=False)
            executed = client.run(lambda dask_worker: dask_worker.state.executed_count)
    assert len(executed) == 2 and all(n > 0 for n in executed.values())  # both workers did per-clip work
    assert tables(tmp_path / "ws") == expected


def test_no_scheduler_at_the_address_is_a_one_line_error(one_process, tmp_path, capsys):
    path, bench, _ = one_process
    file = tmp_path / "r.yaml"
    file.write_text(json.dumps(recipe(path, bench).model_dump(mode="json")))
    code = main(["build", "--recipe", str(file), "--workspace", str(tmp_path / "ws"), "--quiet",
                 "--set", "audio.cluster=tcp://127.0.0.1:9"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "no Dask scheduler answers at 'tcp://127.0.0.1:9'" in err[-1] and "Traceback" not in "".join(err)
