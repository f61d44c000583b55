"""Conv + BatchNorm folding for inference."""

from __future__ import annotations

import torch
from torch import nn

from semseg.inference.fuse import fuse_conv_bn
from semseg.models import create_model


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
