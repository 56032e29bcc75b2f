"""Load one of the pack's ``nodes/`` modules from its file under a private name, for a test.

``nodes`` is ComfyUI's own top-level module when the integration suite runs in the same process,
so the pack's node modules cannot be imported by package name there."""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Iterator

NODES = Path(__file__).resolve().parents[1] / "nodes"


@contextlib.contextmanager
def node_module(filename: str, alias: str) -> Iterator[ModuleType]:
    """``nodes/<filename>`` loaded as module ``alias`` (registered in sys.modules while in use)."""
    spec = importlib.util.spec_from_file_location(alias, NODES / filename)
    module = importlib.util.module_from_spec(spec)
    sys.modules[alias] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(alias, None)
