"""The generate-capture-move workflow in a real browser, against a headless ComfyUI with the pack.

Same server and browser as test_browser_editor.py (its fixtures and helpers): the shipped
``dragon_capture_move_shapes_demo.json`` loaded as the template browser loads it, run as
shipped; then the object dragged further in the Move / Resize editor and run again.

Checked: the first Run generates the image with its memory and moves the blue disc by the
preset (dx 10, dy -8; found by colour segmentation of the saved 8x picture); the editor shows
the generated picture with the preset selection; dragging the object changes dx / dy; the second
Run sends them, reuses the cached generation (the seed is fixed: no second sampling run), and
moves the disc further.

Run: ``COMFYUI_PATH=/path/to/ComfyUI OMP_NUM_THREADS=1 python -m pytest -q
tests/integration/test_browser_capture.py`` (playwright and chromium, as test_browser_editor.py).
"""

from __future__ import annotations

import numpy as np
import pytest
from test_browser_editor import (  # noqa: F401  (browser_tools: a module-scoped fixture, reused here)
    browser_tools,
    drag,
    editor,
    load_workflow,
    open_page,
    run_and_wait,
    screen,
    shot,
    show_node,
    wait_picture,
    widget,
)
from test_http_server import server, view_image  # noqa: F401  (server: the module-scoped fixture)

WORKFLOW = "dragon_capture_move_shapes_demo.json"


@pytest.fixture(scope="module")
def page(browser_tools, server):  # noqa: F811
    with open_page(browser_tools, server) as pg:
        yield pg


def _disc_centre(server, entry: dict) -> np.ndarray:
    """Centroid (x, y) of the blue pixels of the saved picture, in the 32-pixel image's pixels."""
    from dragon_demo.shapes_world import PALETTE

    [info] = [img for out in entry["outputs"].values() for img in out.get("images", []) if img["type"] == "output"]
    img = view_image(server, info).astype(np.float32) / 255
    assert img.shape == (256, 256, 3)
    blue = np.linalg.norm(img - np.asarray(PALETTE["blue"], np.float32), axis=-1) < 0.25
    assert blue.sum() > 64 * 30, blue.sum()  # the disc is there (~100 px at 32x32)
    ys, xs = np.nonzero(blue)
    return np.array([xs.mean(), ys.mean()]) / 8


def test_generate_capture_move_runs_as_shipped_then_moves_further(page, server):  # noqa: F811
    ids = load_workflow(page, server, WORKFLOW)
    move_id, gen_id = ids["DragonDiff_MoveEdit"], ids["DragonDiff_CaptureSample"]
    assert [widget(page, move_id, n) for n in ("dx", "dy", "scale")] == [10, -8, 1]
    assert widget(page, gen_id, "seed") == 4 and widget(page, gen_id, "steps") == 20

    sent, entry = run_and_wait(page, server)
    assert sent[str(gen_id)]["class_type"] == "DragonDiff_CaptureSample"
    assert "DragonDiff_Inversion" not in {n["class_type"] for n in sent.values()}
    first = _disc_centre(server, entry)
    # the generated disc's centre is near (9.3, 18.0); the preset move takes it to about (19, 10)
    assert abs(first[0] - 19.3) < 3 and abs(first[1] - 10.0) < 3, first

    # the editor shows the generated picture with the preset selection, moved by the preset
    show_node(page, move_id)
    wait_picture(page, move_id)
    page.wait_for_function(f"() => {editor(move_id)}.picture && {editor(move_id)}.rect() !== null")
    shot(page, move_id, "capture_move_loaded.png")
    cx, cy = 9.5 + 10, 18.0 - 8  # the selection's centre at its moved place
    drag(page, screen(page, move_id, cx, cy), screen(page, move_id, cx + 2, cy - 1))
    assert [widget(page, move_id, n) for n in ("dx", "dy")] == [12, -9]

    sent, entry = run_and_wait(page, server)
    inputs = sent[str(move_id)]["inputs"]
    assert (inputs["dx"], inputs["dy"]) == (12, -9)
    cached = next(d for k, d in entry["status"]["messages"] if k == "execution_cached")
    assert str(gen_id) in cached["nodes"], cached  # the generation (and its memory) came from the cache
    second = _disc_centre(server, entry)
    assert second[0] > first[0] + 0.5 and second[1] < first[1], (first, second)
