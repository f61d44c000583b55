"""Recipes: shipped files validate, overrides apply, mistakes name the key."""

import pytest

from semseg.config import RecipeError, load_recipe, parse_override, recipe_purpose, shipped_recipes


@pytest.mark.parametrize("name", sorted(shipped_recipes()))
def test_shipped_recipes_are_valid(name):
    recipe = load_recipe(name)
    assert recipe.train.epochs >= 1
    assert recipe_purpose(shipped_recipes()[name])  # each says what it is for


def test_recipe_purpose_is_the_first_comment_line():
    assert recipe_purpose("# Fast one.\n# More detail.\nseed: 0\n") == "Fast one."
    assert recipe_purpose("seed: 0\n# late comment\n") == ""


def test_overrides_are_parsed_as_yaml():
    assert parse_override("train.lr=0.01") == (["train", "lr"], 0.01)
    assert parse_override("augment.crop_size=[64, 80]") == (["augment", "crop_size"], [64, 80])
    assert parse_override("data.root=null") == (["data", "root"], None)
    recipe = load_recipe("demo", ["train.epochs=3", "model.base_channels=8"])
    assert recipe.train.epochs == 3
    assert recipe.model.arguments["base_channels"] == 8


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epoks=3", "unknown key 'train.epoks'"),
        ("trian.epochs=3", "unknown key 'trian'"),
        ("train.epochs=0", "train.epochs"),
        ("train.optimizer=lion", "train.optimizer"),
        ("model.base_chanels=8", "base_chanels"),
        ("model.name=unetx", "unknown model 'unetx'"),
        ("loss.class_weights=median", "loss.class_weights"),
    ],
)
def test_mistakes_name_the_key(override, message):
    with pytest.raises(RecipeError, match=message.replace(".", r"\.")):
        load_recipe("demo", [override])


def test_recipe_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  batch_sise: 4\n")
    with pytest.raises(RecipeError, match=r"bad\.yaml: unknown key 'train\.batch_sise'"):
        load_recipe(str(bad))
    with pytest.raises(RecipeError, match="no such file or shipped recipe"):
        load_recipe(str(tmp_path / "missing.yaml"))
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: [unclosed\n")
    with pytest.raises(RecipeError, match=r"broken\.yaml: not valid YAML"):
        load_recipe(str(broken))
    with pytest.raises(RecipeError, match="section.key=value"):
        load_recipe("demo", ["no-equals-sign"])


def test_switching_model_by_override_starts_a_fresh_model_section():
    recipe = load_recipe("demo", ["model.name=encoder_decoder", "model.widths=[8, 16]"])
    assert recipe.model.name == "encoder_decoder"
    assert recipe.model.arguments == {"widths": [8, 16]}
    same = load_recipe("demo", ["model.name=unet"])
    assert same.model.arguments["base_channels"] == 16  # same model: arguments kept


def test_overrides_do_not_change_the_base_mapping():
    base = {"train": {"epochs": 2}}
    load_recipe(None, ["train.epochs=5"], base=base)
    assert base == {"train": {"epochs": 2}}
