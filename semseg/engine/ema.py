"""Exponential moving average of a model's weights (Polyak averaging), kept beside training.

After every optimisation step each floating-point parameter of the copy moves towards the
trained model's::

    ema = decay_t * ema + (1 - decay_t) * weight,   decay_t = min(decay, (1 + t) / (10 + t))

``t`` the number of updates before this one. With ``warmup`` the early ``decay_t`` is smaller
(TensorFlow's ``ExponentialMovingAverage`` with ``num_updates``), so the random initial
weights are forgotten within a short schedule: at decay 0.999 without it they would still
weigh ``0.999 ** 2000 = 13.5 %`` after 2000 steps. Buffers (BatchNorm running statistics and
counters) are copied, not averaged: they describe the activations of the current weights.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class WeightEma:
    """An averaged copy of ``model`` (in eval mode, no gradients), updated by :meth:`update`.

    Args:
        model: the model being trained; copied once here.
        decay: the averaging factor's ceiling, in [0, 1).
        warmup: ramp the factor up as ``(1 + t) / (10 + t)`` while that is below ``decay``.
    """

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True) -> None:
        if not 0 <= decay < 1:
            raise ValueError(f"train.ema.decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.updates = 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def decay_at(self, updates: int) -> float:
        """The factor of the update that follows ``updates`` earlier ones."""
        return min(self.decay, (1 + updates) / (10 + updates)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Average ``model``'s current parameters in and copy its buffers (call after each
        optimiser step)."""
        decay = self.decay_at(self.updates)
        averaged = dict(self.model.named_parameters())
        for name, parameter in model.named_parameters():
            if parameter.dtype.is_floating_point:
                averaged[name].mul_(decay).add_(parameter.detach(), alpha=1 - decay)
            else:
                averaged[name].copy_(parameter)
        kept = dict(self.model.named_buffers())
        for name, buffer in model.named_buffers():
            kept[name].copy_(buffer)
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        """``{"state_dict": averaged weights and buffers, "updates": count}`` for a checkpoint."""
        return {"state_dict": self.model.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.model.load_state_dict(state["state_dict"])
        self.updates = int(state["updates"])
