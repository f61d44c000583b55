"""Folding BatchNorm into the convolution before it, for inference.

In eval mode BatchNorm2d is a per-channel affine map ``y = gamma * (x - mean) / sqrt(var +
eps) + beta`` with fixed statistics, so a Conv2d followed directly by it equals one Conv2d with
scaled weights and a shifted bias. Folding removes a pass over every activation map.
"""

from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def fuse_conv_bn(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode in which every Conv2d directly followed by a
    BatchNorm2d (with running statistics) inside an ``nn.Sequential`` is one Conv2d and the
    BatchNorm an ``nn.Identity``.

    The result computes the same function as ``model.eval()`` up to float rounding; it is for
    inference only (there are no BatchNorm statistics left to train). ``model`` is unchanged.
    """
    fused = copy.deepcopy(model).eval()
    for module in fused.modules():
        if not isinstance(module, nn.Sequential):
            continue
        for i in range(len(module) - 1):
            conv, norm = module[i], module[i + 1]
            foldable = isinstance(norm, nn.BatchNorm2d) and norm.running_mean is not None
            if isinstance(conv, nn.Conv2d) and foldable:
                module[i], module[i + 1] = fuse_conv_bn_eval(conv, norm), nn.Identity()
    return fused
