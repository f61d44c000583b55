"""Fixtures of the server tests: the tiny trained checkpoint, its predictor, and apps."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from semseg.checkpoint import Checkpoint
from semseg.data.synthetic import render_scene
from semseg.inference.predictor import Predictor
from semseg.serve.app import create_app
from semseg.serve.settings import ServeSettings

from ..inference_support import tiny_checkpoint
from .support import LiveApp, encode


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory)


@pytest.fixture(scope="session")
def predictor(checkpoint) -> Predictor:
    return Predictor.from_checkpoint(checkpoint, "cpu")


@pytest.fixture(scope="session")
def scene_png() -> bytes:
    """A 61 x 77 synthetic road scene as PNG: not a multiple of the model's stride."""
    return encode(render_scene(5, 61, 77)[0])


@pytest.fixture
def serve(checkpoint) -> Iterator[Callable[..., LiveApp]]:
    """``serve(predictor, **settings)`` -> a started :class:`LiveApp`, ready; closed after."""
    apps: list[LiveApp] = []

    def start(predictor: Predictor, **settings) -> LiveApp:
        live = LiveApp(
            create_app(predictor, ServeSettings(**settings), Checkpoint.load(checkpoint))
        )
        apps.append(live)
        live.wait_ready()
        return live

    yield start
    for live in apps:
        live.close()
