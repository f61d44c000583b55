"""FC-DenseNet ("Tiramisu"): a fully convolutional DenseNet with U-Net skips.

Jégou, Drozdzal, Vazquez, Romero & Bengio, "The One Hundred Layers Tiramisu: Fully
Convolutional DenseNets for Semantic Segmentation", CVPRW 2017 (Tables 1 and 2; the authors'
Lasagne code settles what the paper leaves open).

A 3x3 convolution to 48 channels starts a stack of feature maps. Down path: five dense blocks,
each followed by a transition down; a dense block's layers are BatchNorm, ReLU, 3x3
convolution to ``growth_rate`` maps and dropout 0.2, each layer seeing the concatenation of
the block's input and every earlier layer's output, and the block's output (its input and all
its layers' maps) is kept as a skip. Transition down: BatchNorm, ReLU, a 1x1 convolution
keeping the channel count, dropout 0.2 and 2x2 max pooling. A bottleneck dense block follows at
stride 32. Up path, five times: a transition up (a 3x3 transposed convolution of stride 2 on
the maps the previous dense block created, not its input, keeping their count; cropped to the
skip's size) concatenated with the skip, then a dense block; the last block's output with its
input goes to a 1x1 classifier. Convolutions have biases and He-uniform initialisation, as in
the authors' code.

Layers per dense block (down path, bottleneck; the up path mirrors the down path) and growth
rate: FC-DenseNet56 4 per block, 12; FC-DenseNet103 4, 5, 7, 10, 12, bottleneck 15, growth 16
(the paper's FC-DenseNet67, 5 per block and growth 16, is not registered). Their names count
the convolutions: 103 = 1 + 38 + 5 + 15 + 38 + 5 + 1.

Parameters for 11 classes (weights, biases and BatchNorm's scale and shift): FC-DenseNet56
1,376,795, FC-DenseNet103 9,322,091. The paper's 1.5M and 9.4M count BatchNorm's running mean
and variance too, as Lasagne's ``count_params`` does: with them 1,397,963 (1.4M, the paper's
figure is 8% higher) and 9,425,163 (9.4M).

The BatchNorms come before the ReLU and convolution of their layer (pre-activation) and read a
concatenation of several convolutions' maps, so none folds into a convolution for inference.
Max pooling floors odd sizes and the transposed convolution gives ``2h + 1`` rows, cropped to the
skip's, so any input size works without padding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from semseg.models.blocks import crop_to
from semseg.models.contract import SegmentationModel

FIRST_CHANNELS = 48
DROPOUT = 0.2


class DenseLayer(nn.Sequential):
    """BatchNorm, ReLU, 3x3 convolution (with bias), dropout:
    ``(N, in_channels, H, W) -> (N, growth_rate, H, W)``."""

    def __init__(self, in_channels: int, growth_rate: int, dropout: float) -> None:
        super().__init__(
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, growth_rate, 3, padding=1),
            nn.Dropout(dropout),
        )


class DenseBlock(nn.Module):
    """``num_layers`` :class:`DenseLayer` s, each fed the block's input and every earlier
    layer's output: ``(N, in_channels, H, W) -> (N, num_layers * growth_rate, H, W)``, the new
    maps only (concatenate the input where the stack is wanted)."""

    def __init__(self, in_channels: int, growth_rate: int, num_layers: int, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList(
            DenseLayer(in_channels + i * growth_rate, growth_rate, dropout)
            for i in range(num_layers)
        )
        self.out_channels = num_layers * growth_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = [x]
        for layer in self.layers:
            maps.append(layer(torch.cat(maps, dim=1)))
        return torch.cat(maps[1:], dim=1)


class TransitionDown(nn.Sequential):
    """BatchNorm, ReLU, 1x1 convolution (with bias), dropout, 2x2 max pooling:
    ``(N, C, H, W) -> (N, C, floor(H / 2), floor(W / 2))``."""

    def __init__(self, channels: int, dropout: float) -> None:
        super().__init__(
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 1),
            nn.Dropout(dropout),
            nn.MaxPool2d(2),
        )


class TransitionUp(nn.Module):
    """3x3 transposed convolution of stride 2 (with bias), cropped to the skip's size and
    concatenated before it: ``(N, C, h, w)``, skip ``(N, S, H, W)`` with ``H <= 2h + 1`` ->
    ``(N, C + S, H, W)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.upsample = nn.ConvTranspose2d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        upsampled = crop_to(self.upsample(x), skip.shape[-2:])
        return torch.cat([upsampled, skip], dim=1)


class FCDenseNetEncoder(nn.Module):
    """First convolution, the down path and the bottleneck block:
    ``(N, in_channels, H, W)`` -> the skips (stacks at strides 1, 2, ..., ``2**(len(down) -
    1)``) and the bottleneck's new maps at stride ``2**len(down)``.

    Args:
        in_channels: image channels.
        first_channels: output channels of the first convolution (48 in the paper).
        down_layers: layers per dense block of the down path; the up path mirrors it.
        bottleneck_layers: layers of the dense block at the lowest resolution.
        growth_rate: maps each dense layer adds.
        dropout: dropout probability after every convolution but the transposed ones and the
            classifier.

    ``channels`` and ``strides`` list the returned maps' channel counts and strides.
    """

    def __init__(
        self,
        in_channels: int,
        first_channels: int,
        down_layers: Sequence[int],
        bottleneck_layers: int,
        growth_rate: int,
        dropout: float,
    ) -> None:
        super().__init__()
        for name, value in [
            ("in_channels", in_channels),
            ("first_channels", first_channels),
            ("growth_rate", growth_rate),
        ]:
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.down_layers, self.growth_rate, self.dropout = tuple(down_layers), growth_rate, dropout
        self.first = nn.Conv2d(in_channels, first_channels, 3, padding=1)
        self.blocks = nn.ModuleList()
        self.transitions = nn.ModuleList()
        stack = first_channels
        skip_channels = []
        for num_layers in down_layers:
            self.blocks.append(DenseBlock(stack, growth_rate, num_layers, dropout))
            stack += num_layers * growth_rate
            skip_channels.append(stack)
            self.transitions.append(TransitionDown(stack, dropout))
        self.bottleneck = DenseBlock(stack, growth_rate, bottleneck_layers, dropout)
        self.channels = (*skip_channels, self.bottleneck.out_channels)
        self.strides = tuple(2**level for level in range(len(down_layers) + 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        stack = self.first(x)
        skips = []
        for block, transition in zip(self.blocks, self.transitions, strict=True):
            stack = torch.cat([stack, block(stack)], dim=1)
            skips.append(stack)
            stack = transition(stack)
        return [*skips, self.bottleneck(stack)]


class FCDenseNet(SegmentationModel):
    """``(N, in_channels, H, W)`` float -> ``(N, num_classes, H, W)`` float logits, any ``H,
    W`` (see the module docstring): ``encoder``'s down path, then an up path mirroring it
    (transition up, concatenated skip, dense block with the same layer count) and a 1x1
    classifier.
    """

    def __init__(self, num_classes: int, encoder: FCDenseNetEncoder) -> None:
        super().__init__(num_classes, encoder.strides[-1])
        self.encoder = encoder
        growth_rate, dropout = encoder.growth_rate, encoder.dropout
        *skip_channels, upsampled = self.encoder.channels
        self.transitions = nn.ModuleList()
        self.blocks = nn.ModuleList()
        for skip, num_layers in zip(skip_channels[::-1], encoder.down_layers[::-1], strict=True):
            self.transitions.append(TransitionUp(upsampled))
            self.blocks.append(DenseBlock(upsampled + skip, growth_rate, num_layers, dropout))
            stack = upsampled + skip + num_layers * growth_rate
            upsampled = num_layers * growth_rate
        self.classifier = nn.Conv2d(stack, num_classes, 1)
        _init_weights(self)

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        *skips, y = self.encoder(x)
        for transition, block, skip in zip(self.transitions, self.blocks, skips[::-1], strict=True):
            stack = transition(y, skip)
            y = block(stack)
        return self.classifier(torch.cat([stack, y], dim=1))


def _init_weights(module: nn.Module) -> None:
    """He-uniform (fan-in, ReLU gain) weights and zero biases, as the authors' Lasagne code;
    for a transposed convolution PyTorch's fan-in (``out_channels * k * k``) is Lasagne's."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
            nn.init.kaiming_uniform_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)


def _create(
    num_classes: int,
    down_layers: Sequence[int],
    bottleneck_layers: int,
    growth_rate: int,
    in_channels: int,
    first_channels: int,
    dropout: float,
) -> FCDenseNet:
    encoder = FCDenseNetEncoder(
        in_channels, first_channels, down_layers, bottleneck_layers, growth_rate, dropout
    )
    return FCDenseNet(num_classes, encoder)


def fc_densenet56(
    num_classes: int,
    growth_rate: int = 12,
    in_channels: int = 3,
    first_channels: int = FIRST_CHANNELS,
    dropout: float = DROPOUT,
) -> FCDenseNet:
    """FC-DenseNet56 (Jégou et al. 2017): 4 layers in every dense block, growth rate 12.

    1,376,795 parameters for 11 classes. ``growth_rate`` and ``first_channels`` other than the
    paper's build smaller copies (tests use them); see the module docstring.
    """
    return _create(num_classes, (4,) * 5, 4, growth_rate, in_channels, first_channels, dropout)


def fc_densenet103(
    num_classes: int,
    growth_rate: int = 16,
    in_channels: int = 3,
    first_channels: int = FIRST_CHANNELS,
    dropout: float = DROPOUT,
) -> FCDenseNet:
    """FC-DenseNet103 (Jégou et al. 2017): blocks of 4, 5, 7, 10, 12 layers, bottleneck 15.

    Growth rate 16; 9,322,091 parameters for 11 classes; arguments as for
    :func:`fc_densenet56`.
    """
    return _create(
        num_classes, (4, 5, 7, 10, 12), 15, growth_rate, in_channels, first_channels, dropout
    )
