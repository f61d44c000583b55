"""Conv + BatchNorm folding for inference."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from semseg.inference import fuse
from semseg.inference.fuse import (
    FusedConv2d,
    FusedResidualBlock,
    fuse_conv_activation,
    fuse_conv_bn,
    onednn_fusion_available,
)
from semseg.models import create_model
from semseg.models.backbones.resnet import BasicBlock, Bottleneck


def _with_running_statistics(model: nn.Module) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and affine parameters."""
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            size = module.num_features
            module.running_mean.copy_(torch.randn(size, generator=generator))
            module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
            module.weight.data.copy_(torch.randn(size, generator=generator))
            module.bias.data.copy_(torch.randn(size, generator=generator))
    return model.eval()


def test_fused_unet_has_no_batch_norm_and_the_same_output():
    torch.manual_seed(0)
    model = _with_running_statistics(create_model("unet", 5, base_channels=4, depth=2))
    fused = fuse_conv_bn(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 10  # untouched
    images = torch.randn(2, 3, 20, 28)
    with torch.no_grad():
        torch.testing.assert_close(fused(images), model(images), rtol=1e-4, atol=1e-5)


def test_only_a_batch_norm_right_after_a_convolution_is_folded():
    block = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1))
    block = _with_running_statistics(block)
    fused = fuse_conv_bn(block)
    assert [type(m) for m in fused] == [nn.Conv2d, nn.ReLU, nn.BatchNorm2d, nn.Conv2d]
    norm_without_statistics = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False)
    )
    fused = fuse_conv_bn(norm_without_statistics)
    assert isinstance(fused[1], nn.BatchNorm2d)


# --- activation and residual fusion (oneDNN) ---------------------------------------------

needs_onednn = pytest.mark.skipif(
    not onednn_fusion_available(), reason="this PyTorch build has no oneDNN"
)


@needs_onednn
@pytest.mark.parametrize(
    "activation", [nn.ReLU(inplace=True), nn.ReLU6(), nn.Hardswish()], ids=type
)
def test_conv_and_activation_become_one_call_with_the_same_output(activation):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, 3, padding=2, dilation=2, stride=2)
    sequence = nn.Sequential(conv, nn.Identity(), activation).eval()
    images = 8 * torch.randn(2, 3, 11, 13)
    with torch.no_grad():
        before_activation = conv(images)
        expected = copy.deepcopy(sequence)(images)
        fused = fuse_conv_activation(sequence)
        assert [type(m) for m in fused] == [FusedConv2d, nn.Identity, nn.Identity]
        torch.testing.assert_close(fused(images), expected, rtol=1e-5, atol=1e-5)
    assert (before_activation < -0.5).any()  # the activation changed values: it was applied
    if isinstance(activation, nn.ReLU6):
        assert (before_activation > 6).any() and (expected == 6).any()


@needs_onednn
def test_residual_sum_is_fused_into_the_last_convolution():
    # against the block's own forward and a hand-written one
    torch.manual_seed(0)
    block = _with_running_statistics(BasicBlock(4, 8, stride=2, dilations=(1, 1)))
    folded = fuse_conv_bn(block)
    images = torch.randn(2, 4, 9, 10)
    with torch.no_grad():
        expected = block(images)
        by_hand = torch.relu(
            folded.conv2(torch.relu(folded.conv1(images))) + folded.downsample(images)
        )
        wrapper = nn.Sequential(folded)
        fuse_conv_activation(wrapper)
        assert isinstance(wrapper[0], FusedResidualBlock)
        torch.testing.assert_close(wrapper(images), expected, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(wrapper(images), by_hand, rtol=1e-5, atol=1e-5)


@needs_onednn
def test_unfolded_blocks_and_other_layers_are_left_alone():
    block = Bottleneck(8, 2, stride=1, dilations=(1, 1)).eval()  # BatchNorm not folded
    sequence = nn.Sequential(
        block, nn.Conv2d(8, 8, 3, padding="same"), nn.ReLU(), nn.Conv2d(8, 8, 1), nn.Sigmoid()
    )
    fuse_conv_activation(sequence)
    assert [type(m) for m in sequence] == [Bottleneck, nn.Conv2d, nn.ReLU, nn.Conv2d, nn.Sigmoid]


def test_fused_conv_refuses_a_convolution_it_cannot_run():
    with pytest.raises(ValueError, match="zero padding"):
        FusedConv2d(nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"))


@needs_onednn
def test_declared_stem_pair_is_fused_once_its_batch_norm_is_folded():
    torch.manual_seed(0)
    resnet = _with_running_statistics(create_model("deeplabv3plus", 3, backbone="resnet18"))
    images = torch.randn(1, 3, 32, 48)
    unfolded = fuse_conv_activation(copy.deepcopy(resnet)).encoder
    assert isinstance(unfolded.conv1, nn.Conv2d)  # BatchNorm still between conv and ReLU
    folded = fuse_conv_bn(resnet)
    fused = fuse_conv_activation(copy.deepcopy(folded))
    stem = fused.encoder
    assert isinstance(stem.conv1, FusedConv2d) and isinstance(stem.relu, nn.Identity)
    with torch.no_grad():
        torch.testing.assert_close(fused(images), resnet(images), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(fused(images), folded(images), rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(
    not onednn_fusion_available(torch.bfloat16), reason="no oneDNN bf16 path on this CPU"
)
def test_bf16_weights_make_the_fused_call_compute_as_autocast_does():
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 8, 3, padding=1).eval()
    images, residual = torch.randn(2, 8, 10, 12), torch.randn(2, 8, 10, 12)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = torch.relu(conv(images) + residual)  # bf16 conv, then the sum in float32
    fused = FusedConv2d(copy.deepcopy(conv).to(torch.bfloat16), nn.ReLU())
    with torch.no_grad():
        out = fused(images, residual)  # float32 inputs: cast as autocast casts them
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), expected.float(), rtol=2e-2, atol=2e-2)


def test_fusion_refuses_bf16_weights_where_this_cpu_has_no_onednn_bf16_path(monkeypatch):
    """An AVX2-only CPU (AMD Zen 2) runs bf16 convolutions but not oneDNN's fused bf16 call;
    fusing there must fail at once with a message, not at the first image."""
    monkeypatch.setattr(fuse, "onednn_fusion_available", lambda dtype: dtype == torch.float32)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()).eval()
    fuse.fuse_conv_activation(model)  # float32 weights fuse
    assert isinstance(model[0], FusedConv2d)
    bf16 = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()).eval().to(torch.bfloat16)
    with pytest.raises(RuntimeError, match=r"torch\.bfloat16 weights"):
        fuse.fuse_conv_activation(bf16)
    assert isinstance(bf16[0], nn.Conv2d)  # left as it was
