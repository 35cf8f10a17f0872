"""The module paths of the flat layout (before the packages), each the module it became, imported on first use.

>>> from eskit.widgets import when_done              # eskit.analysis.widgets      # doctest: +SKIP
>>> eskit.export.CHUNK                               # eskit.analysis.export       # doctest: +SKIP

Lessons, scripts and users import these paths; a finder on ``sys.meta_path`` answers each with the module
it became (the same module object, so a monkeypatch on either name is seen by both), and ``eskit``'s module
``__getattr__`` makes each an attribute of the package. Nothing is imported before it is asked for, so
``import eskit`` does not load the notebook widgets (ipywidgets, IPython).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from types import ModuleType

MOVED = {
    "applying": "eskit.projections.applying",
    "dcb_examples": "eskit.dcb.examples",
    "dcb_query": "eskit.dcb.query",
    "dcb_setup": "eskit.dcb.setup",
    "dcb_subscription": "eskit.dcb.subscription",
    "deadletter": "eskit.projections.deadletter",
    "eventlog": "eskit.analysis.eventlog",
    "export": "eskit.analysis.export",
    "frames": "eskit.analysis.frames",
    "log_import": "eskit.analysis.log_import",
    "ocel": "eskit.analysis.ocel",
    "readmodel": "eskit.projections.readmodel",
    "samples": "eskit.analysis.samples",
    "widgets": "eskit.analysis.widgets",
}
_PREFIX = "eskit."


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``import eskit.widgets`` gives ``eskit.analysis.widgets`` (its own spec kept)."""

    def __init__(self) -> None:
        self._specs: dict[str, importlib.machinery.ModuleSpec | None] = {}

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname.startswith(_PREFIX) and fullname[len(_PREFIX) :] in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(MOVED[spec.name[len(_PREFIX) :]])
        self._specs[module.__name__] = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        module.__spec__ = self._specs.pop(module.__name__, module.__spec__)  # the import set the alias's


def install() -> None:
    """Answer the flat layout's module paths (once per process)."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.append(_Finder())


def attribute(name: str) -> ModuleType:
    """``eskit.<name>`` for a flat-layout module path; AttributeError for anything else."""
    if name not in MOVED:
        raise AttributeError(f"module 'eskit' has no attribute {name!r}")
    return importlib.import_module(_PREFIX + name)
