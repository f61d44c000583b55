"""A patch classifier: label each pixel by classifying the K x K patch centred on it.

The first design the fully convolutional papers start from (Farabet et al., Ciresan et al.;
Long et al. argue against its cost): a small classification CNN, a few blocks of "valid" 3x3
convolution, BatchNorm, ReLU and 2x2 max pooling, then two fully connected layers, takes one
``K x K`` patch and returns the class scores of the patch's centre pixel. Run *literally* it
cuts one patch per visited pixel and classifies each on its own, with no computation shared
between overlapping patches. Run *densely*, the same weights are recast as a fully
convolutional network (Sermanet et al.'s OverFeat, Long et al. section 3.1): the first fully
connected layer, which sees an ``f x f`` map, is an ``f x f`` convolution and the second a 1x1
convolution, so one pass over the whole image gives the patch scores of every pixel of a grid
with the pooling stride ``S = 2 ** len(widths)``, each overlap computed once.

The two agree exactly because nothing in the network pads: a patch's score depends only on
the patch. Centres are the middles of stride cells: with window stride ``s`` the run visits
pixel ``(s * i + s // 2, s * j + s // 2)`` and classifies the patch of rows and columns
``[c - K // 2, c - K // 2 + K)`` around it (zeros beyond the image); its scores fill the cell
``[s * i, s * i + s)`` when spread back to input resolution (``upsampling="nearest"``) or are
interpolated between cell centres (``"bilinear"``, ``align_corners=False``: for even ``K`` and
``s`` the patch's geometric centre is the cell's). The dense form visits the same pixels as a
literal run with ``window_stride = S`` (and every third of them at ``3 * S``, and so on for odd
multiples), so the two give the same logits there to float rounding.

Training uses the dense form (``mode="dense"``, the default) with the ordinary per-pixel loss:
every pixel's label is a target for the patch scores spread onto it, so a crop of ``H x W``
trains on the ``(H / S) * (W / S)`` patches of its grid at once, and the random scale and
crop of the augmentation move the grid over the image between epochs: the same samples as
drawing patches at random pixels, without recomputing their overlaps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from semseg.models.blocks import ConvBNAct, crop_to
from semseg.models.contract import SegmentationModel

MODES = ("dense", "literal")
INTERPOLATIONS = ("bilinear", "nearest")
PATCHES_PER_CHUNK = 1024
"""Patches the literal run classifies in one batch: with ``K = 32`` and 32 channels in the first
block, 12 MB of patches and 118 MB of their first feature maps."""


def feature_size(patch_size: int, blocks: int) -> int:
    """Side of the last block's map for a ``patch_size`` patch: each block's valid 3x3
    convolution removes 2 rows, its 2x2 pool halves (rounding down)."""
    size = patch_size
    for _ in range(blocks):
        size = (size - 2) // 2
    return size


class PatchClassifier(SegmentationModel):
    """``(N, 3, H, W)`` float -> ``(N, num_classes, H, W)`` float logits of each pixel's patch.

    Args:
        num_classes: output channels.
        patch_size: ``K``, side of the patch classified for each centre pixel.
        widths: output channels of each convolution + pool block.
        hidden: width of the first fully connected layer.
        mode: ``"dense"`` (one fully convolutional pass; what training and the predictor run)
            or ``"literal"`` (one classification per visited pixel, patch by patch; slow,
            Python loops, for measuring what sharing computation saves: not for export).
        window_stride: pixels between the centres the literal run visits; default the pooling
            stride, where it visits exactly the dense form's grid.
        upsampling: how the grid of scores is spread to every pixel, ``"bilinear"`` or
            ``"nearest"`` (each visited centre's scores fill its stride cell).

    Attributes:
        encoder: the convolution + pool blocks, ``(n, 3, K, K) -> (n, widths[-1], f, f)``.
        fc: first fully connected layer, ``widths[-1] * f * f -> hidden`` (ReLU after it).
        classifier: second fully connected layer, ``hidden -> num_classes``.
        output_stride: the pooling stride ``S``, spacing of the dense form's grid.
    """

    def __init__(
        self,
        num_classes: int,
        patch_size: int,
        widths: tuple[int, ...],
        hidden: int,
        mode: str,
        window_stride: int | None,
        upsampling: str,
    ) -> None:
        if not widths or min(widths) < 1:
            raise ValueError(f"widths must be one or more positive channel counts, got {widths}")
        if hidden < 1:
            raise ValueError(f"hidden must be at least 1, got {hidden}")
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} is not one of {', '.join(MODES)}")
        if upsampling not in INTERPOLATIONS:
            raise ValueError(f"upsampling {upsampling!r} is not one of {', '.join(INTERPOLATIONS)}")
        if feature_size(patch_size, len(widths)) < 1:
            raise ValueError(
                f"patch_size {patch_size} is too small for {len(widths)} blocks of valid 3x3 "
                f"convolution and 2x2 pooling; it needs at least {3 * 2 ** len(widths) - 2}"
            )
        if window_stride is not None and window_stride < 1:
            raise ValueError(f"window_stride must be at least 1, got {window_stride}")
        super().__init__(num_classes, output_stride=2 ** len(widths))
        self.feature_size = feature_size(patch_size, len(widths))
        self.patch_size = patch_size
        self.mode = mode
        self.window_stride = window_stride or self.output_stride
        self.upsampling = upsampling
        blocks: list[nn.Module] = []
        in_channels = 3
        for width in widths:
            blocks.append(nn.Sequential(ConvBNAct(in_channels, width, 3, padding=0),
                                        nn.MaxPool2d(2)))  # fmt: skip
            in_channels = width
        self.encoder = nn.Sequential(*blocks)
        self.fc = nn.Linear(in_channels * self.feature_size**2, hidden)
        self.activation = nn.ReLU(inplace=True)
        self.classifier = nn.Linear(hidden, num_classes)

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "dense":
            return self._spread(self.dense_scores(x), self.output_stride, x.shape[-2:])
        return self._spread(self.literal_scores(x), self.window_stride, x.shape[-2:])

    def classify_patches(self, patches: torch.Tensor) -> torch.Tensor:
        """``(n, 3, K, K)`` patches -> ``(n, num_classes)`` scores of their centre pixels."""
        features = self.encoder(patches).flatten(1)
        return self.classifier(self.activation(self.fc(features)))

    def dense_scores(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` -> ``(N, C, ceil(H / S), ceil(W / S))``: the patch scores of the
        centres of the stride-``S`` cells, in one fully convolutional pass."""
        features = self.encoder(self._pad_for_centres(x, self.output_stride))
        f = self.feature_size
        fc = self.fc.weight.view(self.fc.out_features, -1, f, f)
        hidden = self.activation(F.conv2d(features, fc, self.fc.bias))
        return F.conv2d(hidden, self.classifier.weight[:, :, None, None], self.classifier.bias)

    def literal_scores(self, x: torch.Tensor, window_stride: int | None = None) -> torch.Tensor:
        """``(N, 3, H, W)`` -> ``(N, C, ceil(H / s), ceil(W / s))`` with ``s = window_stride``
        (default the model's): each visited centre's patch cut out and classified alone."""
        stride = window_stride or self.window_stride
        padded = self._pad_for_centres(x, stride)
        k = self.patch_size
        # (N, 3, rows, columns, K, K): a view, one K x K window per visited centre.
        windows = padded.unfold(2, k, stride).unfold(3, k, stride)
        batch, _, rows, columns = windows.shape[:4]
        rows_per_chunk = max(PATCHES_PER_CHUNK // (batch * columns), 1)
        score_rows = []
        for first in range(0, rows, rows_per_chunk):
            chunk = windows[:, :, first : first + rows_per_chunk]
            patches = chunk.permute(0, 2, 3, 1, 4, 5).reshape(-1, 3, k, k)
            scores = self.classify_patches(patches)
            score_rows.append(scores.view(batch, -1, columns, self.num_classes))
        return torch.cat(score_rows, dim=1).permute(0, 3, 1, 2)

    def _pad_for_centres(self, x: torch.Tensor, stride: int) -> torch.Tensor:
        """Zero-pad (or crop) ``x`` so that window ``(i, j)`` of size K at ``stride`` is the
        patch around centre ``(stride * i + stride // 2, stride * j + stride // 2)``, for
        ``ceil(H / stride) x ceil(W / stride)`` centres."""
        height, width = x.shape[-2:]
        before = self.patch_size // 2 - stride // 2
        after_h = stride * ((height + stride - 1) // stride - 1) + self.patch_size - height - before
        after_w = stride * ((width + stride - 1) // stride - 1) + self.patch_size - width - before
        return F.pad(x, (before, after_w, before, after_h))

    def _spread(self, scores: torch.Tensor, stride: int, size: torch.Size) -> torch.Tensor:
        """Scores of the centres of stride cells -> ``(N, C, *size)`` at every pixel."""
        if stride > 1:
            scores = F.interpolate(scores, scale_factor=stride, mode=self.upsampling)
        return crop_to(scores, (size[0], size[1]))

    def extra_repr(self) -> str:
        return (
            f"patch_size={self.patch_size}, mode={self.mode!r}, "
            f"window_stride={self.window_stride}, upsampling={self.upsampling!r}"
        )


def patch_classifier(
    num_classes: int,
    patch_size: int = 32,
    widths: tuple[int, ...] | list[int] = (32, 64, 128),
    hidden: int = 256,
    mode: str = "dense",
    window_stride: int | None = None,
    upsampling: str = "bilinear",
) -> PatchClassifier:
    """A patch classifier run densely (default) or patch by patch; see :class:`PatchClassifier`.

    With the defaults (``K = 32``, three blocks of 32, 64, 128 channels, so ``f = 2`` and
    ``S = 8``, 256 hidden units): 224,800 + 257 * num_classes parameters.
    """
    return PatchClassifier(
        num_classes, patch_size, tuple(widths), hidden, mode, window_stride, upsampling
    )
