// Geometry and serialisation for the DragonDiffusion point and region editors.
//
// Pure functions, no DOM and no ComfyUI: the editor extension (dragon_editor.js)
// imports them, and `node --test tests/web` tests them. ComfyUI loads every .js file
// under WEB_DIRECTORY as an extension; this one only defines exports.
//
// Coordinates follow dragon_core/regions.py: x to the right, y down, image pixel
// (x, y) covers [x, x+1) x [y, y+1). A point's value is the pixel it falls in, so
// the editor writes integer pixel indices and draws a point at its pixel's centre.

export const MAX_POINT_PAIRS = 1000; // dragon_core.regions.MAX_POINT_PAIRS
export const MASK_THRESHOLD = 0.5; // dragon_core.regions.MASK_THRESHOLD
export const SCALE_MIN = 0.1; // the Move / Resize node's scale input
export const SCALE_MAX = 10;

export class PointsError extends Error {}

// -- the points string ------------------------------------------------------------------------

// What Python's float() accepts, minus its extras (underscores, "inf", "nan"): a string that
// parses here parses the same in dragon_core.regions.parse_points.
const NUMBER = /^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$/;
const NOT_FINITE = /^[+-]?(?:inf|infinity|nan)$/i; // float() reads these; parse_points then refuses them

function number(v, where) {
  if (typeof v === "number") {
    if (!Number.isFinite(v)) throw new PointsError(`points: ${where} ${v} is NaN or infinity`);
    return v;
  }
  if (typeof v === "string" && NOT_FINITE.test(v.trim())) {
    throw new PointsError(`points: ${where} ${JSON.stringify(v)} is NaN or infinity`);
  }
  if (typeof v !== "string" || !NUMBER.test(v.trim())) {
    throw new PointsError(`points: ${where} ${JSON.stringify(v)} is not a number`);
  }
  const x = Number(v.trim());
  if (!Number.isFinite(x)) throw new PointsError(`points: ${where} ${JSON.stringify(v)} is NaN or infinity`);
  return x;
}

function jsonPairs(text) {
  let data;
  try {
    data = JSON.parse(text);
  } catch (e) {
    throw new PointsError(`points: looks like JSON but does not parse (${e.message})`);
  }
  if (!Array.isArray(data)) {
    throw new PointsError('points: JSON points must be a list of {"x": .., "y": ..} or [x, y] items');
  }
  const pts = data.map((item, i) => {
    let xy;
    if (item && typeof item === "object" && !Array.isArray(item) && "x" in item && "y" in item) xy = [item.x, item.y];
    else if (Array.isArray(item) && item.length === 2) xy = item;
    else throw new PointsError(`points: JSON point ${i + 1} ${JSON.stringify(item)} is neither {"x": .., "y": ..} nor [x, y]`);
    return xy.map((v) => {
      if (typeof v === "boolean" || v === null || (typeof v !== "number" && typeof v !== "string")) {
        throw new PointsError(`points: JSON point ${i + 1} coordinate ${JSON.stringify(v)} is not a number`);
      }
      return number(v, `JSON point ${i + 1} coordinate`);
    });
  });
  if (pts.length % 2) {
    throw new PointsError(`points: ${pts.length} JSON points is an odd count; points pair up as handle, target, ...`);
  }
  const pairs = [];
  for (let i = 0; i < pts.length; i += 2) pairs.push([...pts[i], ...pts[i + 1]]);
  return pairs;
}

/**
 * The points widget's text -> handle/target pairs [[x1, y1, x2, y2], ...] in image pixels.
 * Reads what dragon_core.regions.parse_points reads: "x1,y1,x2,y2; ..." (pairs split by ';'
 * or new lines) or a JSON list of points ([{"x":..,"y":..}, ...] or [[x, y], ...]) taken as
 * handle, target, handle, target. Unlike parse_points, empty text is no pairs (the editor's
 * starting state), not an error. Throws PointsError naming what is wrong.
 */
export function parsePoints(text) {
  if (typeof text !== "string") throw new PointsError(`points: expected a string, got ${typeof text}`);
  let pairs;
  const start = text.trimStart();
  if (start.startsWith("[") || start.startsWith("{")) {
    pairs = jsonPairs(text);
  } else {
    const parts = text.replace(/\n/g, ";").split(";").map((p) => p.trim()).filter((p) => p);
    pairs = parts.map((p, i) => {
      const values = p.split(",").map((v) => v.trim());
      if (values.length !== 4) {
        throw new PointsError(`points: pair ${i + 1} '${p}' has ${values.length} numbers, expected 4 (x1,y1,x2,y2)`);
      }
      return values.map((v) => number(v, `pair ${i + 1} value`));
    });
  }
  if (pairs.length > MAX_POINT_PAIRS) {
    throw new PointsError(`points: ${pairs.length} point pairs, at most ${MAX_POINT_PAIRS} are supported`);
  }
  return pairs;
}

/** parsePoints that returns {pairs, error} instead of throwing (error: a message or null). */
export function tryParsePoints(text) {
  try {
    return { pairs: parsePoints(text), error: null };
  } catch (e) {
    if (e instanceof PointsError) return { pairs: [], error: e.message };
    throw e;
  }
}

/** A coordinate as the points string writes it: integers plainly, others in the shortest exact form. */
export function formatNumber(v) {
  if (!Number.isFinite(v)) throw new PointsError(`points: cannot write ${v}`);
  return Object.is(v, -0) ? "0" : String(v);
}

/** Pairs -> "x1,y1,x2,y2; x1,y1,x2,y2" (the format parse_points reads first). */
export function formatPoints(pairs) {
  return pairs.map((p) => p.map(formatNumber).join(",")).join("; ");
}

// -- display <-> image ------------------------------------------------------------------------------

/**
 * Where an image of iw x ih pixels is drawn in a box of bw x bh display pixels: as large as
 * fits, aspect kept, centred. Returns {x, y, w, h, scale} (scale = display px per image px).
 */
export function fitRect(iw, ih, bw, bh) {
  if (!(iw > 0 && ih > 0)) throw new RangeError(`image size ${iw}x${ih} is not positive`);
  const scale = Math.max(0, Math.min(bw / iw, bh / ih));
  const w = iw * scale;
  const h = ih * scale;
  return { x: (bw - w) / 2, y: (bh - h) / 2, w, h, scale };
}

/** Display position -> continuous image coordinates (not clamped). */
export function toImage(rect, px, py) {
  return [(px - rect.x) / rect.scale, (py - rect.y) / rect.scale];
}

/** Continuous image coordinates -> display position. */
export function toDisplay(rect, x, y) {
  return [rect.x + x * rect.scale, rect.y + y * rect.scale];
}

/** The image pixel (integer x, y) under a display position, clamped into the image. */
export function pixelAt(rect, iw, ih, px, py) {
  const [x, y] = toImage(rect, px, py);
  return [clamp(Math.floor(x), 0, iw - 1), clamp(Math.floor(y), 0, ih - 1)];
}

/** Whether a display position lies over the image. */
export function insideImage(rect, px, py) {
  return px >= rect.x && px < rect.x + rect.w && py >= rect.y && py < rect.y + rect.h;
}

/** The display position of a point value: the centre of the pixel it falls in. */
export function pointToDisplay(rect, x, y) {
  return toDisplay(rect, Math.floor(x) + 0.5, Math.floor(y) + 0.5);
}

export function clamp(v, lo, hi) {
  return Math.min(hi, Math.max(lo, v));
}

/** Whether every coordinate of every pair lies in an iw x ih image (what the node checks). */
export function pairsInside(pairs, iw, ih) {
  return pairs.every(([x1, y1, x2, y2]) =>
    [x1, x2].every((x) => x >= 0 && x < iw) && [y1, y2].every((y) => y >= 0 && y < ih));
}

// -- the drag editor's state: complete pairs and a handle waiting for its target --------------------

/**
 * The point nearest to display position (px, py) within `radius` display pixels, or null.
 * Returns {pair, end}: end 0 = handle, 1 = target; the pending handle is {pair: -1, end: 0}.
 * On a tie the later-drawn point wins (targets over handles, later pairs over earlier ones).
 */
export function hitTest(state, rect, px, py, radius) {
  let best = null;
  let bestD = radius * radius;
  const consider = (pair, end, x, y) => {
    const [dx, dy] = pointToDisplay(rect, x, y);
    const d = (dx - px) ** 2 + (dy - py) ** 2;
    if (d <= bestD) {
      bestD = d;
      best = { pair, end };
    }
  };
  state.pairs.forEach((p, i) => {
    consider(i, 0, p[0], p[1]);
    consider(i, 1, p[2], p[3]);
  });
  if (state.pending) consider(-1, 0, state.pending[0], state.pending[1]);
  return best;
}

/** A click on an empty spot: the first click places a handle, the second its target. */
export function addPoint(state, x, y) {
  if (!state.pending) return { pairs: state.pairs.slice(), pending: [x, y] };
  if (state.pairs.length >= MAX_POINT_PAIRS) return { pairs: state.pairs.slice(), pending: null };
  return { pairs: [...state.pairs, [...state.pending, x, y]], pending: null };
}

/** Move one point (a hitTest result) to (x, y). */
export function movePoint(state, hit, x, y) {
  if (hit.pair === -1) return { pairs: state.pairs.slice(), pending: [x, y] };
  const pairs = state.pairs.map((p) => p.slice());
  const p = pairs[hit.pair];
  if (hit.end === 0) [p[0], p[1]] = [x, y];
  else [p[2], p[3]] = [x, y];
  return { pairs, pending: state.pending };
}

/** Delete pair `index` (-1: the pending handle). */
export function removePair(state, index) {
  if (index === -1) return { pairs: state.pairs.slice(), pending: null };
  return { pairs: state.pairs.filter((_, i) => i !== index), pending: state.pending };
}

// -- masks ---------------------------------------------------------------------------------------------------

/**
 * A binary mask (Uint8Array, 1 = inside, row-major w x h) from RGBA pixels (ImageData.data).
 * channel "red": a mask previewed as a grey image (the node's own preview: value = mask * 255);
 * channel "alpha": LoadImage's convention, mask = 1 - alpha (the mask editor's paint is transparent).
 * A pixel counts as inside when its mask value is >= MASK_THRESHOLD.
 */
export function maskFromRGBA(data, w, h, channel = "red") {
  const m = new Uint8Array(w * h);
  for (let i = 0; i < w * h; i++) {
    const v = channel === "alpha" ? 1 - data[4 * i + 3] / 255 : data[4 * i] / 255;
    m[i] = v >= MASK_THRESHOLD ? 1 : 0;
  }
  return m;
}

/** (x0, y0, x1, y1), exclusive end, of the mask's inside pixels; null for an empty mask. */
export function maskBBox(mask, w, h) {
  let x0 = w, y0 = h, x1 = -1, y1 = -1;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      if (mask[y * w + x]) {
        if (x < x0) x0 = x;
        if (x > x1) x1 = x;
        if (y < y0) y0 = y;
        if (y > y1) y1 = y;
      }
    }
  }
  return x1 < 0 ? null : { x0, y0, x1: x1 + 1, y1: y1 + 1 };
}

/**
 * The mask's outline as segments [x0, y0, x1, y1] on pixel edges (image coordinates): every
 * edge between an inside and an outside pixel (the image border counts as outside), with
 * collinear neighbours merged.
 */
export function maskOutline(mask, w, h) {
  const at = (x, y) => (x >= 0 && y >= 0 && x < w && y < h ? mask[y * w + x] : 0);
  const segs = [];
  for (let y = 0; y <= h; y++) { // horizontal edges between rows y-1 and y
    let start = -1;
    for (let x = 0; x <= w; x++) {
      const edge = x < w && at(x, y - 1) !== at(x, y);
      if (edge && start < 0) start = x;
      if (!edge && start >= 0) {
        segs.push([start, y, x, y]);
        start = -1;
      }
    }
  }
  for (let x = 0; x <= w; x++) { // vertical edges between columns x-1 and x
    let start = -1;
    for (let y = 0; y <= h; y++) {
      const edge = y < h && at(x - 1, y) !== at(x, y);
      if (edge && start < 0) start = y;
      if (!edge && start >= 0) {
        segs.push([x, start, x, y]);
        start = -1;
      }
    }
  }
  return segs;
}

// -- move / resize -------------------------------------------------------------------------------------------

/**
 * The Move / Resize node's transform (dragon_core.regions.transform_about_mask): scale about
 * the centre of the mask's bounding box, then shift by (dx, dy).
 */
export function moveTransform(bbox, dx, dy, scale) {
  return { cx: (bbox.x0 + bbox.x1) / 2, cy: (bbox.y0 + bbox.y1) / 2, dx, dy, scale };
}

export function applyTransform(t, x, y) {
  return [(x - t.cx) * t.scale + t.cx + t.dx, (y - t.cy) * t.scale + t.cy + t.dy];
}

export function invertTransform(t, x, y) {
  return [(x - t.dx - t.cx) / t.scale + t.cx, (y - t.dy - t.cy) / t.scale + t.cy];
}

/** The bounding box after the transform. */
export function movedBBox(bbox, t) {
  const [x0, y0] = applyTransform(t, bbox.x0, bbox.y0);
  const [x1, y1] = applyTransform(t, bbox.x1, bbox.y1);
  return { x0, y0, x1, y1 };
}

/** Whether a box lies inside an iw x ih image. */
export function boxInside(box, iw, ih) {
  return box.x0 >= 0 && box.y0 >= 0 && box.x1 <= iw && box.y1 <= ih;
}

/** Whether image position (x, y) is on the moved object (inside the mask after the transform). */
export function hitMovedMask(mask, w, h, t, x, y) {
  const [sx, sy] = invertTransform(t, x, y);
  const ix = Math.floor(sx);
  const iy = Math.floor(sy);
  return ix >= 0 && iy >= 0 && ix < w && iy < h && mask[iy * w + ix] === 1;
}

/** Whether a moved box still overlaps the image: a move past the frame crops the part outside
 * (the node refuses only a move that leaves nothing of the object in the image). */
export function boxOverlaps(box, iw, ih) {
  return box.x1 > 0 && box.y1 > 0 && box.x0 < iw && box.y0 < ih;
}

/**
 * Dragging the object from image position `from` to `to`, starting at offset `start` {dx, dy}:
 * the new whole-pixel offset, limited so that at least one pixel of the moved box stays in the
 * image (the part past the frame is cropped by the node).
 */
export function dragOffset(bbox, start, scale, from, to, iw, ih) {
  const box = movedBBox(bbox, moveTransform(bbox, 0, 0, scale));
  const dx = clamp(Math.round(start.dx + to[0] - from[0]), Math.ceil(1 - box.x1), Math.floor(iw - 1 - box.x0));
  const dy = clamp(Math.round(start.dy + to[1] - from[1]), Math.ceil(1 - box.y1), Math.floor(ih - 1 - box.y0));
  return { dx, dy };
}

/** Where the scale handle is drawn: the moved box's bottom-right corner (image coordinates). */
export function scaleHandle(bbox, t) {
  return applyTransform(t, bbox.x1, bbox.y1);
}

/**
 * The scale set by dragging the scale handle to image position `p`: the pointer's projection
 * on the box's diagonal through the (moved) centre, relative to the unscaled corner; rounded
 * to the widget's 0.01 step and limited to the node's 0.1..10.
 */
export function scaleFromHandle(bbox, dx, dy, p) {
  const cx = (bbox.x0 + bbox.x1) / 2 + dx;
  const cy = (bbox.y0 + bbox.y1) / 2 + dy;
  const hx = (bbox.x1 - bbox.x0) / 2;
  const hy = (bbox.y1 - bbox.y0) / 2;
  const s = ((p[0] - cx) * hx + (p[1] - cy) * hy) / (hx * hx + hy * hy);
  return clamp(Math.round(s * 100) / 100, SCALE_MIN, SCALE_MAX);
}

// -- a picture seen through ComfyUI's ImageScale node ---------------------------------------------------------

/** Python's round(): halves go to the even neighbour. */
export function pyRound(x) {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * What ComfyUI's ImageScale (nodes.py ImageScale.upscale, comfy.utils.common_upscale) makes of an
 * iw x ih picture: the output size {w, h} and the part of the input it shows {x, y, w, h}
 * (crop "center" cuts the sides to the new aspect first). width or height 0 keeps the aspect;
 * both 0 is no change.
 */
export function imageScaleGeometry(iw, ih, width, height, crop) {
  const whole = { x: 0, y: 0, w: iw, h: ih };
  if (width === 0 && height === 0) return { w: iw, h: ih, crop: whole };
  if (width === 0) width = Math.max(1, pyRound(iw * height / ih));
  else if (height === 0) height = Math.max(1, pyRound(ih * width / iw));
  if (crop !== "center") return { w: width, h: height, crop: whole };
  const oldAspect = iw / ih;
  const newAspect = width / height;
  let x = 0;
  let y = 0;
  if (oldAspect > newAspect) x = pyRound((iw - iw * (newAspect / oldAspect)) / 2);
  else if (oldAspect < newAspect) y = pyRound((ih - ih * (oldAspect / newAspect)) / 2);
  return { w: width, h: height, crop: { x, y, w: iw - 2 * x, h: ih - 2 * y } };
}

// -- a selection's coverage ---------------------------------------------------------------------------------

/** The number of selected pixels of a binary mask. */
export function maskCount(mask) {
  let n = 0;
  for (let i = 0; i < mask.length; i++) n += mask[i];
  return n;
}
