"""Folding BatchNorm into the convolution before it, and the activation (and a residual sum)
after it into the same oneDNN call, for inference.

In eval mode BatchNorm2d is a per-channel affine map ``y = gamma * (x - mean) / sqrt(var +
eps) + beta`` with fixed statistics, so a Conv2d followed directly by it equals one Conv2d with
scaled weights and a shifted bias. Folding removes a pass over every activation map.

Two places say that a convolution feeds a BatchNorm directly: adjacency inside an
``nn.Sequential``, and a module's ``conv_bn_pairs`` attribute, a tuple of ``(conv attribute,
BatchNorm attribute)`` names for modules whose ``forward`` calls them in turn (ResNet's stem
and blocks declare theirs).

On the CPU, PyTorch runs a convolution, then the ReLU after it, then a residual block's sum
as separate passes over the activation maps; oneDNN can apply the ReLU (or ReLU6, hardswish)
and the sum to each output value as it computes it. :func:`fuse_conv_activation` makes those
single calls (the operator ``torch.ops.mkldnn._convolution_pointwise`` that inductor's CPU
fusions use), in eager mode and with the same numbers.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from semseg.models.backbones.resnet import BasicBlock, Bottleneck

ONEDNN_ACTIVATIONS: dict[type[nn.Module], tuple[str, list[float]]] = {
    nn.ReLU: ("relu", []),
    nn.ReLU6: ("hardtanh", [0.0, 6.0]),
    nn.Hardswish: ("hardswish", []),
}
"""Activation module -> oneDNN post-op name and its scalars."""


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


def onednn_fusion_available(dtype: torch.dtype = torch.float32) -> bool:
    """Whether this PyTorch build and CPU run oneDNN's fused convolution operator on weights
    of ``dtype``: float32 wherever oneDNN is built in; bfloat16 only on CPUs whose oneDNN bf16
    path exists (AVX-512 BW/VL/DQ or AVX-NE-CONVERT; an AVX2-only CPU such as AMD's Zen 2
    has neither, and there the plain convolutions compute bf16 instead)."""
    if not (
        torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
    ):
        return False
    return dtype != torch.bfloat16 or torch.ops.mkldnn._is_mkldnn_bf16_supported()


class FusedConv2d(nn.Module):
    """A Conv2d, optionally plus a residual tensor, then optionally an activation, in one oneDNN
    call (CPU, inference).

    ``forward(x (N, C_in, H, W), residual (N, C_out, H', W') | None) -> (N, C_out, H', W')``:
    ``activation(conv(x) + residual)``, or ``activation(conv(x))`` without a residual. The
    inputs are cast to the weights' dtype, as autocast casts a convolution's inputs, so with
    bf16 weights it computes in bf16 (sum and activation before the one rounding of the
    output, where autocast rounds the convolution's output first).
    """

    def __init__(self, conv: nn.Conv2d, activation: nn.Module | None = None) -> None:
        super().__init__()
        if not _fusable_conv(conv):
            raise ValueError(f"cannot fuse {conv}: needs zero padding given as numbers")
        self.weight = conv.weight
        self.bias = conv.bias
        self.padding = list(conv.padding)
        self.stride = list(conv.stride)
        self.dilation = list(conv.dilation)
        self.groups = conv.groups
        self.attr, self.scalars = (
            ONEDNN_ACTIVATIONS[type(activation)] if activation else ("none", [])
        )

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        geometry = (self.padding, self.stride, self.dilation, self.groups)
        # channels-last: the layout oneDNN computes in (and the only one whose bf16 sum it
        # fuses); a no-op for the channels-last tensors TorchModel runs on
        x = x.to(self.weight.dtype, memory_format=torch.channels_last)
        if residual is None:
            return torch.ops.mkldnn._convolution_pointwise(
                x, self.weight, self.bias, *geometry, self.attr, self.scalars, ""
            )
        unary = None if self.attr == "none" else self.attr
        residual = residual.to(x.dtype, memory_format=torch.channels_last)
        return torch.ops.mkldnn._convolution_pointwise.binary(
            x, residual, self.weight, self.bias, *geometry, "add", None, unary, self.scalars, ""
        )

    def extra_repr(self) -> str:
        out_channels, in_per_group, *kernel = self.weight.shape
        return (
            f"{in_per_group * self.groups}, {out_channels}, kernel_size={tuple(kernel)}, "
            f"stride={tuple(self.stride)}, padding={tuple(self.padding)}, "
            f"dilation={tuple(self.dilation)}, groups={self.groups}, then {self.attr}"
        )


class FusedResidualBlock(nn.Module):
    """A ResNet :class:`BasicBlock` or :class:`Bottleneck` with folded BatchNorm as fused
    calls: every convolution with its ReLU, the last one with the shortcut sum and the ReLU.
    Same shapes as the block."""

    def __init__(self, block: BasicBlock | Bottleneck) -> None:
        super().__init__()
        convs = [getattr(block, conv) for conv, _ in block.conv_bn_pairs]
        self.convs = nn.ModuleList(FusedConv2d(conv, block.relu) for conv in convs)
        self.downsample = block.downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = x
        for conv in self.convs[:-1]:
            out = conv(out)
        return self.convs[-1](out, identity)


def _fusable_conv(conv: nn.Module) -> bool:
    return (
        type(conv) is nn.Conv2d
        and conv.padding_mode == "zeros"
        and not isinstance(conv.padding, str)
    )


def fuse_conv_activation(model: nn.Module) -> nn.Module:
    """Fuse, in place, the activations and residual sums of a BatchNorm-folded model (see
    :func:`fuse_conv_bn`) into its convolutions: in every ``nn.Sequential``, a Conv2d
    followed (past ``nn.Identity`` entries) by a ReLU, ReLU6 or Hardswish becomes one
    :class:`FusedConv2d`, as does each ``(conv, activation)`` attribute pair a module declares
    in ``conv_activation_pairs`` (ResNet's stem) once the BatchNorm between them is folded;
    every ResNet block whose BatchNorms are folded becomes a :class:`FusedResidualBlock`.
    For inference on the CPU (fp32, or bf16 with the convolutions' weights already bf16),
    not for training. Returns ``model``.

    Raises:
        RuntimeError: this PyTorch has no oneDNN, or this CPU no oneDNN path for the
            convolutions' dtype (:func:`onednn_fusion_available`).
    """
    dtypes = {m.weight.dtype for m in model.modules() if isinstance(m, nn.Conv2d)}
    for dtype in sorted(dtypes or {torch.float32}, key=str):
        if not onednn_fusion_available(dtype):
            raise RuntimeError(
                f"oneDNN's fused convolution does not run {dtype} weights with this PyTorch "
                "build on this CPU"
            )
    for name, module in list(model.named_modules()):
        if isinstance(module, (BasicBlock, Bottleneck)) and _folded(module):
            parent, _, attribute = name.rpartition(".")
            setattr(model.get_submodule(parent), attribute, FusedResidualBlock(module))
    for module in list(model.modules()):
        if isinstance(module, nn.Sequential):
            _fuse_sequential(module)
        norms = dict(getattr(module, "conv_bn_pairs", ()))
        for conv_name, activation_name in getattr(module, "conv_activation_pairs", ()):
            conv, activation = getattr(module, conv_name), getattr(module, activation_name)
            norm = getattr(module, norms[conv_name]) if conv_name in norms else nn.Identity()
            if (
                _fusable_conv(conv)
                and isinstance(norm, nn.Identity)
                and type(activation) in ONEDNN_ACTIVATIONS
            ):
                setattr(module, conv_name, FusedConv2d(conv, activation))
                setattr(module, activation_name, nn.Identity())
    return model


def _folded(block: BasicBlock | Bottleneck) -> bool:
    return all(
        isinstance(getattr(block, norm), nn.Identity) and _fusable_conv(getattr(block, conv))
        for conv, norm in block.conv_bn_pairs
    )


def _fuse_sequential(sequence: nn.Sequential) -> None:
    for i in range(len(sequence)):
        if not _fusable_conv(sequence[i]):
            continue
        j = i + 1
        while j < len(sequence) and isinstance(sequence[j], nn.Identity):
            j += 1
        if j < len(sequence) and type(sequence[j]) in ONEDNN_ACTIVATIONS:
            sequence[i] = FusedConv2d(sequence[i], sequence[j])
            sequence[j] = nn.Identity()
