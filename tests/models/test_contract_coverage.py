"""Every registered model has an architecture contract test."""

import importlib
import pkgutil
from pathlib import Path

from semseg.models import MODELS
from tests.models.architecture_contract import ArchitectureContract


def test_every_registered_model_has_a_contract_subclass() -> None:
    folder = Path(__file__).parent
    for module in pkgutil.iter_modules([str(folder)]):
        if module.name.startswith("test_"):
            importlib.import_module(f"tests.models.{module.name}")
    covered = set()
    pending = list(ArchitectureContract.__subclasses__())
    while pending:
        cls = pending.pop()
        pending += cls.__subclasses__()
        if cls.__name__.startswith("Test"):
            covered.add(cls.model_name)
    missing = sorted(set(MODELS) - covered)
    assert missing == [], f"models without an ArchitectureContract test: {missing}"
