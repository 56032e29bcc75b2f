"""The pack on a system without Unix-only modules (Windows): no ``resource``, no ``/proc``.

The product's paths (the pack's entry point, every dragon_core / dragon_demo module, the
``python -m dragon_core edit`` command) run in a subprocess where ``import resource`` fails
and the pack's own ``/proc`` reads raise (``tests/portable_guard.py``). The same for the
ComfyUI nodes: ``tests/integration/test_portable_nodes.py``.
"""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("dragon_core", "dragon_demo", "nodes")

pytest.importorskip("diffusers")


def _run(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]), OMP_NUM_THREADS="1")
    prelude = "import portable_guard; portable_guard.block()\n"
    return subprocess.run([sys.executable, "-c", prelude + code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)


def test_the_guard_blocks_what_windows_lacks():
    r = _run("try:\n    import resource\nexcept ImportError:\n    print('no resource')\n")
    assert r.stdout.strip() == "no resource", r.stderr


def test_no_unix_only_import_or_proc_path_in_the_product():
    for path in [p for d in PRODUCT for p in (ROOT / d).rglob("*.py")] + [ROOT / "__init__.py"]:
        text = path.read_text()
        tree = ast.parse(text)
        mods = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        mods |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not mods & {"resource", "fcntl", "termios", "pwd", "grp"}, f"{path}: {mods}"
        assert "/proc" not in text, f"{path} reads /proc"


def test_an_edit_runs_without_resource_and_proc(tmp_path):
    from dragon_core.images import save_png
    from dragon_lab.edit_cases import random_edit_case

    case = random_edit_case(1001, "move")
    save_png(case.scene.render(), tmp_path / "img.png")
    save_png(case.scene.masks()[case.index].astype(np.float32)[..., None].repeat(3, 2), tmp_path / "mask.png")
    argv = ["edit", "move", "--image", str(tmp_path / "img.png"), "--mask", str(tmp_path / "mask.png"),
            "--dx", str(case.dx), "--dy", str(case.dy), "--prompt", case.scene.prompt(), "--steps", "4",
            "--out", str(tmp_path / "out")]
    code = ("import importlib, pkgutil, runpy\n"
            "spec = importlib.util.spec_from_file_location('pack', 'REPO/__init__.py', "
            "submodule_search_locations=['REPO'])\n"
            "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
            "import dragon_core, dragon_demo\n"
            "for pkg in (dragon_core, dragon_demo):\n"
            "    for m in pkgutil.iter_modules(pkg.__path__):\n"
            "        if m.name != '__main__':\n"
            "            importlib.import_module(f'{pkg.__name__}.{m.name}')\n"
            "from dragon_core.cli import main\n"
            f"rc = main({argv!r})\n"
            "print('rc', rc, 'proc reads', portable_guard.attempts)\n").replace("REPO", str(ROOT))
    r = _run(code)
    assert r.returncode == 0 and "rc 0 proc reads []" in r.stdout, r.stdout + r.stderr
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["guided_steps"] > 0 and (tmp_path / "out" / "result.png").is_file()
