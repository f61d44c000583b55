"""Segmentation models by name.

Every model maps images ``(N, in_channels, H, W)`` float to logits ``(N, num_classes, H, W)``
at input resolution, for any ``H, W`` (not only multiples of the output stride). Models built
on a backbone expose it as ``model.encoder`` so training can freeze and unfreeze it.

``MODELS`` is a flat name -> constructor table; ``semseg models`` prints it. A constructor's
keyword arguments, plus ``input_scale`` (see :class:`InputScaled`), are exactly the keys a
recipe's ``model:`` section accepts.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Make ``fn`` creatable by its function name."""
    if fn.__name__ in MODELS:
        raise ValueError(f"model name {fn.__name__!r} is registered twice")
    MODELS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(MODELS)


def model_arguments(name: str) -> dict[str, Any]:
    """Keyword arguments of model ``name`` with their defaults (``inspect.Parameter.empty``
    where required), including the generic ``input_scale``."""
    signature = inspect.signature(_constructor(name))
    return {p.name: p.default for p in signature.parameters.values()} | {"input_scale": 1.0}


def create_model(name: str, num_classes: int, input_scale: float = 1.0, **kwargs: Any) -> nn.Module:
    """Build model ``name`` with ``num_classes`` outputs.

    Args:
        input_scale: resolution the network works at, as a fraction of the input's; below 1
            the model is wrapped in :class:`InputScaled`.

    Raises:
        ValueError: naming an unknown model or an argument the model does not take.
    """
    constructor = _constructor(name)
    accepted = model_arguments(name)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        options = ", ".join(k for k in accepted if k != "num_classes")
        raise ValueError(
            f"model {name!r} has no argument(s) {', '.join(unknown)}; it accepts: {options}"
        )
    model = constructor(num_classes=num_classes, **kwargs)
    if input_scale == 1.0:
        return model
    return InputScaled(model, input_scale)


class InputScaled(nn.Module):
    """Runs ``model`` on the input resized by ``scale`` and resizes the logits back.

    (N, 3, H, W) -> bilinear resize to (floor(H*scale), floor(W*scale)) -> model -> logits
    bilinearly resized to (N, C, H, W). Training then computes the loss, and evaluation the
    scores, at the labels' full resolution while the network pays for ``scale**2`` of the
    pixels. The input resize is not antialiased, so the model exports to ONNX with exact
    parity (ONNX Runtime's antialiased Resize treats image borders differently from
    PyTorch's); at ``scale=0.5`` bilinear sampling falls exactly between pixels and equals a
    2x2 average.
    """

    def __init__(self, model: nn.Module, scale: float) -> None:
        super().__init__()
        if not 0.0 < scale <= 4.0:
            raise ValueError(f"input_scale must be in (0, 4], got {scale}")
        self.model = model
        self.scale = scale

    @property
    def encoder(self) -> nn.Module | None:
        return getattr(self.model, "encoder", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        small = F.interpolate(
            x, scale_factor=self.scale, mode="bilinear", align_corners=False,
            recompute_scale_factor=False,
        )  # fmt: skip
        return F.interpolate(self.model(small), size=size, mode="bilinear", align_corners=False)


def _constructor(name: str) -> Callable[..., nn.Module]:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}") from None


# Model families register themselves on import. One line per family module.
# --- model families ---
from semseg.models import encoder_decoder  # noqa: E402, F401
from semseg.models import unet  # noqa: E402, F401
from semseg.models import naive  # noqa: E402, F401
from semseg.models import fcn  # noqa: E402, F401
from semseg.models import segnet  # noqa: E402, F401
from semseg.models import mobile_unet  # noqa: E402, F401
from semseg.models import deeplab  # noqa: E402, F401
# --- end model families ---
