"""Shared fixtures for the tests that run against a real ComfyUI checkout.

Set ``COMFYUI_PATH`` to a ComfyUI work tree (run with a Python that has
ComfyUI's requirements); without it every test that uses the ``comfy`` fixture
is skipped with the reason. ComfyUI is imported in ``--cpu`` mode:
``comfy.cli_args.args.cpu`` is set before ``comfy.model_management`` is
imported (that import picks the device once, at import time).
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import os
import sys
import uuid
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
def comfyui_path() -> Path:
    """``$COMFYUI_PATH`` checked to be a ComfyUI work tree (skips with the reason otherwise),
    without importing ComfyUI (the HTTP and browser tests start it as a server)."""
    return _comfyui_path()


@pytest.fixture(scope="session")
def comfy(comfyui_path) -> SimpleNamespace:
    """ComfyUI's modules, imported from ``$COMFYUI_PATH`` in CPU mode.

    Attributes: ``path`` and the last component of each module in
    ``COMFY_MODULES`` (``comfy.model_management``, ``comfy.utils``, ...).
    """
    path = comfyui_path
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


class _Server:
    """The few attributes PromptExecutor reads from ComfyUI's PromptServer."""

    def __init__(self) -> None:
        self.client_id = None
        self.last_node_id = None
        self.last_prompt_id = None
        self.sockets_metadata = {}
        self.messages = []

    def send_sync(self, event, data, sid=None):
        self.messages.append((event, data))


@pytest.fixture(scope="session")
def comfy_env(comfy, tmp_path_factory):
    import execution
    import folder_paths
    import nodes as comfy_nodes

    base = tmp_path_factory.mktemp("comfy")
    for sub in ("input", "output", "temp"):
        (base / sub).mkdir()
    folder_paths.set_input_directory(str(base / "input"))
    folder_paths.set_output_directory(str(base / "output"))
    folder_paths.set_temp_directory(str(base / "temp"))
    if "GrowMask" not in comfy_nodes.NODE_CLASS_MAPPINGS:  # a stock extra node the drag demo uses
        extras = Path(comfy.path) / "comfy_extras" / "nodes_mask.py"
        assert asyncio.run(comfy_nodes.load_custom_node(str(extras), module_parent="comfy_extras"))
    if "DragonDiff_GuidedSampler" not in comfy_nodes.NODE_CLASS_MAPPINGS:
        assert asyncio.run(comfy_nodes.load_custom_node(str(Path(__file__).resolve().parents[2]))), "the pack failed to load in ComfyUI"
    server = _Server()
    executor = execution.PromptExecutor(server, cache_type=False)
    env = SimpleNamespace(base=base, executor=executor, server=server, execution=execution, nodes=comfy_nodes)
    env.run = lambda prompt: _run_prompt(env, prompt)
    return env


def _run_prompt(env, prompt: dict) -> dict:
    """Validate and execute a prompt; returns history outputs or raises with ComfyUI's error."""
    pid = str(uuid.uuid4())
    valid = asyncio.run(env.execution.validate_prompt(pid, prompt, None))
    assert valid[0], valid[1:]
    env.server.messages.clear()
    env.executor.execute(prompt, pid, {}, valid[2])
    if not env.executor.success:
        errs = [d for e, d in env.executor.status_messages if e == "execution_error"]
        raise RuntimeError(errs[0]["exception_message"] if errs else "execution failed")
    return env.executor.history_result["outputs"]


@pytest.fixture(scope="module")
def user_model(dragon_nodes):
    """The user's MODEL: the bundled shapes model loaded as the demo node loads it (inside
    inference mode, so its weights are inference tensors as with ComfyUI's loaders)."""
    import torch

    with torch.inference_mode():
        return dragon_nodes.shapes_comfy.load_shapes_model()
