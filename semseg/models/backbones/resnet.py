"""ResNet-18, -34 and -50 feature extractors.

He, Zhang, Ren & Sun, "Deep Residual Learning for Image Recognition", CVPR 2016: a 7x7
stride-2 stem and 3x3 stride-2 max pool, then four stages of residual blocks (``BasicBlock``,
two 3x3 convolutions, for 18 and 34 layers; ``Bottleneck``, 1x1-3x3-1x1 with 4x expansion,
for 50), the first block of stages 2-4 halving the resolution. As in torchvision (ResNet
"v1.5") the bottleneck strides in its 3x3 convolution, not its first 1x1.

Module names are torchvision's (``conv1``, ``bn1``, ``layer{1-4}.{block}.conv1``,
``...downsample.0``), which timm's ResNets share, so their ImageNet state dicts load directly;
the ``fc`` classifier is not built.

For ``output_stride`` 16 or 8 the last stages keep their resolution and dilate their 3x3
convolutions instead (torchvision's ``replace_stride_with_dilation``: the block that would
have strided uses the previous dilation, the blocks after it the doubled one). Unlike
torchvision, ``BasicBlock`` supports dilation too: its first convolution takes the dilation of
the grid it reads, its second the dilation after the stride, so the network computes exactly
the strided network's function on a finer grid (Bottleneck's 1x1 convolutions need no care).
"""

from __future__ import annotations

import torch
from torch import nn

from semseg.models.blocks import DilationSchedule, feature_strides

STEM_CHANNELS = 64
STAGE_CHANNELS = (64, 128, 256, 512)
"""Width of each stage's blocks at full size (a bottleneck's output is 4 times this)."""
DEPTHS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3)}


def _conv3x3(in_channels: int, out_channels: int, stride: int, dilation: int) -> nn.Conv2d:
    return nn.Conv2d(
        in_channels, out_channels, 3, stride=stride, padding=dilation, dilation=dilation,
        bias=False,
    )  # fmt: skip


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus a shortcut, ReLU after the sum.

    ``(N, in_channels, H, W) -> (N, channels, ceil(H / stride), ceil(W / stride))``; the
    shortcut is a 1x1 conv-BN (``downsample``) when the shape changes. ``dilations``: of the
    first convolution (the one that strides) and of the second.
    """

    expansion = 1
    conv_bn_pairs = (("conv1", "bn1"), ("conv2", "bn2"))
    """Each convolution feeds the BatchNorm after it; :mod:`semseg.inference.fuse` folds them."""

    def __init__(
        self, in_channels: int, channels: int, stride: int, dilations: tuple[int, int]
    ) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, channels, stride, dilations[0])
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(channels, channels, 1, dilations[1])
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample = _shortcut(in_channels, channels * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided, dilated), 1x1 expand to ``4 * channels``, each with BN, plus a
    shortcut, ReLU after the sum.

    ``(N, in_channels, H, W) -> (N, 4 * channels, ceil(H / stride), ceil(W / stride))``.
    ``dilations``: of the 3x3 convolution (the one that strides) and after it (unused: only
    1x1 convolutions follow).
    """

    expansion = 4
    conv_bn_pairs = (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"))

    def __init__(
        self, in_channels: int, channels: int, stride: int, dilations: tuple[int, int]
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = _conv3x3(channels, channels, stride, dilations[0])
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = nn.Conv2d(channels, channels * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_channels, channels * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
        nn.BatchNorm2d(out_channels),
    )


class ResNet(nn.Module):
    """ResNet stem and four stages: ``(N, 3, H, W)`` -> five feature maps.

    The maps are the stem's ReLU output and the outputs of ``layer1`` to ``layer4``, with
    ``channels`` ``(64, 64, 128, 256, 512)`` (18, 34) or ``(64, 256, 512, 1024, 2048)`` (50) at
    full width and ``strides`` ``(2, 4, 8, 16, 32)`` at ``output_stride`` 32 (``(2, 4, 8, 16,
    16)`` at 16, ``(2, 4, 8, 8, 8)`` at 8). Sizes round up at each stride: ``ceil(H /
    stride)``. Parameters at full width: 11,176,512 (18), 21,284,672 (34), 23,508,032 (50),
    torchvision's counts less the ``fc`` layer.

    Args:
        depth: 18, 34 or 50.
        output_stride: 32, 16 or 8 (dilation replaces the later strides).
        width_divisor: divide every channel count by this (a divisor of 64); 1 is the real
            network, larger values build small copies for tests.
    """

    conv_bn_pairs = (("conv1", "bn1"),)
    conv_activation_pairs = (("conv1", "relu"),)
    """``forward`` applies ``relu`` to ``conv1``'s output (after ``bn1``) and nowhere else;
    :mod:`semseg.inference.fuse` runs the two as one call."""

    def __init__(self, depth: int, output_stride: int = 32, width_divisor: int = 1) -> None:
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f"ResNet depth must be one of {sorted(DEPTHS)}, got {depth}")
        if width_divisor < 1 or STEM_CHANNELS % width_divisor:
            raise ValueError(f"width_divisor must divide {STEM_CHANNELS}, got {width_divisor}")
        block = Bottleneck if depth >= 50 else BasicBlock
        schedule = DilationSchedule(output_stride)
        stem = STEM_CHANNELS // width_divisor
        self.conv1 = nn.Conv2d(3, stem, 7, stride=schedule(2)[0], padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=schedule(2)[0], padding=1)
        in_channels = stem
        channels_out = [stem]
        stages = []
        for index, (channels, blocks) in enumerate(zip(STAGE_CHANNELS, DEPTHS[depth], strict=True)):
            layer = []
            for repeat in range(blocks):
                first_stride = 2 if index > 0 and repeat == 0 else 1
                stride, dilation = schedule(first_stride)
                dilations = (dilation, schedule.dilation)
                layer.append(block(in_channels, channels // width_divisor, stride, dilations))
                in_channels = channels // width_divisor * block.expansion
            stages.append(nn.Sequential(*layer))
            channels_out.append(in_channels)
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.channels = tuple(channels_out)
        self.strides = feature_strides(output_stride)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.relu(self.bn1(self.conv1(x)))
        features = [x]
        x = self.maxpool(x)
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            features.append(x)
        return features


def resnet18(output_stride: int = 32, width_divisor: int = 1) -> ResNet:
    """ResNet-18 feature extractor (BasicBlock, 2-2-2-2); see :class:`ResNet`."""
    return ResNet(18, output_stride, width_divisor)


def resnet34(output_stride: int = 32, width_divisor: int = 1) -> ResNet:
    """ResNet-34 feature extractor (BasicBlock, 3-4-6-3); see :class:`ResNet`."""
    return ResNet(34, output_stride, width_divisor)


def resnet50(output_stride: int = 32, width_divisor: int = 1) -> ResNet:
    """ResNet-50 feature extractor (Bottleneck, 3-4-6-3); see :class:`ResNet`."""
    return ResNet(50, output_stride, width_divisor)
