"""CamVid val at 360x480: what test-time augmentation, tiling, ONNX export and int8 add in
accuracy and cost in time, and how well the drivable space of the predictions matches the
ground truth's.

    .venv/bin/python benchmarks/camvid_inference.py --checkpoint runs/camvid_final/best.pt \\
        --data /work/shared/data/camvid [--limit N] [--threads 2] [--scales 0.75 1 1.25] \\
        [--tile 240 320] [--overlap 0.25] [--calibration 16] [--out FILE]

Methods, each a :class:`semseg.inference.predictor.Predictor` run on one val image at a time (batch 1):

- ``plain``: the whole image once, PyTorch eager with BatchNorm fused and channels-last
  (what ``semseg predict`` runs);
- ``flip``: plus the left-right mirrored image, probabilities averaged;
- ``multi-scale + flip``: every scale of ``--scales``, each with its mirror;
- ``sliding window``: ``--tile`` tiles overlapping by ``--overlap``, Gaussian-blended;
- ``onnxruntime fp32`` / ``onnxruntime int8``: the checkpoint exported by
  :func:`semseg.inference.export.export_onnx`, float32 and static int8 calibrated on ``--calibration``
  train images spread evenly over the train list, loaded by
  :func:`semseg.inference.predictor.load_predictor` as ``semseg predict`` loads an ``.onnx`` file and run
  by ONNX Runtime with ``--threads`` threads, whole image once.

Every image goes through all methods in turn, after one warm-up image, so load from other
processes on a shared machine spreads over all of them. Seconds per image are the wall-clock
time of ``Predictor.predict`` (normalisation, forward passes, softmax, argmax); ratios use the
median, which load spikes from other processes move least. mIoU and pixel accuracy come from
one confusion matrix over all images, void pixels not counted; the 95% interval of an mIoU
change is a paired bootstrap over images (1000 resamples).

Drivable space: :func:`semseg.drivable.extract_drivable` with its default parameters and the
Road class, on the predicted label map and on the ground-truth label map. Void ground-truth
pixels are not drivable (as in ``extract_drivable``: only Road pixels are), though like any
non-drivable pixels they are filled when they form a small hole inside the road.
``drivable IoU`` is the mean over images of the IoU of the two masks; the boundary error is
the absolute difference of the per-column free-space boundary rows, pooled over every column
of every image where both boundaries are defined.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from tqdm import tqdm

from semseg.checkpoint import build_model_from, load_checkpoint
from semseg.data.dataset import FileDataset
from semseg.data.formats import list_split
from semseg.data.io import read_image
from semseg.engine.metrics import ConfusionMatrix, SegmentationScores
from semseg.hardware import describe_machine
from semseg.inference.drivable import DrivableSpace, drivable_iou, extract_drivable
from semseg.inference.drivable_files import drivable_class_ids
from semseg.inference.export import export_onnx
from semseg.inference.predictor import Predictor
from semseg.inference.sliding_window import tile_starts
from semseg.inference.tta import InferenceOptions
from semseg.labels import IGNORE_INDEX, LabelSet

HEIGHT, WIDTH = 360, 480
PLAIN, FLIP, MULTI_SCALE, SLIDING = "plain", "flip", "multi-scale + flip", "sliding window"
ORT_FP32, ORT_INT8 = "onnxruntime fp32", "onnxruntime int8"
TTA_METHODS = (PLAIN, FLIP, MULTI_SCALE, SLIDING)
BACKENDS = (PLAIN, ORT_FP32, ORT_INT8)


@dataclass
class Tally:
    """Scores and costs of one method over the images seen so far.

    Attributes:
        num_classes: classes of the model.
        confusions: per image, (C, C) int64 pixel counts against the ground truth.
        seconds: wall-clock seconds of each image's prediction.
        pixels, agreeing_pixels: pixels seen, and those whose top class equals the plain
            PyTorch prediction's.
        drivable_ious: IoU of predicted and ground-truth drivable masks, per image.
        boundary_errors: per image, absolute row differences (pixels) of the free-space
            boundaries at the columns where both are defined.
        columns, columns_one_defined: columns seen, and those where exactly one of the two
            boundaries is defined (one side has no drivable bottom pixel there).
    """

    num_classes: int
    confusions: list[torch.Tensor] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    pixels: int = 0
    agreeing_pixels: int = 0
    drivable_ious: list[float] = field(default_factory=list)
    boundary_errors: list[np.ndarray] = field(default_factory=list)
    columns: int = 0
    columns_one_defined: int = 0

    def add(
        self,
        labels: np.ndarray,
        truth: np.ndarray,
        reference: np.ndarray,
        truth_space: DrivableSpace,
        drivable_ids: list[int],
    ) -> None:
        """Count one image: ``labels`` predicted, ``truth`` ground truth, ``reference`` the
        plain PyTorch prediction, all (H, W) uint8 train ids; ``truth_space`` the drivable
        space of ``truth``."""
        confusion = ConfusionMatrix(self.num_classes)
        confusion.update(labels, truth)
        self.confusions.append(confusion.matrix)
        self.pixels += labels.size
        self.agreeing_pixels += int(np.count_nonzero(labels == reference))
        space = extract_drivable(labels, drivable_classes=drivable_ids)
        self.drivable_ious.append(drivable_iou(space, truth_space))
        defined, truth_defined = space.boundary >= 0, truth_space.boundary >= 0
        both = defined & truth_defined
        self.boundary_errors.append(np.abs(space.boundary[both] - truth_space.boundary[both]))
        self.columns += labels.shape[1]
        self.columns_one_defined += int(np.count_nonzero(defined != truth_defined))


def torch_methods(
    checkpoint_path: Path, options: dict[str, InferenceOptions]
) -> dict[str, Predictor]:
    """A PyTorch predictor of the checkpoint for each entry of ``options``."""
    checkpoint = load_checkpoint(checkpoint_path)
    model = build_model_from(checkpoint, str(checkpoint_path))
    labels = LabelSet.from_dict(checkpoint["labels"])
    norm = checkpoint["normalisation"]
    return {
        name: Predictor(model, labels, norm["mean"], norm["std"], "cpu", option)
        for name, option in options.items()
    }


@dataclass(frozen=True)
class Exported:
    """An ONNX Runtime predictor, its file size in MB and the export's seconds."""

    predictor: Predictor
    megabytes: float
    seconds: float


def export_methods(
    checkpoint_path: Path, folder: Path, calibration: list[np.ndarray], threads: int
) -> dict[str, Exported]:
    """The checkpoint exported to ``folder`` as float32 and as int8 (calibrated on
    ``calibration``, (H, W, 3) uint8 images), each loaded as ``semseg predict`` loads an
    ``.onnx`` file: ONNX Runtime on the CPU with ``threads`` threads."""
    exported = {}
    for name, images in ((ORT_FP32, None), (ORT_INT8, calibration)):
        start = time.perf_counter()
        path = export_onnx(checkpoint_path, folder / f"{name.split()[-1]}.onnx", calibration=images)
        seconds = time.perf_counter() - start
        predictor = Predictor.from_checkpoint(path, threads=threads)
        exported[name] = Exported(predictor, path.stat().st_size / 1e6, seconds)
    return exported


def evaluate(
    methods: dict[str, Predictor], dataset: FileDataset, count: int
) -> tuple[dict[str, Tally], dict[str, int]]:
    """Run every method on the first ``count`` images of ``dataset``, in turns per image.

    Returns:
        The tally of each method, and counts over the ground truth: ``pixels``, ``void``
        pixels, ``columns``, columns without a drivable bottom pixel (``no_boundary``), and
        among those, columns whose bottom pixel is void (``void_bottom``).
    """
    labels = next(iter(methods.values())).labels
    drivable_ids = drivable_class_ids(labels)
    tallies = {name: Tally(labels.num_classes) for name in methods}
    truth_counts = dict.fromkeys(("pixels", "void", "columns", "no_boundary", "void_bottom"), 0)
    warm_up = dataset.read(0)[0]
    for predictor in methods.values():
        predictor.predict(warm_up)
    for index in tqdm(range(count), desc="val", unit="img"):
        image, truth = dataset.read(index)
        if image.shape[:2] != (HEIGHT, WIDTH):
            raise ValueError(
                f"{dataset.files.samples[index].image}: image is {image.shape[1]}x"
                f"{image.shape[0]} (WxH), this benchmark expects CamVid's {WIDTH}x{HEIGHT}"
            )
        truth_space = extract_drivable(truth, drivable_classes=drivable_ids)
        truth_counts["pixels"] += truth.size
        truth_counts["void"] += int(np.count_nonzero(truth == IGNORE_INDEX))
        truth_counts["columns"] += truth.shape[1]
        truth_counts["no_boundary"] += int(np.count_nonzero(truth_space.boundary < 0))
        truth_counts["void_bottom"] += int(np.count_nonzero(truth[-1] == IGNORE_INDEX))
        reference = None
        for name, predictor in methods.items():
            start = time.perf_counter()
            predicted = predictor.predict(image).labels
            tallies[name].seconds.append(time.perf_counter() - start)
            reference = predicted if reference is None else reference
            tallies[name].add(predicted, truth, reference, truth_space, drivable_ids)
    return tallies, truth_counts


def calibration_images(root: Path, count: int) -> list[np.ndarray]:
    """``count`` train images, evenly spaced over the train list."""
    samples = list_split(root, "train", "camvid").samples
    if not 1 <= count <= len(samples):
        raise ValueError(f"--calibration must be in 1..{len(samples)}, got {count}")
    picks = np.linspace(0, len(samples) - 1, count).round().astype(int)
    return [read_image(samples[i].image) for i in picks]


def views_per_image(options: InferenceOptions) -> int:
    """Network inputs one image becomes: tiles times scales times flips."""
    tiles = 1
    if options.tile_size is not None:
        rows = tile_starts(HEIGHT, options.tile_size[0], options.overlap)
        columns = tile_starts(WIDTH, options.tile_size[1], options.overlap)
        tiles = len(rows) * len(columns)
    return tiles * len(options.scales) * (2 if options.hflip else 1)


def scores_of(confusions: torch.Tensor) -> SegmentationScores:
    """Scores of the sum of (N, C, C) per-image confusion matrices."""
    confusion = ConfusionMatrix(confusions.shape[-1])
    confusion.matrix = confusions.sum(0)
    return confusion.compute()


def miou_change_interval(
    tallies: dict[str, Tally], name: str, resamples: int = 1000
) -> tuple[float, float]:
    """95% bootstrap interval of mIoU(``name``) - mIoU(plain): images resampled with
    replacement, the same draw for both methods."""
    rng = np.random.default_rng(0)
    ours, base = torch.stack(tallies[name].confusions), torch.stack(tallies[PLAIN].confusions)
    changes = []
    for _ in range(resamples):
        index = torch.from_numpy(rng.integers(0, len(ours), len(ours)))
        changes.append(scores_of(ours[index]).miou - scores_of(base[index]).miou)
    low, high = np.percentile(changes, [2.5, 97.5])
    return float(low), float(high)


def change_cells(
    tallies: dict[str, Tally], scores: dict[str, SegmentationScores], name: str
) -> str:
    """mIoU change against plain, and its bootstrap interval."""
    if name == PLAIN:
        return "- | -"
    low, high = miou_change_interval(tallies, name)
    return f"{scores[name].miou - scores[PLAIN].miou:+.4f} | {low:+.4f} .. {high:+.4f}"


def time_cells(tallies: dict[str, Tally], name: str) -> str:
    """Seconds per image: median, mean, 90th percentile; and the median over plain's."""
    seconds = tallies[name].seconds
    ratio = statistics.median(seconds) / statistics.median(tallies[PLAIN].seconds)
    return (
        f"{statistics.median(seconds):.3f} | {statistics.mean(seconds):.3f} "
        f"| {np.percentile(seconds, 90):.3f} | {ratio:.2f}x"
    )


def tta_table(
    tallies: dict[str, Tally],
    scores: dict[str, SegmentationScores],
    options: dict[str, InferenceOptions],
) -> list[str]:
    lines = [
        "| method | network inputs per image | mIoU | change vs plain | 95% interval "
        "| pixel accuracy | top class = plain | s/image median | mean | p90 "
        "| time / plain (medians) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in TTA_METHODS:
        tally, score = tallies[name], scores[name]
        lines.append(
            f"| {name} | {views_per_image(options[name])} | {score.miou:.4f} "
            f"| {change_cells(tallies, scores, name)} | {score.pixel_accuracy:.4f} "
            f"| {tally.agreeing_pixels / tally.pixels:.3%} | {time_cells(tallies, name)} |"
        )
    return lines


def backend_table(
    tallies: dict[str, Tally], scores: dict[str, SegmentationScores], exported: dict[str, Exported]
) -> list[str]:
    lines = [
        "| backend | mIoU | change vs PyTorch | 95% interval | pixel accuracy "
        "| top class = PyTorch | s/image median | mean | p90 | time / PyTorch (medians) | file MB "
        "| export s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in BACKENDS:
        tally, score = tallies[name], scores[name]
        label = "PyTorch eager (fused, channels-last)" if name == PLAIN else name
        size = f"{exported[name].megabytes:.1f}" if name in exported else "-"
        export_time = f"{exported[name].seconds:.1f}" if name in exported else "-"
        lines.append(
            f"| {label} | {score.miou:.4f} | {change_cells(tallies, scores, name)} "
            f"| {score.pixel_accuracy:.4f} | {tally.agreeing_pixels / tally.pixels:.3%} "
            f"| {time_cells(tallies, name)} | {size} | {export_time} |"
        )
    return lines


def drivable_table(tallies: dict[str, Tally]) -> list[str]:
    lines = [
        "| method | drivable IoU mean (median) | boundary error px mean (median) "
        "| columns both defined | columns one defined |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, tally in tallies.items():
        errors = np.concatenate(tally.boundary_errors)
        error = f"{errors.mean():.2f} ({np.median(errors):.1f})" if errors.size else "-"
        lines.append(
            f"| {name} | {np.mean(tally.drivable_ious):.4f} ({np.median(tally.drivable_ious):.4f})"
            f" | {error} | {errors.size / tally.columns:.2%} "
            f"| {tally.columns_one_defined / tally.columns:.2%} |"
        )
    return lines


def class_table(scores: dict[str, SegmentationScores], names: tuple[str, ...]) -> list[str]:
    lines = [
        f"| class | {' | '.join(scores)} |",
        f"| --- |{' ---: |' * len(scores)}",
    ]
    for index, name in enumerate(names):
        cells = [score.per_class_iou[index] for score in scores.values()]
        text = ["-" if value is None else f"{value:.4f}" for value in cells]
        lines.append(f"| {name} | {' | '.join(text)} |")
    return lines


def summary(scores: dict[str, SegmentationScores], tallies: dict[str, Tally]) -> list[str]:
    """One line per method: its mIoU change, median time factor and drivable IoU change
    against plain PyTorch."""
    base_time = statistics.median(tallies[PLAIN].seconds)
    base_drivable = np.mean(tallies[PLAIN].drivable_ious)
    return [
        f"- {name}: {100 * (scores[name].miou - scores[PLAIN].miou):+.2f} mIoU points, "
        f"{statistics.median(tallies[name].seconds) / base_time:.2f}x the median time, "
        f"drivable IoU {np.mean(tallies[name].drivable_ious) - base_drivable:+.4f}"
        for name in scores
        if name != PLAIN
    ]


def describe(checkpoint: Path) -> str:
    stored = load_checkpoint(checkpoint)
    model, training = stored["model"], stored["training"]
    data = stored["recipe"]["data"]
    return (
        f"{model['name']} {model['arguments']}, {training['epoch']} epochs on {data['format']} "
        f"data, validation mIoU {training['best_miou']:.4f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="CamVid root (SegNet layout)")
    parser.add_argument("--limit", type=int, help="first N val images (default: all)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--scales", type=float, nargs="+", default=[0.75, 1.0, 1.25])
    parser.add_argument("--tile", type=int, nargs=2, default=[240, 320], metavar=("H", "W"))
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--calibration", type=int, default=16, help="train images for int8")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/camvid_inference.md"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dataset = FileDataset(list_split(args.data, "val", "camvid"))
    count = len(dataset) if args.limit is None else args.limit
    if not 1 <= count <= len(dataset):
        raise ValueError(f"--limit must be in 1..{len(dataset)} (val images), got {args.limit}")
    options = {
        PLAIN: InferenceOptions(),
        FLIP: InferenceOptions(hflip=True),
        MULTI_SCALE: InferenceOptions(hflip=True, scales=tuple(args.scales)),
        SLIDING: InferenceOptions(tile_size=tuple(args.tile), overlap=args.overlap),
    }
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as folder:
        calibration = calibration_images(args.data, args.calibration)
        exported = export_methods(args.checkpoint, Path(folder), calibration, args.threads)
        methods = torch_methods(args.checkpoint, options)
        methods |= {name: export.predictor for name, export in exported.items()}
        tallies, truth_counts = evaluate(methods, dataset, count)
    load_after = os.getloadavg()[0]
    scores = {name: scores_of(torch.stack(tally.confusions)) for name, tally in tallies.items()}
    names = next(iter(methods.values())).labels.names
    road = names[drivable_class_ids(methods[PLAIN].labels)[0]]

    command = " ".join([Path(sys.executable).name, *sys.argv])
    lines = [
        "# CamVid val: test-time augmentation, tiling, ONNX, int8 and drivable space",
        "",
        f"- command: `{command}`",
        f"- checkpoint: `{args.checkpoint}` ({describe(args.checkpoint)})",
        f"- data: `{args.data}`, val split, first {count} of {len(dataset)} images, "
        f"{WIDTH}x{HEIGHT}, batch 1",
        f"- machine: {describe_machine().cpu_model}, {os.cpu_count()} CPUs, {platform.system()} "
        f"{platform.release()}; torch.set_num_threads({args.threads}), ONNX Runtime "
        f"intra-op threads {args.threads}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}",
        f"- versions: Python {platform.python_version()}, torch {torch.__version__}, "
        f"onnxruntime {onnxruntime.__version__}, numpy {np.__version__}",
        f"- 1-minute load average {load_before:.2f} before, {load_after:.2f} after (the machine "
        "is shared: methods run in turns per image, compare rows of this run only)",
        f"- multi-scale scales {tuple(args.scales)}; sliding window tiles {args.tile[0]}x"
        f"{args.tile[1]} (HxW), overlap {args.overlap}, Gaussian blending; int8: static QDQ, "
        f"calibrated on {args.calibration} train images",
        "- seconds per image: wall-clock of `Predictor.predict` per image (median, mean, 90th "
        "percentile); ratios compare medians",
        "- 95% interval: paired bootstrap of the mIoU change over images (1000 resamples); val "
        "frames come from one video sequence, so neighbouring images are correlated and the "
        "intervals are if anything too narrow",
        "",
        "## Test-time augmentation and tiling (PyTorch)",
        "",
        *tta_table(tallies, scores, options),
        "",
        "## Export: PyTorch against ONNX Runtime float32 and int8 (whole image, batch 1)",
        "",
        *backend_table(tallies, scores, exported),
        "",
        f"## Drivable space ({road}) against the ground truth's",
        "",
        "`extract_drivable` with default parameters on the prediction and on the ground-truth "
        f"label map; void ground-truth pixels count as not drivable (only {road} pixels are), "
        "except where they form a small hole that hole filling closes. Boundary error: "
        "|predicted - true| free-space row per column, pooled over the columns of all images "
        "where both boundaries are defined; 'one defined': columns where only one side has "
        "drivable space at the bottom row. In the ground truth, void is "
        f"{truth_counts['void'] / truth_counts['pixels']:.2%} of the pixels, and "
        f"{truth_counts['no_boundary'] / truth_counts['columns']:.2%} of the columns have no "
        "drivable bottom pixel, "
        f"{truth_counts['void_bottom'] / truth_counts['columns']:.2%} because it is void.",
        "",
        *drivable_table(tallies),
        "",
        "## Per-class IoU",
        "",
        *class_table(scores, names),
        "",
        "## Against plain PyTorch",
        "",
        *summary(scores, tallies),
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
