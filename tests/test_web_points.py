"""The browser editor and the nodes read the points string the same way.

web/editor_geometry.js (what the editor writes and reads) against
dragon_core.regions.parse_points (what the Drag and Point-Set nodes read), on one corpus,
through Node.js. Skipped when ``node`` is not installed (the JS side's own tests,
``node --test tests/web``, skip the same way in ``make test``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from dragon_core.regions import RegionError, parse_points

ROOT = Path(__file__).resolve().parents[1]
CLI = ROOT / "tests" / "web" / "parse_points_cli.mjs"

CORPUS = [
    "10,20,17,16",
    "1,2,3,4; 5,6,7,8",
    " 1, 2 ,3,4 ;5,6,7,8;\n 9,10,11,12\n",
    "1.5,-2,+3,1e1",
    ".5,1.,0,0",
    "1E2,2e-1,0.0,-0",
    "1,2,3,4;;\n\n5,6,7,8",
    '[{"x": 1, "y": 2}, {"x": 3, "y": 4}]',
    "[[1,2],[3,4],[5,6],[7,8]]",
    '  [{"x": "1", "y": 2.5}, [3, 4]]',
    # errors
    "1,2,3",
    "1,2,3,4; 5,6,7,8,",
    "1,2,x,4",
    "1,2,,4",
    "0x10,1,2,3",
    "inf,1,2,3",
    "nan,1,2,3",
    "1e999,1,2,3",
    "[1,2",
    '{"x": 1}',
    "[[1,2],[3,4],[5,6]]",
    "[[1,2,3]]",
    '[{"x": true, "y": 1}, [1, 2]]',
    '[{"x": null, "y": 1}, [1, 2]]',
    ";".join(["1,1,2,2"] * 1001),
]


# what each error is about, in both implementations' words
COMPLAINTS = ["numbers, expected 4", "is not a number", "is NaN or infinity", "does not parse", "must be a list", "odd count",
              "is neither", "at most 1000"]


@pytest.fixture(scope="module")
def editor_readings() -> list[dict]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js (node) is not installed: the browser editor's points parser is not checked")
    out = subprocess.run([node, str(CLI)], input=json.dumps(CORPUS), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.parametrize("i", range(len(CORPUS)), ids=[t[:24] for t in CORPUS])
def test_editor_and_node_read_points_alike(editor_readings, i):
    text, js = CORPUS[i], editor_readings[i]
    try:
        handles, targets = parse_points(text, "points")
    except RegionError as e:
        assert "error" in js, f"{text!r}: the node refuses it ({e}), the editor reads {js}"
        # the same complaint
        phrases = [p for p in COMPLAINTS if p in str(e)]
        assert phrases and all(p in js["error"] for p in phrases), (str(e), js["error"])
        return
    assert "pairs" in js, f"{text!r}: the node reads it, the editor says {js.get('error')}"
    py = [h + t for h, t in zip(handles.tolist(), targets.tolist())]  # float32 in the node
    assert len(js["pairs"]) == len(py)
    assert sum(js["pairs"], []) == pytest.approx(sum(py, []), rel=1e-6)
    # and what the editor writes back reads the same in the node
    h2, t2 = parse_points(js["formatted"], "points")
    assert [h + t for h, t in zip(h2.tolist(), t2.tolist())] == py


def test_empty_text_is_the_editors_start_and_the_nodes_error(editor_readings):
    # documented difference: the editor starts from no pairs; the node asks for at least one
    with pytest.raises(RegionError, match="no points given"):
        parse_points("", "points")
