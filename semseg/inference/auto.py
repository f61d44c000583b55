"""``--backend auto`` and ``--precision auto``: the fastest engine for a model on this machine,
chosen by measurement.

1. **Candidates** (:func:`candidate_engines`, from the CPU's features and what is installed):
   every :class:`~semseg.inference.backends.Engine` the request allows. bf16 is a candidate
   only on CPUs with bf16 arithmetic (AVX-512 BF16 or AMX); ONNX Runtime and OpenVINO only
   where installed and on the CPU (OpenVINO for an int8 file only with AMX-INT8 or
   AVX-VNNI); torch only for checkpoints.
2. **Probe** (:func:`measure`): on the first batch the model is given, each candidate is
   built and run on that batch in turns: one warm-up call, then up to :data:`PROBE_ROUNDS`
   timed calls, stopping once :data:`PROBE_BUDGET_S` have passed after the first round. A
   timed call is the engine's call and the PyTorch softmax over its output that the
   predictor computes next: an engine whose worker threads keep the cores busy after
   returning (ONNX Runtime's spin) slows that softmax, and its time shows it. A candidate's
   time is its fastest call (load from other processes only adds time); its setup is the
   time to build it plus what its first call took beyond that.
3. **Choice** (:func:`choose`): the least total time for the images at hand, setup plus
   images x time per call; with the number of images unknown, the fastest call. Ties go to
   the earlier candidate. Given the probe's result, the choice is deterministic.

Probe results are cached (``cache_dir()/auto-probe.json``) per machine (CPU model and
flags), model (architecture, or the ONNX file's hash), input shape, threads and device: a
later run on the same machine and model measures nothing. The first run of a model measures
for a few seconds (about 1 s for ``mobile_unet`` at 360x480, of the order of 10 s for the
largest models); only the chosen engine is kept.

``torch.compile`` costs about a minute of compilation per input shape on 2 cores, so
measuring it is itself expensive: it becomes a candidate only when the number of images is
known and would take at least :data:`COMPILE_WORTH_S` at the best uncompiled speed, and is
chosen only when its compilation plus its calls take less time than the best alternative.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from semseg.cache import cache_dir
from semseg.hardware import Machine, describe_machine
from semseg.inference.backends import (
    BACKEND_PACKAGES,
    BACKENDS,
    Engine,
    ModelSource,
    backend_installed,
    build_engine,
    check_backend,
)
from semseg.inference.precision import PRECISIONS, check_precision
from semseg.optional import require

PROBE_ROUNDS = 3
PROBE_BUDGET_S = 3.0
COMPILE_WORTH_S = 600.0
"""Only a job this long (at the best uncompiled speed) measures ``torch.compile``."""
PROBE_VERSION = 3
"""Part of the cache key, so that old measurements are not reused: version 1 timed the
engine's call without the softmax after it; version 2 timed ONNX Runtime with spinning
workers."""

Model = Callable[[torch.Tensor], torch.Tensor]
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Probe:
    """Measured engines: ``str(engine)`` -> fastest call in ms, and -> setup in s."""

    call_ms: dict[str, float] = field(default_factory=dict)
    setup_s: dict[str, float] = field(default_factory=dict)

    def merged(self, other: Probe) -> Probe:
        return Probe(self.call_ms | other.call_ms, self.setup_s | other.setup_s)

    def summary(self) -> str:
        """``openvino bf16 6.5 ms, torch fp32 20.8 ms`` (fastest first)."""
        ranked = sorted(self.call_ms.items(), key=lambda item: item[1])
        return ", ".join(f"{name} {ms:.1f} ms" for name, ms in ranked)


@dataclass(frozen=True)
class Choice:
    """What ``auto`` chose, and from what.

    Attributes:
        engine: the chosen engine.
        shape: the input shape it was measured at.
        probe: the measurements it was chosen from.
        cached: the measurements came from the cache.
        images: the number of images the choice was made for (None: unknown).
    """

    engine: Engine
    shape: tuple[int, ...]
    probe: Probe
    cached: bool
    images: int | None

    def describe(self) -> str:
        how = "cached probe" if self.cached else "probe"
        shape = "x".join(str(v) for v in self.shape)
        jobs = f", for {self.images} images" if self.images is not None else ""
        if not self.probe.call_ms:
            return f"auto: {self.engine} (the only candidate)"
        return f"auto: {self.engine} ({how} at {shape}{jobs}: {self.probe.summary()})"


def candidate_engines(
    machine: Machine,
    backend: str,
    precision: str,
    source: ModelSource,
    device: torch.device,
) -> list[Engine]:
    """The engines ``--backend backend --precision precision`` may run ``source`` on, in
    order of preference on ties (deterministic given the arguments).

    Raises:
        ValueError: an explicit backend or precision that cannot run this model here (torch
            for an ONNX file, ONNX Runtime with bf16, OpenVINO bf16 without bf16 arithmetic
            or on an int8 file, OpenVINO on an int8 file without AMX-INT8 or AVX-VNNI, ONNX
            Runtime or OpenVINO on a GPU).
        MissingDependencyError: an explicit backend that is not installed.
    """
    check_backend(backend)
    check_precision(precision)
    backends = BACKENDS if backend == "auto" else (backend,)
    engines = []
    for name in backends:
        explicit = backend != "auto"
        if name == "torch" and source.module is None:
            if explicit:
                raise ValueError(
                    f"{source.name}: --backend torch runs PyTorch checkpoints (.pt), not ONNX "
                    "files; use --backend onnxruntime or openvino"
                )
            continue
        if name != "torch":
            if device.type != "cpu":
                if explicit:
                    raise ValueError(f"--backend {name} runs on the CPU; got --device {device}")
                continue
            if not backend_installed(name):
                if explicit:
                    package, extra = BACKEND_PACKAGES[name]
                    require(package, f"--backend {name}", extra)
                continue
        for chosen in _precisions(name, precision, machine, source, device, explicit):
            engines.append(Engine(name, chosen))
    if not engines:
        raise ValueError(
            f"{source.name}: no engine runs --backend {backend} --precision {precision} here"
        )
    return engines


def _precisions(
    backend: str,
    precision: str,
    machine: Machine,
    source: ModelSource,
    device: torch.device,
    explicit_backend: bool,
) -> list[str]:
    """The precisions ``backend`` is a candidate at."""
    bf16_hardware = machine.bf16_instructions if device.type == "cpu" else True
    if precision == "auto":
        wanted = [p for p in PRECISIONS if p == "fp32" or bf16_hardware]
    else:
        wanted = [precision]
    if backend == "openvino" and source.int8 and not machine.openvino_int8:
        if explicit_backend:
            raise ValueError(
                f"{source.name}: OpenVINO computed wrong int8 results on CPUs without "
                f"AMX-INT8 or AVX-VNNI, which {machine.cpu_model} lacks: use --backend onnxruntime"
            )
        return []
    if backend == "onnxruntime" or (backend == "openvino" and source.int8):
        if wanted == ["bf16"] and explicit_backend:
            what = "an int8 file" if backend == "openvino" else "ONNX Runtime"
            raise ValueError(
                f"{source.name}: {what} runs in fp32 (int8 layers in int8); use --precision fp32"
            )
        return [p for p in wanted if p == "fp32"]
    if backend == "openvino" and "bf16" in wanted and not machine.bf16_instructions:
        if explicit_backend:
            raise ValueError(
                f"OpenVINO runs bf16 only on CPUs with AVX-512 BF16 or AMX; "
                f"{machine.cpu_model} has neither: use --precision fp32"
            )
        return [p for p in wanted if p == "fp32"]
    return wanted


def choose(
    engines: list[Engine],
    probe: Probe,
    images: int | None = None,
    built: Collection[str] = (),
) -> Engine:
    """The engine of least total time: ``setup + images x call`` for a known number of
    images, else the fastest call; ties go to the earlier engine. The engines named in
    ``built`` (``str(engine)``: built by the probe just now) have paid their setup. Every
    engine must have been measured (compiled engines are compared only for a known number of
    images)."""

    def cost(engine: Engine) -> float:
        call_s = probe.call_ms[str(engine)] / 1000
        if images is None:
            return call_s
        setup_s = 0.0 if str(engine) in built else probe.setup_s.get(str(engine), 0.0)
        return setup_s + images * call_s

    if images is None:
        engines = [engine for engine in engines if not engine.compiled]
    return min(engines, key=cost)


def compile_candidates(
    engines: list[Engine], probe: Probe, images: int | None, device: torch.device
) -> list[Engine]:
    """Compiled torch engines worth measuring: only for a CPU job of ``images`` images that
    takes at least :data:`COMPILE_WORTH_S` at the best uncompiled speed."""
    if images is None or device.type != "cpu":
        return []
    best_s = images * min(probe.call_ms[str(e)] for e in engines) / 1000
    if best_s < COMPILE_WORTH_S:
        return []
    return [Engine("torch", e.precision, compiled=True) for e in engines if e.backend == "torch"]


def softmax_after(logits: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) logits -> fp32 probabilities: what the predictor computes after each
    engine call, timed with it by :func:`measure`."""
    return logits.float().softmax(1)


def measure(
    builders: dict[str, Callable[[], Model]],
    images: torch.Tensor,
    rounds: int = PROBE_ROUNDS,
    budget_s: float = PROBE_BUDGET_S,
    after: Callable[[torch.Tensor], Any] = softmax_after,
) -> tuple[Probe, dict[str, Model]]:
    """Build each engine and time it on ``images`` in turns, each call followed by ``after``
    on its output (timed with it); returns the :class:`Probe` and the built models."""
    built: dict[str, Model] = {}
    setup: dict[str, float] = {}
    for name, build in builders.items():
        start = time.perf_counter()
        built[name] = build()
        after(built[name](images))
        setup[name] = time.perf_counter() - start
    times: dict[str, list[float]] = {name: [] for name in built}
    started = time.perf_counter()
    for _ in range(rounds):
        for name, model in built.items():
            start = time.perf_counter()
            after(model(images))
            times[name].append(time.perf_counter() - start)
        if time.perf_counter() - started > budget_s:
            break
    call_s = {name: min(values) for name, values in times.items()}
    probe = Probe(
        {name: 1000 * seconds for name, seconds in call_s.items()},
        {name: max(setup[name] - call_s[name], 0.0) for name in built},
    )
    return probe, built


class ProbeCache:
    """Probe results in a JSON file, keyed by machine, model, shape, threads and device."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or cache_dir() / "auto-probe.json"

    @staticmethod
    def key(
        machine: Machine, source: ModelSource, shape: tuple[int, ...], threads: int, device: str
    ) -> str:
        shape_text = "x".join(str(v) for v in shape)
        return (
            f"probe={PROBE_VERSION}|{machine.key}|{source.key}|{shape_text}|threads={threads}|"
            f"{device}"
        )

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, key: str) -> Probe:
        entry = self._read().get(key) or {}
        return Probe(dict(entry.get("call_ms", {})), dict(entry.get("setup_s", {})))

    def put(self, key: str, probe: Probe) -> None:
        """Store ``probe`` under ``key`` (atomic rename; a cache that cannot be written is
        skipped with a log line, never an error)."""
        data = self._read()
        data[key] = {"call_ms": probe.call_ms, "setup_s": probe.setup_s}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
            with os.fdopen(handle, "w") as file:
                json.dump(data, file, indent=1, sort_keys=True)
            os.replace(temporary, self.path)
        except OSError as error:
            logger.warning("auto: cannot write the probe cache %s (%s)", self.path, error)


class AutoModel:
    """A model that chooses its engine on its first call, then runs on it.

    Args:
        source: what the model can be run from.
        backend, precision: ``"auto"`` or a fixed value (see :func:`candidate_engines`).
        device: torch device (ONNX Runtime and OpenVINO run on the CPU).
        threads: ONNX Runtime's and OpenVINO's threads (the probe key uses PyTorch's when
            None).
        images: how many images will be run (the choice counts setup time against it), None
            when unknown.
        report: called with one line saying what was chosen (default: the log at INFO).
        cache: where probe results are kept (default: :class:`ProbeCache` in the cache dir).
        machine: the CPU (default: this one).
        probe: measures engines (default :func:`measure`; tests inject their own).

    Attributes:
        choice: the :class:`Choice`, None before the first call.

    Raises:
        ValueError, MissingDependencyError: as :func:`candidate_engines`, at construction.
    """

    def __init__(
        self,
        source: ModelSource,
        backend: str = "auto",
        precision: str = "auto",
        device: str | torch.device = "cpu",
        threads: int | None = None,
        images: int | None = None,
        report: Callable[[str], None] | None = None,
        cache: ProbeCache | None = None,
        machine: Machine | None = None,
        probe: Callable[..., tuple[Probe, dict[str, Model]]] = measure,
    ) -> None:
        self.source = source
        self.device = torch.device(device)
        self.threads = threads
        self.images = images
        self.machine = machine or describe_machine()
        self.engines = candidate_engines(self.machine, backend, precision, source, self.device)
        self.report = report or logger.info
        self.cache = cache or ProbeCache()
        self._probe = probe
        self.choice: Choice | None = None
        self._model: Model | None = None

    def _build(self, engine: Engine) -> Model:
        return build_engine(self.source, engine, self.device, self.threads, self.machine)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self._model is None:
            self._model, self.choice = self._resolve(images)
            self.report(self.choice.describe())
        return self._model(images)

    def _resolve(self, images: torch.Tensor) -> tuple[Model, Choice]:
        shape = tuple(images.shape)
        if len(self.engines) == 1:
            engine = self.engines[0]
            return self._build(engine), Choice(engine, shape, Probe(), False, self.images)
        threads = self.threads or torch.get_num_threads()
        key = ProbeCache.key(self.machine, self.source, shape, threads, str(self.device))
        probe = self.cache.get(key)
        built: dict[str, Model] = {}
        engines = list(self.engines)
        for round_ in range(2):  # the uncompiled engines, then compiled ones if worthwhile
            missing = [e for e in engines if str(e) not in probe.call_ms]
            if missing:
                self.report(
                    f"auto: measuring {', '.join(map(str, missing))} at "
                    f"{'x'.join(map(str, shape))} (once per machine, model and input size; "
                    f"cached in {self.cache.path})"
                )
                measured, models = self._probe(
                    {str(e): (lambda e=e: self._build(e)) for e in missing}, images
                )
                probe = probe.merged(measured)
                built |= models
                self.cache.put(key, probe)
            if round_ == 0:
                engines += compile_candidates(engines, probe, self.images, self.device)
        engine = choose(engines, probe, self.images, built)
        model = built[str(engine)] if str(engine) in built else self._build(engine)
        return model, Choice(engine, shape, probe, not built, self.images)
