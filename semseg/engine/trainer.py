"""The training loop: epochs of the recipe's loss, periodic validation, checkpoints.

Reproducibility: the sample order of epoch ``e`` and every augmentation draw depend only on
``(seed, e, index)``, and the torch RNG (dropout) is re-seeded from ``(seed, e, step)`` before
each step. A run resumed from any checkpoint therefore replays exactly the steps an
uninterrupted run would have taken and ends with the same weights.

Files in ``out_dir``: ``last.pt`` (every epoch, and every ``checkpoint_every`` steps),
``best.pt`` (best validation mIoU; with ``train.ema`` the averaged weights, which are the ones
validated), ``metrics.jsonl`` (one line per epoch), ``curves.png``,
``plots/`` (per-class scores and confusion matrix of ``best.pt`` on the validation frames),
``recipe.yaml`` (the resolved recipe, ``data.root`` made absolute).

Before training starts the files of the train and validation splits are checked
(:func:`semseg.engine.build.check_data`), so a bad dataset fails at once with every problem
listed rather than one file per run in the middle of an epoch.

``model.encoder_weights`` is loaded into ``model.encoder`` by the trainer rather than by the
model's constructor, so that the load report reaches the caller (:attr:`Trainer.encoder_report`)
and a resumed run, whose weights are in ``last.pt``, does not need the file any more.

Under ``torchrun`` (see :mod:`semseg.engine.distributed`) every process runs this loop on the
model wrapped in DistributedDataParallel. Each process takes every ``world_size``-th sample of
the same epoch order, so step ``k``'s global batch is the batch a single process with
``world_size * batch_size`` would take at step ``k``, and resuming stays exact. Validation is
sharded the same way and its counts summed over processes. Only rank 0 writes files; every
process resumes from the same ``last.pt``, which must therefore be on a shared filesystem.
"""

from __future__ import annotations

import copy
import json
import math
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from semseg.checkpoint import Checkpoint, CheckpointError, load_weights
from semseg.config import ModelConfig, Recipe, validate_recipe
from semseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from semseg.engine import distributed
from semseg.engine.build import build_class_weights, build_datasets, build_loss, check_data
from semseg.engine.ema import WeightEma
from semseg.engine.evaluate import Evaluation, evaluate
from semseg.engine.init_from import init_from_checkpoint
from semseg.hardware import Machine, describe_machine
from semseg.inference.predictor import Predictor
from semseg.models import create_model
from semseg.models.pretrained import LoadReport, load_pretrained_encoder
from semseg.plots import plot_scores, plot_training_curves

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def derived_seed(*parts: int) -> int:
    """A 32-bit seed that depends on every part (NumPy's SeedSequence hashing)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """PyTorch's intra-op thread count set to ``threads`` inside the block (unchanged for
    None), restored after it."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


PLAN_WINDOW = 3
"""Epochs whose mean training time :func:`planned_epochs` projects the rest of a run with."""


def planned_epochs(
    history: list[dict[str, Any]], budget_s: float, max_epochs: int, val_every: int
) -> int:
    """The number of epochs a run fits in ``budget_s`` seconds of training and validation.

    ``history``: one record per epoch done, with its ``train_s`` and, where it validated, its
    ``val_s``. The plan is the epochs done plus as many more as the rest of the budget pays for
    at the mean time of the last :data:`PLAN_WINDOW` epochs (the machine's speed now, after a
    slow first epoch or a neighbour that has finished) and the mean validation time (a
    validation every ``val_every`` epochs and after the last; none counted before the first is
    measured), at most ``max_epochs`` and at least the epochs done.
    """
    done = len(history)
    if done == 0:
        return max_epochs
    train_s = [record["train_s"] for record in history]
    val_s = [record["val_s"] for record in history if "val_s" in record]
    left = budget_s - sum(train_s) - sum(val_s)
    recent = train_s[-PLAN_WINDOW:]
    per_epoch = sum(recent) / len(recent)
    per_validation = sum(val_s) / len(val_s) if val_s else 0.0
    planned = done
    while planned < max_epochs:
        last = planned + 1
        validations = sum(1 for e in range(done + 1, last + 1) if e % val_every == 0)
        validations += last % val_every != 0  # the last epoch always validates
        if (last - done) * per_epoch + validations * per_validation > left:
            break
        planned = last
    return planned


def learning_rate_factor(step: int, total_steps: int, schedule: str, warmup_steps: int) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based) of ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
    if schedule == "poly":
        return (1.0 - progress) ** 0.9
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0


class Trainer:
    """Trains the model a :class:`Recipe` describes and writes its run folder.

    Args:
        recipe: the validated recipe.
        out_dir: run folder (created).
        resume: continue from ``out_dir/last.pt`` if it exists. The checkpoint's recipe is
            used; a recipe that differs from it in other keys than :data:`RESUMABLE_CHANGES`
            is an error. A budgeted run given another ``train.time_budget_min`` plans its
            epochs again from its history.
        device: torch device; CUDA when available by default. Under torchrun, this process's
            device (:func:`semseg.engine.distributed.process_group` chooses it).
        progress: show progress bars (on rank 0 only).

    Attributes:
        encoder_report: what ``model.encoder_weights`` filled (None without them, and when
            resuming).
    """

    def __init__(
        self,
        recipe: Recipe,
        out_dir: str | Path,
        resume: bool = False,
        device: str | None = None,
        progress: bool = True,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.rank, self.world_size = distributed.get_rank(), distributed.get_world_size()
        self.is_main = self.rank == 0
        self.progress = progress and self.is_main
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        recipe = recipe.with_absolute_data_root()
        checkpoint: Checkpoint | None = None
        last = self.out_dir / "last.pt"
        if resume and last.is_file():
            checkpoint = Checkpoint.load(last)
            if checkpoint.training is None or checkpoint.recipe is None:
                raise CheckpointError(f"{last}: holds a model only, no training state to resume")
            recipe = _resumed_recipe(checkpoint.recipe, recipe, last)
        training = checkpoint.training if checkpoint is not None else None
        _check_same_start(training, last, self.world_size)
        self.recipe = recipe
        train = recipe.train
        # Checked before the data are read; auto resolves to fp32 or bf16, which pass.
        _check_precision_options(train.sync_batchnorm, train.precision, self.device)

        check_data(recipe.data, (recipe.data.train_split, recipe.data.val_split), self.progress)
        datasets = build_datasets(recipe.data, recipe.augment, seed=recipe.seed)
        self.train_set, self.val_set = datasets.train, datasets.val
        if datasets.groups is not None and self.is_main:
            held_out = ", ".join(recipe.data.holdout_groups)
            print(
                f"validating on group(s) {held_out}; frames per group "
                f"(data.group_pattern {datasets.groups.pattern!r}):\n{datasets.groups.table()}",
                flush=True,
            )
        self.labels = self.train_set.labels
        torch.manual_seed(recipe.seed)
        model, self.encoder_report = _build_model(
            recipe.model, self.labels.num_classes, pretrained=checkpoint is None
        )
        self.model = model.to(self.device)
        if recipe.model.init_from is not None and checkpoint is None:  # resuming: in last.pt
            transfer = init_from_checkpoint(
                self.model,
                recipe.model.init_from,
                recipe.model.name,
                recipe.model.arguments,
                self.labels,
            )
            if self.is_main:
                print(transfer.report(), flush=True)
        self.class_weights = (
            training["class_weights"]
            if training is not None
            else build_class_weights(recipe.loss, self.train_set)
        )
        self.loss = build_loss(recipe.loss, self.class_weights, self.labels.ignore_index).to(
            self.device
        )
        # The per-process batch shrinks when the train split is smaller than the global batch.
        self.batch_size = min(train.batch_size, len(self.train_set) // self.world_size)
        if self.batch_size < 1:
            raise ValueError(
                f"the train split has {len(self.train_set)} images, fewer than the "
                f"{self.world_size} processes"
            )
        self.precision, self.precision_reason = self._training_precision(training)
        self.channels_last = self._channels_last(self.precision)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if train.sync_batchnorm and self.world_size > 1:
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        encoder = getattr(self.model, "encoder", None)
        if train.freeze_encoder_epochs and encoder is None:
            raise ValueError(
                f"train.freeze_encoder_epochs needs a model with an encoder; "
                f"{recipe.model.name!r} has none"
            )
        self.optimizer = self._make_optimizer(encoder)
        self.scaler = torch.amp.GradScaler(self.device.type) if self.precision == "fp16" else None
        self.steps_per_epoch = max(len(self.train_set) // (train.batch_size * self.world_size), 1)
        self.state: dict[str, Any] = {
            "epoch": 0,
            "epochs": train.epochs,
            "step_in_epoch": 0,
            "global_step": 0,
            "best_miou": -1.0,
            "history": [],
            "epoch_loss_sum": 0.0,
        }
        if checkpoint is not None and training is not None:
            load_weights(self.model, checkpoint.state_dict, str(last), checkpoint.model_name)
            self.optimizer.load_state_dict(training["optimizer"])
            if self.scaler is not None:
                self.scaler.load_state_dict(training["grad_scaler"])
            self.state.update({k: training[k] for k in self.state if k in training})
            stored = checkpoint.recipe["train"]
            if train.time_budget_min is None:  # a resumed run may be extended
                self.state["epochs"] = train.epochs
            elif "epochs" not in training or (train.time_budget_min, train.epochs) != (
                stored.get("time_budget_min"),
                stored.get("epochs"),
            ):  # another budget or length: plan again from the history
                self.state["epochs"] = planned_epochs(
                    self.state["history"], 60 * train.time_budget_min, train.epochs,
                    train.val_every,
                )  # fmt: skip
        self.ema = WeightEma(self.model, train.ema.decay, train.ema.warmup) if train.ema else None
        if self.ema is not None and training is not None:
            self.ema.load_state_dict(training["ema"])
        # Created after the weights are final: DDP copies rank 0's weights to all processes.
        self.network = distributed.data_parallel(
            self.model, find_unused_parameters=train.freeze_encoder_epochs > 0
        )

    def _channels_last(self, precision: str) -> bool:
        return self.recipe.train.channels_last or (
            precision == "bf16" and self.device.type == "cpu"
        )

    def _training_precision(self, training: dict[str, Any] | None) -> tuple[str, str]:
        """:func:`training_precision`, measured on this model; a resumed ``auto`` run keeps
        the precision it started in, and every process takes rank 0's."""
        setting = self.recipe.train.precision
        if setting == "auto" and training is not None and "precision" in training:
            return training["precision"], f"resumed in it (train.precision={setting})"
        with torch_threads(self.recipe.train.threads):  # measured as fit() will train
            choice = training_precision(setting, self.device, describe_machine(), self._step_ms)
        return distributed.gather_objects(choice)[0]

    def _step_ms(self, precision: str) -> float:
        """Milliseconds of one training step in ``precision``: the fastest of two after a
        warm-up, forward, float32 loss and backward on a copy of the model in the memory
        layout it would train in, on a random batch of the crop size. The optimiser step,
        on float32 weights in both precisions, is left out. The model, its gradients and the
        random streams are left as they were."""
        height, width = self.recipe.augment.crop_size
        model = copy.deepcopy(self.model).train()
        layout = torch.channels_last if self._channels_last(precision) else torch.contiguous_format
        model = model.to(memory_format=layout)
        dtype = AUTOCAST_DTYPES.get(precision)
        times = []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            images = torch.randn(self.batch_size, 3, height, width, device=self.device)
            images = images.contiguous(memory_format=layout)
            classes = self.labels.num_classes
            masks = torch.randint(0, classes, (self.batch_size, height, width), device=self.device)
            for _ in range(3):
                start = time.perf_counter()
                with torch.autocast(self.device.type, dtype, enabled=dtype is not None):
                    logits = model(images)
                self.loss(logits.float(), masks).backward()
                model.zero_grad(set_to_none=True)
                times.append(time.perf_counter() - start)
        return 1000 * min(times[1:])

    @property
    def total_steps(self) -> int:
        """Steps of the whole run as planned now (the learning-rate schedule's length)."""
        return self.steps_per_epoch * self.state["epochs"]

    def _make_optimizer(self, encoder: torch.nn.Module | None) -> torch.optim.Optimizer:
        train = self.recipe.train
        encoder_ids = {id(p) for p in encoder.parameters()} if encoder is not None else set()
        groups = [
            {"params": [p for p in self.model.parameters() if id(p) in encoder_ids],
             "lr": train.lr * train.encoder_lr_mult},
            {"params": [p for p in self.model.parameters() if id(p) not in encoder_ids],
             "lr": train.lr},
        ]  # fmt: skip
        groups = [g for g in groups if g["params"]]
        for group in groups:
            group["base_lr"] = group["lr"]
        if train.optimizer == "sgd":
            return torch.optim.SGD(groups, momentum=train.momentum, weight_decay=train.weight_decay)
        return torch.optim.AdamW(groups, weight_decay=train.weight_decay)

    def epoch_order(self, epoch: int) -> list[int]:
        """Sample indices this process trains on in ``epoch``, in order (full batches only):
        its :func:`~semseg.engine.distributed.shard` of one permutation all processes share."""
        generator = torch.Generator().manual_seed(derived_seed(self.recipe.seed, epoch))
        order = torch.randperm(len(self.train_set), generator=generator).tolist()
        return distributed.shard(order[: self.steps_per_epoch * self.batch_size * self.world_size])

    def _set_encoder_frozen(self, frozen: bool) -> None:
        encoder = getattr(self.model, "encoder", None)
        if encoder is None:
            return
        for parameter in encoder.parameters():
            parameter.requires_grad_(not frozen)
        if frozen:
            encoder.eval()  # keeps BatchNorm running statistics fixed

    @property
    def validated_model(self) -> torch.nn.Module:
        """The weights validation scores and ``best.pt`` keeps: the EMA's when enabled."""
        return self.ema.model if self.ema is not None else self.model

    def checkpoint(self, weights: torch.nn.Module | None = None) -> Checkpoint:
        """The model, its classes and normalisation, the recipe and the loop state now, with
        the weights of ``weights`` (default: the model being trained, which ``last.pt`` needs
        to resume; the EMA's state is in ``training["ema"]``)."""
        return Checkpoint(
            model_name=self.recipe.model.name,
            model_args=self.recipe.model.arguments,
            labels=self.labels,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            state_dict=(weights if weights is not None else self.model).state_dict(),
            recipe=self.recipe.to_dict(),
            training={
                **self.state,
                "optimizer": self.optimizer.state_dict(),
                "grad_scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "class_weights": self.class_weights,
                "world_size": self.world_size,
                "precision": self.precision,
                "ema": self.ema.state_dict() if self.ema is not None else None,
            },
        )

    def fit(self) -> Evaluation | None:
        """Train until ``train.epochs``, or as many as ``train.time_budget_min`` allows;
        returns the last validation result.

        With ``train.threads`` set, PyTorch uses that many threads during the call only.
        """
        with torch_threads(self.recipe.train.threads):
            return self._fit()

    def _fit(self) -> Evaluation | None:
        train = self.recipe.train
        if self.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / "recipe.yaml").write_text(yaml.safe_dump(self.recipe.to_dict()))
        evaluation = None
        while self.state["epoch"] < self.state["epochs"]:
            epoch = self.state["epoch"]
            mean_loss, images_per_s, train_s = self._train_epoch(epoch)
            record: dict[str, Any] = {
                "epoch": epoch + 1,
                "step": self.state["global_step"],
                "train_loss": mean_loss,
                "lr": self.optimizer.param_groups[-1]["lr"],
                "images_per_s": images_per_s,
                "train_s": train_s,
            }
            self.state.update(epoch=epoch + 1, step_in_epoch=0, epoch_loss_sum=0.0)
            self.state["history"].append(record)
            if train.time_budget_min is not None:
                self._plan_epochs()
                record["epochs_planned"] = self.state["epochs"]
            if (epoch + 1) % train.val_every == 0 or epoch + 1 == self.state["epochs"]:
                started = time.perf_counter()
                evaluation = self.validate()
                record["val_s"] = time.perf_counter() - started
                scores = evaluation.to_dict(self.labels)
                record["val"] = {k: v for k, v in scores.items() if k != "confusion_matrix"}
                if scores["miou"] > self.state["best_miou"]:
                    self.state["best_miou"] = scores["miou"]
                    self._save("best.pt", self.validated_model)
                    if self.is_main:
                        title = f"best.pt (epoch {epoch + 1}, {self._validation_name()})"
                        plot_scores(scores, self.out_dir / "plots", title)
            self._save("last.pt")
            if self.is_main:
                self._write_logs()
        return evaluation

    def _plan_epochs(self) -> None:
        """Sets ``state["epochs"]`` to what fits in ``train.time_budget_min`` (rank 0's plan on
        every process), saying so when the plan changes."""
        train = self.recipe.train
        assert train.time_budget_min is not None
        plan = planned_epochs(
            self.state["history"], 60 * train.time_budget_min, train.epochs, train.val_every
        )
        plan = distributed.gather_objects(plan)[0]
        if plan != self.state["epochs"] and self.is_main:
            recent = [r["train_s"] for r in self.state["history"][-PLAN_WINDOW:]]
            per_epoch = sum(recent) / len(recent)
            tqdm.write(
                f"time budget {train.time_budget_min:g} min: {per_epoch:.0f} s per epoch here, "
                f"training {plan} of {train.epochs} epochs (was {self.state['epochs']})"
            )
        self.state["epochs"] = plan

    def _save(self, name: str, weights: torch.nn.Module | None = None) -> None:
        """Write checkpoint ``out_dir/name`` with ``weights`` (rank 0 only)."""
        if self.is_main:
            self.checkpoint(weights).save(self.out_dir / name)

    def _train_epoch(self, epoch: int) -> tuple[float, float, float]:
        """Train the rest of ``epoch``; returns its mean loss, images/s and wall seconds (of
        this call: the part after the resume point when resumed mid-epoch)."""
        train = self.recipe.train
        self.train_set.set_epoch(epoch)
        order = self.epoch_order(epoch)
        start_step = self.state["step_in_epoch"]
        batch = self.batch_size
        loader = DataLoader(
            self.train_set,
            batch_size=batch,
            sampler=order[start_step * batch :],
            num_workers=self.recipe.data.workers,
            drop_last=True,
        )
        self.model.train()
        self._set_encoder_frozen(epoch < train.freeze_encoder_epochs)
        bar = tqdm(
            loader,
            desc=f"epoch {epoch + 1}/{self.state['epochs']}",
            total=self.steps_per_epoch,
            initial=start_step,
            disable=not self.progress,
            leave=False,
        )
        started, seen = time.perf_counter(), 0
        for step, (images, masks) in enumerate(bar, start=start_step):
            loss = self._train_step(epoch, step, images, masks)
            self.state["epoch_loss_sum"] += loss
            self.state["global_step"] += 1
            self.state["step_in_epoch"] = step + 1
            seen += images.shape[0] * self.world_size
            rate = seen / (time.perf_counter() - started)
            bar.set_postfix(loss=f"{loss:.3f}", img_s=f"{rate:.1f}")
            if train.checkpoint_every and (step + 1) % train.checkpoint_every == 0:
                self._save("last.pt")
        bar.close()
        elapsed = time.perf_counter() - started
        mean_loss = self.state["epoch_loss_sum"] / self.steps_per_epoch
        return mean_loss, seen / elapsed if elapsed > 0 else 0.0, elapsed

    def _train_step(
        self, epoch: int, step: int, images: torch.Tensor, masks: torch.Tensor
    ) -> float:
        """One optimisation step; returns the loss averaged over processes."""
        train = self.recipe.train
        factor = learning_rate_factor(
            self.state["global_step"], self.total_steps, train.schedule, train.warmup_steps
        )
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor
        # Rank 0 draws the dropout masks a single process would; other ranks draw their own.
        seeds = (self.recipe.seed, epoch, step) + ((self.rank,) if self.rank else ())
        torch.manual_seed(derived_seed(*seeds))
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        images = images.to(self.device, memory_format=memory_format)
        masks = masks.to(self.device)
        dtype = AUTOCAST_DTYPES.get(self.precision)
        with torch.autocast(self.device.type, dtype, enabled=dtype is not None):
            logits = self.network(images)
        loss = self.loss(logits.float(), masks)  # the loss in float32 whatever the precision
        # Every process gets the same value, so all of them stop together on a bad loss.
        mean_loss = distributed.mean_over_processes(loss)
        if not torch.isfinite(mean_loss):
            raise FloatingPointError(
                f"loss is {mean_loss.item()} at epoch {epoch + 1} step {step + 1}; "
                "lower train.lr or check the data"
            )
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            self.optimizer.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        if self.ema is not None:
            self.ema.update(self.model)
        return mean_loss.item()

    def validate(self, model: torch.nn.Module | None = None) -> Evaluation:
        """Score ``model`` (default :attr:`validated_model`) on the validation frames through a
        predictor (as ``semseg evaluate`` scores a checkpoint), sharded over processes with the
        counts summed."""
        model = model if model is not None else self.validated_model
        distributed.broadcast_buffers(model)
        predictor = Predictor(model, self.labels, IMAGENET_MEAN, IMAGENET_STD, self.device)
        return evaluate(
            predictor,
            self.val_set,
            batch_size=self.recipe.train.val_batch_size,
            workers=self.recipe.data.workers,
            progress=self.progress,
            description="validate",
        )

    def _validation_name(self) -> str:
        """What the validation frames are, for titles: the held-out groups or the split."""
        held_out = self.recipe.data.holdout_groups
        return f"held-out {', '.join(held_out)}" if held_out else self.recipe.data.val_split

    def _write_logs(self) -> None:
        lines = "".join(json.dumps(record) + "\n" for record in self.state["history"])
        temporary = self.out_dir / "metrics.jsonl.tmp"
        temporary.write_text(lines)
        temporary.replace(self.out_dir / "metrics.jsonl")
        plot_training_curves(self.state["history"], self.out_dir / "curves.png")


def _build_model(
    model: ModelConfig, num_classes: int, pretrained: bool
) -> tuple[nn.Module, LoadReport | None]:
    """The recipe's model, with ``model.encoder_weights`` loaded into its encoder when
    ``pretrained`` (not when resuming), and the load report."""
    arguments = model.arguments
    source = arguments.pop("encoder_weights", None)
    network = create_model(model.name, num_classes, **arguments)
    if source is None or not pretrained:
        return network, None
    encoder = getattr(network, "encoder", None)
    if encoder is None:
        raise ValueError(
            f"model.encoder_weights needs a model with an encoder; {model.name!r} has none"
        )
    return network, load_pretrained_encoder(encoder, source)


def _check_same_start(training: dict[str, Any] | None, source: Path, world_size: int) -> None:
    """All processes must resume from the same step, with the processes that wrote it."""
    step = training["global_step"] if training is not None else None
    steps = distributed.gather_objects(step)
    if len(set(steps)) > 1:
        found = ", ".join(
            f"rank {r}: " + ("no checkpoint" if s is None else f"step {s}")
            for r, s in enumerate(steps)
        )
        raise CheckpointError(
            f"{source}: the processes would resume from different points ({found}); the --out "
            "folder must be on a filesystem every node shares"
        )
    saved = training.get("world_size", 1) if training is not None else world_size
    if saved != world_size:
        raise CheckpointError(
            f"{source}: checkpoint written by {saved} process(es), this run has {world_size}; "
            "train.batch_size is per process, so resume with the same number of processes"
        )


def training_precision(
    setting: str,
    device: torch.device,
    machine: Machine,
    step_ms: Callable[[str], float] | None = None,
) -> tuple[str, str]:
    """The precision a run with ``train.precision`` = ``setting`` trains in, and why.

    ``auto`` is bf16 on a CUDA device that supports it; on a CPU with bf16 arithmetic
    (AVX-512 BF16 or AMX) the faster of the two as ``step_ms(precision)`` measures one training
    step of the model (bf16 only when strictly faster: it is slower for depthwise-heavy models
    on both kinds of CPU measured, 1.6-2.6x faster for dense ones); fp32 on other CPUs, where
    bf16 is emulated in software (a step 11-23x slower, measured). Deterministic given what
    ``step_ms`` returns.

    Raises:
        ValueError: ``auto`` on a CPU with bf16 arithmetic and no ``step_ms``.
    """
    if setting != "auto":
        return setting, f"train.precision={setting}"
    if device.type == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
        return ("bf16" if bf16 else "fp32"), f"auto: {device} {'has' if bf16 else 'has no'} bf16"
    if device.type != "cpu" or not machine.bf16_instructions:
        return "fp32", f"auto: {machine.cpu_model} has no bf16 arithmetic (AVX-512 BF16 or AMX)"
    if step_ms is None:
        raise ValueError("train.precision=auto on a CPU with bf16 arithmetic needs step_ms")
    fp32_ms, bf16_ms = step_ms("fp32"), step_ms("bf16")
    chosen = "bf16" if bf16_ms < fp32_ms else "fp32"
    return chosen, (
        f"auto: a training step took {bf16_ms:.0f} ms in bf16 and {fp32_ms:.0f} ms in fp32 "
        f"on {machine.cpu_model}"
    )


def _check_precision_options(sync_batchnorm: bool, precision: str, device: torch.device) -> None:
    if sync_batchnorm and device.type != "cuda":
        raise ValueError(
            f"train.sync_batchnorm needs CUDA devices (NCCL); this run is on {device}, where "
            "PyTorch has no SyncBatchNorm: set train.sync_batchnorm=false"
        )
    if precision == "fp16" and device.type == "cpu":
        warnings.warn(
            "train.precision='fp16' on cpu: float16 autocast ran 12-15x slower than float32 on "
            "this project's CPU; use train.precision=bf16, fp32 or auto",
            stacklevel=3,
        )


RESUMABLE_CHANGES = ("train.epochs", "train.time_budget_min", "data.preload")
"""Recipe keys a resumed run takes from the new recipe: a run may be extended or given more
time, and preloading changes no sample."""


def _resumed_recipe(stored: dict[str, Any], recipe: Recipe, source: Path) -> Recipe:
    """The checkpoint's recipe, with :data:`RESUMABLE_CHANGES` from ``recipe``."""
    saved = validate_recipe(stored, str(source)).with_absolute_data_root()
    if saved.model.name != recipe.model.name:
        raise CheckpointError(
            f"{source}: checkpoint is of model {saved.model.name!r}, the recipe asks for "
            f"{recipe.model.name!r}; use another --out folder or the same model"
        )
    ours, theirs = _flatten(recipe.to_dict()), _flatten(saved.to_dict())
    differing = sorted(k for k in ours.keys() | theirs.keys()
                       if k not in RESUMABLE_CHANGES and ours.get(k) != theirs.get(k))  # fmt: skip
    if differing:
        raise CheckpointError(
            f"{source}: cannot resume with a different recipe; these keys differ from the "
            f"checkpoint's: {', '.join(differing)}"
        )
    data, new = saved.to_dict(), recipe.to_dict()
    for key in RESUMABLE_CHANGES:
        section, name = key.split(".")
        data[section][name] = new[section][name]
    return validate_recipe(data, str(source))


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
