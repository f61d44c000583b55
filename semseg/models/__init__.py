"""Segmentation models by name.

Every model maps images ``(N, in_channels, H, W)`` float to logits ``(N, num_classes, H, W)``
at input resolution, for any ``H, W`` (not only multiples of the output stride). Models built
on a backbone expose it as ``model.encoder`` so training can freeze and unfreeze it.

``MODELS`` is a flat name -> constructor table; ``semseg models`` prints it. A constructor's
keyword arguments are exactly the keys a recipe's ``model:`` section accepts.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

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
    where required)."""
    signature = inspect.signature(_constructor(name))
    return {p.name: p.default for p in signature.parameters.values()}


def create_model(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
    """Build model ``name`` with ``num_classes`` outputs.

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
    return constructor(num_classes=num_classes, **kwargs)


def _constructor(name: str) -> Callable[..., nn.Module]:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}") from None


# Model families register themselves on import. One line per family module.
# --- model families ---
# --- end model families ---
