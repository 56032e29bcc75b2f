// The editor's geometry and serialisation (web/editor_geometry.js), with Node's own test runner:
//   node --test tests/web/
// No npm packages. Python's side of the points format is checked against the same module by
// tests/test_web_points.py.

import assert from "node:assert/strict";
import { test } from "node:test";

import * as G from "../../web/editor_geometry.js";

// -- points string -----------------------------------------------------------------------------

test("parse: the x1,y1,x2,y2 format, ';' or new lines between pairs, spaces anywhere", () => {
  assert.deepEqual(G.parsePoints("10,20,17,16"), [[10, 20, 17, 16]]);
  assert.deepEqual(G.parsePoints(" 1, 2 ,3,4 ;5,6,7,8;\n 9,10,11,12\n"), [
    [1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12],
  ]);
  assert.deepEqual(G.parsePoints("1.5,-2,+3,1e1"), [[1.5, -2, 3, 10]]);
  assert.deepEqual(G.parsePoints(".5,1.,0,0"), [[0.5, 1, 0, 0]]);
});

test("parse: empty text is no pairs (the editor's start), ';;' and blank lines are skipped", () => {
  assert.deepEqual(G.parsePoints(""), []);
  assert.deepEqual(G.parsePoints("  \n ; ;"), []);
  assert.deepEqual(G.parsePoints("1,2,3,4;;\n\n5,6,7,8"), [[1, 2, 3, 4], [5, 6, 7, 8]]);
});

test("parse: JSON point lists (KJNodes' PointsEditor style) pair up as handle, target", () => {
  assert.deepEqual(G.parsePoints('[{"x": 1, "y": 2}, {"x": 3, "y": 4}]'), [[1, 2, 3, 4]]);
  assert.deepEqual(G.parsePoints("[[1,2],[3,4],[5,6],[7,8]]"), [[1, 2, 3, 4], [5, 6, 7, 8]]);
  assert.deepEqual(G.parsePoints('  [{"x": "1", "y": 2.5}, [3, 4]]'), [[1, 2.5, 3, 4]]);
  assert.deepEqual(G.parsePoints("[]"), []);
});

test("parse: errors name what is wrong", () => {
  const bad = {
    "1,2,3": /pair 1 '1,2,3' has 3 numbers, expected 4/,
    "1,2,3,4; 5,6,7,8,": /pair 2 .* has 5 numbers/,
    "1,2,x,4": /pair 1 value "x" is not a number/,
    "1,2,,4": /pair 1 value "" is not a number/,
    "0x10,1,2,3": /not a number/, // Number() would read 16; Python's float() refuses it
    "1_0,1,2,3": /not a number/,
    "inf,1,2,3": /pair 1 value "inf" is NaN or infinity/,
    "NaN,1,2,3": /is NaN or infinity/,
    "1e999,1,2,3": /is NaN or infinity/,
    "[1,2": /looks like JSON but does not parse/,
    '{"x": 1}': /must be a list/,
    "[[1,2],[3,4],[5,6]]": /3 JSON points is an odd count/,
    "[[1,2,3]]": /JSON point 1 .* is neither/,
    '[{"x": true, "y": 1}, [1, 2]]': /coordinate true is not a number/,
    '[{"x": null, "y": 1}, [1, 2]]': /coordinate null is not a number/,
  };
  for (const [text, message] of Object.entries(bad)) {
    assert.throws(() => G.parsePoints(text), (e) => e instanceof G.PointsError && message.test(e.message), text);
    const r = G.tryParsePoints(text);
    assert.deepEqual(r.pairs, []);
    assert.match(r.error, message);
  }
});

test("parse: at most MAX_POINT_PAIRS pairs", () => {
  const text = (n) => Array.from({ length: n }, () => "1,1,2,2").join(";");
  assert.equal(G.parsePoints(text(G.MAX_POINT_PAIRS)).length, G.MAX_POINT_PAIRS);
  assert.throws(() => G.parsePoints(text(G.MAX_POINT_PAIRS + 1)), /1001 point pairs, at most 1000/);
});

test("format: canonical string, integers plainly, round trip through parse", () => {
  assert.equal(G.formatPoints([]), "");
  assert.equal(G.formatPoints([[10, 20, 17, 16]]), "10,20,17,16");
  assert.equal(G.formatPoints([[1, 2, 3, 4], [5.5, 6.25, -0, 8]]), "1,2,3,4; 5.5,6.25,0,8");
  assert.throws(() => G.formatNumber(NaN), G.PointsError);
  const pairs = [[0, 0, 31, 31], [0.1, 1e-7, 123456789, 2.5]];
  assert.deepEqual(G.parsePoints(G.formatPoints(pairs)), pairs);
  // JSON input comes back in the canonical format
  assert.equal(G.formatPoints(G.parsePoints("[[1,2],[3,4]]")), "1,2,3,4");
});

// -- display <-> image ------------------------------------------------------------------------------

test("fitRect: contain and centre, both orientations", () => {
  assert.deepEqual(G.fitRect(32, 32, 256, 200), { x: 28, y: 0, w: 200, h: 200, scale: 6.25 });
  assert.deepEqual(G.fitRect(64, 32, 256, 256), { x: 0, y: 64, w: 256, h: 128, scale: 4 });
  assert.deepEqual(G.fitRect(512, 512, 300, 300).scale, 300 / 512);
  assert.throws(() => G.fitRect(0, 10, 100, 100), RangeError);
});

test("display <-> image coordinates are inverse, at any display scale", () => {
  for (const [iw, ih, bw, bh] of [[32, 32, 256, 200], [512, 384, 300, 410], [7, 3, 1000, 90]]) {
    const r = G.fitRect(iw, ih, bw, bh);
    for (const [x, y] of [[0, 0], [iw, ih], [iw / 3, ih / 7], [1.25, 2.5]]) {
      const [px, py] = G.toDisplay(r, x, y);
      const [x2, y2] = G.toImage(r, px, py);
      assert.ok(Math.abs(x2 - x) < 1e-9 && Math.abs(y2 - y) < 1e-9, `${iw}x${ih} in ${bw}x${bh}: ${x},${y}`);
    }
    // corners of the drawn image map to the image's corners
    assert.deepEqual(G.toImage(r, r.x, r.y), [0, 0]);
    const [ex, ey] = G.toImage(r, r.x + r.w, r.y + r.h);
    assert.ok(Math.abs(ex - iw) < 1e-9 && Math.abs(ey - ih) < 1e-9);
  }
});

test("pixelAt: the pixel under the pointer, clamped; pointToDisplay: its centre", () => {
  const r = G.fitRect(32, 32, 256, 256); // 8 display px per image px
  assert.deepEqual(G.pixelAt(r, 32, 32, 0, 0), [0, 0]);
  assert.deepEqual(G.pixelAt(r, 32, 32, 7.99, 8), [0, 1]);
  assert.deepEqual(G.pixelAt(r, 32, 32, 84, 163), [10, 20]);
  assert.deepEqual(G.pixelAt(r, 32, 32, 256, 256), [31, 31]); // the far edge belongs to the last pixel
  assert.deepEqual(G.pixelAt(r, 32, 32, -50, 999), [0, 31]);
  assert.deepEqual(G.pointToDisplay(r, 10, 20), [84, 164]);
  assert.deepEqual(G.pointToDisplay(r, 10.9, 20.2), [84, 164]); // the pixel a value falls in
  // the same image pixel whatever the node's size: click the centre of pixel (10, 20) in three sizes
  for (const [bw, bh] of [[100, 100], [333, 250], [64, 900]]) {
    const s = G.fitRect(32, 32, bw, bh);
    const [px, py] = G.pointToDisplay(s, 10, 20);
    assert.deepEqual(G.pixelAt(s, 32, 32, px, py), [10, 20]);
  }
  assert.ok(G.insideImage(r, 0, 0) && !G.insideImage(r, 256, 10) && !G.insideImage(G.fitRect(32, 32, 300, 256), 10, 10));
});

test("pairsInside: what the node accepts (0 <= x < W, 0 <= y < H)", () => {
  assert.ok(G.pairsInside([[0, 0, 31, 31]], 32, 32));
  assert.ok(!G.pairsInside([[0, 0, 32, 31]], 32, 32));
  assert.ok(!G.pairsInside([[0, -0.5, 3, 3]], 32, 32));
  assert.ok(G.pairsInside([], 1, 1));
});

// -- the drag editor's state ------------------------------------------------------------------------------

test("clicks alternate handle and target; pending handle is not a pair yet", () => {
  let s = { pairs: [], pending: null };
  s = G.addPoint(s, 10, 20);
  assert.deepEqual(s, { pairs: [], pending: [10, 20] });
  s = G.addPoint(s, 17, 16);
  assert.deepEqual(s, { pairs: [[10, 20, 17, 16]], pending: null });
  s = G.addPoint(G.addPoint(s, 1, 2), 3, 4);
  assert.equal(G.formatPoints(s.pairs), "10,20,17,16; 1,2,3,4");
});

test("editing returns new state and leaves the old one alone", () => {
  const s0 = { pairs: [[1, 2, 3, 4]], pending: null };
  const s1 = G.movePoint(s0, { pair: 0, end: 1 }, 9, 9);
  assert.deepEqual(s0.pairs, [[1, 2, 3, 4]]);
  assert.deepEqual(s1.pairs, [[1, 2, 9, 9]]);
  assert.deepEqual(G.movePoint(s0, { pair: 0, end: 0 }, 5, 6).pairs, [[5, 6, 3, 4]]);
  assert.deepEqual(G.movePoint({ pairs: [], pending: [1, 1] }, { pair: -1, end: 0 }, 2, 3).pending, [2, 3]);
  const s2 = { pairs: [[1, 1, 2, 2], [3, 3, 4, 4], [5, 5, 6, 6]], pending: [7, 7] };
  assert.deepEqual(G.removePair(s2, 1), { pairs: [[1, 1, 2, 2], [5, 5, 6, 6]], pending: [7, 7] });
  assert.deepEqual(G.removePair(s2, -1), { pairs: s2.pairs, pending: null });
  assert.equal(s2.pairs.length, 3);
});

test("hitTest: nearest point within the radius, in display pixels", () => {
  const r = G.fitRect(32, 32, 256, 256);
  const s = { pairs: [[10, 20, 17, 16], [2, 2, 4, 4]], pending: [30, 30] };
  assert.deepEqual(G.hitTest(s, r, 84, 164, 6), { pair: 0, end: 0 });
  assert.deepEqual(G.hitTest(s, r, 140, 130, 6), { pair: 0, end: 1 }); // target centre (140, 132)
  assert.deepEqual(G.hitTest(s, r, 244, 244, 6), { pair: -1, end: 0 });
  assert.equal(G.hitTest(s, r, 84 + 7, 164, 6), null);
  // overlapping points: the later-drawn one wins
  const same = { pairs: [[5, 5, 5, 5]], pending: null };
  assert.deepEqual(G.hitTest(same, r, 44, 44, 6), { pair: 0, end: 1 });
  // nearest wins over earlier
  const near = { pairs: [[5, 5, 6, 5]], pending: null }; // centres 44 and 52
  assert.deepEqual(G.hitTest(near, r, 46, 44, 8), { pair: 0, end: 0 });
  // the radius does not grow with the display scale
  const small = G.fitRect(32, 32, 64, 64); // 2 px per pixel
  assert.equal(G.hitTest({ pairs: [[10, 10, 20, 20]], pending: null }, small, 21 + 7, 21, 6), null);
});

// -- masks -------------------------------------------------------------------------------------------------------

function maskOf(rows) {
  const h = rows.length;
  const w = rows[0].length;
  const m = new Uint8Array(w * h);
  rows.forEach((row, y) => [...row].forEach((c, x) => { m[y * w + x] = c === "#" ? 1 : 0; }));
  return { m, w, h };
}

test("maskFromRGBA: a grey preview (red channel) or LoadImage's alpha, threshold 0.5", () => {
  const grey = [0, 127, 128, 255].flatMap((v) => [v, v, v, 255]);
  assert.deepEqual([...G.maskFromRGBA(grey, 4, 1)], [0, 0, 1, 1]);
  const alpha = [255, 128, 127, 0].flatMap((a) => [9, 9, 9, a]); // mask = 1 - alpha
  assert.deepEqual([...G.maskFromRGBA(alpha, 4, 1, "alpha")], [0, 0, 1, 1]);
});

test("maskBBox: exclusive end; empty mask -> null", () => {
  const { m, w, h } = maskOf(["....", ".##.", "..#.", "...."]);
  assert.deepEqual(G.maskBBox(m, w, h), { x0: 1, y0: 1, x1: 3, y1: 3 });
  assert.equal(G.maskBBox(new Uint8Array(4), 2, 2), null);
});

test("maskOutline: pixel-edge segments, merged, the image border counts as outside", () => {
  const sq = maskOf(["....", ".##.", ".##.", "...."]);
  const segs = G.maskOutline(sq.m, sq.w, sq.h).map((s) => s.join(",")).sort();
  assert.deepEqual(segs, ["1,1,1,3", "1,1,3,1", "1,3,3,3", "3,1,3,3"]);
  const full = maskOf(["##", "##"]);
  assert.deepEqual(G.maskOutline(full.m, 2, 2).map((s) => s.join(",")).sort(), ["0,0,0,2", "0,0,2,0", "0,2,2,2", "2,0,2,2"]);
  // an L shape: 6 sides; total outline length = perimeter
  const L = maskOf(["#..", "#..", "###"]);
  const ls = G.maskOutline(L.m, 3, 3);
  assert.equal(ls.length, 6);
  assert.equal(ls.reduce((t, [x0, y0, x1, y1]) => t + Math.abs(x1 - x0) + Math.abs(y1 - y0), 0), 12);
  // two separate pixels: two squares
  const two = maskOf(["#.#"]);
  assert.equal(G.maskOutline(two.m, 3, 1).length, 8);
});

// -- move / resize ---------------------------------------------------------------------------------------------

test("moveTransform: scale about the box centre, then shift (transform_about_mask)", () => {
  const box = { x0: 4, y0: 6, x1: 10, y1: 10 }; // centre (7, 8)
  const t = G.moveTransform(box, 5, -3, 2);
  assert.deepEqual(G.applyTransform(t, 7, 8), [12, 5]);
  assert.deepEqual(G.applyTransform(t, 4, 6), [6, 1]);
  assert.deepEqual(G.invertTransform(t, 6, 1), [4, 6]);
  assert.deepEqual(G.movedBBox(box, t), { x0: 6, y0: 1, x1: 18, y1: 9 });
  assert.deepEqual(G.scaleHandle(box, t), [18, 9]);
  assert.ok(G.boxInside(G.movedBBox(box, t), 32, 32));
  assert.ok(!G.boxInside(G.movedBBox(box, G.moveTransform(box, -5, 0, 1)), 32, 32));
});

test("hitMovedMask: on the object after the move, not on its old place", () => {
  const { m, w, h } = maskOf(["......", ".##...", ".##...", "......", "......", "......"]);
  const t = G.moveTransform(G.maskBBox(m, w, h), 3, 2, 1);
  assert.ok(G.hitMovedMask(m, w, h, t, 4.5, 3.5));
  assert.ok(!G.hitMovedMask(m, w, h, t, 1.5, 1.5));
  assert.ok(!G.hitMovedMask(m, w, h, t, 60, 60));
});

test("dragOffset: whole pixels from the drag, at least one pixel of the box kept in the image", () => {
  const box = { x0: 4, y0: 4, x1: 10, y1: 8 };
  const start = { dx: 2, dy: 0 };
  assert.deepEqual(G.dragOffset(box, start, 1, [5, 5], [9.4, 7.6], 32, 32), { dx: 6, dy: 3 });
  // past the frame (cropped by the node), but never all the way out: x 31..37, y -3..1
  assert.deepEqual(G.dragOffset(box, start, 1, [5, 5], [100, -100], 32, 32), { dx: 27, dy: -7 });
  assert.deepEqual(G.dragOffset(box, start, 1, [5, 5], [-100, 100], 32, 32), { dx: -9, dy: 27 });
  // scaled 2x about (7, 6): box 1..13 x 2..10
  assert.deepEqual(G.dragOffset(box, { dx: 0, dy: 0 }, 2, [0, 0], [-100, 100], 32, 32), { dx: -12, dy: 29 });
  // a box wider than the image: free until it would leave entirely (x -15..45 at scale 2)
  assert.deepEqual(G.dragOffset({ x0: 0, y0: 0, x1: 30, y1: 2 }, { dx: 0, dy: 0 }, 2, [0, 0], [-40, 0], 32, 32).dx, -40);
});

test("boxOverlaps: partly past the frame overlaps, wholly outside does not", () => {
  assert.ok(G.boxOverlaps({ x0: 28, y0: 4, x1: 36, y1: 8 }, 32, 32));
  assert.ok(!G.boxOverlaps({ x0: 32, y0: 4, x1: 40, y1: 8 }, 32, 32));
  assert.ok(!G.boxOverlaps({ x0: 4, y0: -8, x1: 10, y1: 0 }, 32, 32));
});

test("scaleFromHandle: the pointer on the diagonal sets the scale, step 0.01, within 0.1..10", () => {
  const box = { x0: 10, y0: 10, x1: 20, y1: 14 }; // centre (15, 12), half sizes 5, 2
  assert.equal(G.scaleFromHandle(box, 0, 0, [20, 14]), 1);
  assert.equal(G.scaleFromHandle(box, 0, 0, [25, 16]), 2);
  assert.equal(G.scaleFromHandle(box, 3, -1, [23, 13]), 1); // follows the moved centre
  assert.equal(G.scaleFromHandle(box, 0, 0, [21.5, 14.6]), 1.3);
  assert.equal(G.scaleFromHandle(box, 0, 0, [15, 12]), G.SCALE_MIN);
  assert.equal(G.scaleFromHandle(box, 0, 0, [0, 0]), G.SCALE_MIN);
  assert.equal(G.scaleFromHandle(box, 0, 0, [1000, 1000]), G.SCALE_MAX);
  // the handle at the returned scale sits where the pointer projects
  const s = G.scaleFromHandle(box, 0, 0, [23, 15.2]);
  const [hx, hy] = G.scaleHandle(box, G.moveTransform(box, 0, 0, s));
  assert.ok(Math.abs(hx - 23) < 0.2 && Math.abs(hy - 15.2) < 0.2, `${s}: ${hx},${hy}`);
});
