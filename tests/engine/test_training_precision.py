"""``train.precision``: the old ``amp`` key read as it, ``auto`` from the CPU's features, and
bf16 steps that keep float32 weights and a float32 loss."""

from __future__ import annotations

import pytest
import torch

from semseg.config import RecipeError, load_recipe
from semseg.engine.trainer import Trainer, training_precision
from semseg.hardware import CPU_FLAGS, Machine

TINY = [
    "data.synthetic_train_size=4",
    "data.synthetic_val_size=1",
    "data.synthetic_image_size=[32,40]",
    "augment.crop_size=[32,40]",
    "model.base_channels=4",
    "model.depth=2",
    "train.batch_size=2",
    "train.epochs=1",
    "train.threads=1",
]


def machine(amx: bool) -> Machine:
    flags = dict.fromkeys(CPU_FLAGS, True) | {"AMX-BF16": amx, "AMX-INT8": amx}
    return Machine("Xeon" if amx else "EPYC", flags, 2, 2, {}, "Linux")


@pytest.mark.parametrize(
    ("amp", "precision"), [("bf16", "bf16"), ("fp16", "fp16"), ("null", "fp32")]
)
def test_the_old_amp_key_is_read_as_precision(amp, precision):
    assert load_recipe("demo", [f"train.amp={amp}"]).train.precision == precision
    assert "amp" not in load_recipe("demo", [f"train.amp={amp}"]).to_dict()["train"]


def test_amp_and_precision_that_disagree_or_bad_values_are_named():
    with pytest.raises(RecipeError, match="contradicts train.precision='fp32'"):
        load_recipe("demo", ["train.amp=bf16", "train.precision=fp32"])
    with pytest.raises(RecipeError, match="must be bf16, fp16 or null, got 'fp32'"):
        load_recipe("demo", ["train.amp=fp32"])
    with pytest.raises(RecipeError, match=r"train\.precision"):
        load_recipe("demo", ["train.precision=int8"])


def test_auto_is_bf16_only_with_amx_on_the_cpu():
    cpu = torch.device("cpu")
    assert training_precision("auto", cpu, machine(amx=True)) == ("bf16", "auto: Xeon has AMX-BF16")
    assert training_precision("auto", cpu, machine(amx=False))[0] == "fp32"
    assert training_precision("fp32", cpu, machine(amx=True))[0] == "fp32"
    assert training_precision("bf16", cpu, machine(amx=False))[0] == "bf16"


def test_a_bf16_step_keeps_float32_weights_and_loss(tmp_path):
    trainer = Trainer(load_recipe("demo", [*TINY, "train.precision=bf16"]), tmp_path,
                      progress=False)  # fmt: skip
    assert trainer.precision == "bf16" and trainer.channels_last
    losses = []
    loss = trainer.loss
    trainer.loss = lambda logits, masks: losses.append(logits.dtype) or loss(logits, masks)
    images, masks = next(iter(torch.utils.data.DataLoader(trainer.train_set, batch_size=2)))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer._train_step(0, 0, images, masks)
    assert losses == [torch.float32]
    after = trainer.model.state_dict()
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    assert any(not torch.equal(before[k], after[k]) for k in before)
    conv = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
