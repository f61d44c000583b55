"""Load on ``semseg serve`` over loopback: throughput, latency and status counts at 1, 8 and 50
concurrent clients, micro-batching on and off, JSON against the palette PNG, and the server's
resident memory before, during and after a soak.

    python benchmarks/serve_load.py --checkpoint runs/camvid/best.pt \\
        --soak-checkpoint runs/demo/best.pt

Each server is a ``semseg serve`` process on 127.0.0.1 (a free port), driven by a bounded
asyncio client on httpx: every client sends one request at a time, a run stops after
``--requests`` responses or ``--seconds``, whichever comes first, and a client that gets 503
waits its ``Retry-After`` before the next request (as a well-behaved client does). Latency is
the client's, from sending the request to reading the whole response. The load generator runs
on the same machine as the server and takes CPU from it. Results go to
``benchmarks/results/serve_load.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image

from semseg.data.io import write_index_png
from semseg.data.synthetic import render_scene

REPO = Path(__file__).resolve().parents[1]
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile")


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def rss_mib(pid: int) -> float:
    """Resident memory of a process (VmRSS), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


@contextlib.contextmanager
def serving(checkpoint: Path, *options: str) -> Iterator[tuple[str, int]]:
    """``semseg serve --checkpoint CHECKPOINT OPTIONS`` on a free loopback port; yields its URL
    and process id once ``/readyz`` answers 200."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "semseg", "serve", "--checkpoint", str(checkpoint),
               "--port", str(port), "--log-level", "warning", *options]  # fmt: skip
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"semseg serve exited with {process.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError("semseg serve was not ready in 180 s")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            time.sleep(0.2)
        yield url, process.pid
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Run:
    """Responses of one load run."""

    clients: int
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)  # of 200 responses, seconds
    statuses: Counter = field(default_factory=Counter)

    @property
    def throughput(self) -> float:
        """200 responses per second."""
        return self.statuses[200] / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        """Latency of 200 responses at percentile ``q``, milliseconds."""
        return 1000 * float(np.percentile(self.latencies, q)) if self.latencies else float("nan")


async def drive(
    url: str, bodies: list[bytes], clients: int, requests: int, seconds: float, query: str = ""
) -> Run:
    """``clients`` concurrent clients posting ``bodies`` in turn until ``requests`` responses
    or ``seconds`` have passed."""
    run = Run(clients)
    issued = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
        start = time.perf_counter()
        deadline = start + seconds

        async def one_client() -> None:
            nonlocal issued
            while issued < requests and time.perf_counter() < deadline:
                body = bodies[issued % len(bodies)]
                issued += 1
                sent = time.perf_counter()
                try:
                    response = await client.post(
                        f"/v1/segment{query}", content=body, headers={"Content-Type": "image/png"}
                    )
                except httpx.TransportError as error:
                    run.statuses[type(error).__name__] += 1
                    continue
                run.statuses[response.status_code] += 1
                if response.status_code == 200:
                    run.latencies.append(time.perf_counter() - sent)
                elif response.status_code == 503:
                    await asyncio.sleep(float(response.headers.get("retry-after", 1)))

        await asyncio.gather(*(one_client() for _ in range(clients)))
        run.seconds = time.perf_counter() - start
    return run


def load_table(runs: list[tuple[str, Run]]) -> list[str]:
    lines = [
        "| server | clients | 200/s | p50 ms | p95 ms | p99 ms | statuses | seconds |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for name, run in runs:
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(run.statuses.items(), key=str))
        lines.append(
            f"| {name} | {run.clients} | {run.throughput:.2f} | {run.percentile(50):.0f} | "
            f"{run.percentile(95):.0f} | {run.percentile(99):.0f} | {statuses} | "
            f"{run.seconds:.1f} |"
        )
    return lines


def server_timing(response: httpx.Response) -> dict[str, float]:
    parts = (part.split(";dur=") for part in response.headers["server-timing"].split(", "))
    return {name: float(duration) for name, duration in parts}


def encodings(url: str, body: bytes, repeats: int) -> list[str]:
    """Median server encode time and body size of each output, and of a mask as a JSON list of
    lists (encoded here, with the same label map) for comparison."""
    lines = [
        "| output | body bytes | encode ms (median) |",
        "| --- | ---: | ---: |",
    ]
    for output in ("json", "labels", "overlay"):
        times, size = [], 0
        for _ in range(repeats):
            response = httpx.post(f"{url}/v1/segment?output={output}", content=body,
                                  headers={"Content-Type": "image/png"}, timeout=60)  # fmt: skip
            response.raise_for_status()
            times.append(server_timing(response)["encode"])
            size = len(response.content)
        lines.append(f"| `{output}` (server) | {size} | {statistics.median(times):.2f} |")
    response = httpx.post(f"{url}/v1/segment", content=body, headers={"Content-Type": "image/png"})
    labels = np.asarray(Image.open(io.BytesIO(base64.b64decode(response.json()["labels_png"]))))
    palette = np.zeros((256, 3), np.uint8)
    for name, encode in (
        ("mask as JSON list of lists", lambda: json.dumps(labels.tolist()).encode()),
        ("mask as palette PNG", lambda: _index_png(labels, palette)),
    ):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            encoded = encode()
            times.append(1000 * (time.perf_counter() - start))
        lines.append(f"| {name} (here, label map only) | {len(encoded)} | "
                     f"{statistics.median(times):.2f} |")  # fmt: skip
    return lines


def _index_png(labels: np.ndarray, palette: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    write_index_png(buffer, labels, palette)
    return buffer.getvalue()


async def soak(url: str, pid: int, bodies: list[bytes], requests: int, clients: int) -> dict:
    """``requests`` requests cycling through json, labels and overlay outputs and one bad body
    in twenty, with the server's RSS sampled every 0.25 s."""
    samples: list[float] = []
    stop = asyncio.Event()

    async def sample() -> None:
        while not stop.is_set():
            samples.append(rss_mib(pid))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.25)

    sampler = asyncio.create_task(sample())
    queries = ["?output=json", "?output=labels", "?output=overlay"]
    runs = await asyncio.gather(
        *(drive(url, bodies, clients, -(-requests // len(queries)), 600, q) for q in queries)
    )
    stop.set()
    await sampler
    statuses = sum((run.statuses for run in runs), Counter())
    seconds = max(run.seconds for run in runs)
    return {"statuses": statuses, "seconds": seconds, "max_rss": max(samples), "samples": samples}


def machine() -> list[str]:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines()
                 if line.startswith("model name")), platform.processor())  # fmt: skip
    flags_line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    flags = set(flags_line.split(":", 1)[-1].split())
    present = [flag for flag in CPU_FLAGS if flag in flags] or ["none of them"]
    versions = ", ".join(
        f"{package} {version(package)}"
        for package in ("torch", "fastapi", "starlette", "uvicorn", "httpx", "pillow", "numpy")
    )
    return [
        f"- machine: {name}, {os.cpu_count()} cores ({platform.machine()}, "
        f"Linux {platform.release()}); flags of {', '.join(CPU_FLAGS)} present: "
        f"{', '.join(present)}",
        f"- versions: Python {platform.python_version()}, {versions}",
        f"- load average at the start: {os.getloadavg()[0]:.2f} (the host is shared with other "
        "work, so absolute figures move between runs; compare rows of one run)",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True,
                        help="Model for the load and encoding runs (CamVid).")  # fmt: skip
    parser.add_argument("--soak-checkpoint", type=Path, help="Model for the soak [--checkpoint].")
    parser.add_argument("--size", nargs=2, type=int, default=(360, 480), metavar=("H", "W"))
    parser.add_argument("--soak-size", nargs=2, type=int, default=(128, 160), metavar=("H", "W"))
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of the server.")
    parser.add_argument("--requests", type=int, nargs=3, default=(40, 120, 240),
                        metavar=("N1", "N8", "N50"),
                        help="Responses per run at 1, 8 and 50 clients.")  # fmt: skip
    parser.add_argument("--seconds", type=float, default=30.0, help="Time limit of a load run.")
    parser.add_argument("--soak-requests", type=int, default=2100)
    parser.add_argument("--soak-clients", type=int, default=2, help="Clients per output kind.")
    parser.add_argument("--batch-max", type=int, default=8)
    parser.add_argument("--batch-wait-ms", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/serve_load.md")
    args = parser.parse_args()
    torch.set_num_threads(1)  # this process only encodes the comparison masks
    height, width = args.size
    bodies = [png(render_scene(seed, height, width)[0]) for seed in range(8)]
    common = ["--threads", str(args.threads), "--max-queue", "16"]
    report = ["# `semseg serve` under load on loopback", "",
              f"- command: `python {' '.join(sys.argv)}`", *machine(),
              f"- images: synthetic road scenes, {height}x{width} PNG "
              f"(about {np.mean([len(b) for b in bodies]) / 1024:.0f} KiB), 8 in turn; "
              f"model `{args.checkpoint}`",
              "- the load generator (Python, httpx) runs on the same cores as the server",
              ""]  # fmt: skip

    runs: list[tuple[str, Run]] = []
    servers = [
        ("1 worker, batching off", ["--workers", "1"], (1, 8, 50)),
        (f"1 worker, batch-max {args.batch_max}, wait {args.batch_wait_ms:g} ms",
         ["--workers", "1", "--batch-max", str(args.batch_max),
          "--batch-wait-ms", str(args.batch_wait_ms)], (8, 50)),
        ("2 workers x 1 thread, batching off", ["--workers", "2", "--threads", "1"], (8,)),
    ]  # fmt: skip
    counts = dict(zip((1, 8, 50), args.requests, strict=True))
    encoding_lines: list[str] = []
    for name, options, client_counts in servers:
        with serving(args.checkpoint, *common, *options) as (url, _):
            print(f"{name}: {url}", flush=True)
            if not encoding_lines:
                encoding_lines = encodings(url, bodies[0], repeats=15)
            for clients in client_counts:
                run = asyncio.run(drive(url, bodies, clients, counts[clients], args.seconds))
                print(f"  {clients} clients: {run.throughput:.2f}/s {dict(run.statuses)}")
                runs.append((name, run))

    report += ["## Throughput and latency", "",
               f"`--threads {args.threads} --max-queue 16` unless the row says otherwise; "
               "latency percentiles of the 200 responses.", "", *load_table(runs), "",
               "## Encoding the result", "",
               f"Per request on one {height}x{width} image (`Server-Timing` encode, median of "
               "15): the JSON output holds the palette PNG in base64, the class shares and the "
               "drivable space.", "", *encoding_lines, ""]  # fmt: skip

    soak_checkpoint = args.soak_checkpoint or args.checkpoint
    soak_h, soak_w = args.soak_size
    soak_bodies = [png(render_scene(100 + seed, soak_h, soak_w)[0]) for seed in range(19)]
    soak_bodies.append(soak_bodies[0][: len(soak_bodies[0]) // 2])  # truncated: 400
    with serving(soak_checkpoint, *common, "--workers", "1") as (url, pid):
        before = rss_mib(pid)
        result = asyncio.run(soak(url, pid, soak_bodies, args.soak_requests, args.soak_clients))
        time.sleep(2)
        after = rss_mib(pid)
    samples = result["samples"]
    quarter = max(len(samples) // 4, 1)
    first, last = statistics.median(samples[:quarter]), statistics.median(samples[-quarter:])
    total = sum(result["statuses"].values())
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(result["statuses"].items(), key=str))
    report += ["## Memory over a soak", "",
               f"`{soak_checkpoint}` at {soak_h}x{soak_w}, {args.soak_clients * 3} clients "
               "cycling json, labels and overlay; one body in twenty is a truncated PNG (400). "
               "Resident memory (VmRSS) of the server process in MiB, sampled every 0.25 s; "
               "'after' is 2 s after the last response.", "",
               "| requests | statuses | seconds | before | max during | median, first quarter "
               "| median, last quarter | after |",
               "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
               f"| {total} | {statuses} | {result['seconds']:.0f} | {before:.1f} | "
               f"{result['max_rss']:.1f} | {first:.1f} | {last:.1f} | {after:.1f} "
               f"({100 * (after / before - 1):+.1f} %) |", ""]  # fmt: skip
    args.out.write_text("\n".join(report))
    print("\n".join(report))


if __name__ == "__main__":
    main()
