"""The inference pool without a model: batching by key, withdrawal, errors."""

from __future__ import annotations

import asyncio
import threading

import pytest

from semseg.serve.pool import InferencePool


class Recorder:
    """``run_batch`` that records each batch's payloads, optionally held on an event."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, jobs):
        self.entered.set()
        self.gate.wait(30)
        self.batches.append([job.payload for job in jobs])
        return [
            ValueError(p) if p.startswith("bad") else p.upper() for p in (j.payload for j in jobs)
        ]


async def fill(pool, recorder, first, rest):
    """Run ``first`` (held in the worker), queue ``rest`` behind it, release; results."""
    recorder.gate.clear()
    head = asyncio.ensure_future(pool.run(*first))
    await asyncio.to_thread(recorder.entered.wait, 30)
    tasks = [asyncio.ensure_future(pool.run(key, payload)) for key, payload in rest]
    while pool.depth < len(rest):
        await asyncio.sleep(0.005)
    recorder.gate.set()
    return await asyncio.gather(head, *tasks, return_exceptions=True)


def test_batches_group_one_key_in_arrival_order_up_to_batch_max():
    recorder = Recorder()
    pool = InferencePool(recorder, workers=1, batch_max=3)
    pool.start()
    try:
        rest = [("a", "a1"), ("b", "b1"), ("a", "a2"), ("a", "a3"), ("a", "a4"), ("b", "bad")]
        results = asyncio.run(fill(pool, recorder, ("z", "z0"), rest))
    finally:
        pool.close()
    assert recorder.batches == [["z0"], ["a1", "a2", "a3"], ["b1", "bad"], ["a4"]]
    assert results[:6] == ["Z0", "A1", "B1", "A2", "A3", "A4"]
    assert isinstance(results[6], ValueError)


def test_without_batching_each_job_runs_alone():
    recorder = Recorder()
    pool = InferencePool(recorder, workers=1, batch_max=1)
    pool.start()
    try:
        asyncio.run(fill(pool, recorder, ("a", "a0"), [("a", "a1"), ("a", "a2")]))
    finally:
        pool.close()
    assert recorder.batches == [["a0"], ["a1"], ["a2"]]


def test_a_cancelled_wait_withdraws_the_queued_job():
    recorder = Recorder()
    pool = InferencePool(recorder, workers=1)
    pool.start()

    async def scenario():
        recorder.gate.clear()
        head = asyncio.ensure_future(pool.run("a", "a0"))
        await asyncio.to_thread(recorder.entered.wait, 30)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(pool.run("a", "dropped"), 0.05)
        assert pool.depth == 0
        recorder.gate.set()
        return await head, await pool.run("a", "a1")

    try:
        assert asyncio.run(scenario()) == ("A0", "A1")
    finally:
        pool.close()
    assert recorder.batches == [["a0"], ["a1"]]


def test_a_failing_batch_fails_its_jobs_and_the_worker_goes_on():
    def run_batch(jobs):
        if jobs[0].payload == "boom":
            raise RuntimeError("boom")
        return ["ok"] * len(jobs)

    pool = InferencePool(run_batch, workers=2)
    pool.start()

    async def scenario():
        with pytest.raises(RuntimeError, match="boom"):
            await pool.run("a", "boom")
        return await pool.run("a", "fine")

    try:
        assert asyncio.run(scenario()) == "ok"
    finally:
        pool.close()
