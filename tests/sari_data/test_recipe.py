import pytest

from sari_data.recipe import RecipeError, load_recipe


def write(tmp_path, text):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


def test_demo_recipe_loads():
    recipe = load_recipe("pipelines/demo.yaml")
    assert recipe.sources[0].kind == "synthetic" and recipe.sources[0].clip_seconds == 3.6


def test_overrides_are_typed(tmp_path):
    recipe = load_recipe("pipelines/demo.yaml", ["seed=7", "sources.0.n_items=12"])
    assert recipe.seed == 7 and recipe.sources[0].n_items == 12


@pytest.mark.parametrize(
    "text, message",
    [
        ("name: x\nsources: [{kind: synthetic, n_itmes: 3}]\n", "sources.0.synthetic.n_itmes: unknown key"),
        ("name: x\nsources: [{kind: synthetic, n_items: many}]\n", "sources.0.synthetic.n_items"),
        ("name: x\nsources: []\n", "sources"),
        ("name: x\nsources: [{kind: synthetic}]\nsteps: [{kind: split, fractions: {a: 0.5}}]\n", "sum to 1"),
        ("name: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_recipes_say_where_and_what(tmp_path, text, message):
    with pytest.raises(RecipeError, match="r.yaml") as err:
        load_recipe(write(tmp_path, text))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_missing_recipe(tmp_path):
    with pytest.raises(RecipeError, match="not found"):
        load_recipe(tmp_path / "nope.yaml")


STAGES = "name: x\nsources: [{kind: synthetic}]\nsteps: [{kind: split_counts, counts: {a: 1}}, %s]\n"


@pytest.mark.parametrize("step, message", [
    ("{kind: difficulty, options: {k: 16, drop_zero: true}}", "reads the recipe's `difficulty:` section"),
    ("{kind: cot, options: {splt: sft}}", "options of `cot` (split, n, seed, writer): splt: unknown key"),
    ("{kind: questions, options: {per_clip: 1, families: [sound]}}", "families: unknown key"),
    ("{kind: blind, options: {k: many}}", "k: Input should be a valid integer"),
])
def test_an_ignored_stage_setting_is_an_error(tmp_path, step, message):
    with pytest.raises(RecipeError, match="steps.1"):
        load_recipe(write(tmp_path, STAGES % step))
    with pytest.raises(RecipeError) as err:
        load_recipe(write(tmp_path, STAGES % step))
    assert message in str(err.value)


def test_the_real_recipes_declare_what_their_commands_read():
    recipe = load_recipe("pipelines/sari-32k.yaml")
    assert recipe.stage_settings("cot").split == "sft" and recipe.stage_settings("questions").per_clip == 1
    assert recipe.difficulty.k == 16 and recipe.difficulty.drop_unsolved and recipe.difficulty.split == "train"
    assert recipe.stage_settings("blind").k == 4  # no blind step: the command's defaults
    splits = next(s for s in recipe.steps if s.kind == "split_counts")
    assert set(splits.counts) == {"sft", "rl"}


def test_a_command_takes_the_recipe_options_and_its_flags_win(tmp_path):
    import argparse

    from sari_data.llm.commands import stage_settings

    path = write(tmp_path, STAGES % "{kind: cot, options: {split: sft, n: 5}}")
    args = argparse.Namespace(recipe=str(path), split=None, n=None, seed=None, writer="template")
    assert stage_settings(args, "cot").model_dump() == {"split": "sft", "n": 5, "seed": 0, "writer": "template"}
    args = argparse.Namespace(recipe=None, split="", n=None, seed=3, writer=None)
    assert stage_settings(args, "cot").model_dump() == {"split": "", "n": None, "seed": 3, "writer": "auto"}


def test_every_shipped_recipe_validates_and_reads_only_files_in_the_repo_or_data():
    from pathlib import Path

    for path in sorted(Path("pipelines").glob("*.yaml")):
        recipe = load_recipe(path)
        files = [s.path for s in recipe.sources if hasattr(s, "path")]
        files += [b.path for s in recipe.steps if s.kind == "decontaminate" for b in s.benchmarks]
        for file in files:
            assert file.parts[0] in ("benchmarks", "data"), (path, file)
            assert file.parts[0] != "benchmarks" or file.exists(), (path, file)
