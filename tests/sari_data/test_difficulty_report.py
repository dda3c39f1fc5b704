import math

import pandas as pd
import pytest

from sari_data.difficulty_report import (bucket_table, group_table, histogram_figure, knob_tables, report_tables,
                                         write_histogram)


def frame(rates, knobs, buckets, families=None, k=4):
    n = len(rates)
    return pd.DataFrame({
        "item_id": [f"i{j}" for j in range(n)], "model": "m", "k": k, "n_correct": [round(r * k) for r in rates],
        "pass_rate": rates, "bucket": buckets, "split": ["train"] * (n - 1) + ["test"], "task": "sound",
        "family": families or ["a"] * n, "knob": knobs,
    })


def test_bucket_table_counts_each_bucket_and_lists_dropped_items_last():
    table = bucket_table(frame([1.0, 0.75, 0.0, 0.25, 0.5], [None] * 5, [0, 0, None, 1, 10]))
    assert table.bucket.tolist() == ["0", "1", "10", "dropped (0/k)"]
    assert table["items"].tolist() == [2, 1, 1, 1]
    assert table.min_pass_rate.tolist() == [0.75, 0.25, 0.5, 0.0] and table.max_pass_rate.tolist()[0] == 1.0


def test_pass_rate_tracks_the_constructed_knob():
    # Harder by construction -> lower pass rate: means fall by tercile and Spearman is -1.
    f = frame([1.0, 0.75, 0.5, 0.25, 0.0, 0.0], [0.1, 0.2, 0.5, 0.6, 0.8, 0.95], [0, 0, 1, 1, None, None])
    tables = knob_tables(f.iloc[:5])
    by = tables["pass rate by difficulty knob"].set_index("knob_tercile")
    assert by.loc["easy (<1/3)", "mean_pass_rate"] == 0.875 and by.loc["medium", "mean_pass_rate"] == 0.375
    assert by.loc["hard (>=2/3)", "items"] == 1
    assert tables["knob vs pass rate"].spearman[0] == pytest.approx(-1.0)
    # A constant pass rate (a model that never answers right) has no correlation: NaN, not a warning.
    flat = frame([0.0] * 4, [0.1, 0.4, 0.7, 0.9], [None] * 4)
    assert math.isnan(knob_tables(flat)["knob vs pass rate"].spearman[0])
    assert knob_tables(frame([0.5], [None], [0])) == {}  # no knob (not synthetic): no table


def test_knob_correlation_per_family_tells_a_learnt_skill_from_chance():
    # Family a tracks the knob exactly (rho -1); family b sits at chance whatever the knob (constant:
    # NaN). Over all six, in knob order the pass-rate ranks are 6, 2.5, 5, 2.5, 2.5, 2.5 (ties
    # averaged): rho = -10 / sqrt(17.5 x 12.5) = -0.676, the chance family diluting the learnt one.
    f = frame([1.0, 0.75, 0.5, 0.5, 0.5, 0.5], [0.1, 0.3, 0.9, 0.2, 0.5, 0.7], [0] * 6,
              families=["a", "a", "a", "b", "b", "b"])
    table = knob_tables(f)["knob vs pass rate"].set_index("items")
    assert table.loc["family a", "spearman"] == pytest.approx(-1.0) and table.loc["family a", "n"] == 3
    assert math.isnan(table.loc["family b", "spearman"])
    assert table.loc["all", "n"] == 6 and table.loc["all", "spearman"] == pytest.approx(-0.676, abs=1e-3)


def test_report_keeps_the_split_and_adds_the_silence_probe():
    f = frame([1.0, 0.5, 0.0, 0.25], [0.1, 0.5, 0.9, 0.2], [0, 1, None, 1], families=["a", "a", "b", "b"])
    silence = f.assign(pass_rate=[0.5, 0.0, 0.0, 0.0])
    tables = report_tables(f, "train", silence)
    by_family = group_table(f.iloc[:3], "family").set_index("family")
    assert tables["by family"].set_index("family")["items"].to_dict() == {"a": 2, "b": 1}
    assert by_family.loc["a", "solved_at_least_once"] == 1.0 and by_family.loc["b", "solved_at_least_once"] == 0.0
    assert tables["by family"].set_index("family").mean_silence_pass_rate.to_dict() == {"a": 0.25, "b": 0.0}
    assert report_tables(f, "validation") == {}


def test_histogram_has_a_panel_per_task_and_family_with_one_bar_per_count(tmp_path):
    f = frame([1.0, 0.5, 0.0, 0.25], [None] * 4, [0, 1, None, 1], families=["a", "a", "b", "b"])
    fig = histogram_figure(f)
    bars = {ax.get_title(): [p.get_height() for p in ax.patches] for ax in fig.axes if ax.get_title()}
    # k = 4: five bars (0..4 correct); pass rates 1.0, 0.5 (family a) and 0.0, 0.25 (family b)
    assert bars == {"all items (n=4)": [1, 1, 1, 0, 1], "task: sound (n=4)": [1, 1, 1, 0, 1],
                    "family: a (n=2)": [0, 0, 1, 0, 1], "family: b (n=2)": [1, 1, 0, 0, 0]}
    path = write_histogram(f, None, tmp_path / "h.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert write_histogram(f, "nothing-here", tmp_path / "none.png") is None
