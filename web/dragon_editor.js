// DragonDiffusion: the canvas editor drawn in the edit nodes.
//
// Tools (the row above the picture; which ones depends on the node):
// - Box, Lasso, Brush, Erase: select the object on its picture (Move / Resize, Paste: the
//   source picture, Appearance: the object and the reference) or paint the Drag node's
//   editable region. A box or lasso replaces the selection, Shift adds to it, Alt removes;
//   Brush adds, Erase removes. Written to the node's `selection` (`region`) widget as
//   "box x0,y0,x1,y1; poly x,y ...; brush r x,y ..." in image pixels (web/selection.js; the
//   node rasterises the same pixels). A wired mask wins: the editor then shows it, read only.
// - Move (Move / Resize, Paste): drag the object to set dx / dy, drag the square handle at its
//   corner to set scale. Writes the dx, dy and scale widgets.
// - Points (Drag, Point-Set): click a handle point, click again for its target; drag a point to
//   adjust it; right-click a point (or "Delete pair") deletes its pair. Written to the `points`
//   widget as "x1,y1,x2,y2; ...".
// Every value lives in the node's own widgets, so it is saved with the workflow and sent in the
// prompt like any widget value. Modules: where the pictures come from (editor_sources.js), what
// each tool draws (editor_views.js), the bars (editor_bars.js), canvas drawing (editor_draw.js),
// the pure geometry (editor_geometry.js) and selection format (selection.js).
//
// Imports: the app and api modules, the documented extension route in the ComfyUI frontend
// (1.27; no deprecated API is used).

import { api } from "../../scripts/api.js";
import { app } from "../../scripts/app.js";
import { actionRow, toolRow, updateBars } from "./editor_bars.js";
import * as D from "./editor_draw.js";
import * as G from "./editor_geometry.js";
import * as S from "./editor_sources.js";
import { drawMove, drawPoints, drawSelect, pointsStatus } from "./editor_views.js";
import * as Sel from "./selection.js";

const WIDGET_NAME = "dragon_editor";
const PREVIEW_EVENT = "dragondiffusion.editor_preview"; // nodes/edit_nodes.py EDITOR_PREVIEW_EVENT
const HIT_RADIUS = 9; // CSS px around a point that picks it
const CLICK_SLOP = 4; // CSS px a press may move and still count as a click
const MIN_HEIGHT = 220; // CSS px of the editor in the node
const DEFAULT_SIZE = [380, 520]; // a new node's size, room for the picture
const SELECT_TOOLS = ["box", "lasso", "brush", "erase"];
const RETRY_FIRST_MS = 1000; // a picture that failed to load is asked for again after this, then 2x, 4x, ...
const RETRY_MAX_MS = 30000;

const OBJECT = { label: "Object", picture: "image", fallback: "mask", mask: "mask", selection: "selection" };
/** Per node: what is selected on which picture (targets), where the object is placed, the tools. */
const NODES = {
  DragonDiff_MoveEdit: { targets: [OBJECT], place: { picture: "image", fallback: "mask" }, tools: [...SELECT_TOOLS, "move"] },
  DragonDiff_PasteEdit: {
    targets: [{ ...OBJECT, label: "Source", picture: "source_image" }],
    place: { picture: "image" },
    tools: [...SELECT_TOOLS, "move"],
  },
  DragonDiff_AppearanceEdit: {
    targets: [OBJECT, { label: "Reference", picture: "reference_image", fallback: "reference_mask", mask: "reference_mask",
      selection: "reference_selection" }],
    tools: SELECT_TOOLS,
  },
  DragonDiff_DragEdit: {
    targets: [{ label: "Region", picture: "image", mask: "mask", selection: "region" }],
    points: { picture: "image" },
    tools: ["points", ...SELECT_TOOLS],
  },
  DragonDiff_PointSetEdit: { targets: [], points: { picture: "image" }, tools: ["points"] },
};

const editors = new Set();

/** The file a /view URL names ("photo.png", "sub/photo.png"), for messages. */
function fileOf(url) {
  const q = new URL(url, window.location.href).searchParams;
  const name = q.get("filename");
  if (!name) return url;
  return q.get("subfolder") ? `${q.get("subfolder")}/${name}` : name;
}

// -- the editor ------------------------------------------------------------------------------------------

class Editor {
  constructor(node, spec) {
    this.node = node;
    this.spec = spec;
    this.tool = null; // chosen on the first draw, once the graph is configured
    this.target = 0; // which target the selection tools act on
    this.own = null; // {output, seq}: the node's own last previews
    this.pics = {}; // IMAGE input -> {img, url, w, h, crop}
    this.masks = {}; // wired MASK input -> {data, w, h, ...} or null (not seen yet)
    this.derived = new Map(); // key -> a mask with bbox, outline, count, tint (bounded)
    this.pending = null; // points: a handle waiting for its target
    this.selected = -1; // points: the selected pair
    this.gesture = null; // the pointer gesture in progress
    this.hoverAt = null; // the pointer over the canvas (brush footprint)
    this.brush = 20; // brush size: percent of a quarter of the picture's smaller side
    this.sourceKey = "";
    this.renderKey = "";
    this.loadToken = 0;
    this.failed = []; // files the last refresh could not load (retried: RETRY_FIRST_MS, doubling)
    this.retries = 0;
    this.retryTimer = 0;

    this.el = document.createElement("div");
    this.el.className = "dragondiffusion-editor";
    Object.assign(this.el.style, {
      display: "flex", flexDirection: "column", gap: "4px", width: "100%", height: "100%",
      boxSizing: "border-box", fontSize: "11px", color: "var(--input-text, #ddd)",
    });
    this.canvas = document.createElement("canvas");
    Object.assign(this.canvas.style, {
      flex: "1 1 auto", minHeight: "0", width: "100%", borderRadius: "4px",
      background: "var(--comfy-input-bg, #222)", cursor: "crosshair", touchAction: "none",
    });
    this.canvas.dragonEditor = this;
    this.el.append(...[toolRow(this), this.canvas, actionRow(this)].filter(Boolean));

    this.canvas.addEventListener("pointerdown", (e) => this.onPointerDown(e));
    this.canvas.addEventListener("pointermove", (e) => this.onPointerMove(e));
    this.canvas.addEventListener("pointerup", (e) => this.onPointerUp(e));
    this.canvas.addEventListener("pointercancel", () => this.cancelGesture());
    this.canvas.addEventListener("pointerleave", () => { this.hoverAt = null; this.render(); });
    this.canvas.addEventListener("contextmenu", (e) => this.onContextMenu(e));
    new ResizeObserver(() => this.render(true)).observe(this.canvas);

    this.widget = node.addDOMWidget(WIDGET_NAME, "dragondiffusion-editor", this.el, {
      serialize: false, // neither in widgets_values nor in the prompt: the values live in the node's own widgets
      hideOnZoom: false,
      getMinHeight: () => MIN_HEIGHT,
    });
    this.widget.serialize = false;
    const points = this.widgetOf("points")?.element;
    if (points) {
      // typing in the points box redraws at once (the graph canvas does not redraw on keystrokes)
      points.addEventListener("input", () => this.render());
      // the frontend sizes DOM widgets from these CSS properties: leave the room to the picture
      points.style.setProperty("--comfy-widget-max-height", "70");
    }
    editors.add(this);
  }

  setTool(tool) {
    this.tool = tool;
    this.gesture = null;
    this.render(true);
  }

  setTarget(i) {
    this.target = i;
    if (!SELECT_TOOLS.includes(this.tool)) this.tool = "box";
    this.render(true);
  }

  defaultTool() {
    const { tools } = this.spec;
    if (tools.includes("points")) return "points";
    if (tools.includes("move")) {
      const s = this.selectionOf(0);
      if (s.wired || s.shapes.length) return "move";
    }
    return "box";
  }

  dispose() {
    editors.delete(this);
    clearTimeout(this.retryTimer);
  }

  // -- widgets ----------------------------------------------------------------------------------------

  widgetOf(name) {
    return this.node.widgets?.find((w) => w.name === name);
  }

  text(name) {
    return String(this.widgetOf(name)?.value ?? "");
  }

  /** A widget whose value comes through a link is not ours to edit. */
  linked(name) {
    return this.node.inputs?.some((i) => i.widget?.name === name && i.link != null) ?? false;
  }

  setWidget(name, value) {
    const w = this.widgetOf(name);
    if (!w || w.value === value) return;
    w.value = value;
    w.callback?.(w.value, app.canvas, this.node);
    this.node.setDirtyCanvas?.(true, true);
    this.node.graph?.change?.();
  }

  pointsState() {
    const { pairs, error } = G.tryParsePoints(this.text("points"));
    return { pairs, pending: this.pending, error };
  }

  writePoints(state) {
    this.pending = state.pending;
    this.setWidget("points", G.formatPoints(state.pairs));
    this.render(true);
  }

  moveValues() {
    const num = (name, d) => {
      const v = Number(this.widgetOf(name)?.value);
      return Number.isFinite(v) ? v : d;
    };
    return { dx: num("dx", 0), dy: num("dy", 0), scale: num("scale", 1) };
  }

  setMove(dx, dy, scale) {
    this.setWidget("dx", dx);
    this.setWidget("dy", dy);
    this.setWidget("scale", scale);
    this.render(true);
  }

  deletePair() {
    const s = this.pointsState();
    if (s.error || this.linked("points")) return;
    if (s.pending) return this.writePoints(G.removePair(s, -1));
    if (!s.pairs.length) return;
    const i = this.selected >= 0 && this.selected < s.pairs.length ? this.selected : s.pairs.length - 1;
    this.selected = -1;
    this.writePoints(G.removePair(s, i));
  }

  clearPairs() {
    if (this.linked("points")) return;
    this.selected = -1;
    this.writePoints({ pairs: [], pending: null });
  }

  clearSelection() {
    const t = this.spec.targets[this.target];
    if (!t || this.linked(t.selection)) return;
    this.setWidget(t.selection, "");
    this.render(true);
  }

  // -- pictures, masks, selections ----------------------------------------------------------------------

  /** The node's own previews arrived (it ran, or refused its settings). */
  setOwn(output) {
    if (!Object.keys(output ?? {}).some((k) => k.startsWith("dragon_"))) return;
    this.own = { output, seq: S.nextSeq() };
    this.guard(() => this.refresh());
  }

  findSources() {
    const { targets, place, points } = this.spec;
    const pictures = {};
    const masks = {};
    for (const p of [...targets, place, points].filter(Boolean)) {
      if (!(p.picture in pictures)) pictures[p.picture] = S.pictureSource(this.node, p.picture, p.fallback);
    }
    for (const t of targets) if (t.mask) masks[t.mask] = S.maskSource(this.node, t.mask);
    return { pictures, masks };
  }

  /** Reload the pictures and masks when where they come from has changed. */
  refresh(force = false) {
    if (!this.node.graph) return; // being created or configured
    const { pictures, masks } = this.findSources();
    const key = JSON.stringify([pictures, masks]);
    if (key === this.sourceKey && !force) return;
    this.sourceKey = key;
    const token = ++this.loadToken;
    if (!force) this.retries = 0;
    clearTimeout(this.retryTimer);
    const failed = [];
    const load = (entries, fn) => Promise.all(Object.entries(entries).map(([k, src]) =>
      (src?.url ? fn(src).catch(() => { failed.push(src.url); return null; }) : Promise.resolve(null))
        .then((v) => [k, v])));
    Promise.all([load(pictures, S.loadPicture), load(masks, S.loadMask)]).then(([p, m]) => {
      if (token !== this.loadToken) return; // a newer refresh is under way
      this.pics = Object.fromEntries(p.filter(([, v]) => v));
      this.masks = Object.fromEntries(m);
      this.failed = failed.map(fileOf);
      if (failed.length && editors.has(this)) {
        // the file may be still uploading or copied in later: ask again, less often each time
        const wait = Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** Math.min(this.retries++, 8));
        this.retryTimer = setTimeout(() => this.guard(() => token === this.loadToken && this.refresh(true)), wait);
      }
      this.render(true);
    });
  }

  /** A binary mask with what the drawing needs: bbox, outline, pixel count, tint (cached by key). */
  derive(key, data, w, h) {
    let d = this.derived.get(key);
    if (!d) {
      d = { data, w, h, bbox: G.maskBBox(data, w, h), outline: G.maskOutline(data, w, h), count: G.maskCount(data) };
      if (this.derived.size > 16) this.derived.delete(this.derived.keys().next().value);
      this.derived.set(key, d);
    }
    return d;
  }

  tint(d, rgba) {
    const k = rgba.join(",");
    d.tints ??= {};
    d.tints[k] ??= S.maskTint(d, rgba);
    return d.tints[k];
  }

  /**
   * Target i's object: {wired, mask, shapes, error, pic, linked}. A wired mask wins (mask: it once
   * seen, else null); otherwise the selection widget rasterised at the picture's size.
   */
  selectionOf(i) {
    const t = this.spec.targets[i];
    const pic = this.pics[t.picture] ?? null;
    if (t.mask && S.originOf(this.node, t.mask)) {
      const m = this.masks[t.mask];
      const mask = m ? this.derive(`wired|${m.url}|${m.channel}`, m.data, m.w, m.h) : null;
      return { wired: true, shapes: [], error: null, pic, mask };
    }
    const text = this.text(t.selection);
    const { shapes, error } = Sel.trySelection(text, t.selection);
    let mask = null;
    if (pic && shapes.length) {
      mask = this.derive(`sel|${text}|${pic.w}x${pic.h}`, Sel.rasterSelection(shapes, pic.w, pic.h), pic.w, pic.h);
    }
    return { wired: false, shapes, error, pic, mask, linked: this.linked(t.selection) };
  }

  currentTool() {
    return this.spec.tools.includes(this.tool) ? this.tool : this.spec.tools[0];
  }

  /** What the canvas shows now: {kind: "select" | "move" | "points", pic, frame, ...}. */
  view() {
    const tool = this.currentTool();
    const size = (m) => (m ? { w: m.w, h: m.h } : null);
    if (SELECT_TOOLS.includes(tool)) {
      const t = this.spec.targets[this.target];
      const sel = this.selectionOf(this.target);
      const frame = sel.wired ? size(sel.mask) ?? size(sel.pic) : size(sel.pic);
      return { kind: "select", t, sel, pic: sel.pic, frame };
    }
    if (tool === "move") {
      const sel = this.selectionOf(0);
      const pic = this.pics[this.spec.place.picture] ?? null;
      return { kind: "move", sel, pic, frame: size(sel.mask) ?? size(pic), source: sel.pic };
    }
    const pic = this.pics[this.spec.points.picture] ?? null;
    const region = this.spec.targets.length ? this.selectionOf(0) : null;
    return { kind: "points", pic, region, frame: size(pic) ?? size(region?.mask) };
  }

  /** The current view's image frame {w, h} in pixels, or null. */
  frame() {
    return this.view().frame;
  }

  /** The current view's object or region mask (with bbox), or null. */
  get mask() {
    const v = this.view();
    return (v.kind === "points" ? v.region?.mask : v.sel.mask) ?? null;
  }

  /** The current view's picture, or null. */
  get picture() {
    return this.view().pic;
  }

  // -- drawing ----------------------------------------------------------------------------------------

  cssSize() {
    return [this.canvas.clientWidth, this.canvas.clientHeight];
  }

  rect(v = this.view()) {
    const f = v.frame;
    const [bw, bh] = this.cssSize();
    return f && bw > 0 && bh > 0 ? G.fitRect(f.w, f.h, bw, bh) : null;
  }

  /** Client (screen) coordinates of image position (x, y) in the current view: for tests and tools. */
  screenPoint(x, y) {
    const r = this.rect();
    if (!r) return null;
    const box = this.canvas.getBoundingClientRect();
    const k = box.width / this.canvas.clientWidth;
    const [px, py] = G.toDisplay(r, x, y);
    return [box.left + px * k, box.top + py * k];
  }

  /** Called with every redraw of the node: catches changes made elsewhere (typing, loading, links). */
  poll() {
    this.guard(() => {
      if (this.node.graph && this.tool === null) this.tool = this.defaultTool();
      this.el.dataset.node = String(this.node.id);
      this.refresh();
      this.render();
    });
  }

  /** The editor never breaks the graph canvas: a failure is reported once and drawing goes on. */
  guard(fn) {
    try {
      fn();
    } catch (e) {
      if (!this.reported) console.error("DragonDiffusion editor:", e);
      this.reported = true;
    }
  }

  brushRadius(frame) {
    return Math.max(0.5, Math.round((this.brush / 100) * (Math.min(frame.w, frame.h) / 4) * 10) / 10);
  }

  render(force = false) {
    const values = (this.node.widgets ?? []).filter((w) => w.name !== WIDGET_NAME).map((w) => w.value);
    const box = this.canvas.getBoundingClientRect();
    const key = JSON.stringify([values, this.tool, this.target, this.pending, this.selected, box.width, box.height,
      this.cssSize(), this.brush, this.loadToken, this.hoverAt]);
    if (!force && key === this.renderKey && !this.gesture) return;
    this.renderKey = key;
    const [cw, ch] = this.cssSize();
    if (cw <= 0 || ch <= 0) return;
    const dpr = (window.devicePixelRatio || 1) * Math.max(1, box.width / cw);
    const bw = Math.round(cw * dpr);
    const bh = Math.round(ch * dpr);
    if (this.canvas.width !== bw || this.canvas.height !== bh) {
      this.canvas.width = bw;
      this.canvas.height = bh;
    }
    const ctx = this.canvas.getContext("2d");
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, bw, bh);
    ctx.setTransform(bw / cw, 0, 0, bh / ch, 0, 0);
    const v = this.view();
    updateBars(this, v.kind);
    const r = this.rect(v);
    if (!r) {
      D.drawMessage(ctx, cw, ch, this.noPictureMessage(v));
      this.setStatus(v.kind === "points" ? pointsStatus(this, this.pointsState(), null) : "");
      return;
    }
    const f = v.frame;
    const picFits = v.pic && v.pic.w === f.w && v.pic.h === f.h;
    if (picFits) D.drawPicture(ctx, v.pic, r);
    else {
      ctx.fillStyle = "#000";
      ctx.fillRect(r.x, r.y, r.w, r.h);
    }
    D.drawFrame(ctx, r);
    const note = v.pic && !picFits ? `image ${v.pic.w}x${v.pic.h} is not the mask's size` : null;
    if (v.kind === "select") drawSelect(this, ctx, r, v, note);
    else if (v.kind === "move") drawMove(this, ctx, r, v, note);
    else drawPoints(this, ctx, r, v);
    if (this.gesture?.kind === "select") D.drawGesture(ctx, r, this.gesture, this.gesture.subtract);
    if (this.hoverAt && !this.gesture && v.kind === "select" && ["brush", "erase"].includes(this.tool)) {
      D.drawBrushCursor(ctx, this.hoverAt, this.brushRadius(f) * r.scale, this.tool === "erase");
    }
  }

  noPictureMessage(v) {
    const input = v.kind === "select" ? v.t.picture : v.kind === "move" ? this.spec.place.picture : this.spec.points.picture;
    if (this.failed.length) {
      return `Could not load ${this.failed.join(", ")} for ${input}: pick or upload the file in its Load Image `
        + "(trying again).";
    }
    if (v.kind === "move" && v.sel.wired) return "No mask to show yet: Run once (the node then shows the mask it got).";
    return `No picture yet: wire a Load Image into ${input} (it shows at once), or Run once (the node then shows the `
      + "image it got).";
  }

  setStatus(text, error = false) {
    this.status.textContent = text;
    this.status.title = text;
    this.status.style.color = error ? "#f77" : "";
  }

  // -- pointer ------------------------------------------------------------------------------------------

  local(e) {
    const box = this.canvas.getBoundingClientRect();
    const k = this.canvas.clientWidth / box.width;
    return [(e.clientX - box.left) * k, (e.clientY - box.top) * k];
  }

  onPointerDown(e) {
    if (e.button !== 0) return;
    const v = this.view();
    const r = this.rect(v);
    if (!r) return;
    e.preventDefault();
    e.stopPropagation();
    const p = this.local(e);
    const f = v.frame;
    if (v.kind === "select") {
      if (v.sel.wired || v.sel.linked || v.sel.error) return;
      const erase = this.tool === "erase";
      const brush = erase || this.tool === "brush";
      this.gesture = {
        kind: "select", tool: brush ? "brush" : this.tool, path: [G.toImage(r, p[0], p[1])], start: p,
        subtract: erase || e.altKey, add: brush || e.shiftKey, radius: this.brushRadius(f),
      };
    } else if (v.kind === "points") {
      const s = this.pointsState();
      if (s.error || this.linked("points")) return;
      const hit = G.hitTest(s, r, p[0], p[1], HIT_RADIUS);
      if (hit) this.selected = hit.pair;
      this.gesture = { kind: hit ? "point" : "click", hit, start: p, moved: false, state: s };
    } else {
      const m = v.sel.mask;
      if (["dx", "dy", "scale"].some((n) => this.linked(n)) || !m?.bbox) return;
      const val = this.moveValues();
      const t = G.moveTransform(m.bbox, val.dx, val.dy, val.scale);
      const [hx, hy] = G.toDisplay(r, ...G.scaleHandle(m.bbox, t));
      const at = G.toImage(r, p[0], p[1]);
      const moved = G.movedBBox(m.bbox, t);
      const onBox = at[0] >= moved.x0 && at[0] <= moved.x1 && at[1] >= moved.y0 && at[1] <= moved.y1;
      if (Math.abs(p[0] - hx) <= HIT_RADIUS && Math.abs(p[1] - hy) <= HIT_RADIUS) {
        this.gesture = { kind: "scale", start: p, values: val, bbox: m.bbox };
      } else if (onBox || G.hitMovedMask(m.data, f.w, f.h, t, at[0], at[1])) {
        this.gesture = { kind: "move", start: p, from: at, values: val, bbox: m.bbox };
      } else return;
    }
    this.canvas.setPointerCapture(e.pointerId);
  }

  onPointerMove(e) {
    const v = this.view();
    const r = this.rect(v);
    if (!r) return;
    const p = this.local(e);
    const g = this.gesture;
    if (!g) return this.hover(v, p, r);
    e.preventDefault();
    e.stopPropagation();
    if (Math.hypot(p[0] - g.start[0], p[1] - g.start[1]) > CLICK_SLOP) g.moved = true;
    const f = v.frame;
    if (g.kind === "select") {
      const at = G.toImage(r, p[0], p[1]);
      if (g.tool === "box") g.path = [g.path[0], at];
      else g.path.push(at);
      this.render(true);
    } else if (g.kind === "point" && g.moved) {
      const [x, y] = G.pixelAt(r, f.w, f.h, p[0], p[1]);
      const s = G.movePoint(g.state, g.hit, x, y);
      this.pending = s.pending;
      this.setWidget("points", G.formatPoints(s.pairs)); // live: the widget follows the drag
      this.render(true);
    } else if (g.kind === "move") {
      const at = G.toImage(r, p[0], p[1]);
      const { dx, dy } = G.dragOffset(g.bbox, g.values, g.values.scale, g.from, at, f.w, f.h);
      this.setMove(dx, dy, g.values.scale);
    } else if (g.kind === "scale") {
      const at = G.toImage(r, p[0], p[1]);
      this.setMove(g.values.dx, g.values.dy, G.scaleFromHandle(g.bbox, g.values.dx, g.values.dy, at));
    }
  }

  onPointerUp(e) {
    const g = this.gesture;
    if (!g) return;
    this.gesture = null;
    e.stopPropagation();
    const v = this.view();
    const r = this.rect(v);
    if (!r) return;
    if (g.kind === "select") return this.finishSelection(g, v, r);
    if (g.kind === "click" && !g.moved) {
      const p = this.local(e);
      if (!G.insideImage(r, p[0], p[1])) return this.render(true);
      const [x, y] = G.pixelAt(r, v.frame.w, v.frame.h, p[0], p[1]);
      const s = G.addPoint(g.state, x, y);
      this.selected = s.pending ? -1 : s.pairs.length - 1;
      this.writePoints(s);
    } else {
      this.render(true);
    }
  }

  /** A finished box, lasso or stroke: replaces the selection, or adds to it / removes from it. */
  finishSelection(g, v, r) {
    const { w, h } = v.frame;
    let shape = null;
    if (g.tool === "box") {
      shape = Sel.boxShape(g.path[0], g.path[g.path.length - 1], w, h, g.subtract);
      const [x0, y0, x1, y1] = shape.values;
      if (x1 <= x0 || y1 <= y0) shape = null; // a click, not a box
    } else if (g.tool === "lasso") shape = Sel.lassoShape(g.path, 2 / r.scale, g.subtract);
    else shape = Sel.brushShape(g.path, g.radius, g.subtract);
    if (!shape) return this.render(true);
    const before = v.sel.shapes;
    const shapes = g.add || g.subtract ? [...before, shape] : [shape];
    const text = Sel.formatSelection(shapes);
    const check = Sel.trySelection(text, v.t.selection);
    if (check.error) return this.setStatus(check.error, true);
    this.setWidget(v.t.selection, text);
    // the first box or lasso around the object: on to moving it
    if (this.spec.tools.includes("move") && !before.length && !g.subtract && g.tool !== "brush") this.tool = "move";
    this.render(true);
  }

  cancelGesture() {
    this.gesture = null;
    this.render(true);
  }

  onContextMenu(e) {
    e.preventDefault();
    e.stopPropagation();
    const v = this.view();
    if (v.kind !== "points" || this.linked("points")) return;
    const r = this.rect(v);
    if (!r) return;
    const p = this.local(e);
    const s = this.pointsState();
    const hit = s.error ? null : G.hitTest(s, r, p[0], p[1], HIT_RADIUS);
    if (!hit) return;
    this.selected = -1;
    this.writePoints(G.removePair(s, hit.pair));
  }

  hover(v, p, r) {
    let cursor = "crosshair";
    if (v.kind === "select") {
      if (["brush", "erase"].includes(this.tool)) {
        cursor = "none";
        this.hoverAt = p;
        this.render();
      }
    } else if (v.kind === "points") {
      if (G.hitTest(this.pointsState(), r, p[0], p[1], HIT_RADIUS)) cursor = "grab";
    } else if (v.sel.mask?.bbox) {
      const m = v.sel.mask;
      const val = this.moveValues();
      const t = G.moveTransform(m.bbox, val.dx, val.dy, val.scale);
      const [hx, hy] = G.toDisplay(r, ...G.scaleHandle(m.bbox, t));
      const at = G.toImage(r, p[0], p[1]);
      const moved = G.movedBBox(m.bbox, t);
      if (Math.abs(p[0] - hx) <= HIT_RADIUS && Math.abs(p[1] - hy) <= HIT_RADIUS) cursor = "nwse-resize";
      else if (at[0] >= moved.x0 && at[0] <= moved.x1 && at[1] >= moved.y0 && at[1] <= moved.y1) cursor = "move";
      else cursor = "default";
    }
    this.canvas.style.cursor = cursor;
  }
}

// -- registration --------------------------------------------------------------------------------------

function chain(proto, name, after) {
  const before = proto[name];
  proto[name] = function (...args) {
    const r = before?.apply(this, args);
    after.apply(this, args);
    return r;
  };
}

function refreshAllSoon() {
  // after the app's own handlers have stored the outputs this message carries
  setTimeout(() => editors.forEach((e) => e.guard(() => e.refresh())), 0);
}

app.registerExtension({
  name: "DragonDiffusion.PointRegionEditor",

  setup() {
    api.addEventListener("executed", ({ detail }) => {
      S.executedSeq.set(String(detail?.display_node ?? detail?.node), S.nextSeq());
      refreshAllSoon();
    });
    api.addEventListener(PREVIEW_EVENT, ({ detail }) => {
      const node = app.graph?.getNodeById(detail?.node);
      node?.dragonEditor?.setOwn(detail.output);
      refreshAllSoon();
    });
  },

  async beforeRegisterNodeDef(nodeType, nodeData) {
    const spec = NODES[nodeData?.name];
    if (!spec) return;
    const proto = nodeType.prototype;
    chain(proto, "onNodeCreated", function () {
      this.dragonEditor = new Editor(this, spec);
      this.setSize([Math.max(this.size[0], DEFAULT_SIZE[0]), Math.max(this.size[1], DEFAULT_SIZE[1])]);
    });
    chain(proto, "onExecuted", function (output) {
      this.dragonEditor?.setOwn(output);
    });
    chain(proto, "onRemoved", function () {
      this.dragonEditor?.dispose();
    });
    chain(proto, "onConnectionsChange", function () {
      const e = this.dragonEditor;
      e?.guard(() => e.refresh());
    });
    chain(proto, "onDrawForeground", function () {
      this.dragonEditor?.poll();
    });
  },
});
