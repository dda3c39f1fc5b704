"""User mistakes on both CLIs end in one line (`prog: error: what, where, what to do`) and a non-zero
exit (2 for usage errors), never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from faults_helpers import one_line_error, run_cli

from corpus.store import Workspace
from sari_data.cli import main as sari_data
from sari_train.cli import main as sari_train

DEMO = Path(__file__).parents[2] / "pipelines" / "demo.yaml"
SMALL = ["--set", "sources.0.n_items=4", "--quiet"]


def build_args(workspace: Path, *extra: str) -> list:
    return ["build", "--recipe", DEMO, "--workspace", workspace, *SMALL, *extra]


@pytest.fixture
def built(tmp_path) -> Path:
    workspace = tmp_path / "ws"
    with Workspace(workspace, create=True):
        pass
    return workspace


@pytest.mark.parametrize("mode", ["writer", "reader"])  # two builds; a build while `view` (read-only) runs
def test_second_process_on_a_locked_workspace(built, capsys, mode):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time, duckdb; con = duckdb.connect(sys.argv[1], read_only=sys.argv[2] == 'reader');"
                               "print('ready', flush=True); time.sleep(60)", str(built / "corpus.duckdb"), mode],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        code, _, err = run_cli(sari_data, build_args(built), capsys)
    finally:
        holder.kill()
        holder.wait()
    assert code == 2 and "in use by another process" in one_line_error(err, "sari-data build")


def test_recipe_that_is_not_utf8_or_a_folder(tmp_path, capsys):
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("name: caf\xe9\n".encode("latin-1"))
    code, _, err = run_cli(sari_data, ["build", "--recipe", bad, "--workspace", tmp_path / "ws"], capsys)
    assert code == 2 and "not UTF-8" in one_line_error(err, "sari-data build")
    code, _, err = run_cli(sari_data, ["build", "--recipe", tmp_path, "--workspace", tmp_path / "ws"], capsys)
    assert code == 2 and "is a folder" in one_line_error(err, "sari-data build")


def test_unknown_synthetic_family_is_refused_before_anything_is_created(tmp_path, capsys):
    workspace = tmp_path / "ws"
    code, _, err = run_cli(sari_data, build_args(workspace, "--set", "sources.0.families=[pitch_high_low, nope]"),
                           capsys)
    line = one_line_error(err, "sari-data build")
    assert code == 2 and "unknown families ['nope']" in line and "pitch_high_low" in line
    assert not workspace.exists()  # no workspace, no failed run


def test_workspace_path_that_is_a_file(tmp_path, capsys):
    file = tmp_path / "notes.txt"
    file.write_text("hello")
    code, _, err = run_cli(sari_data, build_args(file), capsys)
    assert code == 2 and "is a file" in one_line_error(err, "sari-data build")
    code, _, err = run_cli(sari_data, build_args(file / "ws"), capsys)
    assert code == 2 and "cannot create the workspace folder" in one_line_error(err, "sari-data build")
    code, _, err = run_cli(sari_data, ["stats", file], capsys)
    assert code == 2 and "is a file" in one_line_error(err, "sari-data stats")


def test_corpus_file_that_is_not_duckdb(tmp_path, capsys):
    (tmp_path / "corpus.duckdb").write_text("not a database\n" * 100)
    code, _, err = run_cli(sari_data, ["stats", tmp_path], capsys)
    assert code == 2 and "not a DuckDB workspace database" in one_line_error(err, "sari-data stats")


@pytest.mark.parametrize("override, says", [("name.x.y=1", "`name` is a value"), ("seed=[[[", "not valid YAML"),
                                            ("=3", "must look like key.path=value"),
                                            ("sources.9.n_items=1", "does not fit")])
def test_bad_set_overrides_on_sari_data(tmp_path, capsys, override, says):
    code, _, err = run_cli(sari_data, ["build", "--recipe", DEMO, "--workspace", tmp_path / "ws", "--set", override],
                           capsys)
    assert code == 2 and says in one_line_error(err, "sari-data build")


@pytest.mark.parametrize("override, says", [("lr=[[[", "not valid YAML"), ("prompt.format.x=1", "is a value")])
def test_bad_set_overrides_on_sari_train(tmp_path, capsys, override, says):
    code, _, err = run_cli(sari_train, ["sft", "--model", tmp_path, "--workspace", tmp_path,
                                        "--set", "prompt.format=free", "--set", override], capsys)
    assert code == 2 and says in one_line_error(err, "sari-train sft")


@pytest.mark.parametrize("content, says", [("lr: [1, 2\nmodel: x\n", "not valid YAML"),
                                           ("- model: x\n- lr: 1\n", "expected a mapping"),
                                           (None, "is a folder")])
def test_broken_training_configs(tmp_path, capsys, content, says):
    config = tmp_path
    if content is not None:
        config = tmp_path / "train.yaml"
        config.write_text(content)
    code, _, err = run_cli(sari_train, ["sft", "--config", config], capsys)
    assert code == 2 and says in one_line_error(err, "sari-train sft")


def test_python_yaml_tags_are_refused_in_one_line_and_never_run(tmp_path, capsys):
    marker = tmp_path / "ran"
    payload = f"!!python/object/apply:os.system ['touch {marker}']"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: {payload}\nsources: [{{kind: synthetic}}]\n")
    code, _, err = run_cli(sari_data, ["build", "--recipe", recipe, "--workspace", tmp_path / "ws"], capsys)
    assert code == 2 and "!!python/... are refused" in one_line_error(err, "sari-data build")
    config = tmp_path / "t.yaml"
    config.write_text(f"model: {payload}\n")
    code, _, err = run_cli(sari_train, ["sft", "--config", config], capsys)
    assert code == 2 and "!!python/... are refused" in one_line_error(err, "sari-train sft")
    code, _, err = run_cli(sari_train, ["sft", "--model", tmp_path, "--workspace", tmp_path, "--set",
                                        f"lr={payload}"], capsys)
    assert code == 2 and "refused" in one_line_error(err, "sari-train sft")
    assert not marker.exists()


@pytest.mark.parametrize("model", ["missing", "empty", "text-config", "a-file"])
def test_model_that_is_no_model_folder(workspace_with_audio, tmp_path, capsys, model):
    path = tmp_path / model
    if model == "empty":
        path.mkdir()
    elif model == "text-config":
        path.mkdir()
        (path / "config.json").write_text("model_type = qwen2_audio\n")
    elif model == "a-file":
        path.write_text("weights")
    code, _, err = run_cli(sari_train, ["eval", "--model", path, "--workspace", workspace_with_audio,
                                        "--out", tmp_path / "eval"], capsys)
    line = one_line_error(err, "sari-train eval")
    assert code == 2 and str(path) in line and "tiny-model" in line


def test_eval_split_none_turns_eval_off(tmp_path):
    from sari_train.cli import parser
    from sari_train.config import load_config
    from sari_train.sft import SFTConfig

    args = parser().parse_args(["sft", "--model", "m", "--workspace", str(tmp_path), "--eval-split", "none"])
    assert load_config(SFTConfig, args, stage="sft").eval_split is None
    args = parser().parse_args(["sft", "--model", "m", "--workspace", str(tmp_path), "--eval-split", "test"])
    assert load_config(SFTConfig, args, stage="sft").eval_split == "test"


def test_view_port_out_of_range(built, capsys):
    code, _, err = run_cli(sari_data, ["view", built, "--port", "99999"], capsys)
    assert code == 2 and "not a port number" in one_line_error(err, "sari-data view")


def test_quote_in_the_workspace_path(tmp_path):
    """COPY ... TO takes no parameters: a `'` in the path used to be a SQL parser error."""
    with Workspace(tmp_path / "it's here", create=True) as ws:
        path = ws.export_parquet("SELECT 1 AS x", "curriculum")
    assert path.exists() and path.parent.parent.name == "it's here"

