"""Machine description: /proc/cpuinfo parsing, the PyTorch fallback, versions."""

from __future__ import annotations

import torch

from semseg.hardware import CPU_FLAGS, describe_machine, package_version, parse_cpuinfo

SAPPHIRE_RAPIDS = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8
"""
ZEN4 = """processor\t: 0
model name\t: AMD EPYC 9R14
flags\t\t: fpu avx2 avx512f avx512_vnni avx512_bf16
"""


def test_parse_cpuinfo_reads_the_first_processor():
    model, flags = parse_cpuinfo(SAPPHIRE_RAPIDS)
    assert model == "Intel(R) Xeon(R) Platinum 8480+"
    assert flags == {"fpu", "sse2", "avx2", "avx512f", "avx512_vnni", "avx512_bf16",
                     "amx_bf16", "amx_tile", "amx_int8"}  # fmt: skip
    assert parse_cpuinfo("") == ("", set())


def test_flags_of_an_amx_and_a_non_amx_cpu(tmp_path):
    (tmp_path / "intel").write_text(SAPPHIRE_RAPIDS)
    (tmp_path / "amd").write_text(ZEN4)
    intel = describe_machine(tmp_path / "intel")
    amd = describe_machine(tmp_path / "amd")
    assert set(intel.flags) == set(CPU_FLAGS)
    assert intel.flags == {"AVX2": True, "AVX-512": True, "AVX-512 BF16": True,
                           "AVX-512 VNNI": True, "AVX-VNNI": False, "AMX-BF16": True,
                           "AMX-INT8": True}  # fmt: skip
    assert intel.amx and intel.bf16_instructions
    assert amd.cpu_model == "AMD EPYC 9R14"
    assert not amd.amx and amd.bf16_instructions
    assert amd.flags["AVX-512 VNNI"] and not amd.flags["AMX-INT8"]
    assert intel.key != amd.key
    assert describe_machine(tmp_path / "intel").key == intel.key
    assert "AMX-BF16 yes" in intel.flag_summary() and "AMX-BF16 no" in amd.flag_summary()


def test_without_cpuinfo_the_flags_come_from_pytorch(tmp_path):
    machine = describe_machine(tmp_path / "missing")
    assert machine.flags["AVX2"] == torch.cpu._is_avx2_supported()
    assert machine.flags["AVX-512"] == torch.cpu._is_avx512_supported()
    assert machine.flags["AVX-512 BF16"] == torch.cpu._is_avx512_bf16_supported()
    assert machine.flags["AMX-BF16"] == torch.cpu._is_amx_tile_supported()
    assert machine.cpu_model  # platform's name, never empty


def test_versions_and_threads():
    machine = describe_machine()
    assert machine.versions["torch"] == torch.__version__
    assert set(machine.versions) == {"torch", "onnxruntime", "openvino", "nncf"}
    assert machine.threads == torch.get_num_threads()
    assert package_version("semseg-no-such-package") is None
    lines = machine.lines()
    assert lines[0].startswith("CPU: ") and "instruction sets: AVX2" in lines[1]
