"""Packaging contracts: the ComfyUI entry point imports without ComfyUI, runtime
requirements never pin torch, dragon_core never imports comfy or diffusers at
module level, and model files are read without pickle."""

import ast
import importlib.util
import re
import subprocess
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
    assert "torch" not in names and set(names) <= {"numpy", "pillow", "safetensors"}
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


def test_product_packages_are_pure_torch_at_module_level():
    for path in list((ROOT / "dragon_core").glob("*.py")) + list((ROOT / "dragon_demo").glob("*.py")):
        bad = _module_level_imports(path) & {"comfy", "comfy_api", "diffusers", "transformers", "nodes"}
        assert not bad, f"{path.name} imports {bad} at module level"


def test_no_pickle_loading_anywhere():
    for path in [p for d in ("dragon_core", "dragon_demo", "dragon_lab", "nodes") for p in (ROOT / d).rglob("*.py")]:
        text = path.read_text()
        for call in ("torch.load(", "pickle.load", "import pickle", "np.load(", "allow_pickle=True"):
            assert call not in text, f"{path}: {call}"


def test_the_product_imports_without_the_lab():
    """Every module of the method and the demo model imports in a fresh Python with no lab module
    loaded (the lab imports the method, never the other way)."""
    code = ("import importlib, pkgutil, sys\n"
            "import dragon_core, dragon_demo\n"
            "for pkg in (dragon_core, dragon_demo):\n"
            "    for m in pkgutil.iter_modules(pkg.__path__):\n"
            "        if m.name != '__main__':\n"
            "            importlib.import_module(f'{pkg.__name__}.{m.name}')\n"
            "print(sorted(n for n in sys.modules if n.startswith('dragon_')))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    loaded = ast.literal_eval(out.strip())
    assert "dragon_core.sampler" in loaded and "dragon_demo.shapes_model" in loaded
    assert not [n for n in loaded if n.startswith("dragon_lab")], loaded


def test_method_files_stay_small():
    """dragon_core holds the method only, in small modules (issue 13: about 350 lines at most)."""
    sizes = {p.name: len(p.read_text().splitlines()) for p in (ROOT / "dragon_core").glob("*.py")}
    assert max(sizes.values()) <= 350, sizes
