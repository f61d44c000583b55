"""A recipe's loss section: a weighted sum of named terms; mistakes name the key."""

import pytest
import torch

from semseg.config import RecipeError, load_recipe
from semseg.engine.build import build_loss
from semseg.engine.losses import (
    CrossEntropyLoss,
    LovaszSoftmaxLoss,
    OhemCrossEntropyLoss,
    loss_arguments,
)
from semseg.labels import IGNORE_INDEX
from tests.engine.losses.oracle import random_batch

WEIGHTS = [0.5, 2.0, 1.0, 4.0]


def test_default_is_class_weighted_cross_entropy_as_before():
    recipe = load_recipe("camvid")
    assert [t.name for t in recipe.loss.terms] == ["ce"]
    logits, target = (torch.from_numpy(a) for a in random_batch(0))
    loss = build_loss(recipe.loss, WEIGHTS, IGNORE_INDEX)
    assert torch.equal(loss(logits, target), CrossEntropyLoss(WEIGHTS)(logits, target))


def test_terms_are_summed_with_their_weights_and_arguments():
    recipe = load_recipe(
        "camvid",
        ["loss.terms=[{name: ohem, min_kept: 9, threshold: 0.6}, "
         "{name: lovasz, weight: 0.5, class_weighted: false}]"],
    )  # fmt: skip
    logits, target = (torch.from_numpy(a) for a in random_batch(1, scale=2.0))
    loss = build_loss(recipe.loss, WEIGHTS, IGNORE_INDEX)
    ohem = OhemCrossEntropyLoss(0.6, 9, WEIGHTS)(logits, target)
    lovasz = LovaszSoftmaxLoss()(logits, target)  # class_weighted: false
    assert loss(logits, target).item() == pytest.approx((ohem + 0.5 * lovasz).item(), rel=1e-6)
    assert recipe.to_dict()["loss"]["terms"][0] == {
        "name": "ohem", "weight": 1.0, "class_weighted": True, "min_kept": 9, "threshold": 0.6,
    }  # fmt: skip


def test_loss_arguments_leave_out_what_the_section_sets():
    assert loss_arguments("ohem") == {"threshold": 0.7, "min_kept": 100_000}
    assert loss_arguments("ce") == {}


@pytest.mark.parametrize(
    ("terms", "message"),
    [
        ("[{name: crossent}]", r"loss\.terms\.0: .*unknown loss 'crossent'; choose from ce, ohem"),
        ("[{name: ohem, tresh: 0.7}]", r"loss\.terms\.0: .*no argument\(s\) tresh"),
        ("[{name: ce}, {name: dice, weight: 0}]", r"loss\.terms\.1\.weight"),
        ("[{weight: 1}]", r"loss\.terms\.0\.name"),
        ("[]", r"loss\.terms: .*at least one loss term"),
    ],
)
def test_mistakes_name_the_key(terms, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe("camvid", [f"loss.terms={terms}"])


def test_a_bad_argument_value_names_the_term():
    recipe = load_recipe("camvid", ["loss.terms=[{name: focal, gamma: -1}]"])
    with pytest.raises(ValueError, match="loss term 'focal': focal gamma"):
        build_loss(recipe.loss, None, IGNORE_INDEX)
