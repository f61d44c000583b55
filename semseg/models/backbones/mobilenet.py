"""MobileNetV2 and MobileNetV3-Large feature extractors.

Sandler, Howard, Zhu, Zhmoginov & Chen, "MobileNetV2: Inverted Residuals and Linear
Bottlenecks", CVPR 2018; Howard et al., "Searching for MobileNetV3", ICCV 2019. Module names
follow torchvision's ``mobilenet_v2`` / ``mobilenet_v3_large`` (``features.{i}``, with
``features.{i}.conv.*`` / ``features.{i}.block.*`` inside a block) so their ImageNet state
dicts load directly; the classifier is not built.

Both return five feature maps, the outputs of the last block at strides 2, 4, 8, 16 and 32
(MobileNetV3-Large can return others, ``taps``). For ``output_stride`` 16 or 8 the blocks that
would reduce below it keep their resolution and dilate their depthwise convolution instead
(DeepLab's atrous convolution), so pretrained weights still apply. In MobileNetV2 the strided
block itself uses the previous dilation, as torchvision's ``replace_stride_with_dilation`` does
for ResNet: the dilated network computes the strided one on a finer grid. In MobileNetV3-Large
it uses the new dilation, as torchvision's ``mobilenet_v3_large(dilated=True)`` does, the
backbone its ``lraspp_mobilenet_v3_large`` and ``deeplabv3_mobilenet_v3_large`` were trained
with.

BatchNorm: MobileNetV2 uses PyTorch's defaults (eps 1e-5, momentum 0.1), MobileNetV3-Large
eps 1e-3 and momentum 0.01, as torchvision defines each (and as its ImageNet weights were
trained): with another eps the same weights compute different features.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from semseg.models.blocks import ConvBNAct, DilationSchedule, feature_strides

OUTPUT_STRIDES = (8, 16, 32)
MOBILENET_V3_BATCHNORM = {"eps": 1e-3, "momentum": 0.01}
"""torchvision's ``mobilenet_v3_large`` norm layer: ``BatchNorm2d(eps=0.001, momentum=0.01)``."""


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a scaled channel count to the nearest multiple of ``divisor`` (at least
    ``divisor``), going up one step if rounding lost more than 10%; torchvision's and the
    papers' rule, so scaled widths match theirs."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class InvertedResidualV2(nn.Module):
    """MobileNetV2 block: 1x1 expansion (skipped when ``expand_ratio`` is 1), 3x3 depthwise,
    linear 1x1 projection, ReLU6; identity shortcut when shapes allow.

    Entries as torchvision's: ``conv.0`` expansion, ``conv.1`` depthwise, ``conv.2`` projection
    conv, ``conv.3`` its BN (without expansion: ``conv.0`` depthwise, ``conv.1``, ``conv.2``).
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, dilation: int, expand_ratio: int
    ) -> None:
        super().__init__()
        hidden = round(in_channels * expand_ratio)
        self.residual = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNAct(in_channels, hidden, 1, activation=nn.ReLU6))
        layers += [
            ConvBNAct(
                hidden, hidden, stride=stride, dilation=dilation, groups=hidden,
                activation=nn.ReLU6,
            ),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]  # fmt: skip
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class SqueezeExcitation(nn.Module):
    """Channel gating (Hu et al., CVPR 2018) as MobileNetV3 uses it: global average pool,
    ``fc1`` 1x1 conv + ReLU, ``fc2`` 1x1 conv + hard sigmoid, multiply. No BatchNorm, so it
    works at batch size 1. ``(N, C, H, W) -> (N, C, H, W)``."""

    def __init__(self, channels: int, squeeze_channels: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean(dim=(2, 3), keepdim=True)
        scale = nn.functional.hardsigmoid(self.fc2(nn.functional.relu(self.fc1(scale))))
        return x * scale


class InvertedResidualV3(nn.Module):
    """MobileNetV3 block: optional 1x1 expansion, ``kernel_size`` depthwise, optional
    squeeze-excitation, linear 1x1 projection; entries ``block.{i}`` as torchvision's."""

    def __init__(
        self,
        in_channels: int,
        kernel_size: int,
        hidden: int,
        out_channels: int,
        squeeze_excite: bool,
        activation: Callable[[], nn.Module],
        stride: int,
        dilation: int,
    ) -> None:
        super().__init__()
        self.residual = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if hidden != in_channels:
            layers.append(ConvBNAct(in_channels, hidden, 1, activation=activation))
        layers.append(
            ConvBNAct(
                hidden, hidden, kernel_size, stride=stride, dilation=dilation, groups=hidden,
                activation=activation,
            )
        )  # fmt: skip
        if squeeze_excite:
            layers.append(SqueezeExcitation(hidden, make_divisible(hidden // 4)))
        layers.append(ConvBNAct(hidden, out_channels, 1, activation=None))
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.residual else self.block(x)


class _StageOutputs(nn.Module):
    """``features`` run in order, returning the outputs of the layers listed in ``taps``."""

    features: nn.Sequential
    taps: tuple[int, ...]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.taps:
                outputs.append(x)
        return outputs


class MobileNetV2(_StageOutputs):
    """MobileNetV2 ``features`` (torchvision names): ``(N, 3, H, W)`` -> five maps.

    The maps are the outputs of ``features.1``, ``.3``, ``.6``, ``.13`` and the last layer:
    ``channels`` ``(16, 24, 32, 96, 1280)`` at width 1 (``320`` without ``last_conv``), at
    strides ``strides`` (``(2, 4, 8, 16, 32)`` at ``output_stride`` 32; ``(2, 4, 8, 16, 16)``
    at 16). Sizes round up at each stride-2 layer: ``ceil(H / stride)``. Full size: 2,223,872
    parameters (torchvision's 3,504,872 less the 1,281,000 of its classifier).

    Args:
        width_mult: scales every channel count (rounded by :func:`make_divisible`); the last
            1x1 convolution keeps 1280 channels below 1, as in the paper.
        output_stride: 32, 16 or 8 (dilation replaces the later strides).
        last_conv: build ``features.18``, the 1x1 convolution to 1280 channels.
    """

    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                (6, 160, 3, 2), (6, 320, 1, 1))  # fmt: skip
    """(expansion t, channels c, repeats n, first stride s) per stage, the paper's Table 2."""

    def __init__(
        self, width_mult: float = 1.0, output_stride: int = 32, last_conv: bool = True
    ) -> None:
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"width_mult must be positive, got {width_mult}")
        dilation = DilationSchedule(output_stride)
        in_channels = make_divisible(32 * width_mult)
        layers: list[nn.Module] = [ConvBNAct(3, in_channels, stride=2, activation=nn.ReLU6)]
        dilation(2)
        for expand_ratio, channels, repeats, first_stride in self.SETTINGS:
            out_channels = make_divisible(channels * width_mult)
            for repeat in range(repeats):
                stride, rate = dilation(first_stride if repeat == 0 else 1)
                layers.append(
                    InvertedResidualV2(in_channels, out_channels, stride, rate, expand_ratio)
                )
                in_channels = out_channels
        if last_conv:
            last_channels = make_divisible(1280 * max(1.0, width_mult))
            layers.append(ConvBNAct(in_channels, last_channels, 1, activation=nn.ReLU6))
            in_channels = last_channels
        self.features = nn.Sequential(*layers)
        self.taps = (1, 3, 6, 13, len(layers) - 1)
        self.channels = (*(_out_channels(layers[i]) for i in self.taps[:-1]), in_channels)
        self.strides = feature_strides(output_stride)
        _init_weights(self)


class MobileNetV3Large(_StageOutputs):
    """MobileNetV3-Large ``features`` (torchvision names): ``(N, 3, H, W)`` -> five maps.

    By default the maps are the outputs of ``features.1``, ``.3``, ``.6``, ``.12`` and ``.16``
    (the 1x1 convolution to 960 channels): ``channels`` ``(16, 24, 40, 112, 960)`` at width 1,
    at ``strides`` as for :class:`MobileNetV2`. Full size: 2,971,952 parameters (torchvision's
    5,483,032 less the 2,511,080 of its classifier).

    Args:
        width_mult: scales every channel count (rounded by :func:`make_divisible`).
        output_stride: 32, 16 or 8 (dilation replaces the later strides; the strided block
            itself is dilated too, as in torchvision).
        taps: increasing indices into ``features`` whose outputs are returned; ``channels``
            and ``strides`` follow them.
    """

    DEFAULT_TAPS = (1, 3, 6, 12, 16)
    """The last layer at each stride."""

    SETTINGS = (
        (3, 16, 16, False, "RE", 1), (3, 64, 24, False, "RE", 2), (3, 72, 24, False, "RE", 1),
        (5, 72, 40, True, "RE", 2), (5, 120, 40, True, "RE", 1), (5, 120, 40, True, "RE", 1),
        (3, 240, 80, False, "HS", 2), (3, 200, 80, False, "HS", 1),
        (3, 184, 80, False, "HS", 1), (3, 184, 80, False, "HS", 1),
        (3, 480, 112, True, "HS", 1), (3, 672, 112, True, "HS", 1),
        (5, 672, 160, True, "HS", 2), (5, 960, 160, True, "HS", 1),
        (5, 960, 160, True, "HS", 1),
    )  # fmt: skip
    """(kernel, expanded channels, output channels, squeeze-excitation, ReLU or hard swish,
    stride) per block, the paper's Table 1."""

    def __init__(
        self,
        width_mult: float = 1.0,
        output_stride: int = 32,
        taps: tuple[int, ...] = DEFAULT_TAPS,
    ) -> None:
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"width_mult must be positive, got {width_mult}")
        layer_count = len(self.SETTINGS) + 2
        if (
            not taps
            or list(taps) != sorted(set(taps))
            or not 0 <= taps[0] <= taps[-1] < layer_count
        ):
            raise ValueError(
                f"taps must be increasing indices of the {layer_count} layers, got {taps}"
            )
        activations = {"RE": nn.ReLU, "HS": nn.Hardswish}
        dilation = DilationSchedule(output_stride, dilate_strided_block=True)
        in_channels = make_divisible(16 * width_mult)
        layers: list[nn.Module] = [ConvBNAct(3, in_channels, stride=2, activation=nn.Hardswish)]
        dilation(2)
        layer_strides = [dilation.stride]
        for kernel, expanded, channels, squeeze, activation, block_stride in self.SETTINGS:
            out_channels = make_divisible(channels * width_mult)
            stride, rate = dilation(block_stride)
            layers.append(
                InvertedResidualV3(
                    in_channels, kernel, make_divisible(expanded * width_mult), out_channels,
                    squeeze, activations[activation], stride, rate,
                )
            )  # fmt: skip
            layer_strides.append(dilation.stride)
            in_channels = out_channels
        layers.append(ConvBNAct(in_channels, 6 * in_channels, 1, activation=nn.Hardswish))
        layer_strides.append(dilation.stride)
        self.features = nn.Sequential(*layers)
        self.taps = tuple(taps)
        self.channels = tuple(_out_channels(layers[i]) for i in self.taps)
        self.strides = tuple(layer_strides[i] for i in self.taps)
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eps = MOBILENET_V3_BATCHNORM["eps"]
                module.momentum = MOBILENET_V3_BATCHNORM["momentum"]
        _init_weights(self)


def mobilenet_v2(
    width_mult: float = 1.0, output_stride: int = 32, last_conv: bool = True
) -> MobileNetV2:
    """MobileNetV2 feature extractor; see :class:`MobileNetV2`."""
    return MobileNetV2(width_mult, output_stride, last_conv)


def mobilenet_v3_large(
    width_mult: float = 1.0,
    output_stride: int = 32,
    taps: tuple[int, ...] = MobileNetV3Large.DEFAULT_TAPS,
) -> MobileNetV3Large:
    """MobileNetV3-Large feature extractor; see :class:`MobileNetV3Large`."""
    return MobileNetV3Large(width_mult, output_stride, taps)


def _out_channels(block: nn.Module) -> int:
    """Output channels of an inverted residual block (its last BatchNorm's width)."""
    norms = [m for m in block.modules() if isinstance(m, nn.BatchNorm2d)]
    return norms[-1].num_features


def _init_weights(module: nn.Module) -> None:
    """torchvision's MobileNet initialisation: He (fan-out) convolutions, unit BatchNorm."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
