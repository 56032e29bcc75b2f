"""Security contracts, checked without ComfyUI.

* Model files are read only through safetensors: no pickle-based loader is called
  anywhere in the pack, and ``from_pretrained`` always asks for safetensors.
* User strings are parsed, never evaluated: no eval/exec/compile/__import__ and no
  dynamic import of a computed name in the pack.
* No network access at runtime: a whole edit (the pack's entry point imported,
  the bundled model loaded, an inversion and a move edit) runs in a fresh
  interpreter where every socket connection, DNS lookup and pickle load raises.
* No file path can reach the pack through a node: no node input is a path, file or
  folder (the node-spec snapshot, kept honest by the ComfyUI suite), STRING inputs
  are only the parsed points and selections and the demo prompt, and the node modules read no
  file but the bundled demo model's.
"""

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted([*ROOT.glob("dragon_core/*.py"), *ROOT.glob("nodes/*.py"), ROOT / "__init__.py",
                  *ROOT.glob("scripts/*.py")])


def _calls(source: Path | str):
    """(dotted name, ast.Call) of every call in a file or source text: 'torch.load', 'eval', 'x.from_pretrained'."""
    text = source.read_text() if isinstance(source, Path) else source
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Call):
            parts, f = [], node.func
            while isinstance(f, ast.Attribute):
                parts.append(f.attr)
                f = f.value
            parts.append(f.id if isinstance(f, ast.Name) else "<expr>")  # x().eval() is a method, not eval
            yield ".".join(reversed(parts)), node


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


PICKLE_LOADERS = {"torch.load", "pickle.load", "pickle.loads", "pickle.Unpickler", "np.load", "numpy.load",
                  "joblib.load", "dill.load", "dill.loads", "marshal.load", "marshal.loads", "shelve.open",
                  "yaml.load", "yaml.unsafe_load", "torch.jit.load", "torch.serialization.load"}


def test_model_files_are_read_only_through_safetensors():
    assert len(SOURCES) > 20
    for path in SOURCES:
        assert not _imports(path) & {"pickle", "dill", "joblib", "marshal", "shelve", "cloudpickle"}, path
        for name, call in _calls(path):
            assert name not in PICKLE_LOADERS, f"{path.name}:{call.lineno}: {name}"
            if name.endswith("from_pretrained"):  # diffusers falls back to pickled .bin files unless told
                kw = {k.arg: k.value for k in call.keywords}
                assert isinstance(kw.get("use_safetensors"), ast.Constant) and kw["use_safetensors"].value is True, \
                    f"{path.name}:{call.lineno}: from_pretrained without use_safetensors=True"


EVALUATORS = {"eval", "exec", "compile", "__import__", "execfile", "builtins.eval", "builtins.exec",
              "builtins.compile", "builtins.__import__"}
DYNAMIC_IMPORTS = {"importlib.import_module", "import_module", "importlib.__import__"}


def _evaluations(source: Path | str) -> list[str]:
    """Calls that would run a string as code, or import a module whose name is computed."""
    found = []
    for name, call in _calls(source):
        if name in EVALUATORS:
            found.append(f"{call.lineno}: {name}")
        elif name in DYNAMIC_IMPORTS and not all(isinstance(a, ast.Constant) for a in call.args):
            found.append(f"{call.lineno}: {name} of a computed name")
    return found


def test_user_strings_are_parsed_never_evaluated():
    for path in SOURCES:
        assert not _evaluations(path), f"{path.name}: {_evaluations(path)}"


def test_the_source_checks_catch_what_they_should():
    # guards against vacuous checks: each of these is flagged
    bad = ("x = eval(s)\nexec(code)\nimportlib.import_module(name)\ny = torch.load(p)\nmodel.eval()\n"
           "re.compile(r)\nm.to(d).eval()\n")
    assert _evaluations(bad) == ["1: eval", "2: exec", "3: importlib.import_module of a computed name"]
    assert [n for n, _ in _calls(bad) if n in PICKLE_LOADERS] == ["torch.load"]


GUARDED_EDIT = textwrap.dedent("""
    import pickle, socket, sys
    blocked = []

    def refuse(what):
        def f(*a, **k):
            blocked.append(what)
            raise OSError(f"blocked by the test: {what}")
        return f

    socket.socket.connect = refuse("socket.connect")
    socket.socket.connect_ex = refuse("socket.connect_ex")
    socket.socket.sendto = refuse("socket.sendto")
    socket.create_connection = refuse("socket.create_connection")
    socket.getaddrinfo = refuse("socket.getaddrinfo")
    pickle.load = refuse("pickle.load")
    pickle.loads = refuse("pickle.loads")
    class Unpickler(pickle.Unpickler):  # still a class (torch subclasses it at import), but it never loads
        def load(self):
            refuse("pickle.Unpickler.load")()

    pickle.Unpickler = Unpickler
    import torch
    torch.load = refuse("torch.load")
    torch.set_num_threads(1)

    import io, urllib.request  # the guards work (a check of the check), then start counting
    for attempt in (lambda: urllib.request.urlopen("http://example.com", timeout=1),
                    lambda: pickle.Unpickler(io.BytesIO(pickle.dumps(1))).load()):
        try:
            attempt()
        except OSError:
            pass
    assert blocked == ["socket.create_connection", "pickle.Unpickler.load"], blocked
    blocked.clear()

    import importlib.util
    root = sys.argv[1]
    spec = importlib.util.spec_from_file_location("dragondiffusion_pack", root + "/__init__.py",
                                                  submodule_search_locations=[root])
    pack = importlib.util.module_from_spec(spec)
    sys.modules["dragondiffusion_pack"] = pack
    spec.loader.exec_module(pack)  # the entry point ComfyUI imports

    from dragon_core import Move, default_settings, edit_image, invert_with_memory
    from dragon_core.diffusers_backend import load_shapes_backend
    from dragon_demo.shapes_model import load_config
    from dragon_demo.shapes_world import random_scene
    from dragon_core.images import array_to_tensor

    scene = random_scene(8)
    backend, encoder = load_shapes_backend()
    with backend:
        cond, uncond = encoder.encode(scene.prompt()), encoder.encode("")
        memory = invert_with_memory(backend, array_to_tensor(scene.render()), cond, steps=3, spacing="comfy_uniform")
        mask = torch.from_numpy(scene.masks()[0].astype("float32"))
        settings = default_settings("move", load_config()["edit_defaults"])
        out = edit_image(backend, memory, Move(mask, 2, 1), cond, uncond, settings).latent
    assert torch.isfinite(out).all()
    print("edit ok; blocked:", blocked)
    sys.exit(3 if blocked else 0)
""")


def test_an_edit_runs_with_the_network_and_pickle_refused(tmp_path):
    script = tmp_path / "guarded_edit.py"
    script.write_text(GUARDED_EDIT)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="0")
    r = subprocess.run([sys.executable, str(script), str(ROOT)], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "edit ok; blocked: []" in r.stdout


def test_no_node_input_is_a_path_and_strings_are_only_parsed_text():
    specs = json.loads((ROOT / "tests" / "data" / "node_specs.json").read_text())
    ours = {k: v for k, v in specs.items() if k.startswith("DragonDiff_")}
    assert len(ours) >= 10
    strings = set()
    for node, spec in ours.items():
        for name, typ, _required, _how in spec["inputs"]:
            assert not any(w in name.lower() for w in ("path", "file", "dir", "folder", "url")), (node, name)
            if typ == "STRING":
                strings.add(name)
    # parse_points, parse_selection (nodes/convert.py) and the demo vocabulary: never a file name
    assert strings == {"points", "prompt", "selection", "reference_selection", "region"}


def test_node_modules_open_no_files_but_the_bundled_model():
    readers = {"open", "Image.open", "load_file", "safe_open", "read_text", "read_bytes", "np.fromfile"}
    for path in ROOT.glob("nodes/*.py"):
        assert "folder_paths" not in {i.split(".")[0] for i in _imports(path)}, path.name
        for name, call in _calls(path):
            if name.split(".")[-1] in {r.split(".")[-1] for r in readers}:
                assert path.name == "shapes_comfy.py", f"{path.name}:{call.lineno}: {name}"
    # the demo model's files come from its bundled folder only (no node passes a folder)
    text = (ROOT / "nodes" / "shapes_comfy.py").read_text()
    assert "model_dir or ASSET_DIR" in text
