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


def test_auto_on_the_cpu_is_the_faster_measured_step_where_bf16_is_native():
    cpu = torch.device("cpu")
    asked: list[str] = []

    def step_ms(times: dict[str, float]):
        return lambda precision: asked.append(precision) or times[precision]

    faster_bf16 = step_ms({"fp32": 900.0, "bf16": 500.0})
    assert training_precision("auto", cpu, machine(amx=True), faster_bf16) == (
        "bf16", "auto: a training step took 500 ms in bf16 and 900 ms in fp32 on Xeon"
    )  # fmt: skip
    slower_bf16 = step_ms({"fp32": 300.0, "bf16": 400.0})
    assert training_precision("auto", cpu, machine(amx=True), slower_bf16)[0] == "fp32"
    tie = step_ms({"fp32": 300.0, "bf16": 300.0})
    assert training_precision("auto", cpu, machine(amx=True), tie)[0] == "fp32"
    assert asked == ["fp32", "bf16"] * 3
    # AVX-512 BF16 without AMX is measured too; no bf16 arithmetic at all is fp32 unmeasured.
    assert training_precision("auto", cpu, machine(amx=False), faster_bf16)[0] == "bf16"
    no_bf16 = Machine("Zen 2", dict.fromkeys(CPU_FLAGS, False) | {"AVX2": True}, 2, 2, {}, "")
    assert training_precision("auto", cpu, no_bf16, faster_bf16) == (
        "fp32", "auto: Zen 2 has no bf16 arithmetic (AVX-512 BF16 or AMX)"
    )  # fmt: skip
    assert len(asked) == 8
    assert training_precision("fp32", cpu, machine(amx=True))[0] == "fp32"
    assert training_precision("bf16", cpu, no_bf16)[0] == "bf16"
    with pytest.raises(ValueError, match="needs step_ms"):
        training_precision("auto", cpu, machine(amx=True))


def test_the_trainers_measured_step_leaves_the_model_and_random_streams_alone(tmp_path):
    trainer = Trainer(load_recipe("demo", TINY), tmp_path, progress=False)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    state = torch.get_rng_state()
    for precision in ("fp32", "bf16"):
        assert trainer._step_ms(precision) > 0
    assert torch.equal(torch.get_rng_state(), state)
    after = trainer.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm statistics too
    assert all(p.grad is None for p in trainer.model.parameters())


def test_a_resumed_auto_run_keeps_the_precision_it_started_in(tmp_path, monkeypatch):
    from semseg.engine import trainer as trainer_module

    recipe = load_recipe("demo", [*TINY, "train.precision=auto"])
    monkeypatch.setattr(trainer_module, "describe_machine", lambda: machine(amx=True))
    monkeypatch.setattr(Trainer, "_step_ms", lambda self, p: {"fp32": 2.0, "bf16": 1.0}[p])
    first = Trainer(recipe, tmp_path, progress=False)
    assert first.precision == "bf16" and first.channels_last
    first.fit()
    monkeypatch.setattr(Trainer, "_step_ms", lambda self, p: {"fp32": 1.0, "bf16": 2.0}[p])
    resumed = Trainer(recipe, tmp_path, resume=True, progress=False)
    assert resumed.precision == "bf16"
    assert resumed.precision_reason == "resumed in it (train.precision=auto)"
    assert Trainer(recipe, tmp_path / "fresh", progress=False).precision == "fp32"


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
