"""Optional dependencies: imported only when a feature needs them, with an error that says
how to install them when they are missing."""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingDependencyError(ImportError):
    """An optional package that the requested feature needs is not installed."""


def require(package: str, purpose: str, extra: str) -> ModuleType:
    """Import optional ``package`` for ``purpose`` (e.g. ``"--backend openvino"``).

    Raises:
        MissingDependencyError: naming ``purpose``, the package and the pip command of the
            semseg extra ``extra`` that installs it.
    """
    try:
        return importlib.import_module(package)
    except ImportError:
        raise MissingDependencyError(
            f"{purpose} needs the Python package {package!r}, which is not installed: "
            f"pip install 'semseg[{extra}]' (or pip install {package})"
        ) from None


def installed(package: str) -> bool:
    """Whether ``package`` can be imported."""
    try:
        importlib.import_module(package)
    except ImportError:
        return False
    return True
