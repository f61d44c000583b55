"""Inference threads fed by a queue, off the event loop, with optional micro-batching.

``await pool.run(key, payload)`` queues a job and waits for its result. Each of ``workers``
threads takes the oldest job and, with ``batch_max > 1``, the other queued jobs of the same
``key`` (image size) up to ``batch_max``, waiting up to ``batch_wait_s`` for more when it has
fewer; ``run_batch`` then computes them together. A job whose caller stopped waiting (timeout,
disconnect) while it was queued is taken out of the queue and never computed.

How many jobs may wait is bounded by the caller (admission in :mod:`semseg.serve.app`), so the
queue itself needs no bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from semseg.serve.errors import ServeError

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Job:
    """One queued request: ``key`` says which jobs may share a forward pass.

    ``queued_at`` and ``started_at`` are ``time.perf_counter()`` seconds.
    """

    key: Hashable
    payload: Any
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    queued_at: float = field(default_factory=time.perf_counter)
    started_at: float = 0.0

    @property
    def queue_seconds(self) -> float:
        return self.started_at - self.queued_at


RunBatch = Callable[[list[Job]], list[Any]]
"""Computes jobs of one key together: one result (or exception instance) per job, in order."""


class InferencePool:
    """``workers`` threads running ``run_batch`` on queued jobs.

    Args:
        run_batch: called in a worker thread with 1 to ``batch_max`` jobs of one key.
        workers: number of threads.
        batch_max: most jobs per call (1: one job per call).
        batch_wait_s: how long a worker holding fewer than ``batch_max`` jobs waits for more of
            their key (0: takes only what is already queued).
        on_batch: called with the size of each batch run (metrics).
    """

    def __init__(
        self,
        run_batch: RunBatch,
        workers: int = 1,
        batch_max: int = 1,
        batch_wait_s: float = 0.0,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.run_batch = run_batch
        self.workers = workers
        self.batch_max = batch_max
        self.batch_wait_s = batch_wait_s
        self.on_batch = on_batch
        self._queue: deque[Job] = deque()
        self._condition = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._closed = False
        self.busy = 0
        """Workers computing a batch now."""

    @property
    def depth(self) -> int:
        """Jobs waiting for a worker."""
        return len(self._queue)

    def start(self) -> None:
        for index in range(self.workers):
            thread = threading.Thread(
                target=self._work, name=f"semseg-inference-{index}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the workers after their current batch; queued jobs fail with 503."""
        with self._condition:
            self._closed = True
            left = list(self._queue)
            self._queue.clear()
            self._condition.notify_all()
        for job in left:
            _deliver(job, ServeError(503, "shutting_down", "the server is shutting down"))
        for thread in self._threads:
            thread.join(timeout_s)
        self._threads.clear()

    async def run(self, key: Hashable, payload: Any) -> Any:
        """Queue ``payload`` and wait for its result; raises what ``run_batch`` returned as an
        exception for it. Cancelling the wait takes a still-queued job out of the queue."""
        loop = asyncio.get_running_loop()
        job = Job(key, payload, loop, loop.create_future())
        with self._condition:
            if self._closed:
                raise ServeError(503, "shutting_down", "the server is shutting down")
            self._queue.append(job)
            self._condition.notify_all()  # an idle worker, not only one gathering a batch
        try:
            return await job.future
        except asyncio.CancelledError:
            with self._condition:
                if job in self._queue:
                    self._queue.remove(job)
            raise

    def _take(self) -> list[Job] | None:
        """The next batch, or None when closed."""
        with self._condition:
            while not self._queue and not self._closed:
                self._condition.wait()
            if self._closed:
                return None
            batch = [self._queue.popleft()]
            deadline = time.perf_counter() + self.batch_wait_s
            while len(batch) < self.batch_max:
                for job in [job for job in self._queue if job.key == batch[0].key]:
                    if len(batch) == self.batch_max:
                        break
                    self._queue.remove(job)
                    batch.append(job)
                remaining = deadline - time.perf_counter()
                if len(batch) == self.batch_max or remaining <= 0 or self._closed:
                    break
                self._condition.wait(remaining)
            self.busy += 1
            return batch

    def _work(self) -> None:
        while (batch := self._take()) is not None:
            started = time.perf_counter()
            for job in batch:
                job.started_at = started
            if self.on_batch is not None:
                self.on_batch(len(batch))
            try:
                results = self.run_batch(batch)
            except Exception as error:  # delivered to every caller, and the worker goes on
                log.exception("inference failed for a batch of %d", len(batch))
                results = [error] * len(batch)
            finally:
                with self._condition:
                    self.busy -= 1
            for job, result in zip(batch, results, strict=True):
                _deliver(job, result)


def _deliver(job: Job, result: Any) -> None:
    def settle() -> None:
        if job.future.done():  # the caller stopped waiting
            return
        if isinstance(result, BaseException):
            job.future.set_exception(result)
        else:
            job.future.set_result(result)

    with contextlib.suppress(RuntimeError):  # a closed event loop: nobody is waiting
        job.loop.call_soon_threadsafe(settle)
