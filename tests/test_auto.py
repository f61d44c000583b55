"""``auto`` backend and precision: candidates from CPU features, choice from a probe result
(injected here, so deterministic), the probe cache, and errors for what cannot run."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from semseg.hardware import CPU_FLAGS, Machine
from semseg.inference.auto import (
    COMPILE_WORTH_S,
    AutoModel,
    Probe,
    ProbeCache,
    candidate_engines,
    choose,
    compile_candidates,
    measure,
    softmax_after,
)
from semseg.inference.backends import Engine, ModelSource, TorchModel
from semseg.optional import MissingDependencyError

CPU = torch.device("cpu")


def machine(amx: bool, bf16: bool) -> Machine:
    flags = dict.fromkeys(CPU_FLAGS, True) | {"AMX-BF16": amx, "AMX-INT8": amx}
    flags["AVX-512 BF16"] = bf16
    name = "Xeon with AMX" if amx else ("EPYC" if bf16 else "old CPU")
    return Machine(name, flags, 2, 2, {"torch": torch.__version__}, "Linux")


AMX, ZEN4, NO_BF16 = machine(True, True), machine(False, True), machine(False, False)


def tiny_module() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)).eval()


def source(onnx: bool = False, int8: bool = False) -> ModelSource:
    def no_file() -> Path:
        raise AssertionError("the ONNX file is not needed here")

    return ModelSource("model.onnx" if onnx else "model.pt", "model:test",
                       None if onnx else tiny_module, no_file, int8)  # fmt: skip


def names(engines: list[Engine]) -> list[str]:
    return [str(e) for e in engines]


def test_candidates_follow_the_cpu_features():
    every = ["torch fp32", "torch bf16", "onnxruntime fp32", "openvino fp32", "openvino bf16"]
    assert names(candidate_engines(AMX, "auto", "auto", source(), CPU)) == every
    assert names(candidate_engines(ZEN4, "auto", "auto", source(), CPU)) == every
    assert names(candidate_engines(NO_BF16, "auto", "auto", source(), CPU)) == [
        "torch fp32", "onnxruntime fp32", "openvino fp32"]  # fmt: skip
    assert names(candidate_engines(AMX, "torch", "auto", source(), CPU)) == [
        "torch fp32", "torch bf16"]  # fmt: skip
    assert names(candidate_engines(AMX, "auto", "bf16", source(), CPU)) == [
        "torch bf16", "openvino bf16"]  # fmt: skip
    assert names(candidate_engines(AMX, "auto", "auto", source(onnx=True), CPU)) == [
        "onnxruntime fp32", "openvino fp32", "openvino bf16"]  # fmt: skip
    assert names(candidate_engines(AMX, "auto", "auto", source(True, int8=True), CPU)) == [
        "onnxruntime fp32", "openvino fp32"]  # fmt: skip
    cuda = torch.device("cuda")
    assert names(candidate_engines(NO_BF16, "auto", "fp32", source(), cuda)) == ["torch fp32"]


def test_a_backend_not_installed_is_skipped_by_auto_and_named_when_asked_for(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # makes `import openvino` fail
    assert names(candidate_engines(AMX, "auto", "fp32", source(), CPU)) == [
        "torch fp32", "onnxruntime fp32"]  # fmt: skip
    with pytest.raises(MissingDependencyError, match=r"pip install 'semseg\[openvino\]'"):
        candidate_engines(AMX, "openvino", "auto", source(), CPU)


@pytest.mark.parametrize(
    ("backend", "precision", "src", "message"),
    [
        ("torch", "auto", source(onnx=True), "runs PyTorch checkpoints"),
        ("onnxruntime", "bf16", source(), "use --precision fp32"),
        ("openvino", "bf16", source(True, int8=True), "an int8 file"),
        ("openvino", "bf16", source(), "has neither"),
        ("tensorrt", "auto", source(), "backend 'tensorrt' is not one of"),
        ("auto", "fp16", source(), "precision 'fp16' is not one of"),
        ("auto", "bf16", source(onnx=True, int8=True), "no engine runs"),
    ],
)
def test_what_cannot_run_is_an_error_that_says_why(backend, precision, src, message):
    cpu = NO_BF16 if message == "has neither" else AMX
    with pytest.raises(ValueError, match=message):
        candidate_engines(cpu, backend, precision, src, CPU)


ENGINES = [Engine("torch", "fp32"), Engine("torch", "bf16"), Engine("openvino", "bf16")]
PROBE = Probe(
    call_ms={"torch fp32": 20.0, "torch bf16": 18.0, "openvino bf16": 6.5},
    setup_s={"torch fp32": 0.01, "torch bf16": 0.01, "openvino bf16": 0.5},
)


def test_choice_is_the_least_total_time_for_the_images_at_hand():
    assert str(choose(ENGINES, PROBE)) == "openvino bf16"  # fastest call
    # One image: 0.5 s of OpenVINO compilation is not won back; 0.01 + 0.018 < 0.5 + 0.0065.
    assert str(choose(ENGINES, PROBE, images=1)) == "torch bf16"
    # 100 images: 0.5 + 0.65 s against 0.01 + 1.8 s.
    assert str(choose(ENGINES, PROBE, images=100)) == "openvino bf16"
    # Built by the probe a moment ago, OpenVINO has paid its compilation: 0.0065 < 0.028.
    assert str(choose(ENGINES, PROBE, images=1, built={"openvino bf16"})) == "openvino bf16"
    tie = Probe({"torch fp32": 5.0, "torch bf16": 5.0, "openvino bf16": 5.0})
    assert str(choose(ENGINES, tie)) == "torch fp32"  # ties go to the earlier engine


def test_compile_is_measured_only_for_long_jobs_and_chosen_only_when_it_pays():
    torch_only = ENGINES[:2]
    assert compile_candidates(torch_only, PROBE, None, CPU) == []
    short = int(COMPILE_WORTH_S / 0.018) - 1  # images that take < COMPILE_WORTH_S at 18 ms
    assert compile_candidates(torch_only, PROBE, short, CPU) == []
    compiled = compile_candidates(torch_only, PROBE, short + 2, CPU)
    assert names(compiled) == ["torch fp32 compiled", "torch bf16 compiled"]
    probe = PROBE.merged(
        Probe(
            {"torch fp32 compiled": 15.0, "torch bf16 compiled": 12.0},
            {"torch fp32 compiled": 60.0, "torch bf16 compiled": 60.0},
        )
    )
    # 60 s + 12 ms x n beats 18 ms x n from n = 10,000 images on.
    assert str(choose(torch_only + compiled, probe, images=9_000)) == "torch bf16"
    assert str(choose(torch_only + compiled, probe, images=11_000)) == "torch bf16 compiled"
    assert str(choose(torch_only + compiled, probe)) == "torch bf16"  # unknown count: no compile


def test_the_probe_times_the_work_after_each_call_too():
    """An engine that returns at once but leaves the cores busy (ONNX Runtime's spinning
    threads) slows the PyTorch softmax after it: the probe must see that time, so the engine
    whose call is slower but leaves the softmax fast is the faster one end to end."""

    def returns_at_once(images):
        return torch.ones(1, 2, 4, 4)  # ones: the softmax after it is slowed

    def takes_10_ms(images):
        time.sleep(0.010)
        return torch.zeros(1, 2, 4, 4)

    seen: list[float] = []

    def after(logits):
        seen.append(float(logits.sum()))
        if float(logits.sum()) > 0:
            time.sleep(0.030)
        return softmax_after(logits)

    builders = {"spins": lambda: returns_at_once, "steady": lambda: takes_10_ms}
    probe, _ = measure(builders, torch.zeros(1, 3, 4, 4), rounds=2, budget_s=10, after=after)
    assert probe.call_ms["spins"] >= 30 and 10 <= probe.call_ms["steady"] < 30
    assert len(seen) == 2 * (1 + 2)  # a warm-up and two timed calls each


def test_the_softmax_after_a_call_is_the_predictors_fp32_softmax():
    logits = torch.tensor([0.0, math.log(3.0)], dtype=torch.bfloat16).view(1, 2, 1, 1)
    probabilities = softmax_after(logits)
    assert probabilities.dtype == torch.float32
    assert torch.allclose(probabilities.flatten(), torch.tensor([0.25, 0.75]), atol=2e-3)


class FakeProbe:
    """Returns fixed timings (and stand-in models); counts its calls."""

    def __init__(self, call_ms: dict[str, float]) -> None:
        self.call_ms, self.calls = call_ms, 0

    def __call__(self, builders, images):
        self.calls += 1
        models = {name: (lambda x: torch.zeros(1, 1, 1, 1)) for name in builders}
        return Probe({n: self.call_ms[n] for n in builders}, dict.fromkeys(builders, 0.0)), models


def test_auto_model_is_deterministic_given_the_probe_and_caches_it(tmp_path):
    timings = {"torch fp32": 9.0, "torch bf16": 4.0}
    cache = ProbeCache(tmp_path / "probe.json")
    lines: list[str] = []
    images = torch.zeros(1, 3, 8, 8)
    first_probe = FakeProbe(timings)
    first = AutoModel(source(), "torch", "auto", cache=cache, machine=AMX, report=lines.append,
                      probe=first_probe)  # fmt: skip
    assert first.choice is None
    first(images)
    assert str(first.choice.engine) == "torch bf16" and not first.choice.cached
    assert first_probe.calls == 1
    assert lines[0].startswith("auto: measuring torch fp32, torch bf16 at 1x3x8x8")
    assert lines[-1] == "auto: torch bf16 (probe at 1x3x8x8: torch bf16 4.0 ms, torch fp32 9.0 ms)"

    # Same machine, model and shape: the cached timings decide, nothing is measured, and the
    # chosen engine is built for real.
    second_probe = FakeProbe({})
    second = AutoModel(source(), "torch", "auto", cache=cache, machine=AMX, report=lines.append,
                       probe=second_probe)  # fmt: skip
    logits = second(images)
    assert second_probe.calls == 0 and second.choice.cached
    assert str(second.choice.engine) == "torch bf16"
    assert logits.shape == (1, 4, 8, 8) and logits.dtype == torch.float32
    assert isinstance(second._model, TorchModel) and second._model.precision == "bf16"

    # Another input size is another probe.
    third_probe = FakeProbe({"torch fp32": 1.0, "torch bf16": 2.0})
    third = AutoModel(source(), "torch", "auto", cache=cache, machine=AMX, probe=third_probe)
    third(torch.zeros(1, 3, 16, 16))
    assert third_probe.calls == 1 and str(third.choice.engine) == "torch fp32"


def test_a_single_candidate_is_not_measured(tmp_path):
    probe = FakeProbe({})
    lines: list[str] = []
    model = AutoModel(source(), "torch", "auto", cache=ProbeCache(tmp_path / "p.json"),
                      machine=NO_BF16, report=lines.append, probe=probe)  # fmt: skip
    model(torch.zeros(1, 3, 8, 8))
    assert probe.calls == 0 and lines == ["auto: torch fp32 (the only candidate)"]
    assert not (tmp_path / "p.json").exists()


def test_an_unwritable_cache_is_not_an_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    probe = FakeProbe({"torch fp32": 1.0, "torch bf16": 2.0})
    cache = ProbeCache(blocker / "probe.json")
    model = AutoModel(source(), "torch", "auto", cache=cache, machine=AMX, probe=probe)
    model(torch.zeros(1, 3, 8, 8))
    assert str(model.choice.engine) == "torch fp32"
