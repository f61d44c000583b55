"""The patch classifier: contract, dense form equal to the literal patch-by-patch run,
patch geometry against hand-cut patches, parameter count by hand, bad arguments."""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F

from semseg.models import create_model
from semseg.models import patch_classifier as patch_module

from .architecture_contract import ODD_SIZE, ArchitectureContract

# K = 14 and two blocks: 14 -> 12 -> 6 -> 4 -> 2, every pool exact, so f = 2, stride S = 4, and
# a score's receptive field is the whole patch.
TINY: dict = {"patch_size": 14, "widths": [4, 8], "hidden": 8}
STRIDE = 4


class TestPatchClassifierDense(ArchitectureContract):
    model_name = "patch_classifier"
    model_kwargs: ClassVar = TINY


class TestPatchClassifierDenseNearest(ArchitectureContract):
    model_name = "patch_classifier"
    model_kwargs: ClassVar = {**TINY, "patch_size": 17, "upsampling": "nearest"}


def tiny(num_classes: int = 3, **kwargs: object) -> patch_module.PatchClassifier:
    torch.manual_seed(0)
    model = create_model("patch_classifier", num_classes, **{**TINY, **kwargs}).eval()
    # Non-trivial BatchNorm statistics, so eval mode is not the identity.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model


def images(size: tuple[int, int], batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(3))


def hand_cut_patch(image: torch.Tensor, row: int, column: int, k: int) -> torch.Tensor:
    """(3, K, K) patch with centre pixel (row, column) at index K // 2, zeros off the image."""
    padded = F.pad(image, (k, k, k, k))
    top, left = row - k // 2 + k, column - k // 2 + k
    return padded[:, top : top + k, left : left + k]


@pytest.mark.parametrize("upsampling", ["bilinear", "nearest"])
@pytest.mark.parametrize("size", [(32, 48), ODD_SIZE, (5, 3)])
def test_literal_run_at_the_pooling_stride_gives_the_dense_logits(
    upsampling: str, size: tuple[int, int]
) -> None:
    dense = tiny(upsampling=upsampling)
    literal = tiny(upsampling=upsampling, mode="literal")
    literal.load_state_dict(dense.state_dict())
    assert literal.window_stride == dense.output_stride == STRIDE
    x = images(size)
    with torch.no_grad():
        torch.testing.assert_close(literal(x), dense(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("window_stride", "offset", "step"),
    # Visited centres s * i + s // 2; dense centres 4 * j + 2: every dense one at s = 1, every
    # third at s = 12 (centre 12 i + 6 = 4 (3 i + 1) + 2).
    [(1, STRIDE // 2, STRIDE), (3 * STRIDE, 1, 3)],
)
def test_dense_scores_equal_the_literal_ones_at_the_pixels_both_visit(
    window_stride: int, offset: int, step: int
) -> None:
    model = tiny()
    x = images(ODD_SIZE, batch=1)
    with torch.no_grad():
        dense = model.dense_scores(x)
        literal = model.literal_scores(x, window_stride)
    assert literal.shape[-2:] == tuple(-(-n // window_stride) for n in ODD_SIZE)
    if window_stride == 1:
        shared_literal = literal[..., offset::step, offset::step]
        shared_dense = dense[..., : shared_literal.shape[-2], : shared_literal.shape[-1]]
    else:
        shared_dense = dense[..., offset::step, offset::step]
        shared_literal = literal[..., : shared_dense.shape[-2], : shared_dense.shape[-1]]
    assert shared_dense.shape[-2] >= 7 and shared_dense.shape[-1] >= 10
    torch.testing.assert_close(shared_literal, shared_dense, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("centre", [(0, 0), (6, 9), (96, 130), (41, 3)])
def test_literal_score_is_the_classification_of_the_hand_cut_patch(
    centre: tuple[int, int],
) -> None:
    model = tiny()
    x = images(ODD_SIZE, batch=1)
    with torch.no_grad():
        every_pixel = model.literal_scores(x, 1)
        alone = model.classify_patches(hand_cut_patch(x[0], *centre, 14)[None])
    torch.testing.assert_close(every_pixel[0, :, centre[0], centre[1]], alone[0])


def test_a_dense_score_depends_on_exactly_its_patch() -> None:
    model = tiny()
    x = images((40, 44), batch=1)
    cell = (3, 5)  # centre pixel (3 * 4 + 2, 5 * 4 + 2) = (14, 22)
    top, left = 14 - 14 // 2, 22 - 14 // 2
    inside = torch.zeros(40, 44, dtype=torch.bool)
    inside[top : top + 14, left : left + 14] = True

    def score(image: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model.dense_scores(image)[0, :, cell[0], cell[1]]

    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(4))
    assert torch.equal(score(x + noise * ~inside), score(x))
    # Each outermost row and column of the patch counts.
    for edge in (
        (slice(top, top + 1), slice(left, left + 14)),
        (slice(top + 13, top + 14), slice(left, left + 14)),
        (slice(top, top + 14), slice(left, left + 1)),
        (slice(top, top + 14), slice(left + 13, left + 14)),
    ):
        changed = x.clone()
        changed[0, :, edge[0], edge[1]] += 3.0
        assert not torch.allclose(score(changed), score(x))


@pytest.mark.parametrize("window_stride", [STRIDE, 5])
def test_nearest_spreading_fills_each_stride_cell_with_its_centre_scores(
    window_stride: int,
) -> None:
    model = tiny(upsampling="nearest", mode="literal", window_stride=window_stride)
    x = images((4 * window_stride, 6 * window_stride), batch=1)
    with torch.no_grad():
        logits = model(x)
        centres = model.literal_scores(x)
    cells = logits.unfold(2, window_stride, window_stride).unfold(3, window_stride, window_stride)
    torch.testing.assert_close(cells, centres[..., None, None].expand_as(cells))


def test_literal_run_in_small_chunks_gives_the_same_scores(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = tiny()
    x = images((21, 30))
    with torch.no_grad():
        whole = model.literal_scores(x, 1)
        monkeypatch.setattr(patch_module, "PATCHES_PER_CHUNK", 7)
        chunked = model.literal_scores(x, 1)
    assert torch.equal(whole, chunked)


def _conv_bn(c_in: int, c_out: int) -> int:
    """3x3 convolution without bias, then BatchNorm's scale and shift."""
    return c_in * c_out * 9 + 2 * c_out


def test_default_parameter_count_matches_hand_count() -> None:
    # K = 32: 32 -> 30 -> 15 -> 13 -> 6 -> 4 -> 2, so fc sees 128 * 2 * 2 inputs.
    blocks = _conv_bn(3, 32) + _conv_bn(32, 64) + _conv_bn(64, 128)
    fc = 128 * 2 * 2 * 256 + 256
    classifier = 256 * 11 + 11
    assert blocks + fc == 224_800
    model = create_model("patch_classifier", 11)
    assert model.feature_size == 2 and model.output_stride == 8
    assert sum(p.numel() for p in model.parameters()) == blocks + fc + classifier


def test_tiny_parameter_count_and_pooling_stride() -> None:
    # K = 19: 19 -> 17 -> 8 (a row dropped) -> 6 -> 3, fc sees 8 * 3 * 3.
    model = create_model("patch_classifier", 5, patch_size=19, widths=[4, 8], hidden=6)
    expected = _conv_bn(3, 4) + _conv_bn(4, 8) + (8 * 9 * 6 + 6) + (6 * 5 + 5)
    assert sum(p.numel() for p in model.parameters()) == expected
    assert model.output_stride == 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"patch_size": 9, "widths": [4, 8]}, "needs at least 10"),
        ({"mode": "sliding"}, "sliding"),
        ({"upsampling": "transposed"}, "transposed"),
        ({"window_stride": 0}, "window_stride"),
        ({"widths": []}, "widths"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_model("patch_classifier", 3, **kwargs)
