"""The nodes on a system without Unix-only modules (Windows): ComfyUI loads the pack and runs an
inversion and a guided move edit in a process where ``import resource`` fails and the pack's
own ``/proc`` reads raise (``tests/portable_guard.py``; ComfyUI and psutil keep their Linux
behaviour, as they have their own Windows paths)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r'''
import asyncio, sys, tempfile, uuid
from pathlib import Path
sys.path[:0] = [COMFYUI, TESTS, TESTS + "/integration"]
import comfy.cli_args
comfy.cli_args.args.cpu = True
import comfy.model_management, execution, folder_paths, nodes as comfy_nodes
import portable_guard
portable_guard.block()
base = Path(tempfile.mkdtemp())
for sub in ("input", "output", "temp"):
    (base / sub).mkdir()
folder_paths.set_input_directory(str(base / "input"))
folder_paths.set_output_directory(str(base / "output"))
folder_paths.set_temp_directory(str(base / "temp"))
assert asyncio.run(comfy_nodes.load_custom_node(ROOT)), "the pack failed to load"
from graphs import guided_sampler, shapes_scene

class Server:
    client_id = last_node_id = last_prompt_id = None
    sockets_metadata = {}
    def send_sync(self, event, data, sid=None):
        pass

g = shapes_scene(steps=4)
g["edit"] = {"class_type": "DragonDiff_MoveEdit", "inputs": {"mask": ["scene", 1], "dx": 3, "dy": 2, "scale": 1.0}}
g["edited"] = guided_sampler("edit")
g["out"] = {"class_type": "PreviewImage", "inputs": {"images": ["dec", 0]}}
g["dec"] = {"class_type": "VAEDecode", "inputs": {"samples": ["edited", 0], "vae": ["vae", 0]}}
pid = str(uuid.uuid4())
valid = asyncio.run(execution.validate_prompt(pid, g, None))
assert valid[0], valid[1:]
ex = execution.PromptExecutor(Server(), cache_type=False)
ex.execute(g, pid, {}, valid[2])
errors = [d.get("exception_message") for e, d in ex.status_messages if e == "execution_error"]
print("success", ex.success, "errors", errors, "proc reads", portable_guard.attempts)
'''


def test_nodes_run_an_edit_without_resource_and_proc(comfyui_path):
    code = (SCRIPT.replace("COMFYUI", repr(str(comfyui_path))).replace("TESTS", repr(str(ROOT / "tests")))
            .replace("ROOT", repr(str(ROOT))))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", code], cwd=comfyui_path, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "success True errors [] proc reads []" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
