"""The pack in a real, headless ComfyUI server, driven over HTTP and the websocket as a browser does.

A module-scoped fixture starts ``main.py --cpu`` from ``$COMFYUI_PATH`` as a subprocess on a
free port, with temporary input/output/temp/user directories, an in-memory database, and the
pack installed the way a user installs it: a folder in a ``custom_nodes`` directory (here a
symlink to this checkout in a temporary folder, added through ``--extra-model-paths-config``).
``--disable-all-custom-nodes --whitelist-custom-nodes <that folder>`` keeps anything else in
the checkout's own custom_nodes from loading. The server log goes to a file; failures that come
from the server carry its tail.

Checked: /object_info lists every node with its category, description and tooltips, and the
pack imported cleanly; the template browser offers the shipped workflows; every shapes demo
workflow, fetched from the server's template endpoint and converted to an API prompt with the
server's own node definitions, runs and saves its 32x32 result upscaled to 256x256; errors reach the client naming
the input; progress is reported per step for the Inversion and the Guided Sampler; POST
/interrupt stops either node within one step and the next prompt gives the same image as
before; the same prompt after /free (models unloaded, caches dropped, everything re-executed)
gives a pixel-identical image.

Run: ``COMFYUI_PATH=/path/to/ComfyUI OMP_NUM_THREADS=1 python -m pytest -q
tests/integration/test_http_server.py`` with a Python that has ComfyUI's requirements (the
server runs with the same Python, ``OMP_NUM_THREADS=1``). Skipped without ``COMFYUI_PATH``.
"""

from __future__ import annotations

import asyncio
import io
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

import numpy as np
import pytest
from workflow_spec import spec_from_object_info, to_api

ROOT = Path(__file__).resolve().parents[2]
PACK_FOLDER = "ComfyUI-DragonDiffusion"  # the custom_nodes folder name, as a user's clone would be called
NODE_IDS = (
    "DragonDiff_Inversion", "DragonDiff_CaptureSample", "DragonDiff_MoveEdit", "DragonDiff_DragEdit", "DragonDiff_PointSetEdit",
    "DragonDiff_AppearanceEdit", "DragonDiff_PasteEdit", "DragonDiff_GuidedSampler",
    "DragonDiff_CrossBranchAttention", "DragonDiff_ShapesModelLoader", "DragonDiff_ShapesPrompt",
    "DragonDiff_ShapesScene",
)
SHAPES_WORKFLOWS = sorted(p.name for p in (ROOT / "workflows").glob("*shapes*.json"))
MOVE_WORKFLOW = "dragon_move_shapes_demo.json"
STEPS = 10  # DDIM steps for ordinary runs (the demo workflows say 50)
# a deadline for the server's start, not a sleep: polled every 0.25 s, so a generous one costs nothing
# when the machine is idle. 60 s was too short under load (2 cores, other jobs): ComfyUI's start,
# importing comfy_extras, took over 60 s once in a 10-run loop beside an SD1.5 run
READY_TIMEOUT = 300.0
RUN_TIMEOUT = 600.0  # a prompt's deadline (polled, like READY_TIMEOUT); a 10-step shapes prompt takes seconds
TERMINAL_EVENTS = {"execution_success", "execution_error", "execution_interrupted"}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the server ------------------------------------------------------------------------------------


@dataclass
class ComfyServer:
    url: str
    proc: subprocess.Popen
    log_path: Path
    dirs: dict[str, Path]
    pack_path: Path  # the pack's folder as ComfyUI sees it (the symlink)
    object_info: dict = field(default_factory=dict)

    @property
    def ws_url(self) -> str:
        return "ws" + self.url[len("http"):] + "/ws"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 60) -> str:
        tail = "\n".join(self.log().splitlines()[-lines:])
        return f"\n--- last {lines} lines of the ComfyUI server log ({self.log_path}) ---\n{tail}"

    def fail(self, message: str) -> None:
        pytest.fail(message + self.log_tail(), pytrace=False)


def _get_json(url: str, timeout: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


@contextlib.contextmanager
def run_server(comfy_path: Path, base: Path, models: dict[str, Path] | None = None, extra_args: tuple = (),
               threads: str = "1", stop_timeout: float = 15.0):
    """``main.py --cpu`` with this pack in a custom_nodes folder and fresh input, output, temp and
    user folders under ``base``, model folders (``{"checkpoints": path}``) added through
    --extra-model-paths-config; yields the ready ComfyServer and stops it afterwards."""
    if not (comfy_path / "main.py").is_file():
        pytest.skip(f"COMFYUI_PATH={str(comfy_path)!r} has no main.py to start a server with")
    dirs = {name: base / name for name in ("input", "output", "temp", "user", "custom_nodes")}
    for d in dirs.values():
        d.mkdir()
    pack = dirs["custom_nodes"] / PACK_FOLDER
    pack.symlink_to(ROOT, target_is_directory=True)
    # ComfyUI's extra_model_paths.yaml: any section, any folder kind; "custom_nodes" adds a folder
    # to scan for node packs (utils/extra_config.py -> folder_paths.add_model_folder_path).
    config = base / "extra_model_paths.yaml"
    folders = {"custom_nodes": dirs["custom_nodes"], **(models or {})}
    config.write_text("dragondiffusion_test:\n" + "".join(f"  {k}: {json.dumps(str(v))}\n" for k, v in folders.items()))
    port = _free_port()
    cmd = [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
           "--extra-model-paths-config", str(config),
           "--disable-all-custom-nodes", "--whitelist-custom-nodes", PACK_FOLDER,
           "--input-directory", str(dirs["input"]), "--output-directory", str(dirs["output"]),
           "--temp-directory", str(dirs["temp"]), "--user-directory", str(dirs["user"]),
           "--database-url", "sqlite:///:memory:", "--disable-auto-launch", *extra_args]
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "PYTHONUNBUFFERED": "1"}
    log_path = base / "server.log"
    log_file = open(log_path, "wb")
    proc = subprocess.Popen(cmd, cwd=comfy_path, stdin=subprocess.DEVNULL, stdout=log_file,
                            stderr=subprocess.STDOUT, env=env)
    srv = ComfyServer(f"http://127.0.0.1:{port}", proc, log_path, dirs, pack)
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if proc.poll() is not None:
                srv.fail(f"the ComfyUI server exited with status {proc.returncode} before it was ready "
                         f"(command: {' '.join(cmd)})")
            try:
                srv.object_info = _get_json(srv.url + "/object_info")
                break
            except (urllib.error.URLError, ConnectionError, OSError, json.JSONDecodeError):
                pass
            if time.monotonic() > deadline:
                srv.fail(f"the ComfyUI server did not answer GET /object_info within {READY_TIMEOUT:.0f} s")
            time.sleep(0.25)
        yield srv
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=stop_timeout)
        log_file.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory, comfyui_path) -> ComfyServer:
    pytest.importorskip("aiohttp", reason="the HTTP server tests drive the websocket with aiohttp")
    pytest.importorskip("PIL", reason="the HTTP server tests read the saved PNGs with Pillow")
    with run_server(comfyui_path, tmp_path_factory.mktemp("comfy_http")) as srv:
        yield srv


# -- talking to it -------------------------------------------------------------------------------------


@dataclass
class Run:
    """One prompt's life as a client sees it: the websocket messages (JSON, with the
    monotonic time each arrived) and the history entry."""

    prompt_id: str
    node_ids: dict[str, str]  # class_type -> node id (first node of that type)
    messages: list[tuple[float, dict]]
    history: dict
    node_errors: dict  # POST /prompt's answer: nodes that failed validation (their outputs are skipped)

    @property
    def status(self) -> dict:
        return self.history["status"]

    def events(self, kind: str) -> list[dict]:
        return [m["data"] for _, m in self.messages if m["type"] == kind]

    def progress(self, node: str, after: float | None = None) -> list[tuple[int, int]]:
        return [(m["data"]["value"], m["data"]["max"]) for t, m in self.messages
                if m["type"] == "progress" and m["data"]["node"] == node and (after is None or t >= after)]

    def status_message(self, kind: str) -> dict | None:
        return next((d for k, d in self.status["messages"] if k == kind), None)

    def saved_images(self) -> list[dict]:
        return [img for node, out in self.history["outputs"].items() for img in out.get("images", [])
                if img.get("type") == "output"]


OnMessage = Callable[[Any, str, dict], Awaitable[None]]


async def _execute(server: ComfyServer, prompt: dict, on_message: OnMessage | None = None,
                   timeout: float = RUN_TIMEOUT) -> Run:
    """POST the prompt with a websocket open (as the frontend does), collect the messages
    for it until it ends, then poll GET /history/<id> until the entry is there."""
    import aiohttp

    client_id = uuid.uuid4().hex
    messages: list[tuple[float, dict]] = []
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{server.ws_url}?clientId={client_id}") as ws:
            async with session.post(server.url + "/prompt", json={"prompt": prompt, "client_id": client_id}) as r:
                body = await r.json()
                if r.status != 200:
                    server.fail(f"POST /prompt answered {r.status}: {json.dumps(body)[:3000]}")
            pid = body["prompt_id"]
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    server.fail(f"prompt {pid} did not finish within {timeout:.0f} s; last messages: "
                                f"{[m['type'] for _, m in messages[-10:]]}")
                try:
                    msg = await ws.receive(timeout=left)
                except asyncio.TimeoutError:
                    continue
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                    server.fail(f"the websocket closed while prompt {pid} ran ({msg.type})")
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue  # binary preview frames (none from these nodes)
                m = json.loads(msg.data)
                data = m.get("data") or {}
                if data.get("prompt_id") not in (None, pid):
                    continue
                messages.append((time.monotonic(), m))
                if on_message is not None:
                    await on_message(session, pid, m)
                if m["type"] in TERMINAL_EVENTS and data.get("prompt_id") == pid:
                    break
        while True:  # the history entry is written just after the terminal message
            async with session.get(f"{server.url}/history/{pid}") as r:
                assert r.status == 200
                entry = (await r.json()).get(pid)
            if entry is not None and entry.get("status") is not None:
                break
            if time.monotonic() > deadline:
                server.fail(f"GET /history/{pid} has no finished entry within {timeout:.0f} s")
            await asyncio.sleep(0.05)
    node_ids: dict[str, str] = {}
    for nid, node in prompt.items():
        node_ids.setdefault(node["class_type"], nid)
    return Run(pid, node_ids, messages, entry, body.get("node_errors", {}))


def execute(server: ComfyServer, prompt: dict, on_message: OnMessage | None = None,
            timeout: float = RUN_TIMEOUT) -> Run:
    return asyncio.run(_execute(server, prompt, on_message, timeout))


def execute_ok(server: ComfyServer, prompt: dict) -> Run:
    run = execute(server, prompt)
    if run.status["status_str"] != "success" or not run.status["completed"]:
        err = run.status_message("execution_error") or run.status_message("execution_interrupted")
        server.fail(f"prompt {run.prompt_id} did not succeed: {json.dumps(run.status)[:500]} "
                    f"{json.dumps(err)[:3000] if err else ''}")
    return run


def post_json(server: ComfyServer, path: str, payload: dict) -> int:
    req = urllib.request.Request(server.url + path, data=json.dumps(payload).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status


def free_everything(server: ComfyServer) -> None:
    """POST /free as the frontend's 'unload models / free model and node cache' buttons do.

    The queue worker applies the flags when it next wakes with an empty queue, or right after
    the prompt it is running; so one small prompt run to completion after the POST guarantees
    they are applied before the next prompt starts (a sleep would only make it likely). The
    barrier's node has inputs no other prompt here uses, so nothing it caches is reused."""
    assert post_json(server, "/free", {"free_memory": True, "unload_models": True}) == 200
    barrier = {"scene": {"class_type": "DragonDiff_ShapesScene", "inputs": {"scene": 987654321, "object": 0}},
               "show": {"class_type": "PreviewImage", "inputs": {"images": ["scene", 0]}}}
    execute_ok(server, barrier)


def view_image(server: ComfyServer, info: dict) -> np.ndarray:
    """GET /view for a history image entry; the decoded pixels (H, W, 3) uint8."""
    from PIL import Image

    query = urllib.parse.urlencode({"filename": info["filename"], "type": info["type"],
                                    "subfolder": info.get("subfolder", "")})
    try:
        with urllib.request.urlopen(f"{server.url}/view?{query}", timeout=10) as r:
            assert r.status == 200
            raw = r.read()
    except urllib.error.HTTPError as e:
        server.fail(f"GET /view?{query} answered {e.code}")
    img = Image.open(io.BytesIO(raw))
    assert img.format == "PNG"
    return np.asarray(img.convert("RGB"))


def saved_image(server: ComfyServer, run: Run) -> tuple[dict, np.ndarray]:
    images = run.saved_images()
    assert len(images) == 1, run.history["outputs"]
    info = images[0]
    on_disk = server.dirs["output"] / info.get("subfolder", "") / info["filename"]
    assert on_disk.is_file(), f"{on_disk} is not in the output directory"
    return info, view_image(server, info)


# -- UI workflow -> API prompt, with the server's own node definitions ---------------------------------


def ui_to_api(ui: dict, defs: dict) -> dict:
    """A UI-format workflow -> the API prompt the frontend POSTs, with the server's own
    /object_info node definitions (widget order, link types checked)."""
    types = {n["type"] for n in ui["nodes"]}
    return to_api(ui, {t: spec_from_object_info(defs[t]) for t in types if t in defs})


def template(server: ComfyServer, name: str) -> dict:
    """A workflow as the template browser loads it: from the pack's template route."""
    url = f"{server.url}/api/workflow_templates/{urllib.parse.quote(PACK_FOLDER)}/{urllib.parse.quote(name)}"
    try:
        return _get_json(url)
    except urllib.error.HTTPError as e:
        server.fail(f"GET {url} answered {e.code}")


def demo_prompt(server: ComfyServer, name: str = MOVE_WORKFLOW, steps: int = STEPS,
                prefix: str | None = None) -> dict:
    prompt = ui_to_api(template(server, name), server.object_info)
    for node in prompt.values():
        if node["class_type"] == "DragonDiff_Inversion":
            node["inputs"]["steps"] = steps
        if node["class_type"] == "SaveImage" and prefix is not None:
            node["inputs"]["filename_prefix"] = prefix
    return prompt


def executed_fresh(run: Run) -> bool:
    cached = run.status_message("execution_cached")
    return cached is not None and cached["nodes"] == []


@pytest.fixture(scope="module")
def reference(server) -> tuple[Run, np.ndarray]:
    """The move demo at STEPS steps, every node executed (nothing from the cache)."""
    free_everything(server)
    run = execute_ok(server, demo_prompt(server, prefix="http_reference"))
    assert executed_fresh(run), run.status_message("execution_cached")
    return run, saved_image(server, run)[1]


# -- the tests -----------------------------------------------------------------------------------------


def test_object_info_lists_every_node_documented_and_the_pack_imported_cleanly(server):
    info = server.object_info
    ours = sorted(k for k in info if k.startswith("DragonDiff_"))
    assert ours == sorted(NODE_IDS)
    for node_id in NODE_IDS:
        d = info[node_id]
        assert d["name"] == node_id
        assert d["category"].startswith("DragonDiffusion"), (node_id, d["category"])
        assert d["description"].strip(), node_id
        assert d["display_name"].strip() and d["display_name"] != node_id, node_id
        assert d["python_module"] == f"custom_nodes.{PACK_FOLDER}", (node_id, d["python_module"])
        for section in ("required", "optional"):
            assert list(d["input"].get(section, {})) == d["input_order"].get(section, []), (node_id, section)
            for name, spec in d["input"].get(section, {}).items():
                opts = spec[1] if len(spec) > 1 else {}
                assert str(opts.get("tooltip", "")).strip(), f"{node_id}.{name} has no tooltip"
        outputs = d["output"]
        assert len(d["output_name"]) == len(outputs) == len(d["output_is_list"]), node_id
        tooltips = d.get("output_tooltips")
        assert tooltips is not None and len(tooltips) == len(outputs), f"{node_id}: output_tooltips {tooltips}"
        for name, tip in zip(d["output_name"], tooltips):
            assert tip and tip.strip(), f"{node_id} output {name} has no tooltip"
    # only the pack was loaded from custom_nodes (the checkout's own example pack was skipped)
    assert "SaveImageWebsocket" not in info
    # the import went through: ComfyUI's import-times table lists the folder without "(IMPORT FAILED)",
    # and no other startup line (warning, traceback) mentions it
    startup = server.log().split("Starting server")[0].splitlines()
    pack = str(server.pack_path)
    mentions = [line for line in startup if pack in line or str(ROOT) in line]
    imported = [line for line in mentions if line.strip().endswith(f"seconds: {pack}")]
    assert len(imported) == 1, server.log_tail()
    assert mentions == imported, f"startup log lines about the pack: {mentions}"
    assert not [line for line in startup if "IMPORT FAILED" in line and PACK_FOLDER in line]


def test_server_starts_from_its_own_fresh_folders(server, comfyui_path):
    """A ComfyUI a person has used (saved workflows, settings, inputs) cannot change a test: the
    server was started with its own user, input, output and temp folders, all empty at start."""
    argv = _get_json(server.url + "/system_stats")["system"]["argv"]
    for flag, name in (("--user-directory", "user"), ("--input-directory", "input"),
                       ("--output-directory", "output"), ("--temp-directory", "temp")):
        assert flag in argv and Path(argv[argv.index(flag) + 1]) == server.dirs[name], (flag, argv)
        assert comfyui_path.resolve() not in server.dirs[name].resolve().parents, (flag, server.dirs[name])
    # the frontend's stored state lives in the user folder: no saved workflow; no setting but the
    # ones tests post (the browser suite's first-run flag)
    try:
        saved = _get_json(server.url + "/userdata?dir=workflows&recurse=true")
    except urllib.error.HTTPError as e:  # 404: no workflows folder at all
        assert e.code == 404, e
        saved = []
    assert saved == [], f"saved workflows found: {saved}"
    assert set(_get_json(server.url + "/settings")) <= {"Comfy.TutorialCompleted"}


def test_template_browser_offers_the_shipped_workflows(server):
    listed = _get_json(server.url + "/api/workflow_templates")
    shipped = sorted(p.stem for p in (ROOT / "workflows").glob("*.json"))
    assert sorted(listed.get(PACK_FOLDER, [])) == shipped, listed
    for name in SHAPES_WORKFLOWS:
        assert template(server, name) == json.loads((ROOT / "workflows" / name).read_text())


@pytest.mark.parametrize("name", SHAPES_WORKFLOWS)
def test_shapes_demo_workflow_runs_over_http(server, name):
    prompt = demo_prompt(server, name, prefix=f"http_{Path(name).stem}")
    run = execute_ok(server, prompt)
    info, img = saved_image(server, run)
    assert info["filename"].startswith(f"http_{Path(name).stem}")
    assert img.shape == (256, 256, 3) and img.dtype == np.uint8  # the 32x32 result, upscaled 8x to be seen
    assert img.std() > 5, "the saved image is blank"
    # it is an edit, not a copy of an input: differs from every input preview (PreviewImage, type temp)
    previews = [view_image(server, i) for out in run.history["outputs"].values() for i in out.get("images", [])
                if i.get("type") == "temp"]
    assert previews, run.history["outputs"]
    for p in previews:
        assert np.abs(img.astype(int) - p.astype(int)).max() > 25


def test_errors_reach_the_client_naming_the_input(server):
    # validation (steps below the input's min): ComfyUI refuses the outputs that depend on the node
    # and names node and input; with no valid output left the whole prompt is refused (HTTP 400)...
    prompt = demo_prompt(server, MOVE_WORKFLOW, steps=1)
    inv = next(k for k, v in prompt.items() if v["class_type"] == "DragonDiff_Inversion")
    previews = [k for k, v in prompt.items() if v["class_type"] == "PreviewImage"]
    only_save = {k: v for k, v in prompt.items() if k not in previews}
    req = urllib.request.Request(server.url + "/prompt", data=json.dumps({"prompt": only_save}).encode(),
                                 method="POST", headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 400
    body = json.loads(e.value.read())
    assert body["error"]["type"] == "prompt_outputs_failed_validation", body
    [error] = body["node_errors"][inv]["errors"]
    assert error["type"] == "value_smaller_than_min" and error["extra_info"]["input_name"] == "steps", body
    # ... while the demo workflow as a user queues it (with its input preview, valid on its own) is
    # accepted with the same node_errors, and only the preview runs
    run = execute(server, prompt)
    assert [e["extra_info"]["input_name"] for e in run.node_errors[inv]["errors"]] == ["steps"], run.node_errors
    assert run.status["status_str"] == "success" and not run.saved_images()
    assert set(run.history["outputs"]) == set(previews)
    # execution: a bad points string fails in the node; the error (websocket and history) names the input
    prompt = demo_prompt(server, "dragon_drag_shapes_demo.json", prefix="http_bad")
    drag = next(k for k, v in prompt.items() if v["class_type"] == "DragonDiff_DragEdit")
    prompt[drag]["inputs"]["points"] = "1,2,3"
    run = execute(server, prompt)
    assert run.status["status_str"] == "error" and not run.status["completed"]
    [err] = run.events("execution_error")
    assert run.status_message("execution_error")["node_id"] == drag
    assert err["node_type"] == "DragonDiff_DragEdit" and err["node_id"] == drag
    assert "points" in err["exception_message"] and "expected 4" in err["exception_message"], err
    assert not run.saved_images()


def test_progress_is_reported_per_step(reference):
    run, _ = reference
    for node_type in ("DragonDiff_Inversion", "DragonDiff_GuidedSampler"):
        node = run.node_ids[node_type]
        steps = run.progress(node)
        assert steps == [(v, STEPS) for v in range(1, STEPS + 1)], (node_type, steps)
    # and nothing else reports progress in this graph
    assert {m["data"]["node"] for _, m in run.messages if m["type"] == "progress"} == {
        run.node_ids["DragonDiff_Inversion"], run.node_ids["DragonDiff_GuidedSampler"]}


@pytest.mark.parametrize("node_type, steps", [("DragonDiff_Inversion", 400), ("DragonDiff_GuidedSampler", 100)])
def test_interrupt_stops_within_one_step_and_the_server_keeps_serving(server, reference, node_type, steps):
    prompt = demo_prompt(server, MOVE_WORKFLOW, steps=steps, prefix="http_interrupted")
    target = next(k for k, v in prompt.items() if v["class_type"] == node_type)
    sent: dict[str, Any] = {}

    async def interrupt_after_a_few_steps(session, pid, m):
        if sent or m["type"] != "progress" or m["data"]["node"] != target or m["data"]["value"] < 3:
            return
        sent.update(value=m["data"]["value"], at=time.monotonic())
        async with session.post(server.url + "/interrupt", json={"prompt_id": pid}) as r:
            assert r.status == 200

    run = execute(server, prompt, interrupt_after_a_few_steps)
    assert sent, f"{node_type} never reported 3 steps: {run.progress(target)}"
    # stopped in the node, within one step of the interrupt
    [ev] = run.events("execution_interrupted")
    assert ev["node_type"] == node_type and ev["node_id"] == target, ev
    later = run.progress(target, after=sent["at"])
    assert len(later) <= 1 and all(v <= sent["value"] + 1 for v, _ in later), (sent, later)
    assert max(v for v, _ in run.progress(target)) < steps
    # the history says so too, and nothing was saved
    assert run.status["status_str"] == "error" and not run.status["completed"]
    assert run.status_message("execution_interrupted")["node_type"] == node_type
    assert not run.saved_images()
    # the server keeps serving; the cached model (the interrupted run's) still gives the reference image
    again = execute_ok(server, demo_prompt(server, prefix="http_after_interrupt"))
    cached = set(again.status_message("execution_cached")["nodes"])
    assert again.node_ids["DragonDiff_GuidedSampler"] not in cached
    _, img = saved_image(server, again)
    assert np.array_equal(img, reference[1])


def test_same_prompt_after_free_gives_the_same_image(server, reference):
    run0, img0 = reference
    free_everything(server)
    run = execute_ok(server, demo_prompt(server, prefix="http_reference"))
    assert executed_fresh(run), ("/free did not drop the cache before the prompt ran",
                                 run.status_message("execution_cached"))
    info, img = saved_image(server, run)
    assert info["filename"] != run0.saved_images()[0]["filename"]  # a new file, same prefix
    assert np.array_equal(img, img0)
