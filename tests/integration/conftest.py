"""Shared fixtures for the tests that run against a real ComfyUI checkout.

Set ``COMFYUI_PATH`` to a ComfyUI work tree (run with a Python that has
ComfyUI's requirements); without it every test that uses the ``comfy`` fixture
is skipped with the reason. ComfyUI is imported in ``--cpu`` mode:
``comfy.cli_args.args.cpu`` is set before ``comfy.model_management`` is
imported (that import picks the device once, at import time).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

COMFY_MODULES = (
    "comfy.model_management",
    "comfy.utils",
    "comfy.model_base",
    "comfy.model_detection",
    "comfy.model_patcher",
    "comfy.supported_models",
    "comfy.supported_models_base",
    "comfy.latent_formats",
    "comfy.sd",
)


def _comfyui_path() -> Path:
    raw = os.environ.get("COMFYUI_PATH", "").strip()
    if not raw:
        pytest.skip("COMFYUI_PATH is not set: point it at a ComfyUI checkout to run the ComfyUI integration tests")
    path = Path(raw).expanduser().resolve()
    if not (path / "comfy" / "model_management.py").is_file():
        pytest.skip(f"COMFYUI_PATH={raw!r} is not a ComfyUI checkout (no comfy/model_management.py there)")
    return path


@pytest.fixture(scope="session")
def comfy() -> SimpleNamespace:
    """ComfyUI's modules, imported from ``$COMFYUI_PATH`` in CPU mode.

    Attributes: ``path`` and the last component of each module in
    ``COMFY_MODULES`` (``comfy.model_management``, ``comfy.utils``, ...).
    """
    path = _comfyui_path()
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    try:
        import comfy.cli_args

        if "comfy.model_management" not in sys.modules:
            comfy.cli_args.args.cpu = True
        modules = {name.rsplit(".", 1)[1]: importlib.import_module(name) for name in COMFY_MODULES}
    except Exception as exc:  # ImportError, a missing dependency, a ComfyUI that fails at import time
        pytest.skip(f"ComfyUI at {path} cannot be imported with {sys.executable}: {type(exc).__name__}: {exc}")
    mm = modules["model_management"]
    if mm.get_torch_device().type != "cpu":
        pytest.skip("comfy.model_management was imported before this fixture without --cpu; these tests need CPU mode")
    return SimpleNamespace(path=path, **modules)


@pytest.fixture(scope="session")
def dragon_nodes(comfy) -> SimpleNamespace:
    """The pack's ComfyUI glue (``nodes/``) as the package ``dragon_nodes``.

    Not importable as ``nodes``: that name is ComfyUI's own ``nodes.py``, which
    ``$COMFYUI_PATH`` puts first on sys.path (and ComfyUI's modules import it).
    Attributes: ``comfy_backend``, ``shapes_comfy``.
    """
    root = Path(__file__).resolve().parents[2]
    if "dragon_nodes" not in sys.modules:
        spec = importlib.util.spec_from_file_location("dragon_nodes", root / "nodes" / "__init__.py",
                                                      submodule_search_locations=[str(root / "nodes")])
        module = importlib.util.module_from_spec(spec)
        sys.modules["dragon_nodes"] = module
        spec.loader.exec_module(module)
    return SimpleNamespace(**{name: importlib.import_module(f"dragon_nodes.{name}")
                              for name in ("comfy_backend", "shapes_comfy")})
