"""Packaging contracts: the ComfyUI entry point imports without ComfyUI, runtime
requirements never pin torch, dragon_core never imports comfy or diffusers at
module level, and model files are read without pickle."""

import ast
import importlib.util
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_entry_point_imports_without_comfyui():
    spec = importlib.util.spec_from_file_location("dragondiffusion_pack", ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules["dragondiffusion_pack"] = mod
    try:
        spec.loader.exec_module(mod)
        # the schema API registers the nodes; NODE_CLASS_MAPPINGS would make ComfyUI ignore the entry point
        assert not hasattr(mod, "NODE_CLASS_MAPPINGS")
        assert hasattr(mod, "comfy_entrypoint") == (importlib.util.find_spec("comfy_api") is not None)
    finally:
        sys.modules.pop("dragondiffusion_pack", None)
        sys.modules.pop("dragondiffusion_pack.nodes", None)


def test_runtime_requirements_do_not_pin_torch():
    reqs = [l.split("#")[0].strip() for l in (ROOT / "requirements.txt").read_text().splitlines()]
    names = [re.split(r"[<>=!~ \[]", r)[0].lower() for r in reqs if r]
    assert "torch" not in names and set(names) <= {"numpy", "pillow", "safetensors", "einops"}
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    deps = [re.split(r"[<>=!~ \[]", d)[0].lower() for d in meta["project"]["dependencies"]]
    assert sorted(deps) == sorted(names)
    assert "comfyui" not in meta["project"]["name"].lower()
    assert {"PublisherId", "DisplayName", "requires-comfyui"} <= set(meta["tool"]["comfy"])
    assert "torch==2.13.0" in (ROOT / "requirements-dev.txt").read_text()


def _module_level_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_dragon_core_is_pure_torch_at_module_level():
    for path in (ROOT / "dragon_core").glob("*.py"):
        bad = _module_level_imports(path) & {"comfy", "comfy_api", "diffusers", "transformers", "nodes"}
        assert not bad, f"{path.name} imports {bad} at module level"


def test_no_pickle_loading_anywhere():
    for path in list((ROOT / "dragon_core").rglob("*.py")) + list((ROOT / "nodes").rglob("*.py")):
        text = path.read_text()
        for call in ("torch.load(", "pickle.load", "import pickle", "np.load(", "allow_pickle=True"):
            assert call not in text, f"{path}: {call}"
