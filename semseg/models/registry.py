"""Segmentation models by name: the table a recipe's ``model.name`` is looked up in.

Every model maps images ``(N, in_channels, H, W)`` float to logits ``(N, num_classes, H, W)``
at input resolution, for any ``H, W`` (see :mod:`semseg.models.contract` for what every model
exposes). A constructor's keyword arguments, plus ``input_scale`` (see :class:`InputScaled`),
are exactly the keys a recipe's ``model:`` section accepts; ``semseg models`` prints the table.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from semseg.models.deeplab import deeplabv3, deeplabv3plus
from semseg.models.encoder_decoder import encoder_decoder
from semseg.models.fc_densenet import fc_densenet56, fc_densenet103
from semseg.models.fcn import fcn8s, fcn16s, fcn32s
from semseg.models.fullres_fcn import fullres_fcn
from semseg.models.input_scaled import InputScaled
from semseg.models.lraspp import lraspp_mobilenet_v3_large
from semseg.models.mobile_unet import mobile_unet
from semseg.models.naive import naive
from semseg.models.patch_classifier import patch_classifier
from semseg.models.segnet import segnet, segnet_basic
from semseg.models.unet import unet

MODELS: dict[str, Callable[..., nn.Module]] = {
    "patch_classifier": patch_classifier,
    "fullres_fcn": fullres_fcn,
    "naive": naive,
    "fcn32s": fcn32s,
    "fcn16s": fcn16s,
    "fcn8s": fcn8s,
    "encoder_decoder": encoder_decoder,
    "segnet": segnet,
    "segnet_basic": segnet_basic,
    "unet": unet,
    "deeplabv3": deeplabv3,
    "deeplabv3plus": deeplabv3plus,
    "mobile_unet": mobile_unet,
    "lraspp_mobilenet_v3_large": lraspp_mobilenet_v3_large,
    "fc_densenet56": fc_densenet56,
    "fc_densenet103": fc_densenet103,
}


def register_model(name: str, constructor: Callable[..., nn.Module]) -> None:
    """Make a model of your own creatable by ``name`` (in recipes and ``create_model``).

    ``constructor`` takes ``num_classes`` and keyword arguments and returns a module that
    follows the model contract.

    Raises:
        ValueError: when ``name`` is taken.
    """
    if name in MODELS:
        raise ValueError(f"model name {name!r} is registered already")
    MODELS[name] = constructor


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


def _constructor(name: str) -> Callable[..., nn.Module]:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}") from None
