// The selection string of the Move / Resize and Paste nodes (`selection`) and the Drag node
// (`region`): read, written and rasterised exactly as nodes/convert.py (parse_selection,
// selection_mask) does, so the editor shows the pixels the node will use.
//
// Pure functions, no DOM and no ComfyUI (tested by `node --test tests/web`; held to the Python
// side by tests/test_web_selection.py). ComfyUI loads every .js file under WEB_DIRECTORY as an
// extension; this one only defines exports.
//
// Format: shapes in image pixels, one per ';' or line, applied in order ('-' before the kind
// removes the shape from what the shapes before it selected):
//   box x0,y0,x1,y1        a rectangle between pixel edges (pixels whose centre is inside)
//   poly x,y x,y x,y ...   a lasso: pixels whose centre is inside (nonzero winding)
//   brush r x,y x,y ...    a stroke: pixels whose centre is within r of the polyline

export const MAX_SELECTION_SHAPES = 500;
export const MAX_SELECTION_POINTS = 20000;
export const MAX_SELECTION_COORD = 1e6;

export class SelectionError extends Error {}

const NUMBER = /^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$/; // = nodes/convert.py _selection_values
const HEAD = /^([+-]?)(box|poly|brush)$/;

function quote(text, limit = 20) {
  return text.length > limit ? `'${text.slice(0, limit)}...'` : `'${text}'`;
}

function values(tokens, name, where) {
  return tokens.map((tok) => {
    if (!NUMBER.test(tok)) throw new SelectionError(`${name}: ${where} value ${quote(tok)} is not a number`);
    const v = Number(tok);
    if (!(Number.isFinite(v) && Math.abs(v) <= MAX_SELECTION_COORD)) {
      throw new SelectionError(`${name}: ${where} value ${quote(tok)} is out of range (-1000000..1000000)`);
    }
    return v;
  });
}

/** Selection text -> [{kind, subtract, values}, ...]; empty text is no shapes. Throws SelectionError. */
export function parseSelection(text, name = "selection") {
  if (typeof text !== "string") throw new SelectionError(`${name}: expected a string, got ${typeof text}`);
  const shapes = [];
  let points = 0;
  for (const seg of text.split(/[;\n]/)) {
    const tokens = seg.split(/[ \t\r,]+/).filter((t) => t);
    if (!tokens.length) continue;
    let where = `shape ${shapes.length + 1}`;
    const head = HEAD.exec(tokens[0]);
    if (!head) {
      throw new SelectionError(`${name}: ${where} starts with ${quote(tokens[0])}, expected box, poly or brush `
        + "(e.g. 'box 10,20,110,90')");
    }
    const kind = head[2];
    const n = tokens.length - 1;
    where = `${where} (${kind})`;
    if (kind === "box" && n !== 4) throw new SelectionError(`${name}: ${where} has ${n} numbers, expected 4: box x0,y0,x1,y1`);
    if (kind === "poly" && (n < 6 || n % 2)) {
      throw new SelectionError(`${name}: ${where} has ${n} numbers, expected x,y of 3 or more points: poly x,y x,y x,y ...`);
    }
    if (kind === "brush" && (n < 3 || n % 2 === 0)) {
      throw new SelectionError(`${name}: ${where} has ${n} numbers, expected the radius, then x,y of 1 or more points: `
        + "brush r x,y x,y ...");
    }
    const v = values(tokens.slice(1), name, where);
    if (kind === "brush" && v[0] <= 0) throw new SelectionError(`${name}: ${where} radius ${quote(tokens[1])} must be above 0`);
    shapes.push({ kind, subtract: head[1] === "-", values: v });
    points += Math.floor(n / 2);
    if (shapes.length > MAX_SELECTION_SHAPES) {
      throw new SelectionError(`${name}: more than ${MAX_SELECTION_SHAPES} shapes: clear the selection and draw it again`);
    }
    if (points > MAX_SELECTION_POINTS) {
      throw new SelectionError(`${name}: more than ${MAX_SELECTION_POINTS} points in all: clear the selection and draw `
        + "it with fewer strokes");
    }
  }
  return shapes;
}

/** parseSelection that returns {shapes, error} instead of throwing (error: a message or null). */
export function trySelection(text, name = "selection") {
  try {
    return { shapes: parseSelection(text, name), error: null };
  } catch (e) {
    if (e instanceof SelectionError) return { shapes: [], error: e.message };
    throw e;
  }
}

/** A coordinate as the editor writes it: at most one decimal. */
export function coord(v) {
  const r = Math.round(v * 10) / 10;
  return Object.is(r, -0) ? "0" : String(r);
}

/** A shape -> its line ("box 1,2,3,4", "-poly 1,2 3,4 5,6", "brush 4 1,2 3,4"). */
export function formatShape(s) {
  const v = s.values.map(coord);
  let body;
  if (s.kind === "box") body = v.join(",");
  else {
    const head = s.kind === "brush" ? [v[0]] : [];
    const pts = [];
    for (let i = head.length; i + 1 < v.length; i += 2) pts.push(`${v[i]},${v[i + 1]}`);
    body = [...head, ...pts].join(" ");
  }
  return `${s.subtract ? "-" : ""}${s.kind} ${body}`;
}

export function formatSelection(shapes) {
  return shapes.map(formatShape).join("; ");
}

// -- rasterising: the same arithmetic, in the same order, as nodes/convert.py ---------------------------

/** Pixels i in [0, n) whose centre i + 0.5 lies in [lo, hi): [first, end). */
function span(lo, hi, n) {
  return [Math.max(0, Math.ceil(lo - 0.5)), Math.min(n, Math.ceil(hi - 0.5))];
}

function fillRow(out, w, y, x0, x1, value) {
  for (let x = x0; x < x1; x++) out[y * w + x] = value;
}

function fillPoly(out, w, h, v, value) {
  const n = v.length / 2;
  const ys = [];
  for (let i = 0; i < n; i++) ys.push(v[2 * i + 1]);
  const [yFirst, yEnd] = span(Math.min(...ys), Math.max(...ys), h);
  for (let y = yFirst; y < yEnd; y++) {
    const yc = y + 0.5;
    const cuts = [];
    for (let i = 0; i < n; i++) {
      const j = (i + 1) % n;
      const xa = v[2 * i], ya = v[2 * i + 1], xb = v[2 * j], yb = v[2 * j + 1];
      if ((ya <= yc) !== (yb <= yc)) cuts.push([xa + (yc - ya) * (xb - xa) / (yb - ya), yb > ya ? 1 : -1]);
    }
    cuts.sort((a, b) => a[0] - b[0]);
    let winding = 0;
    for (let i = 0; i + 1 < cuts.length; i++) {
      winding += cuts[i][1];
      if (winding) {
        const [x0, x1] = span(cuts[i][0], cuts[i + 1][0], w);
        fillRow(out, w, y, x0, x1, value);
      }
    }
  }
}

function fillBrush(out, w, h, v, value) {
  const r = v[0];
  const pts = [];
  for (let i = 1; i + 1 < v.length; i += 2) pts.push([v[i], v[i + 1]]);
  const segs = pts.length > 1 ? pts.slice(1).map((p, i) => [pts[i], p]) : [[pts[0], pts[0]]];
  for (const [[xa, ya], [xb, yb]] of segs) {
    const x0 = Math.max(0, Math.floor(Math.min(xa, xb) - r - 0.5));
    const x1 = Math.min(w, Math.ceil(Math.max(xa, xb) + r - 0.5) + 1);
    const y0 = Math.max(0, Math.floor(Math.min(ya, yb) - r - 0.5));
    const y1 = Math.min(h, Math.ceil(Math.max(ya, yb) + r - 0.5) + 1);
    const dx = xb - xa;
    const dy = yb - ya;
    const length2 = dx * dx + dy * dy;
    for (let y = y0; y < y1; y++) {
      const yc = y + 0.5;
      for (let x = x0; x < x1; x++) {
        const xc = x + 0.5;
        const t = length2 > 0 ? Math.min(1, Math.max(0, ((xc - xa) * dx + (yc - ya) * dy) / length2)) : 0;
        const ex = xc - (xa + t * dx);
        const ey = yc - (ya + t * dy);
        if (ex * ex + ey * ey <= r * r) out[y * w + x] = value;
      }
    }
  }
}

/** Shapes -> a binary mask (Uint8Array, 1 = selected, row-major w x h). */
export function rasterSelection(shapes, w, h) {
  const out = new Uint8Array(w * h);
  for (const { kind, subtract, values: v } of shapes) {
    const value = subtract ? 0 : 1;
    if (kind === "box") {
      const [x0, x1] = span(Math.min(v[0], v[2]), Math.max(v[0], v[2]), w);
      const [y0, y1] = span(Math.min(v[1], v[3]), Math.max(v[1], v[3]), h);
      for (let y = y0; y < y1; y++) fillRow(out, w, y, x0, x1, value);
    } else if (kind === "poly") fillPoly(out, w, h, v, value);
    else fillBrush(out, w, h, v, value);
  }
  return out;
}

// -- drawing shapes with the pointer ------------------------------------------------------------------------

/** The box dragged from image position a to b: its corners snapped to the nearest pixel edges, inside the image. */
export function boxShape(a, b, w, h, subtract = false) {
  const snap = (v, n) => Math.min(n, Math.max(0, Math.round(v)));
  const x0 = snap(Math.min(a[0], b[0]), w), x1 = snap(Math.max(a[0], b[0]), w);
  const y0 = snap(Math.min(a[1], b[1]), h), y1 = snap(Math.max(a[1], b[1]), h);
  return { kind: "box", subtract, values: [x0, y0, x1, y1] };
}

/**
 * A pointer path (image coordinates) thinned for writing: each kept point at least `minStep`
 * from the one before, coordinates as written (one decimal), at most `maxPoints` points.
 */
export function thinPath(path, minStep, maxPoints = 400) {
  const out = [];
  for (const p of path) {
    const q = [Number(coord(p[0])), Number(coord(p[1]))];
    const last = out[out.length - 1];
    if (!last || Math.hypot(q[0] - last[0], q[1] - last[1]) >= minStep) out.push(q);
  }
  if (out.length <= maxPoints) return out;
  const k = (out.length - 1) / (maxPoints - 1);
  return Array.from({ length: maxPoints }, (_, i) => out[Math.round(i * k)]);
}

/** A lasso from a pointer path, or null when it encloses nothing (fewer than 3 distinct points). */
export function lassoShape(path, minStep, subtract = false) {
  const pts = thinPath(path, minStep);
  if (pts.length < 3) return null;
  return { kind: "poly", subtract, values: pts.flat() };
}

/** A brush stroke of radius r (one decimal, at least 0.5) along a pointer path. */
export function brushShape(path, r, subtract = false) {
  const radius = Math.max(0.5, Number(coord(r)));
  const pts = thinPath(path, Math.max(0.5, radius / 2));
  if (!pts.length) return null;
  return { kind: "brush", subtract, values: [radius, ...pts.flat()] };
}
