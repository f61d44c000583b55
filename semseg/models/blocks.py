"""Building blocks shared by the model families: conv-BN-ReLU, upsampling, pad and crop.

All blocks work on ``(N, C, H, W)`` float tensors and keep models export-clean: shapes are
read from tensors and turned into ops, never into Python branches.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn

UPSAMPLING_MODES = ("nearest", "bilinear", "transposed")
INPLACE_RELU = partial(nn.ReLU, inplace=True)


class ConvBNAct(nn.Sequential):
    """Convolution, optional BatchNorm, optional activation; "same" padding at ``stride`` 1.

    ``(N, in_channels, H, W) -> (N, out_channels, ceil(H / stride), ceil(W / stride))``;
    ``padding=0`` makes it a "valid" convolution instead (``H - dilation * (kernel_size - 1)``
    rows at stride 1).
    Entries ``0`` conv, ``1`` BatchNorm (torchvision's ``Conv2dNormActivation`` layout, so its
    weights load). The convolution has a bias only without BatchNorm (BatchNorm's shift makes it
    redundant); ``groups=in_channels`` makes it depthwise. The default ReLU works in place: it
    follows a convolution or BatchNorm, whose backward does not need their output.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        padding: int | None = None,
        batch_norm: bool = True,
        activation: Callable[[], nn.Module] | None = INPLACE_RELU,
    ) -> None:
        if padding is None:
            padding = dilation * (kernel_size - 1) // 2
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=padding,
                dilation=dilation,
                groups=groups,
                bias=not batch_norm,
            )
        ]
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_channels))
        if activation is not None:
            layers.append(activation())
        super().__init__(*layers)


def conv_stack(channels: Sequence[int], batch_norm: bool = True) -> nn.Sequential:
    """3x3 :class:`ConvBNAct` (ReLU) layers from ``channels[0]`` through each following count.

    ``conv_stack([3, 64, 64])`` is two layers, 3 -> 64 -> 64 channels, spatial size kept.
    """
    if len(channels) < 2:
        raise ValueError(f"conv_stack needs at least two channel counts, got {list(channels)}")
    return nn.Sequential(
        *(ConvBNAct(c_in, c_out, batch_norm=batch_norm) for c_in, c_out in pairwise(channels))
    )


class Upsample(nn.Module):
    """Enlarge ``(N, channels, H, W)`` to ``(N, channels, factor * H, factor * W)``.

    Modes:
        ``"nearest"``, ``"bilinear"``: fixed interpolation (bilinear with
        ``align_corners=False``), no parameters.
        ``"transposed"``: a learnable transposed convolution, kernel ``2 * factor - factor % 2``,
        stride ``factor``, no bias, initialised as bilinear interpolation of each channel onto
        itself (Long et al., "Fully Convolutional Networks for Semantic Segmentation", CVPR
        2015). At initialisation it equals ``"bilinear"`` away from the border; the outermost
        output rows and columns also weigh in the zeros beyond the input (3/4 of the border
        value for factor 2) where interpolation repeats the border.
    """

    def __init__(self, channels: int, factor: int = 2, mode: str = "bilinear") -> None:
        super().__init__()
        if mode not in UPSAMPLING_MODES:
            raise ValueError(
                f"upsampling mode {mode!r} is not one of {', '.join(UPSAMPLING_MODES)}"
            )
        if factor < 1:
            raise ValueError(f"upsampling factor must be a positive integer, got {factor}")
        self.factor = factor
        self.mode = mode
        self.transposed = None
        if mode == "transposed":
            kernel_size = 2 * factor - factor % 2
            self.transposed = nn.ConvTranspose2d(
                channels, channels, kernel_size, stride=factor, padding=factor // 2, bias=False
            )
            with torch.no_grad():
                self.transposed.weight.copy_(bilinear_kernel(channels, kernel_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.transposed is not None:
            return self.transposed(x)
        return F.interpolate(x, scale_factor=self.factor, mode=self.mode)

    def extra_repr(self) -> str:
        return f"factor={self.factor}, mode={self.mode!r}"


def bilinear_kernel(channels: int, kernel_size: int) -> torch.Tensor:
    """``(channels, channels, k, k)`` float32 transposed-convolution weight that upsamples each
    channel bilinearly by ``factor = ceil(k / 2)`` and ignores the other channels."""
    factor = (kernel_size + 1) // 2
    centre = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    taps = 1 - (torch.arange(kernel_size, dtype=torch.float32) - centre).abs() / factor
    weight = torch.zeros(channels, channels, kernel_size, kernel_size)
    weight[range(channels), range(channels)] = torch.outer(taps, taps)
    return weight


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Zero-pad ``(N, C, H, W)`` at the bottom and right so ``H`` and ``W`` become multiples of
    ``multiple``.

    Returns:
        The padded tensor and the original ``(H, W)``, for :func:`crop_to`.
    """
    height, width = x.shape[-2:]
    padded = F.pad(x, (0, (-width) % multiple, 0, (-height) % multiple))
    return padded, (height, width)


def crop_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Keep the top-left ``size = (H, W)`` of ``(N, C, H', W')``; undoes :func:`pad_to_multiple`.

    ``size`` must not exceed ``(H', W')``: the crop is a pad by negative amounts, and a positive
    amount would add zero rows rather than fail. A pad, unlike a slice, returns a fresh tensor
    whichever the sizes, so ``torch.export`` with dynamic ``H, W`` does not specialise on
    whether anything is cropped (a slice's strides would depend on it).
    """
    height, width = size
    return F.pad(x, (0, width - x.shape[-1], 0, height - x.shape[-2]))


OUTPUT_STRIDES = (8, 16, 32)
"""Output strides a backbone can be built for (dilation replaces the later strides)."""


class SeparableConv(nn.Sequential):
    """Depthwise ``kernel_size`` conv-BN-act then pointwise 1x1 conv-BN-act (MobileNetV1's and
    Xception's depthwise separable convolution, as DeepLabV3+ uses it).

    ``(N, in_channels, H, W) -> (N, out_channels, H, W)``; entries ``depthwise``, ``pointwise``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        dilation: int = 1,
        activation: Callable[[], nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        self.depthwise = ConvBNAct(
            in_channels,
            in_channels,
            kernel_size,
            dilation=dilation,
            groups=in_channels,
            activation=activation,
        )
        self.pointwise = ConvBNAct(in_channels, out_channels, 1, activation=activation)


class DilationSchedule:
    """Turns strides past ``output_stride`` into dilation; call once per block, in order.

    A block asked for a stride that would take the network past ``output_stride`` gets stride
    1 and the dilation so far (with ``dilate_strided_block``: that dilation times the stride,
    torchvision's rule for MobileNetV3); the blocks after it get that dilation times the stride.
    """

    def __init__(self, output_stride: int, dilate_strided_block: bool = False) -> None:
        if output_stride not in OUTPUT_STRIDES:
            raise ValueError(
                f"output_stride must be one of {', '.join(map(str, OUTPUT_STRIDES))}, "
                f"got {output_stride}"
            )
        self.output_stride = output_stride
        self.dilate_strided_block = dilate_strided_block
        self.stride = 1
        self.dilation = 1

    def __call__(self, stride: int) -> tuple[int, int]:
        """``(stride, dilation)`` a block asked for ``stride`` should use."""
        if self.stride * stride <= self.output_stride:
            self.stride *= stride
            return stride, self.dilation
        previous = self.dilation
        self.dilation *= stride
        return 1, self.dilation if self.dilate_strided_block else previous


def feature_strides(output_stride: int) -> tuple[int, ...]:
    """Strides of the five feature maps of a backbone built for ``output_stride``."""
    return tuple(min(stride, output_stride) for stride in (2, 4, 8, 16, 32))
