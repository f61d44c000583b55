import json
import math

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from sklearn import metrics as skm

from semseg.engine.metrics import BoundaryF1, ConfusionMatrix

IGNORE = 255


def _random_labels(
    seed: int, shape: tuple[int, ...], num_classes: int, absent: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random (pred, target) with ~10% ignored target pixels and class ``absent`` in neither."""
    rng = np.random.default_rng(seed)
    classes = [c for c in range(num_classes) if c != absent]
    target = rng.choice(classes, size=shape)
    pred = np.where(rng.random(shape) < 0.6, target, rng.choice(classes, size=shape))
    target[rng.random(shape) < 0.1] = IGNORE
    return torch.from_numpy(pred), torch.from_numpy(target)


# --- confusion matrix ---------------------------------------------------------------------


def test_hand_computed_three_classes_plus_absent_class():
    target = torch.tensor([[0, 0, 0, 1], [1, 2, 2, IGNORE]])
    pred = torch.tensor([[0, 0, 1, 1], [2, 2, 0, 3]])  # the 3 sits on an ignored pixel
    cm = ConfusionMatrix(num_classes=4)
    cm.update(pred, target)
    s = cm.compute()
    # counted (gt, pred) pairs: (0,0) (0,0) (0,1) (1,1) (1,2) (2,2) (2,0)
    assert s.confusion == [[2, 1, 0, 0], [0, 1, 1, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    # TP = 2,1,1; GT = 3,2,2; predicted = 3,2,2; union = GT + predicted - TP = 4,3,3
    assert s.per_class_iou == pytest.approx([1 / 2, 1 / 3, 1 / 3, None])
    assert s.per_class_accuracy == pytest.approx([2 / 3, 1 / 2, 1 / 2, None])
    assert s.miou == pytest.approx((1 / 2 + 1 / 3 + 1 / 3) / 3)
    assert s.pixel_accuracy == pytest.approx(4 / 7)
    assert s.mean_class_accuracy == pytest.approx((2 / 3 + 1 / 2 + 1 / 2) / 3)
    assert s.fw_iou == pytest.approx(3 / 7 * 1 / 2 + 2 / 7 * 1 / 3 + 2 / 7 * 1 / 3)


def test_class_only_predicted_has_zero_iou_and_no_accuracy():
    cm = ConfusionMatrix(num_classes=2)
    cm.update(torch.tensor([[0, 1]]), torch.tensor([[0, 0]]))
    s = cm.compute()
    assert s.per_class_iou == [0.5, 0.0]
    assert s.per_class_accuracy == [0.5, None]
    assert s.miou == 0.25
    assert s.mean_class_accuracy == 0.5


def test_matches_sklearn_with_ignore_and_absent_class():
    num_classes, absent = 5, 3
    pred, target = _random_labels(0, (2, 17, 23), num_classes, absent)
    cm = ConfusionMatrix(num_classes)
    cm.update(pred, target)
    s = cm.compute()

    keep = target != IGNORE
    y_true, y_pred = target[keep].numpy(), pred[keep].numpy()
    labels = list(range(num_classes))
    present = [c for c in labels if c != absent]
    np.testing.assert_array_equal(
        cm.matrix.numpy(), skm.confusion_matrix(y_true, y_pred, labels=labels)
    )
    jaccard = skm.jaccard_score(y_true, y_pred, labels=present, average=None)
    assert s.per_class_iou[absent] is None
    assert [s.per_class_iou[c] for c in present] == pytest.approx(jaccard)
    assert s.miou == pytest.approx(jaccard.mean())
    assert s.fw_iou == pytest.approx(
        skm.jaccard_score(y_true, y_pred, labels=present, average="weighted")
    )
    recall = skm.recall_score(y_true, y_pred, labels=present, average=None)
    assert [s.per_class_accuracy[c] for c in present] == pytest.approx(recall)
    assert s.mean_class_accuracy == pytest.approx(skm.balanced_accuracy_score(y_true, y_pred))
    assert s.pixel_accuracy == pytest.approx(skm.accuracy_score(y_true, y_pred))


def test_streaming_and_merge_equal_one_shot():
    pred, target = _random_labels(1, (6, 9, 11), 4)
    one_shot = ConfusionMatrix(4)
    one_shot.update(pred, target)

    streamed = ConfusionMatrix(4)
    for i in range(6):
        streamed.update(pred[i], target[i])  # (H, W) inputs
    first, second = ConfusionMatrix(4), ConfusionMatrix(4)
    first.update(pred[:2].numpy(), target[:2].numpy())  # NumPy inputs
    second.update(pred[2:], target[2:].to(torch.uint8))
    first.merge(second)

    assert torch.equal(streamed.matrix, one_shot.matrix)
    assert torch.equal(first.matrix, one_shot.matrix)
    assert int(one_shot.matrix.sum()) == int((target != IGNORE).sum())


def test_reset_and_empty_scores_are_nan():
    cm = ConfusionMatrix(3)
    cm.update(*_random_labels(2, (4, 5), 3))
    cm.reset()
    s = cm.compute()
    assert all(math.isnan(v) for v in (s.miou, s.pixel_accuracy, s.mean_class_accuracy, s.fw_iou))
    assert s.per_class_iou == [None, None, None]
    assert s.to_dict(["a", "b", "c"])["miou"] is None


def test_to_dict_is_json_ready_and_keyed_by_name():
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([[0, 1, 1]]), torch.tensor([[0, 1, 0]]))
    d = json.loads(json.dumps(cm.compute().to_dict(["sky", "road", "car"])))
    assert d["per_class_iou"] == {"sky": 0.5, "road": 0.5, "car": None}
    assert d["per_class_accuracy"] == {"sky": 0.5, "road": 1.0, "car": None}
    assert d["confusion_matrix"] == [[1, 1, 0], [0, 1, 0], [0, 0, 0]]
    assert d["pixel_accuracy"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="2 class names given for 3 classes"):
        cm.compute().to_dict(["sky", "road"])


@pytest.mark.parametrize("metric", [ConfusionMatrix, BoundaryF1])
def test_bad_labels_are_errors_naming_the_values(metric):
    m = metric(num_classes=3)
    with pytest.raises(ValueError, match=r"target values \[3, 7\]"):
        m.update(torch.zeros(2, 3, dtype=torch.long), torch.tensor([[0, 7, 3], [IGNORE, 1, 3]]))
    with pytest.raises(ValueError, match=r"pred values \[-1\]"):
        m.update(torch.tensor([[0, -1]]), torch.tensor([[0, 1]]))
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)"):
        m.update(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="float32"):
        m.update(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long))
    # A prediction under an ignored target is not counted, so not checked.
    m.update(torch.tensor([[9, 0]]), torch.tensor([[IGNORE, 0]]))


def test_constructor_and_merge_errors():
    with pytest.raises(ValueError, match="ignore_index 2"):
        ConfusionMatrix(num_classes=3, ignore_index=2)
    with pytest.raises(ValueError, match="cannot merge 4 classes into 3"):
        ConfusionMatrix(3).merge(ConfusionMatrix(4))
    with pytest.raises(ValueError, match=r"tolerance 0\.01"):
        BoundaryF1(3).merge(BoundaryF1(3, tolerance=0.01))
    with pytest.raises(ValueError, match=r"-0\.5"):
        BoundaryF1(3, tolerance=-0.5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_confusion_matrix_counts_on_the_input_device():
    pred, target = _random_labels(3, (2, 8, 8), 4)
    on_cpu, on_gpu = ConfusionMatrix(4), ConfusionMatrix(4)
    on_cpu.update(pred, target)
    on_gpu.update(pred.cuda(), target.cuda())
    assert on_gpu.matrix.device.type == "cuda"
    assert torch.equal(on_gpu.matrix.cpu(), on_cpu.matrix)


# --- boundary F1 ----------------------------------------------------------------------------


def _tolerance(radius: float, height: int, width: int) -> float:
    return radius / math.hypot(height, width)


def test_perfect_prediction_scores_one():
    _, target = _random_labels(4, (3, 12, 14), 4, absent=2)
    bf = BoundaryF1(4)
    bf.update(torch.where(target == IGNORE, 0, target), target)
    s = bf.compute()
    assert s.mean == 1.0
    assert s.per_class == [1.0, 1.0, None, 1.0]


@pytest.mark.parametrize(
    ("radius", "expected"),
    [
        (2.5, [1.0, 1.0]),  # every boundary pixel is at most 2 px from the other boundary
        # Radius 1.5 (between sqrt 2 and 2), square shifted 2 px right, by hand:
        # class 1 (square ring, 36 px): 9 + 9 of the top and bottom rows, 0 of the far side,
        #   2 of the near side lie within 1.5 -> P = R = 20/36 by mirror symmetry.
        # class 0 (ring around the square, 40 px): 10 + 10 of the top and bottom rows, 0 of the
        #   far side, 2 of the near side -> P = R = 22/40.
        (1.5, [22 / 40, 20 / 36]),
    ],
)
def test_square_shifted_by_two_pixels(radius, expected):
    target = np.zeros((40, 40), dtype=np.int64)
    target[10:20, 10:20] = 1
    pred = np.roll(target, 2, axis=1)
    bf = BoundaryF1(2, tolerance=_tolerance(radius, 40, 40))
    bf.update(pred, target)
    s = bf.compute()
    assert s.per_class == pytest.approx(expected)
    assert s.mean == pytest.approx(sum(expected) / 2)


def test_edge_cases_without_boundaries():
    whole_0, whole_1 = np.zeros((6, 6), dtype=np.int64), np.ones((6, 6), dtype=np.int64)
    square = whole_0.copy()
    square[2:4, 2:4] = 1
    bf = BoundaryF1(2)
    bf.update(whole_0, whole_0)  # neither mask has a boundary and they agree: 1
    assert bf.compute().per_class == [1.0, None]
    bf.reset()
    bf.update(whole_1, whole_0)  # no boundaries, masks disagree: 0
    assert bf.compute().per_class == [0.0, None]
    bf.reset()
    bf.update(whole_0, square)  # only the ground truth has boundaries: 0 for both classes
    assert bf.compute().per_class == [0.0, 0.0]


def test_ignored_pixels_are_neither_boundary_nor_outside():
    target = np.zeros((12, 12), dtype=np.int64)
    target[:, 6:] = 1
    target[:, 5:7] = IGNORE  # a void band between the two classes
    pred = target.copy()
    pred[:, 5:7] = np.array([0, 1])  # anything under the void band is not scored
    bf = BoundaryF1(2, tolerance=0.0)
    bf.update(pred, target)
    # Neither class has a boundary: void is not "outside", and the image border is not either.
    assert bf.compute().per_class == [1.0, 1.0]

    pred[:, 7] = 0  # a real error next to the void band
    bf.reset()
    bf.update(pred, target)
    # Both predicted masks now have a boundary (columns 7 and 8) that the ground truth lacks.
    assert bf.compute().per_class == [0.0, 0.0]


def test_image_without_counted_pixels_is_skipped():
    bf = BoundaryF1(2)
    bf.update(np.zeros((4, 4), dtype=np.int64), np.full((4, 4), IGNORE))
    assert math.isnan(bf.compute().mean)
    assert bf.compute().per_class == [None, None]


def _oracle_boundary(mask: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(K, 2) coordinates of mask pixels with a valid 4-neighbour outside the mask."""
    height, width = mask.shape
    points = []
    for y, x in zip(*np.nonzero(mask), strict=True):
        for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
            if 0 <= ny < height and 0 <= nx < width and valid[ny, nx] and not mask[ny, nx]:
                points.append((y, x))
                break
    return np.array(points, dtype=float).reshape(-1, 2)


def _oracle_f1(gt: np.ndarray, pred: np.ndarray, valid: np.ndarray, radius: float) -> float:
    g, p = _oracle_boundary(gt, valid), _oracle_boundary(pred, valid)
    if len(g) == 0 or len(p) == 0:
        return float(len(g) == len(p) == 0 and np.array_equal(gt, pred))
    distance = np.sqrt(((p[:, None, :] - g[None, :, :]) ** 2).sum(-1))
    precision, recall = (distance.min(1) <= radius).mean(), (distance.min(0) <= radius).mean()
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


@pytest.mark.parametrize("radius", [0.0, 1.5, 2.0, 2.5])  # 2.0: a distance equal to the radius
def test_boundary_f1_matches_brute_force(radius):
    rng = np.random.default_rng(5)
    num_classes, height, width = 4, 12, 16  # diagonal 20, so radius / 20 * 20 == radius
    bf = BoundaryF1(num_classes, tolerance=_tolerance(radius, height, width))
    image_scores, class_scores = [], [[] for _ in range(num_classes)]
    for _ in range(6):
        blocks = rng.integers(0, num_classes, (3, 4))
        target = np.kron(blocks, np.ones((4, 4), dtype=np.int64))
        target[rng.random(target.shape) < 0.05] = IGNORE
        pred = np.kron(blocks, np.ones((4, 4), dtype=np.int64))
        noise = rng.random(pred.shape) < 0.15
        pred[noise] = rng.integers(0, num_classes, noise.sum())
        pred = np.roll(pred, rng.integers(-2, 3), axis=1)
        bf.update(pred, target)

        valid = target != IGNORE
        scores = []
        for c in np.unique(target[valid]):
            scores.append(_oracle_f1(target == c, (pred == c) & valid, valid, radius))
            class_scores[c].append(scores[-1])
        image_scores.append(np.mean(scores))
    s = bf.compute()
    assert s.mean == pytest.approx(np.mean(image_scores))
    assert s.per_class == pytest.approx([np.mean(v) if v else None for v in class_scores])


def test_boundary_f1_batched_merged_and_streamed_agree():
    pred, target = _random_labels(6, (4, 10, 12), 3)
    one_shot, first, second = BoundaryF1(3), BoundaryF1(3), BoundaryF1(3)
    one_shot.update(pred, target)
    first.update(pred[:1], target[:1])
    for i in range(1, 4):
        second.update(pred[i].numpy(), target[i].numpy())
    first.merge(second)
    merged, single = first.compute(), one_shot.compute()
    assert merged.mean == pytest.approx(single.mean)
    assert merged.per_class == pytest.approx(single.per_class)
    assert int(one_shot.image_count) == 4


# --- all_reduce -----------------------------------------------------------------------------


def test_all_reduce_without_process_group_is_a_no_op():
    pred, target = _random_labels(7, (2, 6, 6), 3)
    cm, bf = ConfusionMatrix(3), BoundaryF1(3)
    cm.update(pred, target)
    bf.update(pred, target)
    before = cm.matrix.clone(), bf.compute()
    cm.all_reduce()
    bf.all_reduce()
    assert torch.equal(cm.matrix, before[0])
    assert bf.compute() == before[1]


def _reduce_worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    pred, target = _random_labels(10 + rank, (2, 6, 7), 3)
    cm, bf = ConfusionMatrix(3), BoundaryF1(3)
    cm.update(pred, target)
    bf.update(pred, target)
    cm.all_reduce()
    bf.all_reduce()
    torch.save({"matrix": cm.matrix, "bf": bf.compute()}, f"{out_dir}/{rank}.pt")
    dist.destroy_process_group()


def test_all_reduce_sums_across_two_processes(tmp_path):
    args = (str(tmp_path / "init"), str(tmp_path))
    # fork, not spawn: the children need no fresh imports of torch and scikit-learn
    mp.start_processes(_reduce_worker, args=args, nprocs=2, start_method="fork")
    cm, bf = ConfusionMatrix(3), BoundaryF1(3)
    for rank in range(2):
        pred, target = _random_labels(10 + rank, (2, 6, 7), 3)
        cm.update(pred, target)
        bf.update(pred, target)
    for rank in range(2):
        result = torch.load(tmp_path / f"{rank}.pt", weights_only=False)
        assert torch.equal(result["matrix"], cm.matrix)
        assert result["bf"].mean == pytest.approx(bf.compute().mean)
        assert result["bf"].per_class == pytest.approx(bf.compute().per_class)
