"""What this machine is: CPU model, the instruction sets that decide what runs fast, threads,
and the versions of the inference runtimes.

The flags are read from ``/proc/cpuinfo`` on Linux; elsewhere from PyTorch's own CPU feature
detection (``torch.cpu``), which knows AVX2, AVX-512, AVX-512 BF16, VNNI and AMX too. AMX
(Advanced Matrix Extensions, Intel Sapphire Rapids and later) runs bfloat16 and int8 matrix
products in tiles, several times faster than AVX-512 fp32; AVX-512 BF16 without AMX (e.g.
AMD Zen 4) has bfloat16 dot products but was measured no faster than fp32 for convolutions.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
from dataclasses import dataclass
from pathlib import Path

import torch

CPU_FLAGS = {
    "AVX2": "avx2",
    "AVX-512": "avx512f",
    "AVX-512 BF16": "avx512_bf16",
    "AVX-512 VNNI": "avx512_vnni",
    "AVX-VNNI": "avx_vnni",
    "AMX-BF16": "amx_bf16",
    "AMX-INT8": "amx_int8",
}
"""Display name -> the flag's name in ``/proc/cpuinfo``."""

RUNTIMES = ("torch", "onnxruntime", "openvino", "nncf")
"""Packages whose versions :func:`describe_machine` reports (None when not installed)."""


@dataclass(frozen=True)
class Machine:
    """The CPU and runtimes inference runs on.

    Attributes:
        cpu_model: the CPU's model name (``Intel(R) Xeon(R) Platinum 8480+``).
        flags: display name (a key of :data:`CPU_FLAGS`) -> whether the CPU has it.
        cpus: logical CPUs of the machine (``os.cpu_count()``).
        threads: PyTorch's intra-op threads in this process.
        versions: package (of :data:`RUNTIMES`) -> version, None when not installed.
        system: operating system and release.
    """

    cpu_model: str
    flags: dict[str, bool]
    cpus: int
    threads: int
    versions: dict[str, str | None]
    system: str

    @property
    def amx(self) -> bool:
        """AMX bfloat16 tiles: where bf16 inference and training are much faster than fp32."""
        return self.flags.get("AMX-BF16", False)

    @property
    def bf16_instructions(self) -> bool:
        """Any bfloat16 arithmetic in hardware (AVX-512 BF16 or AMX); without it bf16 is
        emulated and slower than fp32."""
        return self.amx or self.flags.get("AVX-512 BF16", False)

    @property
    def openvino_int8(self) -> bool:
        """OpenVINO's int8 kernels were measured correct on this kind of CPU: AMX-INT8 or
        AVX-VNNI (the Intel Xeon seen here; an NNCF int8 model kept 99.3% of fp32's labels).
        OpenVINO 2026.4 ran an NNCF int8 U-Net to 48% of fp32's labels on two AMD EPYCs, an
        AVX2-only Zen 2 and a Zen 4 with AVX-512 VNNI, where ONNX Runtime ran the same file to
        99% (7-bit weights, NNCF's overflow fix, did not help); so AVX-512 VNNI alone is not
        taken as enough."""
        return any(self.flags.get(name, False) for name in ("AVX-VNNI", "AMX-INT8"))

    @property
    def key(self) -> str:
        """A short hash of the CPU model and flags: machines with equal keys run alike."""
        present = ",".join(name for name, has in self.flags.items() if has)
        return hashlib.sha256(f"{self.cpu_model}|{present}".encode()).hexdigest()[:16]

    def flag_summary(self) -> str:
        """``AVX2 yes, AVX-512 yes, ..., AMX-INT8 no``."""
        return ", ".join(f"{name} {'yes' if has else 'no'}" for name, has in self.flags.items())

    def version_summary(self) -> str:
        """``torch 2.13.0, onnxruntime 1.32.0, openvino not installed, ...``."""
        return ", ".join(
            f"{name} {version or 'not installed'}" for name, version in self.versions.items()
        )

    def lines(self) -> list[str]:
        """A human-readable description, one fact a line."""
        return [
            f"CPU: {self.cpu_model} ({self.cpus} logical CPUs, {self.system})",
            f"instruction sets: {self.flag_summary()}",
            f"threads: {self.threads} (torch.get_num_threads())",
            f"versions: Python {platform.python_version()}, {self.version_summary()}",
        ]


def parse_cpuinfo(text: str) -> tuple[str, set[str]]:
    """(model name, flags) of the first processor listed in ``/proc/cpuinfo`` text; the model
    name is ``""`` and the flags empty when the text has none."""
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return model, flags


def _flags_from_torch() -> dict[str, bool]:
    """The flags PyTorch's CPU detection knows (used off Linux): all but AVX-VNNI, and AMX
    as one (tile support, which every AMX CPU so far has with both BF16 and INT8)."""
    cpu = torch.cpu
    amx = cpu._is_amx_tile_supported()
    return {
        "AVX2": cpu._is_avx2_supported(),
        "AVX-512": cpu._is_avx512_supported(),
        "AVX-512 BF16": cpu._is_avx512_bf16_supported(),
        "AVX-512 VNNI": cpu._is_vnni_supported(),
        "AMX-BF16": amx,
        "AMX-INT8": amx,
    }


def package_version(name: str) -> str | None:
    """The installed version of distribution ``name``, None when not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def describe_machine(cpuinfo: str | Path = "/proc/cpuinfo") -> Machine:
    """This machine, with flags from ``cpuinfo`` when that file exists, else from PyTorch."""
    path = Path(cpuinfo)
    model, names = parse_cpuinfo(path.read_text()) if path.is_file() else ("", set())
    if names:
        flags = {display: flag in names for display, flag in CPU_FLAGS.items()}
    else:
        flags = _flags_from_torch()
    return Machine(
        cpu_model=model or platform.processor() or platform.machine() or "unknown CPU",
        flags=flags,
        cpus=os.cpu_count() or 1,
        threads=torch.get_num_threads(),
        versions={"torch": torch.__version__} | {n: package_version(n) for n in RUNTIMES[1:]},
        system=f"{platform.system()} {platform.release()}",
    )
