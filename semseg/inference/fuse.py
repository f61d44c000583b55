"""Folding BatchNorm into the convolution before it, for inference.

In eval mode BatchNorm2d is a per-channel affine map ``y = gamma * (x - mean) / sqrt(var +
eps) + beta`` with fixed statistics, so a Conv2d followed directly by it equals one Conv2d with
scaled weights and a shifted bias. Folding removes a pass over every activation map.

Two places say that a convolution feeds a BatchNorm directly: adjacency inside an
``nn.Sequential``, and a module's ``conv_bn_pairs`` attribute, a tuple of ``(conv attribute,
BatchNorm attribute)`` names for modules whose ``forward`` calls them in turn (ResNet's stem
and blocks declare theirs).
"""

from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def fuse_conv_bn(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode in which every Conv2d directly followed by a
    BatchNorm2d (with running statistics) is one Conv2d and the BatchNorm an ``nn.Identity``.

    The result computes the same function as ``model.eval()`` up to float rounding; it is for
    inference only (there are no BatchNorm statistics left to train). ``model`` is unchanged.
    """
    fused = copy.deepcopy(model).eval()
    for module in fused.modules():
        if isinstance(module, nn.Sequential):
            for i in range(len(module) - 1):
                if _foldable(module[i], module[i + 1]):
                    module[i] = fuse_conv_bn_eval(module[i], module[i + 1])
                    module[i + 1] = nn.Identity()
        for conv_name, norm_name in getattr(module, "conv_bn_pairs", ()):
            conv, norm = getattr(module, conv_name), getattr(module, norm_name)
            if _foldable(conv, norm):
                setattr(module, conv_name, fuse_conv_bn_eval(conv, norm))
                setattr(module, norm_name, nn.Identity())
    return fused


def _foldable(conv: nn.Module, norm: nn.Module) -> bool:
    return (
        isinstance(conv, nn.Conv2d)
        and isinstance(norm, nn.BatchNorm2d)
        and norm.running_mean is not None
    )
