"""The canvas editors (web/) in a real browser, against a headless ComfyUI with the pack.

Playwright drives Debian's chromium (``/usr/bin/chromium``, or ``$CHROMIUM``; Playwright's own
browser downloads are never used) against the server that test_http_server.py starts (same
fixture: main.py --cpu, the pack as a custom_nodes folder, temporary directories).

Checked, as a user does it with the mouse (each test waits for what it uses: the frontend's own
start finished (its restore of the default workflow, which would replace a graph loaded earlier),
the graph loaded with every node and widget, the node's editor mounted and placed, the picture
loaded; no fixed sleeps; the server's user, input, output and temp folders are fresh ones, so a
ComfyUI a person has used cannot change the result):
- First edit on a photo: the Stable Diffusion move workflow's structure (scripts/make_workflows.py)
  on the bundled model, a demo picture in Load Image: the Move / Resize editor shows it through
  the Resize node before anything runs; a box drawn around the object selects it, dragging moves
  it; Run sends the selection and the move, the server executed exactly those, and the saved
  picture shows the object moved.
- Paste: the same on two demo pictures: select the object on the source picture, place it on the
  base picture, Run; the executed prompt and a changed output.
- Drag node: run the drag demo, click two handle -> target pairs on the picture (the second after
  resizing the node), drag a target, add a third pair and delete it with a right-click, drop a
  lone handle with "Delete pair"; the points widget holds the pairs in image pixels; the
  workflow saved and loaded again keeps them; Run sends them and the executed prompt has them.
- Move / Resize node: run the move demo, drag the object's outline and the scale handle; dx,
  dy and scale follow; the prompt and the executed prompt carry them.
- A Load Image with a painted mask wired straight into both nodes (a workflow saved before the
  selection existed): the picture and the mask show before anything runs, at the image's own
  (non-square) size; the Drag node's Brush paints an editable region.
- Every shipped workflow, loaded in the frontend: no node covers another at the sizes the
  frontend gives them.
- Without a browser: the nodes' own previews (ui output on success, a websocket message when
  they refuse their settings) reach the client.

Screenshots (the nodes with the editor) go to ``$DRAGON_TEST_ARTIFACTS/browser`` (default
``test_artifacts/browser`` in the checkout). ``UPDATE_EDITOR_SCREENSHOT=1`` also rewrites the
README's picture, docs/editor.png.

Run: ``COMFYUI_PATH=/path/to/ComfyUI OMP_NUM_THREADS=1 python -m pytest -q
tests/integration/test_browser_editor.py`` with a Python that has ComfyUI's requirements and
``playwright`` (``.ci/setup_comfyui_env.sh`` installs both, and chromium). Skipped, with the
reason, without COMFYUI_PATH, playwright or chromium.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from test_http_server import (  # noqa: F401  (server: the module-scoped fixture, reused here)
    PACK_FOLDER,
    ROOT,
    RUN_TIMEOUT,
    demo_prompt,
    execute,
    server,
    template,
    view_image,
)

sys.path.insert(0, str(ROOT / "scripts"))
import make_workflows  # noqa: E402  (the shipped workflows' builder: the photo workflows on the demo model)

DRAG_WORKFLOW = "dragon_drag_shapes_demo.json"
MOVE_WORKFLOW = "dragon_move_shapes_demo.json"
STEPS = 10  # the Inversion's steps in the browser runs (the demos say 50)
ARTIFACTS = Path(os.environ.get("DRAGON_TEST_ARTIFACTS") or ROOT / "test_artifacts") / "browser"
DOCS_SCREENSHOT = ROOT / "docs" / "editor.png"
EXTENSION_URL = f"/extensions/{PACK_FOLDER}/"
NODE_TITLE_HEIGHT = 30  # LiteGraph's, in canvas units: a node's pos is below its title bar
APP = "window.comfyAPI.app.app"
LOADER_IMAGE = "dragon_editor_test.png"  # 48x40 RGBA: a painted mask (alpha 0) on x 10..19, y 12..23
LOADER_MASK_BOX = {"x0": 10, "y0": 12, "x1": 20, "y1": 24}
PHOTOS = {3: "dragon_scene3.png", 2: "dragon_scene2.png", 8: "dragon_scene8.png"}  # demo scenes as 256x256 photos
SHIPPED = sorted(p.name for p in (ROOT / "workflows").glob("*.json"))
EDITOR_NODES = ["DragonDiff_MoveEdit", "DragonDiff_DragEdit", "DragonDiff_PointSetEdit", "DragonDiff_AppearanceEdit",
                "DragonDiff_PasteEdit"]


def _chromium() -> str:
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).is_file():
        pytest.skip(f"no chromium at {path} (apt-get install chromium, or set CHROMIUM): the browser tests need one")
    return path


@pytest.fixture(scope="module")
def browser_tools(comfyui_path):
    """Checked before the server starts: skip fast, with the reason."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed in this Python "
                                   "(pip install playwright; the tests drive the system chromium, no browser download)")
    return sync_api, _chromium()


@contextlib.contextmanager
def open_page(browser_tools, server):  # noqa: F811
    """A chromium page on the server's frontend, its own start finished; fails afterwards on any
    console or page error that involves the pack's extension."""
    sync_api, chromium = browser_tools
    # a fresh user directory: skip the first-run template dialog
    req = urllib.request.Request(server.url + "/settings", data=json.dumps({"Comfy.TutorialCompleted": True}).encode(),
                                 method="POST", headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=10).close()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        pg = browser.new_page(viewport={"width": 1400, "height": 1100})
        pg.set_default_timeout(60_000)  # deadlines for waits on conditions, never sleeps
        problems: list[str] = []  # console errors and page errors that involve the pack's extension

        def on_console(msg):
            where = (msg.location or {}).get("url", "")
            if msg.type == "error" and (EXTENSION_URL in where or EXTENSION_URL in msg.text):
                problems.append(f"console: {msg.text} ({where})")

        pg.on("console", on_console)
        pg.on("pageerror", lambda e: problems.append(f"page error: {e} {e.stack}")
              if EXTENSION_URL in (e.stack or "") else None)
        pg.goto(server.url)
        wait_for_startup_graph(pg)
        pg.problems = problems
        yield pg
        browser.close()
    assert not problems, problems


@pytest.fixture(scope="module")
def page(browser_tools, server):  # noqa: F811
    _write_loader_image(server.dirs["input"] / LOADER_IMAGE)  # before the page lists the input files
    _write_photos(server.dirs["input"])
    with open_page(browser_tools, server) as pg:
        yield pg


# -- helpers ----------------------------------------------------------------------------------------


def wait_for_startup_graph(pg) -> None:
    """Wait until the frontend has finished its own start: ``app.vueAppReady`` turns true
    *before* the app registers the node types and restores the previous (or default) workflow,
    and a graph a test loads before that restore is replaced under it. ``window.app`` is set
    after setup; the default workflow (a fresh user and browser profile have no previous one)
    is the restore's last step."""
    pg.wait_for_function("() => window.app?.graph?.nodes?.length > 0 && window.graph === window.app.graph",
                         timeout=60_000)


def load_graph(pg, wf: dict) -> dict:
    """Load a UI-format workflow into the page and wait until every node of it is there (same id
    and type), its widgets built and every editor mounted; returns {class_type: node id}."""
    pg.evaluate(f"async (wf) => {{ await {APP}.loadGraphData(wf); }}", wf)
    nodes = [[n["id"], n["type"], len(n.get("widgets_values") or [])] for n in wf["nodes"]]
    pg.wait_for_function(f"""([nodes, editors]) => {{ const g = {APP}.graph; return g.nodes.length === nodes.length &&
        nodes.every(([id, type, nw]) => {{ const x = g.getNodeById(id); return x && x.type === type &&
            (nw === 0 || (x.widgets?.length ?? 0) > 0); }}) &&
        g.nodes.every(x => !editors.includes(x.type) || x.dragonEditor?.widget); }}""",
                         arg=[nodes, EDITOR_NODES])
    pg.keyboard.press("Escape")
    return pg.evaluate(f"() => Object.fromEntries({APP}.graph.nodes.map(n => [n.type, n.id]))")


def load_workflow(pg, server, name: str) -> dict:
    """Load a shipped workflow as the template browser does (its JSON from the pack's template
    route, into app.loadGraphData); returns {class_type: node id}."""
    ids = load_graph(pg, template(server, name))
    # a few DDIM steps are enough here
    set_steps(pg)
    return ids


def set_steps(pg) -> None:
    pg.evaluate(f"() => {APP}.graph.nodes.filter(n => n.type === 'DragonDiff_Inversion').forEach(n => "
                f"{{ n.widgets.find(w => w.name === 'steps').value = {STEPS}; }})")


def show_node(pg, node_id: int, zoom: float = 1.3) -> None:
    """Zoom the canvas, put the node near the top left of the view, and wait until its editor
    (a DOM widget the frontend moves on its next frames) is drawn inside the node."""
    pg.evaluate(f"""() => {{
        const c = {APP}.canvas, n = {APP}.graph.getNodeById({node_id});
        c.ds.scale = {zoom};
        c.ds.offset[0] = 120 / {zoom} - n.pos[0];
        c.ds.offset[1] = 110 / {zoom} - n.pos[1];
        c.setDirty(true, true);
    }}""")
    pg.wait_for_function(f"""() => {{
        const c = {APP}.canvas, n = {APP}.graph.getNodeById({node_id}), e = n.dragonEditor;
        if (!e) return true;
        if (e.el.dataset.node !== String(n.id)) return false;
        const r = c.canvas.getBoundingClientRect(), s = c.ds.scale, [ox, oy] = c.ds.offset;
        const x0 = r.left + (n.pos[0] + ox) * s, y0 = r.top + (n.pos[1] + oy) * s;
        const b = e.canvas.getBoundingClientRect();
        return b.width > 50 && b.height > 50 && b.left >= x0 - 1 && b.top >= y0 - 1
            && b.right <= x0 + n.size[0] * s + 1 && b.bottom <= y0 + n.size[1] * s + 1;
    }}""")


def node_box(pg, node_id: int, pad: float = 8) -> dict:
    """The node's rectangle on screen (title bar included), for screenshots."""
    return pg.evaluate(f"""() => {{
        const c = {APP}.canvas, n = {APP}.graph.getNodeById({node_id});
        const r = c.canvas.getBoundingClientRect(), s = c.ds.scale, [ox, oy] = c.ds.offset;
        const x = r.left + (n.pos[0] + ox) * s - {pad}, y = r.top + (n.pos[1] - {NODE_TITLE_HEIGHT} + oy) * s - {pad};
        return {{x: Math.max(0, x), y: Math.max(0, y), width: n.size[0] * s + 2 * {pad},
                 height: (n.size[1] + {NODE_TITLE_HEIGHT}) * s + 2 * {pad}}};
    }}""")


def shot(pg, node_id: int, name: str) -> Path:
    path = ARTIFACTS / name
    pg.screenshot(path=str(path), clip=node_box(pg, node_id))
    return path


def editor(node_id: int) -> str:
    return f"{APP}.graph.getNodeById({node_id}).dragonEditor"


def screen(pg, node_id: int, x: float, y: float) -> tuple[float, float]:
    """Screen position of image coordinates (x, y) in the node's editor."""
    p = pg.evaluate(f"() => {editor(node_id)}.screenPoint({x}, {y})")
    assert p is not None, "the editor has no picture to map onto"
    return p[0], p[1]


def click_pixel(pg, node_id: int, x: int, y: int, button: str = "left") -> None:
    pg.mouse.click(*screen(pg, node_id, x + 0.5, y + 0.5), button=button)


def drag(pg, start: tuple[float, float], end: tuple[float, float]) -> None:
    pg.mouse.move(*start)
    pg.mouse.down()
    for k in (0.3, 0.7, 1.0):
        pg.mouse.move(start[0] + (end[0] - start[0]) * k, start[1] + (end[1] - start[1]) * k)
    pg.mouse.up()


def widget(pg, node_id: int, name: str):
    return pg.evaluate(f"() => {APP}.graph.getNodeById({node_id}).widgets.find(w => w.name === '{name}').value")


def status(pg, node_id: int) -> str:
    return pg.evaluate(f"() => {editor(node_id)}.status.textContent")


def wait_picture(pg, node_id: int, url_part: str = "") -> None:
    """Wait until the node's editor shows a picture (or mask) from a URL containing ``url_part``;
    on a timeout the failure says what the editor had."""
    try:
        pg.wait_for_function(f"() => {{ const e = {editor(node_id)}, part = {json.dumps(url_part)}; "
                             "return !!(e.picture || e.mask) && (e.picture ? e.picture.url.includes(part) : "
                             "e.sourceKey.includes(part)) && e.rect() !== null; }")
    except Exception as err:
        state = pg.evaluate(f"""() => {{ const e = {editor(node_id)};
            return {{sourceKey: e.sourceKey, pictures: Object.keys(e.pics), failed: e.failed, tool: e.tool,
                     rect: e.rect(), canvas: [e.canvas.clientWidth, e.canvas.clientHeight]}}; }}""")
        raise AssertionError(f"node {node_id}'s editor shows no picture from {url_part!r}: {state}") from err


def button(pg, node_id: int, **data):
    """A button of the node's editor by its data attribute (tool=..., action=..., target=...)."""
    (key, value), = data.items()
    return pg.locator(f".dragondiffusion-editor[data-node='{node_id}'] button[data-{key}='{value}']")


def use_tool(pg, node_id: int, tool: str) -> None:
    button(pg, node_id, tool=tool).click()
    pg.wait_for_function(f"() => {editor(node_id)}.tool === '{tool}' && {editor(node_id)}.rect() !== null")


def drag_box(pg, node_id: int, a: tuple[float, float], b: tuple[float, float]) -> None:
    """Drag from image position a to b in the node's editor."""
    drag(pg, screen(pg, node_id, *a), screen(pg, node_id, *b))


def run_and_wait(pg, server, timeout: float = RUN_TIMEOUT) -> tuple[dict, dict]:
    """Click Run; returns (the prompt the page POSTed, the history entry once it finished)."""
    with pg.expect_response(lambda r: r.url.endswith("/prompt") and r.request.method == "POST") as info:
        pg.get_by_role("button", name="Run", exact=True).click()
    response = info.value
    assert response.ok, response.text()
    sent = response.request.post_data_json["prompt"]
    pid = response.json()["prompt_id"]
    deadline = time.monotonic() + timeout
    while True:
        with urllib.request.urlopen(f"{server.url}/history/{pid}", timeout=10) as r:
            entry = json.loads(r.read()).get(pid)
        if entry and entry.get("status", {}).get("completed") is not None and entry["status"].get("status_str"):
            break
        if time.monotonic() > deadline:
            server.fail(f"prompt {pid} did not finish within {timeout:.0f} s")
        time.sleep(0.1)
    if entry["status"]["status_str"] != "success":
        server.fail(f"prompt {pid} failed: {json.dumps(entry['status'])[:3000]}")
    return sent, entry


# -- tests ----------------------------------------------------------------------------------------------


def test_extension_is_served_and_registered(page, server):  # noqa: F811
    with urllib.request.urlopen(server.url + "/extensions", timeout=10) as r:
        listed = json.loads(r.read())
    ours = sorted(u for u in listed if u.startswith(EXTENSION_URL))
    assert ours == [f"{EXTENSION_URL}{n}" for n in ("dragon_editor.js", "editor_bars.js", "editor_draw.js",
                                                     "editor_geometry.js", "editor_sources.js", "editor_views.js",
                                                     "selection.js")], ours
    ids = load_workflow(page, server, DRAG_WORKFLOW)
    # gated on our node ids: the editor is in the Drag node only; it adds no serialised widget
    has = page.evaluate(f"() => {APP}.graph.nodes.filter(n => n.dragonEditor).map(n => n.type)")
    assert has == ["DragonDiff_DragEdit"]
    names = page.evaluate(f"() => {APP}.graph.getNodeById({ids['DragonDiff_DragEdit']}).widgets.map(w => w.name)")
    assert names == ["points", "region", "dragon_editor"]


def _photo_workflow(kind: str, photos: tuple[int, int], prompt: str) -> dict:
    """The shipped Stable Diffusion workflow of ``kind`` (Note, Load Image -> Resize -> the edit node
    with nothing preset), on the bundled model and demo pictures as the photos."""
    return make_workflows.sd15(kind, "shapes", (PHOTOS[photos[0]], PHOTOS[photos[1]]), prompt)


def _scene(seed: int) -> np.ndarray:
    from dragon_demo.shapes_world import random_scene

    return (np.clip(random_scene(seed).render(), 0, 1) * 255).round().astype(np.uint8)


def _saved(server, entry: dict) -> np.ndarray:
    [img] = [i for out in entry["outputs"].values() for i in out.get("images", []) if i.get("type") == "output"]
    return view_image(server, img).astype(int)


def _keep_result(name: str, before: np.ndarray, after: np.ndarray) -> None:
    """Input | result, 8x without smoothing, beside the screenshots (to judge the edit by eye)."""
    from PIL import Image

    pair = np.concatenate([before, np.full((before.shape[0], 2, 3), 255), after], 1).clip(0, 255).astype(np.uint8)
    Image.fromarray(pair).resize((pair.shape[1] * 8, pair.shape[0] * 8), Image.NEAREST).save(ARTIFACTS / name)


def _centroid(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()])


def test_move_on_a_photo_select_by_box_move_and_run(page, server):  # noqa: F811
    """The issue's first edit: a photo in Load Image, a box around the object, drag it, Run."""
    ids = load_graph(page, _photo_workflow("move", (3, 3), "gradient, yellow triangle"))
    set_steps(page)
    move_id = ids["DragonDiff_MoveEdit"]
    assert ids["MarkdownNote"] == 1 and "LoadImage" in ids and "ImageScale" in ids
    show_node(page, move_id, zoom=1.2)
    # the photo shows at once, through the Resize node: at the size the node will get
    wait_picture(page, move_id, f"filename={PHOTOS[3]}")
    assert page.evaluate(f"() => {editor(move_id)}.frame()") == {"w": 32, "h": 32}
    assert page.evaluate(f"() => {editor(move_id)}.tool") == "box"  # nothing selected yet
    assert status(page, move_id).startswith("Object: drag a box around it")
    shot(page, move_id, "photo_move_0_loaded.png")

    # a box around the yellow triangle (x 4..15, y 15..25 of 32x32): the selection, then on to moving
    drag_box(page, move_id, (3.2, 13.8), (17.2, 26.6))
    assert widget(page, move_id, "selection") == "box 3,14,17,27"
    page.wait_for_function(f"() => {editor(move_id)}.tool === 'move'")
    assert page.evaluate(f"() => {editor(move_id)}.mask.bbox") == {"x0": 3, "y0": 14, "x1": 17, "y1": 27}
    # drag it 10 px right and 7 px up
    drag_box(page, move_id, (10, 20), (20, 13))
    assert [widget(page, move_id, n) for n in ("dx", "dy", "scale")] == [10, -7, 1]
    assert status(page, move_id) == "dx 10, dy -7, scale 1.00"
    shot(page, move_id, "photo_move_1_moved.png")

    sent, entry = run_and_wait(page, server)
    expected = {"dx": 10, "dy": -7, "scale": 1, "selection": "box 3,14,17,27"}
    for prompt in (sent, entry["prompt"][2]):
        inputs = prompt[str(move_id)]["inputs"]
        assert {k: inputs[k] for k in expected} == expected and "mask" not in inputs, inputs
    # the object moved: the yellow pixels' centre went right and up, the picture changed
    before, after = _scene(3).astype(int), _saved(server, entry)
    _keep_result("photo_move_result.png", before, after)
    assert after.shape == (32, 32, 3) and np.abs(after - before).max() > 60
    yellow = lambda im: (im[..., 0] > 150) & (im[..., 1] > 150) & (im[..., 2] < 110)  # noqa: E731
    shift = _centroid(yellow(after)) - _centroid(yellow(before))
    assert shift[0] > 4 and shift[1] < -3, shift
    shot(page, move_id, "photo_move_2_after_run.png")


def test_paste_on_photos_select_on_the_source_place_and_run(page, server):  # noqa: F811
    ids = load_graph(page, _photo_workflow("paste", (2, 8), "flat, blue triangle"))
    set_steps(page)
    paste_id = ids["DragonDiff_PasteEdit"]
    show_node(page, paste_id, zoom=1.2)
    # first the source picture (the red diamond, x 9..20, y 8..18): select the diamond with a box
    wait_picture(page, paste_id, f"filename={PHOTOS[8]}")
    assert page.evaluate(f"() => {editor(paste_id)}.tool") == "box"
    assert status(page, paste_id).startswith("Source: drag a box around it")
    drag_box(page, paste_id, (8.6, 7.6), (21.4, 19.4))
    assert widget(page, paste_id, "selection") == "box 9,8,21,19"
    # then the base picture, with the diamond on it: drag it 8 px left and 6 px down
    page.wait_for_function(f"() => {editor(paste_id)}.tool === 'move'")
    wait_picture(page, paste_id, f"filename={PHOTOS[2]}")
    url = page.evaluate(f"() => {editor(paste_id)}.picture.url")
    assert url.endswith(f"filename={PHOTOS[2]}&subfolder=&type=input"), url
    drag_box(page, paste_id, (15, 13), (7, 19))
    assert [widget(page, paste_id, n) for n in ("dx", "dy", "scale")] == [-8, 6, 1]
    shot(page, paste_id, "photo_paste_1_placed.png")

    sent, entry = run_and_wait(page, server)
    expected = {"dx": -8, "dy": 6, "scale": 1, "selection": "box 9,8,21,19"}
    for prompt in (sent, entry["prompt"][2]):
        inputs = prompt[str(paste_id)]["inputs"]
        assert {k: inputs[k] for k in expected} == expected and "mask" not in inputs, inputs
    # the base picture changed where the diamond went (x 1..12, y 14..24), much less elsewhere
    before, after = _scene(2).astype(int), _saved(server, entry)
    _keep_result("photo_paste_result.png", before, after)
    diff = np.abs(after - before).sum(-1)
    assert diff[15:23, 2:11].mean() > 40 and diff[15:23, 2:11].mean() > 3 * diff[:, 24:].mean(), diff
    shot(page, paste_id, "photo_paste_2_after_run.png")


def test_drag_node_click_points_save_reload_and_run(page, server):  # noqa: F811
    ids = load_workflow(page, server, DRAG_WORKFLOW)
    drag_id = ids["DragonDiff_DragEdit"]
    show_node(page, drag_id)
    saved = json.loads((ROOT / "workflows" / DRAG_WORKFLOW).read_text())
    assert widget(page, drag_id, "points") == next(
        n["widgets_values"][0] for n in saved["nodes"] if n["type"] == "DragonDiff_DragEdit")
    assert page.evaluate(f"() => {editor(drag_id)}.rect()") is None  # nothing to draw on before a run

    # the demo as it comes: the node then shows the image it got
    run_and_wait(page, server)
    wait_picture(page, drag_id, "type=temp")
    assert page.evaluate(f"() => {editor(drag_id)}.frame()") == {"w": 32, "h": 32}
    shot(page, drag_id, "drag_0_loaded.png")

    button(page, drag_id, action="clear-points").click()
    assert widget(page, drag_id, "points") == ""
    click_pixel(page, drag_id, 10, 20)  # handle
    assert widget(page, drag_id, "points") == ""  # a handle alone is not a pair yet
    assert "click the target" in status(page, drag_id)
    click_pixel(page, drag_id, 17, 16)  # its target
    assert widget(page, drag_id, "points") == "10,20,17,16"

    # the node resized: the picture is drawn at another scale, clicks still land on image pixels
    scale0 = page.evaluate(f"() => {editor(drag_id)}.rect().scale")
    page.evaluate(f"() => {{ const n = {APP}.graph.getNodeById({drag_id}); "
                  f"n.setSize([n.size[0] + 100, n.size[1] + 100]); n.setDirtyCanvas(true, true); }}")
    page.wait_for_function(f"() => {editor(drag_id)}.rect().scale > {scale0} + 0.5")
    click_pixel(page, drag_id, 4, 6)
    click_pixel(page, drag_id, 8, 4)
    assert widget(page, drag_id, "points") == "10,20,17,16; 4,6,8,4"

    # drag the first target one pixel right and up
    drag(page, screen(page, drag_id, 17.5, 16.5), screen(page, drag_id, 18.5, 15.5))
    assert widget(page, drag_id, "points") == "10,20,18,15; 4,6,8,4"
    # a third pair, deleted with a right-click on its handle
    click_pixel(page, drag_id, 25, 25)
    click_pixel(page, drag_id, 28, 20)
    assert widget(page, drag_id, "points") == "10,20,18,15; 4,6,8,4; 25,25,28,20"
    click_pixel(page, drag_id, 25, 25, button="right")
    expected = "10,20,18,15; 4,6,8,4"
    assert widget(page, drag_id, "points") == expected
    # a handle waiting for its target, dropped with "Delete pair" (which takes it before any pair)
    click_pixel(page, drag_id, 30, 2)
    assert "click the target" in status(page, drag_id)
    button(page, drag_id, action="delete-pair").click()
    assert widget(page, drag_id, "points") == expected and "click the target" not in status(page, drag_id)
    assert status(page, drag_id).startswith("32x32 · 2 pairs")
    # the region tools: the mask input is wired (the demo's grown mask), so it is shown, read only
    use_tool(page, drag_id, "brush")
    assert status(page, drag_id).startswith("mask is wired")
    drag_box(page, drag_id, (5, 5), (9, 9))
    assert widget(page, drag_id, "region") == ""
    use_tool(page, drag_id, "points")
    shot(page, drag_id, "drag_1_points.png")

    # saved and loaded again (what a shared workflow file does): the pairs come back; the editor
    # itself is not serialised, the points and region widgets are the only values
    saved = page.evaluate(f"() => JSON.parse(JSON.stringify({APP}.graph.serialize()))")
    node = next(n for n in saved["nodes"] if n["id"] == drag_id)
    assert node["widgets_values"] == [expected, ""]
    load_graph(page, saved)
    assert widget(page, drag_id, "points") == expected
    show_node(page, drag_id)
    page.wait_for_function(f"() => {editor(drag_id)}.status.textContent.includes('2 pairs')")

    # Run: the prompt carries the points, and the server executed exactly those
    sent, entry = run_and_wait(page, server)
    inputs = sent[str(drag_id)]["inputs"]
    assert inputs["points"] == expected and "dragon_editor" not in inputs, inputs
    executed = entry["prompt"][2]
    assert executed[str(drag_id)]["inputs"]["points"] == expected
    own = entry["outputs"][str(drag_id)]["dragon_image"]
    assert len(own) == 1 and own[0]["type"] == "temp"
    assert any(img.get("type") == "output" for out in entry["outputs"].values() for img in out.get("images", []))
    # the editor now shows the node's own preview: the image the node got
    wait_picture(page, drag_id, own[0]["filename"])
    shot(page, drag_id, "drag_2_after_run.png")


def test_move_node_drag_the_mask_and_the_scale_handle(page, server):  # noqa: F811
    ids = load_workflow(page, server, MOVE_WORKFLOW)
    move_id = ids["DragonDiff_MoveEdit"]
    show_node(page, move_id)
    assert [widget(page, move_id, n) for n in ("dx", "dy", "scale")] == [10, -6, 1]
    run_and_wait(page, server)  # the node sends its picture and mask
    wait_picture(page, move_id)
    page.wait_for_function(f"() => {editor(move_id)}.mask?.bbox && {editor(move_id)}.picture")
    assert page.evaluate(f"() => {editor(move_id)}.tool") == "move"  # the mask is wired: nothing to select
    box = page.evaluate(f"() => {editor(move_id)}.mask.bbox")
    shot(page, move_id, "move_0_loaded.png")

    # drag the object (at its moved place) 4 px left and 3 px down
    cx, cy = (box["x0"] + box["x1"]) / 2 + 10, (box["y0"] + box["y1"]) / 2 - 6
    drag(page, screen(page, move_id, cx, cy), screen(page, move_id, cx - 4, cy + 3))
    assert [widget(page, move_id, n) for n in ("dx", "dy", "scale")] == [6, -3, 1]
    # the scale handle (the moved box's corner) pulled out along the diagonal to 1.25x
    hx, hy = box["x1"] + 6, box["y1"] - 3
    gx = cx - 4 + (box["x1"] - (box["x0"] + box["x1"]) / 2) * 1.25
    gy = cy + 3 + (box["y1"] - (box["y0"] + box["y1"]) / 2) * 1.25
    drag(page, screen(page, move_id, hx, hy), screen(page, move_id, gx, gy))
    assert [widget(page, move_id, n) for n in ("dx", "dy")] == [6, -3]
    assert abs(widget(page, move_id, "scale") - 1.25) <= 0.02
    scale = widget(page, move_id, "scale")
    assert status(page, move_id) == f"dx 6, dy -3, scale {scale:.2f}"
    shot(page, move_id, "move_1_dragged.png")

    sent, entry = run_and_wait(page, server)
    for prompt in (sent, entry["prompt"][2]):
        inputs = prompt[str(move_id)]["inputs"]
        assert (inputs["dx"], inputs["dy"], inputs["scale"]) == (6, -3, scale), inputs
    _update_docs_screenshot()


def _write_loader_image(path: Path) -> None:
    from PIL import Image

    h, w = 40, 48
    rgba = np.zeros((h, w, 4), np.uint8)
    rgba[..., 0] = np.linspace(40, 220, w, dtype=np.uint8)[None]
    rgba[..., 1] = np.linspace(200, 60, h, dtype=np.uint8)[:, None]
    rgba[..., 2] = 120
    rgba[..., 3] = 255
    b = LOADER_MASK_BOX
    rgba[b["y0"]:b["y1"], b["x0"]:b["x1"], 3] = 0  # what the mask editor's brush leaves: LoadImage's MASK = 1 - alpha
    Image.fromarray(rgba, "RGBA").save(path)


def _write_photos(folder: Path) -> None:
    """Demo scenes as 'photos': 256x256 (8x, nearest), which the workflows' Resize brings back to 32x32."""
    from PIL import Image

    for seed, name in PHOTOS.items():
        Image.fromarray(_scene(seed)).resize((256, 256), Image.NEAREST).save(folder / name)


def test_load_image_wired_in_shows_before_anything_runs(page, server):  # noqa: F811
    """Load Image (with a painted mask) straight into both nodes, as saved before the nodes had
    a selection (the Move node's three widget values, no image input)."""
    wf = {"last_node_id": 3, "last_link_id": 2, "groups": [], "config": {}, "extra": {}, "version": 0.4,
          "links": [[1, 1, 0, 2, 0, "IMAGE"], [2, 1, 1, 3, 0, "MASK"]],
          "nodes": [
              {"id": 1, "type": "LoadImage", "pos": [20, 40], "size": [300, 320], "flags": {}, "order": 0, "mode": 0,
               "inputs": [], "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1], "slot_index": 0},
                                         {"name": "MASK", "type": "MASK", "links": [2], "slot_index": 1}],
               "properties": {}, "widgets_values": [LOADER_IMAGE, "image"]},
              {"id": 2, "type": "DragonDiff_DragEdit", "pos": [360, 40], "size": [380, 520], "flags": {}, "order": 1,
               "mode": 0, "inputs": [{"name": "image", "type": "IMAGE", "link": 1},
                                     {"name": "mask", "type": "MASK", "link": None}],
               "outputs": [{"name": "edit", "type": "DRAGON_EDIT", "links": [], "slot_index": 0}],
               "properties": {}, "widgets_values": [""]},
              {"id": 3, "type": "DragonDiff_MoveEdit", "pos": [780, 40], "size": [380, 520], "flags": {}, "order": 2,
               "mode": 0, "inputs": [{"name": "mask", "type": "MASK", "link": 2},
                                     {"name": "inpaint_region", "type": "MASK", "link": None}],
               "outputs": [{"name": "edit", "type": "DRAGON_EDIT", "links": [], "slot_index": 0}],
               "properties": {}, "widgets_values": [0, 0, 1]}]}
    load_graph(page, wf)
    show_node(page, 2, zoom=1.0)
    # the Drag node: the loader's picture, at its own size (48x40, not square)
    wait_picture(page, 2, f"filename={LOADER_IMAGE}")
    assert page.evaluate(f"() => {editor(2)}.frame()") == {"w": 48, "h": 40}
    click_pixel(page, 2, 47, 0)
    click_pixel(page, 2, 0, 39)
    assert widget(page, 2, "points") == "47,0,0,39"  # the corners: the frame is the image, not the node
    # its editable region, painted with the brush (no mask wired): a stroke across the picture
    use_tool(page, 2, "brush")
    drag_box(page, 2, (4, 20), (40, 20))
    region = widget(page, 2, "region")
    assert region.startswith("brush ") and region.endswith(",20")
    page.wait_for_function(f"() => {editor(2)}.mask?.count > 0")
    m = page.evaluate(f"() => {{ const m = {editor(2)}.mask; return {{...m.bbox, count: m.count}}; }}")
    assert m["x0"] <= 4 and m["x1"] >= 40 and m["y0"] < 20 < m["y1"], m
    shot(page, 2, "loadimage_drag_region.png")
    # the Move node: the painted mask (alpha 0) as the object
    show_node(page, 3, zoom=1.0)
    page.wait_for_function(f"() => {editor(3)}.mask?.bbox && {editor(3)}.picture")
    assert page.evaluate(f"() => {editor(3)}.tool") == "move"
    assert page.evaluate(f"() => {editor(3)}.mask.bbox") == LOADER_MASK_BOX
    assert page.evaluate(f"() => {editor(3)}.frame()") == {"w": 48, "h": 40}
    b = LOADER_MASK_BOX
    cx, cy = (b["x0"] + b["x1"]) / 2, (b["y0"] + b["y1"]) / 2
    drag(page, screen(page, 3, cx, cy), screen(page, 3, cx + 20, cy - 5))
    assert [widget(page, 3, n) for n in ("dx", "dy", "scale")] == [20, -5, 1]
    # past the frame (the node crops that part), but never so far that none of the box is left
    drag(page, screen(page, 3, cx + 20, cy - 5), screen(page, 3, cx + 200, cy - 5))
    assert [widget(page, 3, n) for n in ("dx", "dy")] == [48 - 1 - b["x0"], -5]
    shot(page, 3, "loadimage_move.png")


def test_load_image_off_screen_and_a_file_that_arrives_late(page, server):  # noqa: F811
    """The loader far off screen (the frontend does not draw it, so node.imgs never follows its
    combo): a file named before it exists is shown once it arrives, with no action, and a picture
    picked in the combo is shown at once. Until the file arrives the editor says which file it could
    not load and where to fix it."""
    late = "dragon_editor_late.png"
    (server.dirs["input"] / late).unlink(missing_ok=True)
    wf = {"last_node_id": 2, "last_link_id": 1, "groups": [], "config": {}, "extra": {}, "version": 0.4,
          "links": [[1, 1, 0, 2, 0, "IMAGE"]],
          "nodes": [
              {"id": 1, "type": "LoadImage", "pos": [-4000, 40], "size": [300, 320], "flags": {}, "order": 0, "mode": 0,
               "inputs": [], "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1], "slot_index": 0},
                                         {"name": "MASK", "type": "MASK", "links": [], "slot_index": 1}],
               "properties": {}, "widgets_values": [late, "image"]},
              {"id": 2, "type": "DragonDiff_DragEdit", "pos": [360, 40], "size": [380, 520], "flags": {}, "order": 1,
               "mode": 0, "inputs": [{"name": "image", "type": "IMAGE", "link": 1},
                                     {"name": "mask", "type": "MASK", "link": None}],
               "outputs": [{"name": "edit", "type": "DRAGON_EDIT", "links": [], "slot_index": 0}],
               "properties": {}, "widgets_values": [""]}]}
    load_graph(page, wf)
    show_node(page, 2, zoom=1.0)
    page.wait_for_function(f"() => {editor(2)}.failed?.includes({json.dumps(late)})")
    message = page.evaluate(f"() => {{ const e = {editor(2)}; return e.noPictureMessage(e.view()); }}")
    assert message.startswith(f"Could not load {late} for image: pick or upload"), message
    off_screen = f"() => !{APP}.canvas.visible_nodes.includes({APP}.graph.getNodeById(1))"
    assert page.evaluate(off_screen)
    # the file arrives: the editor asks again by itself (1 s, then 2 s, ...)
    _write_loader_image(server.dirs["input"] / late)
    wait_picture(page, 2, f"filename={late}")
    assert page.evaluate(f"() => {editor(2)}.frame()") == {"w": 48, "h": 40}
    assert page.evaluate(f"() => {editor(2)}.failed") == []
    # another picture picked in the combo (value, then callback, as the combo menu does), loader still unseen
    page.evaluate(f"""(name) => {{ const w = {APP}.graph.getNodeById(1).widgets.find(w => w.name === 'image');
        w.value = name; w.callback?.(name); }}""", PHOTOS[3])
    wait_picture(page, 2, f"filename={PHOTOS[3]}")
    assert page.evaluate(f"() => {editor(2)}.frame()") == {"w": 256, "h": 256}
    assert page.evaluate(off_screen)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_workflow_loads_with_no_node_over_another(page, server, name):  # noqa: F811
    """At the sizes the frontend gives the loaded nodes (it grows a node its widgets need)."""
    wf = json.loads((ROOT / "workflows" / name).read_text())
    load_graph(page, wf)
    rects = page.evaluate(f"""() => {APP}.graph.nodes.map(n => {{
        const b = n.getBounding(); return [n.id, n.type, b[0], b[1], b[0] + b[2], b[1] + b[3]]; }})""")
    assert len(rects) == len(wf["nodes"])
    over = [(a[:2], b[:2]) for a, b in itertools.combinations(rects, 2)
            if a[2] < b[4] and b[2] < a[4] and a[3] < b[5] and b[3] < a[5]]
    assert over == [], over


def _update_docs_screenshot() -> None:
    """docs/editor.png: the Drag and the Move / Resize node side by side (UPDATE_EDITOR_SCREENSHOT=1)."""
    if os.environ.get("UPDATE_EDITOR_SCREENSHOT") != "1":
        return
    from PIL import Image

    parts = [Image.open(ARTIFACTS / n).convert("RGB") for n in ("drag_1_points.png", "move_1_dragged.png")]
    h = max(p.height for p in parts)
    sheet = Image.new("RGB", (sum(p.width for p in parts) + 12 * (len(parts) - 1), h), (24, 24, 24))
    x = 0
    for p in parts:
        sheet.paste(p, (x, 0))
        x += p.width + 12
    if sheet.width > 1000:
        sheet = sheet.resize((1000, round(sheet.height * 1000 / sheet.width)), Image.LANCZOS)
    DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
    sheet.save(DOCS_SCREENSHOT, optimize=True)  # ~110 kB; a 256-colour palette bands the gradients


# -- the previews, over HTTP (no browser) --------------------------------------------------------------


def execute_off_thread(server, prompt):  # noqa: F811
    """test_http_server.execute runs its own asyncio loop; Playwright's sync API (alive in this
    module when the browser tests ran first) keeps one running in this thread."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(execute, server, prompt).result()


def test_nodes_send_their_picture_to_the_editor(server):  # noqa: F811
    # on success: ui output under the editor's keys (not "images": no second preview in the node)
    prompt = demo_prompt(server, DRAG_WORKFLOW, steps=STEPS, prefix="browser_preview")
    drag_id = next(k for k, v in prompt.items() if v["class_type"] == "DragonDiff_DragEdit")
    run = execute_off_thread(server, prompt)
    assert run.status["status_str"] == "success", run.status
    out = run.history["outputs"][drag_id]
    assert set(out) == {"dragon_image", "dragon_mask"}, out  # the demo edits inside a (grown) mask
    img = view_image(server, out["dragon_image"][0])
    assert img.shape == (32, 32, 3) and img.std() > 5
    # refused settings (dx = dy = 0, scale 1): the error as before, and the mask still reaches the client
    prompt = demo_prompt(server, MOVE_WORKFLOW, steps=STEPS, prefix="browser_refused")
    move_id = next(k for k, v in prompt.items() if v["class_type"] == "DragonDiff_MoveEdit")
    prompt[move_id]["inputs"].update(dx=0, dy=0, scale=1.0)
    run = execute_off_thread(server, prompt)
    assert run.status["status_str"] == "error"
    assert "describe no change" in run.events("execution_error")[0]["exception_message"]
    [msg] = run.events("dragondiffusion.editor_preview")
    assert msg["node"] == move_id and set(msg["output"]) == {"dragon_image", "dragon_mask"}, msg
    mask = view_image(server, msg["output"]["dragon_mask"][0])
    assert mask.shape == (32, 32, 3) and set(np.unique(mask)) <= {0, 255} and (mask == 255).any()
