"""The browser editor and the nodes read and rasterise selections alike.

web/selection.js (what the editor writes and shows) against nodes/convert.py's
parse_selection / selection_mask (what the Move / Resize, Drag and Paste nodes use), on one
corpus plus seeded random shapes, through Node.js: the same shapes, the same error
messages, the same pixels. Skipped when ``node`` is not installed.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from pack_modules import node_module

ROOT = Path(__file__).resolve().parents[1]
CLI = ROOT / "tests" / "web" / "selection_cli.mjs"

CORPUS = [
    ("box 2,3,10,12", 16, 16),
    ("box 10,12,2,3", 16, 16),  # corners in any order
    ("box 1.5,2.49,7.51,9.5", 12, 12),  # fractional edges: pixel centres decide
    ("box -5,-5,40,4", 16, 8),  # clipped to the image
    ("box 20,20,30,30", 16, 16),  # outside: selects nothing
    ("box 0,0,16,16; -box 4,4,12,12", 16, 16),
    ("-box 0,0,4,4; box 1,1,3,3", 8, 8),
    ("poly 1,1 14,2 8,13", 16, 16),
    ("poly 1,1, 14,1, 14,14, 1,14", 16, 16),
    ("poly 0,0 16,16 16,0 0,16", 16, 16),  # a bow tie (self-intersecting)
    ("poly 2,2 14,2 14,14 2,14 2,6 10,6 10,10 6,10 6,2", 16, 16),  # a loop over itself: nonzero winding
    ("poly 0.5,0.5 0.5,0.5 0.5,0.5", 4, 4),  # degenerate
    ("poly 3.25,1.75 12.125,4.5 9.0625,11.2 2.1,9.9", 16, 16),
    ("brush 2 5,5", 12, 12),
    ("brush 1.5 1,1 10,3 4,9", 12, 12),
    ("brush 0.4 3,3", 8, 8),
    ("brush 3 -2,-2 30,30", 16, 16),
    ("box 0,0,8,8\n-brush 2 4,4\n+poly 1,6 7,6 4,1", 8, 8),
    ("  ;; box 1,1,3,3 ;\n\n", 4, 4),
    ("", 4, 4),
    ("box 1e0,2E0,3.,.5e1", 8, 8),
    # errors
    ("rect 1,2,3,4", 8, 8),
    ("box 1,2,3", 8, 8),
    ("box 1,2,3,4,5", 8, 8),
    ("box 1,2,x,4", 8, 8),
    ("box 1,2,0x10,4", 8, 8),
    ("box 1,2,1_0,4", 8, 8),
    ("box inf,2,3,4", 8, 8),
    ("box 1e999,2,3,4", 8, 8),
    ("box 1,2,3,2000000", 8, 8),
    ("poly 1,2 3,4", 8, 8),
    ("poly 1,2 3,4 5", 8, 8),
    ("brush 1,2", 8, 8),
    ("brush 0 1,2", 8, 8),
    ("brush -1 1,2", 8, 8),
    ("box 1,1,2,2; Box 1,1,2,2", 8, 8),
    ("box 1,1,2,2; aVeryLongWordThatIsNotAShapeAtAll 1,2", 8, 8),
    (";".join(["box 0,0,1,1"] * 501), 4, 4),
    ("poly " + " ".join(["1,1"] * 20001), 4, 4),
]


def _random_corpus(n: int = 80) -> list[tuple[str, int, int]]:
    rnd = random.Random(1234)
    out = []
    for _ in range(n):
        w, h = rnd.randint(5, 40), rnd.randint(5, 40)
        shapes = []
        for _ in range(rnd.randint(1, 4)):
            kind = rnd.choice(["box", "poly", "brush"])
            sign = rnd.choice(["", "", "-", "+"])

            def c(lim):
                v = rnd.uniform(-3, lim + 3)
                return rnd.choice([f"{v:.1f}", repr(v), str(round(v))])

            if kind == "box":
                shapes.append(f"{sign}box {c(w)},{c(h)},{c(w)},{c(h)}")
            elif kind == "poly":
                shapes.append(f"{sign}poly " + " ".join(f"{c(w)},{c(h)}" for _ in range(rnd.randint(3, 12))))
            else:
                r = rnd.choice([f"{rnd.uniform(0.3, 6):.1f}", repr(rnd.uniform(0.3, 6))])
                shapes.append(f"{sign}brush {r} " + " ".join(f"{c(w)},{c(h)}" for _ in range(rnd.randint(1, 8))))
        out.append(("; ".join(shapes), w, h))
    return out


CASES = CORPUS + _random_corpus()


@pytest.fixture(scope="module")
def convert():
    with node_module("convert.py", "dragon_pack_convert_sel") as module:
        yield module


@pytest.fixture(scope="module")
def editor_readings() -> list[dict]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js (node) is not installed: the browser editor's selection is not checked")
    items = [{"text": t, "w": w, "h": h} for t, w, h in CASES]
    out = subprocess.run([node, str(CLI)], input=json.dumps(items), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.parametrize("i", range(len(CASES)), ids=[f"{i}:{c[0][:24]}" for i, c in enumerate(CASES)])
def test_editor_and_node_read_and_rasterise_selections_alike(convert, editor_readings, i):
    text, w, h = CASES[i]
    js = editor_readings[i]
    try:
        shapes = convert.parse_selection(text, "selection")
    except convert.InputError as e:
        assert js.get("error") == str(e), (text, js)  # the same message, word for word
        return
    assert "rows" in js, f"{text[:60]!r}: the node reads it, the editor says {js.get('error')}"
    assert [(s["kind"], s["subtract"], tuple(s["values"])) for s in js["shapes"]] == shapes
    rows = ["".join("1" if v else "0" for v in row) for row in _mask_or_empty(convert, shapes, (h, w))]
    assert rows == js["rows"], text
    # what the editor writes back reads the same in the node
    assert _mask_or_empty(convert, convert.parse_selection(js["formatted"], "selection"), (h, w)) == \
        _mask_or_empty(convert, [(k, s, tuple(float(f"{v:.1f}") for v in vs)) for k, s, vs in shapes], (h, w))


def _mask_or_empty(convert, shapes, size) -> list[list[int]]:
    try:
        return convert.selection_mask(shapes, size).int().tolist()
    except convert.InputError as e:
        assert "selects no pixel" in str(e)
        return [[0] * size[1] for _ in range(size[0])]
