"""Helpers for the server tests: an app running in its own event-loop thread, requests to it
through httpx's ASGI transport, a predictor whose inference can be held, and image bodies."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import httpx
import numpy as np
from PIL import Image

from semseg.inference.predictor import Prediction, Predictor


class LiveApp:
    """An ASGI app with its lifespan started, in an event loop on a background thread.

    ``request(...)`` takes ``httpx.AsyncClient.request`` arguments and returns the response;
    ``run(coroutine_function)`` runs ``coroutine_function(client)`` in the app's loop (for
    concurrent requests).
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self._lifespan = app.router.lifespan_context(app)
        self.call(self._lifespan.__aenter__())
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        )

    def call(self, coroutine: Coroutine, timeout_s: float = 60.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout_s)

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self.call(self.client.request(method, url, **kwargs))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def run(self, function: Callable[[httpx.AsyncClient], Coroutine], timeout_s: float = 60.0):
        return self.call(function(self.client), timeout_s)

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Poll ``/readyz`` until 200 (bounded)."""
        deadline = time.monotonic() + timeout_s
        while self.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "the app did not become ready"
            time.sleep(0.02)

    def close(self) -> None:
        self.call(self.client.aclose())
        self.call(self._lifespan.__aexit__(None, None, None))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


class HeldPredictor(Predictor):
    """A predictor whose ``predict_batch`` waits until ``release()`` (once ``hold()`` is
    called), counting calls and batch sizes; inference itself is the wrapped predictor's."""

    def __init__(self, inner: Predictor) -> None:
        self.__dict__.update(inner.__dict__)
        self._inner = inner
        self._gate = threading.Event()
        self._gate.set()
        self.entered = threading.Event()
        self.batch_sizes: list[int] = []

    def hold(self) -> None:
        self.entered.clear()
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    def predict_batch(
        self, images: Sequence[np.ndarray], probabilities: bool = True
    ) -> list[Prediction]:
        self.batch_sizes.append(len(images))
        self.entered.set()
        assert self._gate.wait(60), "a held prediction was never released"
        return self._inner.predict_batch(images, probabilities)


def encode(image: np.ndarray, fmt: str = "PNG", **options: Any) -> bytes:
    """An array as image file bytes, written by Pillow."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def flip_bytes(data: bytes, flips: Sequence[tuple[int, int]]) -> bytes:
    """``data`` with byte ``position % len(data)`` XORed with ``value`` for each flip."""
    mutable = bytearray(data)
    for position, value in flips:
        mutable[position % len(mutable)] ^= value
    return bytes(mutable)


def wait_until(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)
