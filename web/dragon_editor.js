// DragonDiffusion: point and region editor drawn in the Drag and Move / Resize nodes.
//
// Drag (DragonDiff_DragEdit): click a handle point on the image, click again for its target;
// arrows show the pairs; drag a point to adjust it; right-click a point (or "Delete pair") to
// delete its pair; "Clear" deletes all. The pairs live in the node's `points` widget as
// "x1,y1,x2,y2; ..." in image pixels, so they are saved with the workflow and sent in the
// prompt like any widget value.
// Move / Resize (DragonDiff_MoveEdit): the mask's outline over the image; drag the object to
// set dx / dy, drag the square handle at its corner to set scale. Writes the dx, dy and
// scale widgets.
//
// Where the picture comes from (most recent first): an image loader wired straight in
// (LoadImage: its chosen picture, and its painted mask, before anything runs); otherwise
// the node's own preview (the nodes send the image / mask they got, also when they refuse
// their settings) or a PreviewImage / SaveImage node on the same output.
//
// Imports: the app and api modules, the documented extension route in the ComfyUI frontend
// (1.27; no deprecated API is used).

import { api } from "../../scripts/api.js";
import { app } from "../../scripts/app.js";
import * as G from "./editor_geometry.js";

const DRAG_NODE = "DragonDiff_DragEdit";
const MOVE_NODE = "DragonDiff_MoveEdit";
const WIDGET_NAME = "dragon_editor";
const PREVIEW_EVENT = "dragondiffusion.editor_preview"; // nodes/edit_nodes.py EDITOR_PREVIEW_EVENT
const IMAGE_VIEWERS = new Set(["PreviewImage", "SaveImage"]); // their ui images are their input, unchanged
const HIT_RADIUS = 9; // CSS px around a point that picks it
const CLICK_SLOP = 4; // CSS px a press may move and still count as a click
const MIN_HEIGHT = 200; // CSS px of the editor in the node
const DEFAULT_SIZE = [340, 480]; // a new node's size, room for the picture

const editors = new Set();
const executedSeq = new Map(); // node id -> order of its last "executed" message
let seqCounter = 0;
const nextSeq = () => ++seqCounter;

// -- graph helpers -----------------------------------------------------------------------------------

function getLink(graph, id) {
  const links = graph?.links;
  if (!links || id == null) return null;
  return typeof links.get === "function" ? links.get(id) : links[id];
}

/** The node and output slot feeding input `name` of `node` (through legacy Reroute nodes). */
function originOf(node, name) {
  let target = node;
  let slot = node.inputs?.findIndex((i) => i.name === name) ?? -1;
  for (let hops = 0; slot >= 0 && hops < 32; hops++) {
    const link = target.getInputLink(slot);
    if (!link) return null;
    const origin = target.graph.getNodeById(link.origin_id);
    if (!origin) return null;
    if (origin.type !== "Reroute") return { node: origin, slot: link.origin_slot };
    target = origin;
    slot = 0;
  }
  return null;
}

/** Nodes reading output `slot` of `node`, with the input index they read it into. */
function consumersOf(node, slot) {
  const out = [];
  for (const id of node.outputs?.[slot]?.links ?? []) {
    const link = getLink(node.graph, id);
    const n = link && node.graph.getNodeById(link.target_id);
    if (n) out.push({ node: n, input: link.target_slot });
  }
  return out;
}

/** An image loader (LoadImage and the like): a picture chosen in a widget, shown as node.imgs. */
function isLoader(node) {
  return !!node.imgs?.[0]?.src && !!node.widgets?.some((w) => w.name === "image" || w.name === "upload");
}

function viewURL(info) {
  const q = new URLSearchParams({ filename: info.filename, subfolder: info.subfolder ?? "", type: info.type ?? "temp" });
  return api.apiURL(`/view?${q}`);
}

/**
 * The file a loader shows, at full quality: its image widget names it ("name.png",
 * "clipspace/x.png [input]"); node.imgs may be a lossy preview-format copy.
 */
function loaderURL(node) {
  const value = node.widgets?.find((w) => w.name === "image")?.value;
  const m = typeof value === "string" && value.match(/^(.*?)(?: \[(input|output|temp)\])?$/);
  if (!m || !m[1]) return node.imgs[0].src;
  const path = m[1];
  const cut = path.lastIndexOf("/");
  return viewURL({ filename: path.slice(cut + 1), subfolder: cut >= 0 ? path.slice(0, cut) : "", type: m[2] ?? "input" });
}

/** Where an IMAGE output's picture can be seen: [{url, seq}] (seq: Infinity for a loader's live picture). */
function imageSources(origin) {
  const found = [];
  const { node, slot } = origin;
  if (isLoader(node) && node.outputs?.[slot]?.type === "IMAGE") found.push({ url: loaderURL(node), seq: Infinity });
  for (const c of consumersOf(node, slot)) {
    const own = c.node.dragonEditor?.own;
    if (own?.output?.dragon_image?.length) found.push({ url: viewURL(own.output.dragon_image[0]), seq: own.seq });
    if (IMAGE_VIEWERS.has(c.node.comfyClass) && c.node.inputs?.[c.input]?.name === "images") {
      const images = app.nodeOutputs?.[String(c.node.id)]?.images;
      if (images?.length) found.push({ url: viewURL(images[0]), seq: executedSeq.get(String(c.node.id)) ?? 0 });
    }
  }
  return found;
}

function newest(sources) {
  return sources.reduce((a, b) => (b && (!a || b.seq > a.seq) ? b : a), null);
}

// -- pictures --------------------------------------------------------------------------------------------

const pictureCache = new Map(); // url -> Promise<HTMLImageElement>

function loadPicture(url) {
  if (!pictureCache.has(url)) {
    if (pictureCache.size > 64) pictureCache.delete(pictureCache.keys().next().value);
    pictureCache.set(url, new Promise((resolve, reject) => {
      const img = new Image();
      img.onload = () => resolve(img);
      img.onerror = () => reject(new Error(`could not load ${url}`));
      img.src = url;
    }));
  }
  return pictureCache.get(url);
}

async function loadMask(url, channel) {
  const img = await loadPicture(url);
  const w = img.naturalWidth;
  const h = img.naturalHeight;
  const c = document.createElement("canvas");
  c.width = w;
  c.height = h;
  const ctx = c.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(img, 0, 0);
  const data = G.maskFromRGBA(ctx.getImageData(0, 0, w, h).data, w, h, channel);
  return { data, w, h, bbox: G.maskBBox(data, w, h), outline: G.maskOutline(data, w, h) };
}

/** The object alone (the picture where the mask is, transparent elsewhere), to preview the move. */
function objectSprite(img, mask) {
  if (!img || !mask || img.naturalWidth !== mask.w || img.naturalHeight !== mask.h) return null;
  const c = document.createElement("canvas");
  c.width = mask.w;
  c.height = mask.h;
  const ctx = c.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(img, 0, 0);
  const px = ctx.getImageData(0, 0, mask.w, mask.h);
  for (let i = 0; i < mask.data.length; i++) px.data[4 * i + 3] = mask.data[i] ? 255 : 0;
  ctx.putImageData(px, 0, 0);
  return c;
}

// -- the editor ------------------------------------------------------------------------------------------

class Editor {
  constructor(node, kind) {
    this.node = node;
    this.kind = kind; // "drag" | "move"
    this.own = null; // {output, seq}: the node's own last previews
    this.picture = null; // {img, url}
    this.sprite = null; // move: the object cut out of the picture
    this.mask = null; // {data, w, h, bbox, outline, url}
    this.pending = null; // drag: a handle waiting for its target
    this.selected = -1; // drag: the selected pair
    this.gesture = null; // the pointer gesture in progress
    this.sourceKey = "";
    this.renderKey = "";
    this.loadToken = 0;

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
    const bar = document.createElement("div");
    Object.assign(bar.style, { display: "flex", gap: "4px", alignItems: "center", flex: "0 0 auto" });
    this.status = document.createElement("span");
    Object.assign(this.status.style, { flex: "1 1 auto", overflow: "hidden", textOverflow: "ellipsis", whiteSpace: "nowrap" });
    bar.append(this.status);
    if (kind === "drag") {
      bar.append(this.button("Delete pair", "Delete the selected pair (else the last one)", () => this.deletePair()));
      bar.append(this.button("Clear", "Delete every pair", () => this.clearPairs()));
    } else {
      bar.append(this.button("Reset", "dx = dy = 0, scale = 1", () => this.setMove(0, 0, 1)));
    }
    this.el.append(this.canvas, bar);

    this.canvas.addEventListener("pointerdown", (e) => this.onPointerDown(e));
    this.canvas.addEventListener("pointermove", (e) => this.onPointerMove(e));
    this.canvas.addEventListener("pointerup", (e) => this.onPointerUp(e));
    this.canvas.addEventListener("pointercancel", () => this.cancelGesture());
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
      points.style.setProperty("--comfy-widget-max-height", "90");
    }
    editors.add(this);
  }

  button(label, title, onClick) {
    const b = document.createElement("button");
    b.textContent = label;
    b.title = title;
    Object.assign(b.style, {
      font: "inherit", padding: "2px 8px", borderRadius: "4px", cursor: "pointer",
      border: "1px solid var(--border-color, #555)", background: "var(--comfy-input-bg, #333)",
      color: "var(--input-text, #ddd)",
    });
    b.addEventListener("click", (e) => {
      e.stopPropagation();
      onClick();
    });
    return b;
  }

  dispose() {
    editors.delete(this);
  }

  // -- widgets ----------------------------------------------------------------------------------------

  widgetOf(name) {
    return this.node.widgets?.find((w) => w.name === name);
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
    const { pairs, error } = G.tryParsePoints(String(this.widgetOf("points")?.value ?? ""));
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

  // -- sources ------------------------------------------------------------------------------------------

  /** The node's own previews arrived (it ran, or refused its settings). */
  setOwn(output) {
    if (!output?.dragon_image && !output?.dragon_mask) return;
    this.own = { output, seq: nextSeq() };
    this.guard(() => this.refresh());
  }

  findSources() {
    if (!this.node.graph) return { picture: null, mask: null }; // being created or configured
    const own = this.own?.output;
    const ownImage = own?.dragon_image?.length ? { url: viewURL(own.dragon_image[0]), seq: this.own.seq } : null;
    const ownMask = own?.dragon_mask?.length ? { url: viewURL(own.dragon_mask[0]), seq: this.own.seq, channel: "red" } : null;
    const origin = originOf(this.node, this.kind === "drag" ? "image" : "mask");
    let picture = null;
    if (this.kind === "drag") {
      picture = newest([ownImage, ...(origin ? imageSources(origin).filter((s) => s.url !== ownImage?.url) : [])]);
    } else if (origin) {
      const imageSlot = origin.node.outputs?.findIndex((o) => o.type === "IMAGE") ?? -1;
      if (imageSlot >= 0) picture = newest(imageSources({ node: origin.node, slot: imageSlot }));
    }
    const maskOrigin = this.kind === "drag" ? originOf(this.node, "mask") : origin;
    let mask = maskOrigin ? ownMask : null;
    if (maskOrigin && isLoader(maskOrigin.node) && maskOrigin.node.outputs?.[maskOrigin.slot]?.type === "MASK") {
      mask = { url: loaderURL(maskOrigin.node), seq: Infinity, channel: "alpha" }; // LoadImage: mask = 1 - alpha
    }
    return { picture, mask };
  }

  /** Reload the picture and mask when where they come from has changed. */
  refresh(force = false) {
    const { picture, mask } = this.findSources();
    const key = `${picture?.url ?? ""}|${mask?.url ?? ""}|${mask?.channel ?? ""}`;
    if (key === this.sourceKey && !force) return;
    this.sourceKey = key;
    const token = ++this.loadToken;
    Promise.all([
      picture ? loadPicture(picture.url).then((img) => ({ img, url: picture.url })).catch(() => null) : null,
      mask ? loadMask(mask.url, mask.channel).then((m) => ({ ...m, url: mask.url })).catch(() => null) : null,
    ]).then(([p, m]) => {
      if (token !== this.loadToken) return; // a newer refresh is under way
      this.picture = p;
      this.mask = m;
      // (not from a loader's alpha mask: the browser drops the colour under alpha 0, the object would be black)
      this.sprite = this.kind === "move" && mask?.channel !== "alpha" ? objectSprite(p?.img, m) : null;
      this.render(true);
    });
  }

  /** The image frame, in pixels: the picture's size (drag) or the mask's (move). */
  frame() {
    if (this.kind === "move") return this.mask ? { w: this.mask.w, h: this.mask.h } : null;
    if (this.picture) return { w: this.picture.img.naturalWidth, h: this.picture.img.naturalHeight };
    return this.mask ? { w: this.mask.w, h: this.mask.h } : null;
  }

  // -- drawing ----------------------------------------------------------------------------------------

  cssSize() {
    return [this.canvas.clientWidth, this.canvas.clientHeight];
  }

  rect() {
    const f = this.frame();
    const [bw, bh] = this.cssSize();
    return f && bw > 0 && bh > 0 ? G.fitRect(f.w, f.h, bw, bh) : null;
  }

  /** Client (screen) coordinates of the centre of image pixel (x, y): for tests and tools. */
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

  render(force = false) {
    const values = this.kind === "drag" ? String(this.widgetOf("points")?.value ?? "") : JSON.stringify(this.moveValues());
    const box = this.canvas.getBoundingClientRect();
    const key = [values, this.pending, this.selected, box.width, box.height, this.cssSize()].join("|");
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
    const r = this.rect();
    if (!r) {
      this.drawMessage(ctx, cw, ch, this.kind === "drag"
        ? "No image yet: connect a Load Image, or run the workflow once (the node then shows the image it got)."
        : "No mask yet: connect a Load Image with a painted mask, or run the workflow once.");
      this.setStatus(this.kind === "drag" ? this.dragStatus(this.pointsState(), null) : "");
      return;
    }
    const f = this.frame();
    const pic = this.picture?.img;
    const picFits = pic && pic.naturalWidth === f.w && pic.naturalHeight === f.h;
    if (picFits) {
      ctx.imageSmoothingEnabled = r.scale < 2; // big pixels stay crisp
      ctx.drawImage(pic, r.x, r.y, r.w, r.h);
    } else {
      ctx.fillStyle = "#000";
      ctx.fillRect(r.x, r.y, r.w, r.h);
    }
    ctx.strokeStyle = "rgba(255,255,255,0.25)";
    ctx.lineWidth = 1;
    ctx.strokeRect(r.x - 0.5, r.y - 0.5, r.w + 1, r.h + 1);
    if (this.kind === "drag") this.drawDrag(ctx, r, f);
    else this.drawMove(ctx, r, f, pic && !picFits ? `image ${pic.naturalWidth}x${pic.naturalHeight} is not the mask's size` : null);
  }

  drawMessage(ctx, cw, ch, text) {
    ctx.fillStyle = "rgba(200,200,200,0.8)";
    ctx.font = "12px sans-serif";
    ctx.textAlign = "center";
    const words = text.split(" ");
    const lines = [];
    let line = "";
    for (const w of words) {
      if (ctx.measureText(`${line} ${w}`).width > cw - 24 && line) {
        lines.push(line);
        line = w;
      } else line = line ? `${line} ${w}` : w;
    }
    lines.push(line);
    lines.forEach((l, i) => ctx.fillText(l, cw / 2, ch / 2 + (i - (lines.length - 1) / 2) * 16));
  }

  setStatus(text, error = false) {
    this.status.textContent = text;
    this.status.title = text;
    this.status.style.color = error ? "#f77" : "";
  }

  drawOutline(ctx, r, segs, t, style, dash = []) {
    ctx.save();
    ctx.setLineDash(dash);
    ctx.beginPath();
    for (const [x0, y0, x1, y1] of segs) {
      const [a, b] = G.toDisplay(r, ...(t ? G.applyTransform(t, x0, y0) : [x0, y0]));
      const [c, d] = G.toDisplay(r, ...(t ? G.applyTransform(t, x1, y1) : [x1, y1]));
      ctx.moveTo(a, b);
      ctx.lineTo(c, d);
    }
    ctx.lineCap = "square";
    ctx.strokeStyle = "rgba(0,0,0,0.7)";
    ctx.lineWidth = 3.5;
    ctx.stroke();
    ctx.strokeStyle = style;
    ctx.lineWidth = 1.6;
    ctx.stroke();
    ctx.restore();
  }

  drawArrow(ctx, a, b, colour, width) {
    const [x0, y0] = a;
    const [x1, y1] = b;
    const len = Math.hypot(x1 - x0, y1 - y0);
    ctx.save();
    for (const [style, w] of [["rgba(0,0,0,0.75)", width + 2.5], [colour, width]]) {
      ctx.strokeStyle = style;
      ctx.fillStyle = style;
      ctx.lineWidth = w;
      ctx.beginPath();
      ctx.moveTo(x0, y0);
      ctx.lineTo(x1, y1);
      ctx.stroke();
      if (len > 1) {
        const ux = (x1 - x0) / len;
        const uy = (y1 - y0) / len;
        const head = Math.min(12, len * 0.6) + (w - width);
        ctx.beginPath();
        ctx.moveTo(x1, y1);
        ctx.lineTo(x1 - ux * head - uy * head * 0.5, y1 - uy * head + ux * head * 0.5);
        ctx.lineTo(x1 - ux * head + uy * head * 0.5, y1 - uy * head - ux * head * 0.5);
        ctx.closePath();
        ctx.fill();
      }
    }
    ctx.restore();
  }

  drawDot(ctx, [x, y], fill, radius, ring = null) {
    ctx.beginPath();
    ctx.arc(x, y, radius, 0, 2 * Math.PI);
    ctx.fillStyle = fill;
    ctx.fill();
    ctx.lineWidth = 1.5;
    ctx.strokeStyle = ring ?? "#fff";
    ctx.stroke();
  }

  dragStatus(s, f) {
    if (this.linked("points")) return "points come from a link (read only)";
    if (s.error) return s.error;
    const outside = f ? s.pairs.findIndex((p) => !G.pairsInside([p], f.w, f.h)) : -1;
    if (outside >= 0) return `pair ${outside + 1} lies outside the ${f.w}x${f.h} image`;
    const n = s.pairs.length;
    const size = f ? `${f.w}x${f.h} · ` : "";
    if (s.pending) return `${size}${n} pair${n === 1 ? "" : "s"} · click the target`;
    return `${size}${n} pair${n === 1 ? "" : "s"} · click handle, then target`;
  }

  drawDrag(ctx, r, f) {
    const s = this.pointsState();
    const bad = !!s.error || s.pairs.some((p) => !G.pairsInside([p], f.w, f.h));
    this.setStatus(this.dragStatus(s, f), bad);
    if (this.mask && this.mask.w === f.w && this.mask.h === f.h) {
      this.drawOutline(ctx, r, this.mask.outline, null, "rgba(120,220,255,0.9)", [4, 3]); // the editable region
    }
    const pt = (x, y) => G.pointToDisplay(r, x, y);
    s.pairs.forEach((p, i) => {
      const sel = i === this.selected;
      const inside = G.pairsInside([p], f.w, f.h);
      const a = pt(p[0], p[1]);
      const b = pt(p[2], p[3]);
      this.drawArrow(ctx, a, b, !inside ? "#f80" : sel ? "#ffe14d" : "#fff", sel ? 3 : 2);
      this.drawDot(ctx, a, "#e53935", sel ? 6 : 5);
      this.drawDot(ctx, b, "#1e88e5", sel ? 6 : 5);
      ctx.font = "bold 11px sans-serif";
      ctx.textAlign = "left";
      ctx.lineWidth = 3;
      ctx.strokeStyle = "rgba(0,0,0,0.8)";
      ctx.strokeText(String(i + 1), a[0] + 7, a[1] - 6);
      ctx.fillStyle = "#fff";
      ctx.fillText(String(i + 1), a[0] + 7, a[1] - 6);
    });
    if (s.pending) {
      const a = pt(s.pending[0], s.pending[1]);
      ctx.save();
      ctx.setLineDash([3, 3]);
      ctx.beginPath();
      ctx.arc(a[0], a[1], 10, 0, 2 * Math.PI);
      ctx.strokeStyle = "#fff";
      ctx.lineWidth = 1.5;
      ctx.stroke();
      ctx.restore();
      this.drawDot(ctx, a, "#e53935", 5);
    }
  }

  drawMove(ctx, r, f, note) {
    const m = this.mask;
    const v = this.moveValues();
    if (!m.bbox) {
      this.setStatus("the mask is empty: paint the object to move", true);
      return;
    }
    const t0 = G.moveTransform(m.bbox, 0, 0, 1);
    const t = G.moveTransform(m.bbox, v.dx, v.dy, v.scale);
    const moved = G.movedBBox(m.bbox, t);
    const inside = G.boxInside(moved, f.w, f.h);
    // where the object is: a light fill and a dashed outline; where it goes: a solid outline
    ctx.save();
    ctx.fillStyle = "rgba(255,255,255,0.18)";
    for (let y = 0; y < m.h; y++) {
      for (let x = 0; x < m.w; x++) {
        if (m.data[y * m.w + x]) {
          const [px, py] = G.toDisplay(r, x, y);
          ctx.fillRect(px, py, r.scale + 0.5, r.scale + 0.5);
        }
      }
    }
    ctx.restore();
    if (this.sprite) { // the object where it goes, see-through
      ctx.save();
      ctx.beginPath();
      ctx.rect(r.x, r.y, r.w, r.h);
      ctx.clip();
      ctx.globalAlpha = 0.6;
      ctx.imageSmoothingEnabled = r.scale * v.scale < 2;
      const [ox, oy] = G.toDisplay(r, t.cx * (1 - t.scale) + t.dx, t.cy * (1 - t.scale) + t.dy);
      ctx.drawImage(this.sprite, ox, oy, m.w * r.scale * t.scale, m.h * r.scale * t.scale);
      ctx.restore();
    }
    this.drawOutline(ctx, r, m.outline, t0, "rgba(255,255,255,0.85)", [4, 3]);
    const from = G.toDisplay(r, t0.cx, t0.cy);
    const to = G.toDisplay(r, t.cx + t.dx, t.cy + t.dy);
    if (Math.hypot(to[0] - from[0], to[1] - from[1]) > 2) this.drawArrow(ctx, from, to, "#fff", 2);
    this.drawOutline(ctx, r, m.outline, t, inside ? "#ffe14d" : "#f44");
    const [hx, hy] = G.toDisplay(r, ...G.scaleHandle(m.bbox, t));
    ctx.fillStyle = inside ? "#ffe14d" : "#f44";
    ctx.strokeStyle = "#000";
    ctx.lineWidth = 1.5;
    ctx.fillRect(hx - 5, hy - 5, 10, 10);
    ctx.strokeRect(hx - 5, hy - 5, 10, 10);
    const linked = ["dx", "dy", "scale"].filter((n) => this.linked(n));
    let text = `dx ${v.dx}, dy ${v.dy}, scale ${v.scale.toFixed(2)}`;
    if (linked.length) text += ` · ${linked.join(", ")} linked (read only)`;
    if (!inside) text += " · the object leaves the image";
    if (note) text += ` · ${note}`;
    this.setStatus(text, !inside);
  }

  // -- pointer ------------------------------------------------------------------------------------------

  local(e) {
    const box = this.canvas.getBoundingClientRect();
    const k = this.canvas.clientWidth / box.width;
    return [(e.clientX - box.left) * k, (e.clientY - box.top) * k];
  }

  onPointerDown(e) {
    if (e.button !== 0) return;
    const r = this.rect();
    if (!r) return;
    e.preventDefault();
    e.stopPropagation();
    const p = this.local(e);
    const f = this.frame();
    if (this.kind === "drag") {
      const s = this.pointsState();
      if (s.error || this.linked("points")) return;
      const hit = G.hitTest(s, r, p[0], p[1], HIT_RADIUS);
      if (hit) this.selected = hit.pair;
      this.gesture = { kind: hit ? "point" : "click", hit, start: p, moved: false, state: s };
    } else {
      if (["dx", "dy", "scale"].some((n) => this.linked(n)) || !this.mask?.bbox) return;
      const v = this.moveValues();
      const t = G.moveTransform(this.mask.bbox, v.dx, v.dy, v.scale);
      const [hx, hy] = G.toDisplay(r, ...G.scaleHandle(this.mask.bbox, t));
      const at = G.toImage(r, p[0], p[1]);
      const moved = G.movedBBox(this.mask.bbox, t);
      const onBox = at[0] >= moved.x0 && at[0] <= moved.x1 && at[1] >= moved.y0 && at[1] <= moved.y1;
      if (Math.abs(p[0] - hx) <= HIT_RADIUS && Math.abs(p[1] - hy) <= HIT_RADIUS) {
        this.gesture = { kind: "scale", start: p, values: v };
      } else if (onBox || G.hitMovedMask(this.mask.data, f.w, f.h, t, at[0], at[1])) {
        this.gesture = { kind: "move", start: p, from: at, values: v };
      } else return;
    }
    this.canvas.setPointerCapture(e.pointerId);
  }

  onPointerMove(e) {
    const r = this.rect();
    if (!r) return;
    const p = this.local(e);
    const g = this.gesture;
    if (!g) return this.hover(p, r);
    e.preventDefault();
    e.stopPropagation();
    if (Math.hypot(p[0] - g.start[0], p[1] - g.start[1]) > CLICK_SLOP) g.moved = true;
    const f = this.frame();
    if (g.kind === "point" && g.moved) {
      const [x, y] = G.pixelAt(r, f.w, f.h, p[0], p[1]);
      const s = G.movePoint(g.state, g.hit, x, y);
      this.pending = s.pending;
      this.setWidget("points", G.formatPoints(s.pairs)); // live: the widget follows the drag
      this.render(true);
    } else if (g.kind === "move") {
      const at = G.toImage(r, p[0], p[1]);
      const { dx, dy } = G.dragOffset(this.mask.bbox, g.values, g.values.scale, g.from, at, f.w, f.h);
      this.setMove(dx, dy, g.values.scale);
    } else if (g.kind === "scale") {
      const at = G.toImage(r, p[0], p[1]);
      this.setMove(g.values.dx, g.values.dy, G.scaleFromHandle(this.mask.bbox, g.values.dx, g.values.dy, at));
    }
  }

  onPointerUp(e) {
    const g = this.gesture;
    if (!g) return;
    this.gesture = null;
    e.stopPropagation();
    const r = this.rect();
    if (!r) return;
    if (g.kind === "click" && !g.moved) {
      const p = this.local(e);
      if (!G.insideImage(r, p[0], p[1])) return this.render(true);
      const f = this.frame();
      const [x, y] = G.pixelAt(r, f.w, f.h, p[0], p[1]);
      const s = G.addPoint(g.state, x, y);
      this.selected = s.pending ? -1 : s.pairs.length - 1;
      this.writePoints(s);
    } else {
      this.render(true);
    }
  }

  cancelGesture() {
    this.gesture = null;
    this.render(true);
  }

  onContextMenu(e) {
    e.preventDefault();
    e.stopPropagation();
    if (this.kind !== "drag" || this.linked("points")) return;
    const r = this.rect();
    if (!r) return;
    const p = this.local(e);
    const s = this.pointsState();
    const hit = s.error ? null : G.hitTest(s, r, p[0], p[1], HIT_RADIUS);
    if (!hit) return;
    this.selected = -1;
    this.writePoints(G.removePair(s, hit.pair));
  }

  hover(p, r) {
    let cursor = "crosshair";
    if (this.kind === "drag") {
      if (G.hitTest(this.pointsState(), r, p[0], p[1], HIT_RADIUS)) cursor = "grab";
    } else if (this.mask?.bbox) {
      const v = this.moveValues();
      const t = G.moveTransform(this.mask.bbox, v.dx, v.dy, v.scale);
      const [hx, hy] = G.toDisplay(r, ...G.scaleHandle(this.mask.bbox, t));
      const at = G.toImage(r, p[0], p[1]);
      const moved = G.movedBBox(this.mask.bbox, t);
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
      executedSeq.set(String(detail?.display_node ?? detail?.node), nextSeq());
      refreshAllSoon();
    });
    api.addEventListener(PREVIEW_EVENT, ({ detail }) => {
      const node = app.graph?.getNodeById(detail?.node);
      node?.dragonEditor?.setOwn(detail.output);
      refreshAllSoon();
    });
  },

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== DRAG_NODE && nodeData?.name !== MOVE_NODE) return;
    const kind = nodeData.name === DRAG_NODE ? "drag" : "move";
    const proto = nodeType.prototype;
    chain(proto, "onNodeCreated", function () {
      this.dragonEditor = new Editor(this, kind);
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
