"""Number formats: float32, and bfloat16 autocast where the hardware has bf16 arithmetic.

bfloat16 keeps float32's exponent range with an 8-bit mantissa (about 3 significant
digits). Under :func:`autocast` the convolutions and matrix products run in bf16, while the
operations autocast keeps in float32 (softmax, losses, reductions) stay there; semseg takes
the softmax, the test-time-augmentation average, the losses and the metrics in float32 in
every case. On CPUs with AMX tiles bf16 convolutions ran 3-6x faster than fp32 (issue 13,
``benchmarks/results/speed.md``); on CPUs with AVX-512 BF16 but no AMX they were measured
no faster, and without either bf16 is emulated: 11-23x the fp32 time on an AVX2-only AMD
EPYC (Zen 2; ``benchmarks/results/speed_amd.md``).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Literal

import torch

Precision = Literal["fp32", "bf16"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "bf16")
PRECISION_CHOICES = ("auto", *PRECISIONS)


def check_precision(precision: str, choices: tuple[str, ...] = PRECISION_CHOICES) -> str:
    """``precision`` if it is one of ``choices``.

    Raises:
        ValueError: naming the value and the choices.
    """
    if precision not in choices:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(choices)}")
    return precision


def autocast(precision: Precision, device_type: str) -> AbstractContextManager:
    """The autocast context of ``precision`` on ``device_type`` (a no-op for fp32)."""
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bf16")
