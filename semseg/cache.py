"""Where semseg keeps what it can recompute (auto-choice probes, ONNX exports of checkpoints):
``$SEMSEG_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/semseg``, else ``~/.cache/semseg``.
Deleting the folder loses nothing but time."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The cache folder (not created here)."""
    if os.environ.get("SEMSEG_CACHE_DIR"):
        return Path(os.environ["SEMSEG_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "semseg"
