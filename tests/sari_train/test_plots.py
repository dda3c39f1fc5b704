"""What the plots and printed tables show: the loss on a log axis, whole-number steps, plain tick
labels, readable titles; accuracy bars with their values and the chance line; difficulty easy →
hard; counts as integers; epochs as a fraction."""

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from sari_train.evaluate import accuracy_figure, accuracy_table, printed_table  # noqa: E402
from sari_train.grpo.curriculum import CurriculumSampler  # noqa: E402
from sari_train.metrics import curves_figure  # noqa: E402


def panels(fig) -> dict[str, object]:
    fig.canvas.draw()
    return {ax.get_title(): ax for ax in fig.axes if ax.get_title()}


def test_curves_put_the_loss_on_a_log_axis_with_whole_steps_and_plain_labels():
    rows = [{"step": s, "loss": 2.0 / s, "learning_rate": 1e-5 + s * 1e-9, "reward": 0.5} for s in range(1, 6)]
    axes = panels(curves_figure(rows))
    assert set(axes) == {"loss (log scale)", "learning rate", "reward (mean)"}
    assert axes["loss (log scale)"].get_yscale() == "log"
    for ax in axes.values():
        steps = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
        assert steps and all(s.lstrip("−-").isdigit() for s in steps), steps  # 1, 2, 3 ... never 1.5
    rate = axes["learning rate"]
    assert rate.yaxis.get_offset_text().get_text() == ""  # no "+1e-5" above the axis
    values = [float(t.get_text().replace("−", "-")) for t in rate.get_yticklabels() if t.get_text()]
    assert values and all(0.99e-5 < v < 1.01e-5 for v in values) and len(set(values)) == len(values)


def test_a_negative_grpo_loss_gets_a_symmetric_log_axis():
    rows = [{"step": s, "loss": (-1) ** s * 0.01} for s in range(1, 5)]
    axes = panels(curves_figure(rows))
    assert axes["loss (symmetric log scale)"].get_yscale() == "symlog"


def test_accuracy_bars_carry_their_values_and_the_chance_line():
    table = pd.DataFrame({"base": {"total": 68.0, "task/music": 80.0, "task/sound": 32.0},
                          "grpo": {"total": 74.3, "task/music": 81.8, "task/sound": 52.0}})
    fig = accuracy_figure(table, chance=50.0)
    ax = fig.axes[0]
    labels = sorted(t.get_text() for t in ax.texts)
    assert labels == sorted(["68.0", "80.0", "32.0", "74.3", "81.8", "52.0"])
    chance = [line for line in ax.get_lines() if line.get_label().startswith("chance")]
    assert len(chance) == 1 and list(chance[0].get_ydata()) == [50.0, 50.0]


def test_difficulty_is_ordered_easy_medium_hard_and_counts_print_as_integers():
    scored = pd.DataFrame({"difficulty": ["hard", "easy", "medium", "easy"], "correct": [False, True, True, False]})
    table = accuracy_table(scored)
    assert [k for k in table.index if k.startswith("difficulty/")] == ["difficulty/easy", "difficulty/medium",
                                                                        "difficulty/hard"]
    printed = printed_table(pd.DataFrame({"m": table}))
    n_line = next(line for line in printed.splitlines() if line.startswith("n "))
    assert n_line.split() == ["n", "4"]


def test_epoch_is_logged_as_a_fraction():
    sampler = CurriculumSampler([f"i{k}" for k in range(8)], mode="random")
    sampler.take(2)
    assert sampler.epochs_done == pytest.approx(0.25)
    sampler.take(8)
    assert sampler.epochs_done == pytest.approx(1.25)
