// The selection format and its rasterising (web/selection.js), and the ImageScale geometry the
// editor uses to show a Load Image through a resize (web/editor_geometry.js):
//   node --test tests/web/
// The Python side (nodes/convert.py) is held to the same pixels by tests/test_web_selection.py.

import assert from "node:assert/strict";
import { test } from "node:test";

import * as G from "../../web/editor_geometry.js";
import * as S from "../../web/selection.js";

const rows = (m, w, h) => Array.from({ length: h }, (_, y) => Array.from(m.subarray(y * w, (y + 1) * w)).join(""));
const raster = (text, w, h) => rows(S.rasterSelection(S.parseSelection(text), w, h), w, h);

test("parse: shapes, signs, separators; empty text is no selection", () => {
  assert.deepEqual(S.parseSelection("box 1,2,3,4"), [{ kind: "box", subtract: false, values: [1, 2, 3, 4] }]);
  assert.deepEqual(S.parseSelection(" -poly 1,2 3,4, 5 6 ;\n+brush 2 1,1"), [
    { kind: "poly", subtract: true, values: [1, 2, 3, 4, 5, 6] },
    { kind: "brush", subtract: false, values: [2, 1, 1] },
  ]);
  assert.deepEqual(S.parseSelection(""), []);
  assert.deepEqual(S.parseSelection(" ; \n ;"), []);
});

test("parse: errors name the input, the shape and what to write", () => {
  const bad = {
    "rect 1,2,3,4": /^region: shape 1 starts with 'rect', expected box, poly or brush/,
    "box 1,2,3": /^region: shape 1 \(box\) has 3 numbers, expected 4: box x0,y0,x1,y1$/,
    "box 1,2,3,4; poly 1,2 3,4": /^region: shape 2 \(poly\) has 4 numbers, expected x,y of 3 or more points/,
    "brush 1,2": /shape 1 \(brush\) has 2 numbers, expected the radius, then x,y/,
    "brush 0 1,2": /radius '0' must be above 0/,
    "box 1,2,x,4": /value 'x' is not a number/,
    "box 1,2,0x10,4": /value '0x10' is not a number/,
    "box inf,2,3,4": /value 'inf' is not a number/,
    "box 1e999,2,3,4": /value '1e999' is out of range/,
    "box eval(1),2,3,4": /is not a number/,
  };
  for (const [text, re] of Object.entries(bad)) {
    assert.throws(() => S.parseSelection(text, "region"), (e) => e instanceof S.SelectionError && re.test(e.message), text);
  }
  assert.match(S.trySelection(Array(501).fill("box 0,0,1,1").join(";")).error, /more than 500 shapes/);
  assert.deepEqual(S.trySelection("box 1").shapes, []);
});

test("raster: a box covers the pixels between its edges, in any corner order, clipped", () => {
  assert.deepEqual(raster("box 1,1,3,2", 4, 3), ["0000", "0110", "0000"]);
  assert.deepEqual(raster("box 3,2,1,1", 4, 3), ["0000", "0110", "0000"]);
  assert.deepEqual(raster("box 1.6,0,2.6,1", 4, 1), ["0010"]); // pixel centres decide
  assert.deepEqual(raster("box 1.6,0,2.4,1", 4, 1), ["0000"]);
  assert.deepEqual(raster("box -9,-9,99,1", 3, 2), ["111", "000"]);
});

test("raster: lasso by pixel centres (nonzero winding), brush by distance, '-' removes, in order", () => {
  assert.deepEqual(raster("poly 0,0 4,0 4,4 0,4", 4, 4), ["1111", "1111", "1111", "1111"]);
  assert.deepEqual(raster("poly 0,0 4,4 0,4", 4, 4), ["0000", "1000", "1100", "1110"]);
  assert.deepEqual(raster("brush 1 2.5,2.5", 5, 5), ["00000", "00100", "01110", "00100", "00000"]);
  assert.deepEqual(raster("box 0,0,3,3; -box 1,1,2,2", 3, 3), ["111", "101", "111"]);
  assert.deepEqual(raster("-box 1,1,2,2; box 0,0,3,3", 3, 3), ["111", "111", "111"]);
});

test("format: what the editor writes parses back to the same shapes", () => {
  const shapes = [
    { kind: "box", subtract: false, values: [1, 2, 30, 40] },
    { kind: "poly", subtract: true, values: [1.25, 2, 3, 4.04, 5, 6] },
    { kind: "brush", subtract: false, values: [2.5, 1, 1, 3, 3] },
  ];
  const text = S.formatSelection(shapes);
  assert.equal(text, "box 1,2,30,40; -poly 1.3,2 3,4 5,6; brush 2.5 1,1 3,3");
  assert.deepEqual(S.parseSelection(text).map((s) => s.kind), ["box", "poly", "brush"]);
});

test("drawing: box snapped to pixel edges inside the image, lasso and brush from pointer paths", () => {
  assert.deepEqual(S.boxShape([10.4, 3.6], [2.2, -5], 8, 8).values, [2, 0, 8, 4]);
  assert.equal(S.boxShape([1, 1], [3, 3], 8, 8, true).subtract, true);
  assert.equal(S.lassoShape([[1, 1], [1.1, 1]], 1), null); // too few distinct points
  const lasso = S.lassoShape([[0, 0], [4, 0], [4.2, 0.1], [4, 4], [0, 4]], 1);
  assert.deepEqual(lasso.values, [0, 0, 4, 0, 4, 4, 0, 4]);
  const brush = S.brushShape([[1, 1], [1.2, 1], [5, 1]], 2);
  assert.deepEqual(brush.values, [2, 1, 1, 5, 1]);
  assert.equal(S.thinPath(Array.from({ length: 1000 }, (_, i) => [i, 0]), 0.5, 100).length, 100);
});

test("pyRound rounds halves to even, as Python's round()", () => {
  assert.deepEqual([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 2.4, 2.6].map(G.pyRound), [0, 2, 2, -0, -2, -2, 2, 3]);
});

test("imageScaleGeometry: ComfyUI's ImageScale size and center crop", () => {
  // 640x480 to 512x512, centre crop: the middle 480x480
  assert.deepEqual(G.imageScaleGeometry(640, 480, 512, 512, "center"), { w: 512, h: 512, crop: { x: 80, y: 0, w: 480, h: 480 } });
  // portrait: rows cut
  assert.deepEqual(G.imageScaleGeometry(300, 500, 512, 512, "center"), { w: 512, h: 512, crop: { x: 0, y: 100, w: 300, h: 300 } });
  // no crop: the whole picture stretched
  assert.deepEqual(G.imageScaleGeometry(640, 480, 512, 512, "disabled").crop, { x: 0, y: 0, w: 640, h: 480 });
  // one side 0 keeps the aspect (Python rounding), both 0 is no change
  assert.deepEqual(G.imageScaleGeometry(1000, 333, 512, 0, "disabled"), { w: 512, h: 170, crop: { x: 0, y: 0, w: 1000, h: 333 } });
  assert.equal(G.imageScaleGeometry(3, 1, 0, 1, "disabled").w, 3);
  assert.deepEqual(G.imageScaleGeometry(64, 48, 0, 0, "center"), { w: 64, h: 48, crop: { x: 0, y: 0, w: 64, h: 48 } });
  // 256x256 to 32x32: nothing cut
  assert.deepEqual(G.imageScaleGeometry(256, 256, 32, 32, "center").crop, { x: 0, y: 0, w: 256, h: 256 });
});
