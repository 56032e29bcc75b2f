"""Selections drawn in the canvas editor, as the nodes read them (nodes/convert.py
parse_selection, selection_mask): boxes, lassos and brush strokes in image pixels,
rasterised by pixel centres; errors name the input and say what to write; the
string is parsed, never evaluated. The browser's reading of the same strings is
held to these pixels by tests/test_web_selection.py."""

import pytest
import torch

from pack_modules import node_module


@pytest.fixture(scope="module")
def convert():
    with node_module("convert.py", "dragon_pack_convert_selection") as module:
        yield module


def mask(convert, text, h, w):
    return convert.selection_mask(convert.parse_selection(text), (h, w))


def test_a_box_selects_the_pixels_between_its_edges(convert):
    m = mask(convert, "box 8,13,25,30", 32, 32)
    assert m.dtype == torch.float32 and m.shape == (32, 32)
    expected = torch.zeros(32, 32)
    expected[13:30, 8:25] = 1
    assert torch.equal(m, expected)
    assert torch.equal(mask(convert, "box 25,30,8,13", 32, 32), expected)  # corners in any order
    assert mask(convert, "box -10,-10,3,2", 4, 6).sum() == 6  # clipped to the image
    assert mask(convert, "box 1.4,0,2.6,1", 1, 4).tolist() == [[0, 1, 1, 0]]  # pixel centres decide


def test_lasso_and_brush_follow_pixel_centres(convert):
    tri = mask(convert, "poly 0,0 40,0 0,40", 40, 40)
    assert abs(tri.sum().item() - 800) <= 40  # half the square
    assert tri[1, 1] == 1 and tri[38, 38] == 0
    bowtie = mask(convert, "poly 0,0 20,20 20,0 0,20", 20, 20)
    assert bowtie[10, 2] == 1 and bowtie[10, 18] == 1 and bowtie[2, 10] == 0 and bowtie[18, 10] == 0
    twice = mask(convert, "poly 0,0 10,0 10,10 0,10 0,0 10,0 10,10 0,10", 10, 10)  # round twice: nonzero winding
    assert twice.sum() == 100
    disc = mask(convert, "brush 5 20,20", 40, 40)
    assert abs(disc.sum().item() - 3.14159 * 25) < 8 and disc[20, 20] == 1 and disc[20, 26] == 0
    stroke = mask(convert, "brush 1 2,5 18,5", 10, 20)
    assert stroke[4:6, 2:18].all() and stroke[2].sum() == 0


def test_shapes_apply_in_order_and_minus_removes(convert):
    ring = mask(convert, "box 0,0,10,10; -box 2,2,8,8", 10, 10)
    assert ring.sum() == 100 - 36
    assert mask(convert, "-box 2,2,8,8; box 0,0,10,10", 10, 10).sum() == 100
    assert convert.parse_selection("  ;\n ; ") == []


@pytest.mark.parametrize("text, needle", [
    ("rect 1,2,3,4", "region: shape 1 starts with 'rect', expected box, poly or brush (e.g. 'box 10,20,110,90')"),
    ("box 1,2,3", "region: shape 1 (box) has 3 numbers, expected 4: box x0,y0,x1,y1"),
    ("box 0,0,1,1; poly 1,2 3,4", "region: shape 2 (poly) has 4 numbers, expected x,y of 3 or more points"),
    ("brush 2", "region: shape 1 (brush) has 1 numbers, expected the radius, then x,y of 1 or more points"),
    ("brush -1 2,2", "region: shape 1 (brush) radius '-1' must be above 0"),
    ("box 1,2,nan,4", "region: shape 1 (box) value 'nan' is not a number"),
    ("box 1,2,1_0,4", "value '1_0' is not a number"),
    ("box 1e400,2,3,4", "value '1e400' is out of range (-1000000..1000000)"),
    ("__import__('os') 1,2", "starts with '__import__('os')'"),
    ("box 1,2,__import__('os'),3", "is not a number"),
])
def test_errors_name_the_input_the_shape_and_the_fix(convert, text, needle):
    with pytest.raises(convert.InputError) as e:
        convert.parse_selection(text, "region")
    assert needle in str(e.value) and str(e.value).startswith("region: ")


def test_limits_and_empty_results_are_named(convert):
    with pytest.raises(convert.InputError, match="more than 500 shapes"):
        convert.parse_selection(";".join(["box 0,0,1,1"] * 501))
    with pytest.raises(convert.InputError, match="more than 20000 points"):
        convert.parse_selection("poly " + " ".join(["1,1"] * 20001))
    with pytest.raises(convert.InputError, match="selection selects no pixel of the 8x4 image"):
        mask(convert, "box 20,20,30,30", 4, 8)
    with pytest.raises(convert.InputError, match="expected a string, got int"):
        convert.parse_selection(3)


def test_a_large_selection_rasterises_quickly(convert):
    import time

    lasso = "poly " + " ".join(f"{256 + 200 * __import__('math').cos(i / 300 * 6.283):.1f},"
                               f"{256 + 200 * __import__('math').sin(i / 300 * 6.283):.1f}" for i in range(300))
    brush = "brush 12 " + " ".join(f"{i},{(i * 7) % 500}" for i in range(0, 500, 2))
    start = time.perf_counter()
    m = mask(convert, f"{lasso}; {brush}", 512, 512)
    assert time.perf_counter() - start < 5 and m.sum() > 3.14 * 190 ** 2
