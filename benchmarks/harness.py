"""One timing policy for the benchmarks: machine header, load watch, timing in turns with
paired ratios, and a Markdown writer.

Machines here are shared and differ between sessions (an AMD EPYC without AMX and an Intel
Xeon with AMX have both been seen), so

- every result file starts with :func:`machine_header`: CPU model, the instruction sets that
  decide what is fast (AVX2, AVX-512, AVX-512 BF16, VNNI, AMX), threads, versions, command;
- :class:`LoadWatch` records the load average before, during and after, and flags a busy host
  (other processes' load inflates absolute times);
- :func:`time_in_turns` calls the things compared once each per round, so load falls on all of
  them alike, and :func:`paired_ratio` is the median over rounds of A's time over B's in the
  same round: a ratio taken in one run, robust to load that slows whole rounds;
- times are reported as the median and the fastest call (load only ever adds time).
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from semseg.hardware import Machine, describe_machine


@dataclass
class LoadWatch:
    """1-minute load averages sampled over a benchmark run.

    A host is *busy* when the load from other processes, the largest sample less the
    threads this benchmark runs, exceeds half a CPU: then at least one core was shared for a
    good part of the minute and absolute times are inflated (ratios of one round hold better).
    """

    threads: int
    samples: list[tuple[str, float]] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    def __post_init__(self) -> None:
        self.sample("start")

    def sample(self, label: str) -> float:
        load = os.getloadavg()[0]
        self.samples.append((label, load))
        return load

    @property
    def before(self) -> float:
        return self.samples[0][1]

    @property
    def peak(self) -> float:
        return max(load for _, load in self.samples)

    def busy(self) -> bool:
        # At the start our own process has not run yet; later samples include its threads.
        others = max(self.before, self.peak - self.threads)
        return others > 0.5

    def summary(self) -> str:
        self.sample("end")
        usage = resource.getrusage(resource.RUSAGE_SELF)
        minutes = (time.perf_counter() - self.started) / 60
        verdict = (
            "**busy host**: other processes shared the CPUs, absolute times are inflated; "
            "compare ratios taken in one round"
            if self.busy()
            else "quiet host"
        )
        return (
            f"load average (1 min): {self.before:.2f} at the start, peak {self.peak:.2f}, "
            f"{self.samples[-1][1]:.2f} at the end ({verdict}); run took {minutes:.1f} min "
            f"wall, {(usage.ru_utime + usage.ru_stime) / 60:.1f} min CPU"
        )


def machine_header(title: str, threads: int, machine: Machine | None = None) -> list[str]:
    """The first lines of every result file: title, command, machine, flags, versions."""
    machine = machine or describe_machine()
    return [
        f"# {title}",
        "",
        f"- command: `{' '.join([Path(sys.executable).name, *sys.argv])}`",
        f"- machine: {machine.cpu_model}, {machine.cpus} logical CPUs, {machine.system}",
        f"- instruction sets: {machine.flag_summary()}",
        f"- threads: {threads} (torch.set_num_threads; OMP_NUM_THREADS="
        f"{os.environ.get('OMP_NUM_THREADS', 'unset')})",
        f"- versions: Python {platform.python_version()}, {machine.version_summary()}",
    ]


def time_in_turns(
    functions: dict[str, Callable[[], object]],
    warmup: int = 1,
    rounds: int = 10,
    budget_s: float | None = None,
    min_rounds: int = 3,
) -> dict[str, list[float]]:
    """Seconds per call of each function, each called once per round in order.

    Args:
        warmup: untimed calls of each first.
        rounds: at most this many rounds.
        budget_s: stop after the round in which this many seconds of rounds have passed
            (but not before ``min_rounds``).
    """
    for function in functions.values():
        for _ in range(warmup):
            function()
    times: dict[str, list[float]] = {name: [] for name in functions}
    started = time.perf_counter()
    for round_ in range(rounds):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
        spent = time.perf_counter() - started
        if budget_s is not None and round_ + 1 >= min_rounds and spent > budget_s:
            break
    return times


def rounds_for(seconds_per_round: float, budget_s: float, low: int = 3, high: int = 20) -> int:
    """Rounds that fit ``budget_s`` at ``seconds_per_round``, clipped to ``[low, high]``."""
    return min(high, max(low, round(budget_s / max(seconds_per_round, 1e-6))))


def paired_ratio(times: Sequence[float], baseline: Sequence[float]) -> float:
    """Median over rounds of ``times[r] / baseline[r]``: load that slows a whole round
    cancels out."""
    return statistics.median(t / b for t, b in zip(times, baseline, strict=True))


def milliseconds(times: Sequence[float]) -> str:
    """``median (fastest)`` in ms."""
    return f"{1000 * statistics.median(times):.1f} ({1000 * min(times):.1f})"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    """A Markdown table; columns after the first are right-aligned."""
    lines = [
        "| " + " | ".join(header) + " |",
        "| --- |" + " ---: |" * (len(header) - 1),
    ]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


class Report:
    """A Markdown result file built section by section; printed as it grows, so a long run
    shows progress, and written whole at the end."""

    def __init__(self, title: str, threads: int, machine: Machine | None = None) -> None:
        self.lines = machine_header(title, threads, machine)
        self._header_length = len(self.lines)
        self.load = LoadWatch(threads)
        print("\n".join(self.lines), flush=True)

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)
        print("\n".join(lines), flush=True)

    def section(self, title: str, *intro: str) -> None:
        self.load.sample(title)
        self.add("", f"## {title}", "", *intro)

    def table(self, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
        self.add("", *markdown_table(header, rows), "")

    def write(self, path: Path) -> None:
        lines = list(self.lines)
        lines.insert(self._header_length, f"- {self.load.summary()}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
        print(f"written to {path}", flush=True)
