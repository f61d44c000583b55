"""FC-DenseNet (Tiramisu): the architecture contract on small copies, parameter counts by a hand
formula against the paper's, the channel counts of its Table 2, and the dense block's wiring."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from semseg.inference.fuse import fuse_conv_bn
from semseg.models import create_model
from semseg.models.fc_densenet import DenseBlock

from .architecture_contract import ArchitectureContract


class TestFCDenseNet56(ArchitectureContract):
    model_name = "fc_densenet56"
    # At least 2x2 at stride 32: torch.export specialises dimensions of size 1.
    input_size = (64, 96)
    model_kwargs = {"growth_rate": 2, "first_channels": 4}
    pre_activation = True


class TestFCDenseNet103SingleChannel(ArchitectureContract):
    model_name = "fc_densenet103"
    input_size = (64, 96)
    model_kwargs = {"growth_rate": 1, "first_channels": 3, "in_channels": 1}
    pre_activation = True


def hand_count(
    down: tuple[int, ...], bottleneck: int, growth: int, classes: int, running: bool = False
) -> int:
    """Parameters of FC-DenseNet from the paper's description and the authors' code: 3x3
    convolutions with bias, BatchNorm scale and shift (and, with ``running``, its running mean
    and variance), transposed convolutions keeping the channels they upsample."""
    norm = 4 if running else 2

    def layer(c_in: int) -> int:  # BatchNorm, 3x3 conv to `growth` maps
        return norm * c_in + 9 * c_in * growth + growth

    total = 3 * 48 * 9 + 48
    stack, skips = 48, []
    for n in down:
        for _ in range(n):
            total += layer(stack)
            stack += growth
        skips.append(stack)
        total += norm * stack + stack * stack + stack  # transition down: BatchNorm, 1x1 conv
    for _ in range(bottleneck):
        total += layer(stack)
        stack += growth
    upsampled = bottleneck * growth
    for n, skip in zip(down[::-1], skips[::-1], strict=True):
        total += 9 * upsampled * upsampled + upsampled  # transition up
        stack = upsampled + skip
        for _ in range(n):
            total += layer(stack)
            stack += growth
        upsampled = n * growth
    return total + stack * classes + classes


def _running_statistics(model: nn.Module) -> int:
    return sum(b.numel() for name, b in model.named_buffers() if "running_" in name)


@pytest.mark.parametrize(
    ("name", "down", "bottleneck", "growth", "parameters", "with_running", "millions"),
    [
        # The paper's Table 1 (CamVid, 11 classes) gives 1.5M and 9.4M.
        ("fc_densenet56", (4,) * 5, 4, 12, 1_376_795, 1_397_963, 1.4),
        ("fc_densenet103", (4, 5, 7, 10, 12), 15, 16, 9_322_091, 9_425_163, 9.4),
    ],
)
def test_parameter_count_matches_the_hand_formula_and_the_paper(
    name: str,
    down: tuple[int, ...],
    bottleneck: int,
    growth: int,
    parameters: int,
    with_running: int,
    millions: float,
) -> None:
    with torch.device("meta"):
        model = create_model(name, 11)
    assert sum(p.numel() for p in model.parameters()) == parameters
    assert hand_count(down, bottleneck, growth, 11) == parameters
    # The paper counts BatchNorm's running statistics too (Lasagne's count_params does); so
    # counted, 103 rounds to its figure and 56 comes to 1.4M against its 1.5M.
    assert parameters + _running_statistics(model) == with_running
    assert hand_count(down, bottleneck, growth, 11, running=True) == with_running
    assert round(with_running / 1e6, 1) == millions


def test_fc_densenet103_channels_follow_the_papers_table_2() -> None:
    with torch.device("meta"):
        model = create_model("fc_densenet103", 11)
    # Table 2: m after each dense block + transition down, and the bottleneck's 15 * 16 maps.
    assert model.encoder.channels == (112, 192, 304, 464, 656, 240)
    # m after each transition up + dense block. Table 2 prints 578 for the third, which its
    # own rule contradicts: 10 * 16 upsampled maps + the 304-map skip + 7 * 16 new maps.
    stacks = [block.layers[0][0].num_features + block.out_channels for block in model.blocks]
    assert stacks == [1088, 816, 576, 384, 256]
    assert model.classifier.in_channels == 256
    assert [t.upsample.in_channels for t in model.transitions] == [240, 192, 160, 112, 80]
    convolutions = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    assert len(convolutions) == 103


def test_dense_layers_are_batchnorm_relu_conv_dropout() -> None:
    model = create_model("fc_densenet56", 3, growth_rate=2, first_channels=4, dropout=0.3)
    layer = model.encoder.blocks[0].layers[1]
    assert [type(m) for m in layer] == [nn.BatchNorm2d, nn.ReLU, nn.Conv2d, nn.Dropout]
    assert (layer[0].num_features, layer[2].in_channels, layer[2].out_channels) == (6, 6, 2)
    assert layer[2].kernel_size == (3, 3) and layer[2].bias is not None
    assert layer[3].p == 0.3
    transition = model.encoder.transitions[0]
    kinds = [nn.BatchNorm2d, nn.ReLU, nn.Conv2d, nn.Dropout, nn.MaxPool2d]
    assert [type(m) for m in transition] == kinds
    assert transition[2].kernel_size == (1, 1) and transition[2].out_channels == 12


def test_dense_block_feeds_each_layer_every_earlier_map_and_returns_the_new_ones() -> None:
    block = DenseBlock(5, growth_rate=3, num_layers=3, dropout=0.0).eval()
    x = torch.randn(2, 5, 6, 7)
    with torch.no_grad():
        first = block.layers[0](x)
        second = block.layers[1](torch.cat([x, first], dim=1))
        third = block.layers[2](torch.cat([x, first, second], dim=1))
        torch.testing.assert_close(block(x), torch.cat([first, second, third], dim=1))


def test_transition_up_crops_the_transposed_convolution_to_the_skip() -> None:
    model = create_model("fc_densenet56", 3, growth_rate=2, first_channels=4).eval()
    transition = model.transitions[-1]  # to stride 1: 4 * 2 maps in, 4 + 4 * 2 skip channels
    x = torch.randn(1, 8, 3, 4)
    skip = torch.randn(1, 12, 7, 8)  # 2h + 1 = 7 rows kept whole, 2w + 1 = 9 columns cut to 8
    with torch.no_grad():
        full = nn.functional.conv_transpose2d(
            x, transition.upsample.weight, transition.upsample.bias, stride=2
        )
        out = transition(x, skip)
    assert full.shape[-2:] == (7, 9)
    torch.testing.assert_close(out, torch.cat([full[..., :7, :8], skip], dim=1))


@pytest.mark.parametrize(
    ("argument", "value"),
    [("growth_rate", 0), ("first_channels", 0), ("in_channels", 0), ("dropout", 1.0)],
)
def test_bad_argument_is_named(argument: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"{argument}.*{re.escape(str(value))}"):
        create_model("fc_densenet56", 2, **{argument: value})


def test_fusion_folds_no_batchnorm_since_each_precedes_its_convolution() -> None:
    model = create_model("fc_densenet56", 3, growth_rate=2, first_channels=4)
    norms = [name for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    fused = fuse_conv_bn(model)
    assert [name for name, m in fused.named_modules() if isinstance(m, nn.BatchNorm2d)] == norms
    assert len(norms) == 4 * 11 + 5  # a BatchNorm per dense layer and per transition down
