"""No node of a shipped workflow covers another: every pair of node rectangles (pos and size,
plus the title bar LiteGraph draws above pos) is apart, in every file in workflows/. The
browser suite checks the same with the sizes the real frontend gives the loaded nodes."""

import itertools
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))
TITLE_HEIGHT = 30  # LiteGraph.NODE_TITLE_HEIGHT


def rect(node: dict) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) on the canvas, title bar included."""
    (x, y), (w, h) = node["pos"], node["size"]
    return x, y - TITLE_HEIGHT, x + w, y + h


def overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def overlaps(ui: dict) -> list[str]:
    nodes = ui["nodes"]
    return [f"{a['type']} #{a['id']} {rect(a)} and {b['type']} #{b['id']} {rect(b)}"
            for a, b in itertools.combinations(nodes, 2) if overlap(rect(a), rect(b))]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_no_node_overlaps_another(path):
    ui = json.loads(path.read_text())
    assert all(n["size"][0] > 0 and n["size"][1] > 0 for n in ui["nodes"])
    assert overlaps(ui) == []


def test_the_check_sees_an_overlap_and_the_title_bar():
    a = {"id": 1, "type": "A", "pos": [0, 100], "size": [100, 100]}
    assert overlaps({"nodes": [a, {"id": 2, "type": "B", "pos": [50, 150], "size": [100, 100]}]})
    # B's title bar (30 px above its pos) reaches into A
    assert overlaps({"nodes": [a, {"id": 2, "type": "B", "pos": [0, 220], "size": [100, 100]}]})
    assert not overlaps({"nodes": [a, {"id": 2, "type": "B", "pos": [0, 230], "size": [100, 100]}]})
    assert not overlaps({"nodes": [a, {"id": 2, "type": "B", "pos": [100, 100], "size": [100, 100]}]})
