"""Recipes: plain YAML whose sections map one to one onto the code they configure.

=========  ===========================================================================
section    configures
=========  ===========================================================================
data       :func:`semseg.engine.build.build_datasets` (where the images come from)
augment    :func:`semseg.data.transforms.train_augmentation`
model      :func:`semseg.models.create_model` (``name`` plus that model's own arguments)
loss       :func:`semseg.engine.build.build_loss` (terms and class weights)
train      :class:`semseg.engine.trainer.Trainer` (optimisation and checkpoints)
=========  ===========================================================================

Unknown or mistyped keys are errors that name the key. ``--set section.key=value`` overrides
any value from the command line (the value is parsed as YAML).
"""

from __future__ import annotations

import copy
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from semseg.data.io import DEFAULT_MAX_PIXELS
from semseg.engine.losses import loss_arguments
from semseg.models import model_arguments


class RecipeError(ValueError):
    """A recipe file or override is invalid; the message names the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Section):
    format: Literal["synthetic", "camvid", "folder", "voc", "cityscapes"] | None = "synthetic"
    """Dataset layout; None detects it from the folder."""
    root: str | None = None
    """Dataset folder (not used by the synthetic data)."""
    train_split: str = "train"
    val_split: str = "val"
    holdout_groups: tuple[str, ...] = ()
    """Groups of frames to validate on instead of ``val_split``: training then uses every frame
    of ``train_split`` and ``val_split`` outside these groups, validation the frames inside them
    (see :mod:`semseg.data.groups`). Empty: train on ``train_split``, validate on ``val_split``."""
    group_pattern: str | None = None
    """Regular expression whose first capture group is the group of a file stem (the whole
    match when it has none); None: the format's own (CamVid: the drive, ``0016E5``)."""
    synthetic_train_size: int = Field(512, ge=1)
    synthetic_val_size: int = Field(64, ge=1)
    synthetic_image_size: tuple[int, int] = (128, 160)
    workers: int = Field(0, ge=0)
    """DataLoader worker processes (0 loads in the main process)."""
    preload: bool = False
    """Decode every frame once, when the datasets are made, and keep them in memory (4 bytes
    a pixel); see :class:`semseg.data.dataset.FileDataset`. Changes no sample."""
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1)
    """Images and masks whose header claims more pixels are refused before decoding
    (decompression bombs); see :data:`semseg.data.io.DEFAULT_MAX_PIXELS`."""

    @field_validator("group_pattern")
    @classmethod
    def _compiles(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as error:
                raise ValueError(f"not a regular expression ({error})") from None
        return pattern


class AugmentConfig(_Section):
    crop_size: tuple[int, int] = (128, 160)
    scale_range: tuple[float, float] = (0.5, 2.0)
    hflip: bool = True
    photometric: float = Field(0.2, ge=0)
    class_balanced_crops: float = Field(0.0, ge=0, le=1)
    """Fraction of the crops placed on a class drawn uniformly from those in the mask."""


class ModelConfig(_Section):
    """``name`` selects the model; ``init_from`` a checkpoint to start from; every other key is
    an argument of that model."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: str = "unet"
    init_from: str | None = None
    """A semseg checkpoint (e.g. another run's ``best.pt``) whose matching weights (same name and
    shape) start this run; the classifier starts fresh when the classes differ (see
    :mod:`semseg.engine.init_from`). Read when a run starts, not when it resumes."""

    @model_validator(mode="after")
    def _known_arguments(self) -> ModelConfig:
        accepted = model_arguments(self.name)  # raises for an unknown name
        unknown = sorted(set(self.arguments) - set(accepted))
        if unknown:
            options = ", ".join(k for k in accepted if k != "num_classes")
            raise ValueError(
                f"model {self.name!r} has no argument(s) {', '.join(unknown)}; "
                f"it accepts: {options}"
            )
        return self

    @property
    def arguments(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class LossTerm(_Section):
    """One term of the loss: ``name`` (see :data:`semseg.engine.losses.LOSSES`), its ``weight``
    in the sum, whether it uses the section's ``class_weights``; every other key is an argument
    of that loss (e.g. ``ohem``'s ``threshold`` and ``min_kept``)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: str
    weight: float = Field(1.0, gt=0)
    class_weighted: bool = True

    @model_validator(mode="after")
    def _known_arguments(self) -> LossTerm:
        accepted = loss_arguments(self.name)  # raises for an unknown name
        unknown = sorted(set(self.arguments) - set(accepted))
        if unknown:
            options = ", ".join(accepted) or "none"
            raise ValueError(
                f"loss {self.name!r} has no argument(s) {', '.join(unknown)}; "
                f"it accepts: {options} (and weight, class_weighted)"
            )
        return self

    @property
    def arguments(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class LossConfig(_Section):
    class_weights: Literal["median_frequency", "median_frequency_pixels"] | list[float] | None = (
        None
    )
    """None, explicit per-class weights, or median-frequency balancing computed on the train
    split (``median_frequency``: Eigen and Fergus, over images where the class appears;
    ``median_frequency_pixels``: over all pixels)."""
    terms: tuple[LossTerm, ...] = (LossTerm(name="ce"),)
    """The losses summed, each times its weight; cross-entropy alone by default."""

    @field_validator("terms")
    @classmethod
    def _some_term(cls, terms: tuple[LossTerm, ...]) -> tuple[LossTerm, ...]:
        if not terms:
            raise ValueError("at least one loss term is needed, e.g. [{name: ce}]")
        return terms


class EmaConfig(_Section):
    """Weight EMA (:mod:`semseg.engine.ema`): validation and ``best.pt`` use the averaged
    weights; ``last.pt`` keeps both, for resuming."""

    decay: float = Field(0.999, ge=0, lt=1)
    warmup: bool = True
    """Ramp the decay up as (1 + t) / (10 + t) over the first updates."""


class TrainConfig(_Section):
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(8, ge=1)
    """Images per optimisation step in each process. Under torchrun the global batch of a step
    is ``world_size * batch_size`` (processes x this); ``lr`` is not rescaled with it (see
    docs/distributed.md)."""
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    schedule: Literal["poly", "cosine", "constant"] = "poly"
    warmup_steps: int = Field(0, ge=0)
    val_every: int = Field(1, ge=1)
    """Validate every this many epochs (and after the last)."""
    time_budget_min: float | None = Field(None, gt=0)
    """Wall-clock minutes the run's training and validations must fit in (None: no limit).
    After every epoch the number of epochs is planned again from the time per epoch and per
    validation measured so far, at most ``epochs``, and the learning-rate schedule follows the
    plan (``epochs_planned`` in ``metrics.jsonl``). The plan depends on the machine's speed, so
    two budgeted runs take the same steps only while their plans agree."""
    val_batch_size: int = Field(1, ge=1)
    """Validation images of one size per forward pass (through the predictor)."""
    checkpoint_every: int = Field(0, ge=0)
    """Also write ``last.pt`` every this many steps inside an epoch (0: at epoch ends only)."""
    freeze_encoder_epochs: int = Field(0, ge=0)
    """Train with ``model.encoder`` frozen (BatchNorm statistics too) for this many epochs."""
    encoder_lr_mult: float = Field(1.0, gt=0)
    """Learning-rate factor of the encoder once unfrozen."""
    threads: int | None = Field(None, ge=1)
    """torch intra-op threads while :meth:`Trainer.fit` runs (None: PyTorch's default); the
    previous count is restored afterwards."""
    channels_last: bool = False
    sync_batchnorm: bool = False
    """Under torchrun on GPUs, BatchNorm statistics over the global batch (SyncBatchNorm)
    instead of each process's batch; no effect in a single process. Needs CUDA (NCCL)."""
    ema: EmaConfig | None = None
    """An exponential moving average of the weights, e.g. ``{decay: 0.999}``; None: off."""
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "fp32"
    """Arithmetic of the forward pass: ``bf16`` or ``fp16`` autocast (convolutions and matrix
    products in 16 bits; the optimizer keeps and updates float32 weights, the loss and the
    metrics are float32; bf16 on the CPU also trains channels-last), or ``fp32``. ``auto``
    is bf16 on CPUs with AMX-BF16 (training steps took 0.45-0.82x the fp32 time there,
    ``benchmarks/results/speed.md``) and on CUDA devices that support it, fp32 elsewhere (on
    an AMD EPYC with AVX-512 BF16 but no AMX, bf16 was no faster). ``fp16`` adds a gradient
    scaler and is for GPUs: on CPUs it ran 12-15x slower than fp32 (a warning). Replaces
    ``amp``: ``amp: bf16``, ``fp16`` and ``null`` are read as ``precision: bf16``, ``fp16``
    and ``fp32``."""

    @model_validator(mode="before")
    @classmethod
    def _amp_is_precision(cls, data: Any) -> Any:
        """Recipes and checkpoints written before ``precision`` existed said ``amp``."""
        if not isinstance(data, dict) or "amp" not in data:
            return data
        data = dict(data)
        amp = data.pop("amp")
        mapped = {None: "fp32", "bf16": "bf16", "fp16": "fp16"}.get(amp)
        if mapped is None:
            raise ValueError(f"train.amp (now train.precision) must be bf16, fp16 or null, "
                             f"got {amp!r}")  # fmt: skip
        if data.setdefault("precision", mapped) != mapped:
            raise ValueError(
                f"train.amp={amp!r} (the old name of train.precision) contradicts "
                f"train.precision={data['precision']!r}; keep only train.precision"
            )
        return data


class Recipe(_Section):
    seed: int = 0
    data: DataConfig = DataConfig()
    augment: AugmentConfig = AugmentConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    train: TrainConfig = TrainConfig()

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def with_absolute_data_root(self) -> Recipe:
        """This recipe with ``data.root`` absolute (``~`` expanded, relative to the working
        directory, symbolic links kept), so a recipe saved in a checkpoint finds its data from
        any folder."""
        if self.data.root is None:
            return self
        root = os.path.abspath(os.path.expanduser(self.data.root))
        return self.model_copy(update={"data": self.data.model_copy(update={"root": root})})


def shipped_recipes() -> dict[str, str]:
    """Name -> text (YAML) of every recipe shipped inside the package (``semseg/recipes/``),
    read with ``importlib.resources`` so that a wheel install finds them too."""
    folder = resources.files("semseg") / "recipes"
    return {
        entry.name.removesuffix(".yaml"): entry.read_text()
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".yaml")
    }


def recipe_purpose(text: str) -> str:
    """A recipe's one-line purpose: the first line of its leading comment block."""
    first = text.lstrip().splitlines()[0] if text.strip() else ""
    return first.lstrip("#").strip() if first.startswith("#") else ""


def read_recipe_text(name_or_path: str) -> tuple[str, str]:
    """(source, YAML text) of a recipe file path, or of a shipped recipe's name (``demo``).

    Raises:
        RecipeError: naming the recipe and listing the shipped ones when neither exists.
    """
    path = Path(name_or_path)
    if path.is_file():
        return str(path), path.read_text()
    shipped = shipped_recipes()
    name = name_or_path.removesuffix(".yaml")
    if name in shipped:
        return f"recipe {name}", shipped[name]
    available = ", ".join(shipped)
    raise RecipeError(f"recipe {name_or_path!r}: no such file or shipped recipe ({available})")


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.lr=0.01"`` -> (["train", "lr"], 0.01); the value is read as YAML."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise RecipeError(f"override {text!r} must look like section.key=value")
    return key.strip().split("."), yaml.safe_load(value)


def load_recipe(
    name_or_path: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    base: dict[str, Any] | None = None,
) -> Recipe:
    """Read a recipe file (or start from ``base``, e.g. a checkpoint's recipe) and apply
    ``section.key=value`` overrides.

    Overriding ``model.name`` with another model replaces the whole ``model`` section (the
    recipe's model arguments belong to its model); give the new model's arguments as further
    ``model.*`` overrides.

    Raises:
        RecipeError: naming the file and the offending key.
    """
    source = "recipe"
    if name_or_path is not None:
        source, text = read_recipe_text(name_or_path)
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as error:
            raise RecipeError(f"{source}: not valid YAML ({error})") from None
        if not isinstance(data, dict):
            raise RecipeError(f"{source}: top level must be a mapping of sections")
    else:
        data = copy.deepcopy(dict(base or {}))
    parsed = [(override, *parse_override(override)) for override in overrides]
    # A new model.name starts a fresh model section: the recipe's arguments belong to its model.
    for _, keys, value in parsed:
        if keys == ["model", "name"] and value != data.get("model", {}).get("name"):
            data["model"] = {}
    for override, keys, value in parsed:
        node = data
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise RecipeError(f"override {override!r}: {key!r} is not a section")
        node[keys[-1]] = value
    return validate_recipe(data, source)


def validate_recipe(data: dict[str, Any], source: str = "recipe") -> Recipe:
    try:
        return Recipe.model_validate(data)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            key = ".".join(str(part) for part in item["loc"])
            if item["type"] == "extra_forbidden":
                problems.append(f"unknown key {key!r}")
            else:
                problems.append(f"{key}: {item['msg']} (got {item.get('input')!r})")
        raise RecipeError(f"{source}: " + "; ".join(problems)) from None
