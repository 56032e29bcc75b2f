// What the DragonDiffusion editor (web/dragon_editor.js) draws over the picture for each tool:
// the selection (select tools), the moved object (Move), the point pairs (Points), and the
// status line that goes with it. Functions of the editor `ed` and its current view `v`.
// ComfyUI loads every .js file under WEB_DIRECTORY as an extension; this one only defines exports.

import * as D from "./editor_draw.js";
import * as G from "./editor_geometry.js";
import * as S from "./editor_sources.js";

/** Select tools: the selection (or the wired mask) tinted and outlined over its picture. */
export function drawSelect(ed, ctx, r, v, note) {
  const { t, sel } = v;
  const what = t.label.toLowerCase();
  if (sel.mask) {
    D.drawLayer(ctx, r, ed.tint(sel.mask, sel.wired ? [120, 220, 255, 90] : [255, 225, 77, 95]));
    D.drawOutline(ctx, r, sel.mask.outline, null, sel.wired ? "rgba(120,220,255,0.95)" : "#ffe14d");
  }
  let text;
  let bad = false;
  if (sel.wired) text = `${t.mask} is wired: it is the ${what} (disconnect it to select here)`;
  else if (sel.linked) text = `${t.selection} comes from a link (read only)`;
  else if (sel.error) [text, bad] = [sel.error, true];
  else if (!sel.shapes.length) {
    text = t.selection === "region" ? "Region: paint where the image may change (none: anywhere)"
      : `${t.label}: drag a box around it · Shift adds, Alt removes`;
  } else if (!sel.mask?.count) [text, bad] = [`${t.label}: the selection covers no pixel`, true];
  else text = `${t.label}: ${sel.mask.count} px · Shift adds, Alt removes`;
  if (note) text += ` · ${note}`;
  ed.setStatus(text, bad);
}

/** The Points tool's status line. */
export function pointsStatus(ed, s, f) {
  if (ed.linked("points")) return "points come from a link (read only)";
  if (s.error) return s.error;
  const outside = f ? s.pairs.findIndex((p) => !G.pairsInside([p], f.w, f.h)) : -1;
  if (outside >= 0) return `pair ${outside + 1} lies outside the ${f.w}x${f.h} image`;
  const n = s.pairs.length;
  const size = f ? `${f.w}x${f.h} · ` : "";
  if (s.pending) return `${size}${n} pair${n === 1 ? "" : "s"} · click the target`;
  return `${size}${n} pair${n === 1 ? "" : "s"} · click handle, then target`;
}

/** Points tool: handle -> target arrows, the editable region's outline. */
export function drawPoints(ed, ctx, r, v) {
  const f = v.frame;
  const s = ed.pointsState();
  const bad = !!s.error || s.pairs.some((p) => !G.pairsInside([p], f.w, f.h));
  ed.setStatus(pointsStatus(ed, s, f), bad);
  const m = v.region?.mask;
  if (m && m.w === f.w && m.h === f.h) { // the editable region
    D.drawOutline(ctx, r, m.outline, null, "rgba(120,220,255,0.9)", [4, 3]);
  }
  const pt = (x, y) => G.pointToDisplay(r, x, y);
  s.pairs.forEach((p, i) => {
    const sel = i === ed.selected;
    const inside = G.pairsInside([p], f.w, f.h);
    const a = pt(p[0], p[1]);
    const b = pt(p[2], p[3]);
    D.drawArrow(ctx, a, b, !inside ? "#f80" : sel ? "#ffe14d" : "#fff", sel ? 3 : 2);
    D.drawDot(ctx, a, "#e53935", sel ? 6 : 5);
    D.drawDot(ctx, b, "#1e88e5", sel ? 6 : 5);
    D.drawLabel(ctx, [a[0] + 7, a[1] - 6], String(i + 1));
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
    D.drawDot(ctx, a, "#e53935", 5);
  }
}

/** The object cut out of its picture (move: the image, paste: the source image), cached. */
function sprite(ed, v) {
  const m = v.sel.mask;
  if (!m || !v.source || (v.sel.wired && ed.masks[ed.spec.targets[0].mask]?.channel === "alpha"
    && v.source.url === ed.masks[ed.spec.targets[0].mask]?.url)) {
    return null; // (not from a loader's own alpha mask: the browser drops the colour under alpha 0)
  }
  const key = `${v.source.url}|${JSON.stringify(v.source.crop)}`;
  m.sprites ??= {};
  if (!(key in m.sprites)) m.sprites[key] = S.objectSprite(v.source, m);
  return m.sprites[key];
}

/** Move tool: the object where it is and where it goes, the scale handle. */
export function drawMove(ed, ctx, r, v, note) {
  const m = v.sel.mask;
  const f = v.frame;
  if (!m) {
    ed.setStatus("Nothing selected yet: choose Box and drag a box around the object", true);
    return;
  }
  if (!m.bbox) {
    ed.setStatus("the mask is empty: select the object to move", true);
    return;
  }
  const val = ed.moveValues();
  const t0 = G.moveTransform(m.bbox, 0, 0, 1);
  const t = G.moveTransform(m.bbox, val.dx, val.dy, val.scale);
  const moved = G.movedBBox(m.bbox, t);
  const inside = G.boxOverlaps(moved, f.w, f.h); // partly past the frame is fine: that part is cropped
  const cropped = inside && !G.boxInside(moved, f.w, f.h);
  const paste = !!ed.spec.place && ed.spec.place.picture !== ed.spec.targets[0].picture;
  if (!paste) D.drawLayer(ctx, r, ed.tint(m, [255, 255, 255, 46])); // where the object is
  const cut = sprite(ed, v);
  if (cut) D.drawLayer(ctx, r, cut, paste ? 0.85 : 0.6, t); // the object where it goes
  D.drawOutline(ctx, r, m.outline, t0, "rgba(255,255,255,0.85)", [4, 3]);
  const from = G.toDisplay(r, t0.cx, t0.cy);
  const to = G.toDisplay(r, t.cx + t.dx, t.cy + t.dy);
  if (Math.hypot(to[0] - from[0], to[1] - from[1]) > 2) D.drawArrow(ctx, from, to, "#fff", 2);
  D.drawOutline(ctx, r, m.outline, t, inside ? "#ffe14d" : "#f44");
  const [hx, hy] = G.toDisplay(r, ...G.scaleHandle(m.bbox, t));
  ctx.fillStyle = inside ? "#ffe14d" : "#f44";
  ctx.strokeStyle = "#000";
  ctx.lineWidth = 1.5;
  ctx.fillRect(hx - 5, hy - 5, 10, 10);
  ctx.strokeRect(hx - 5, hy - 5, 10, 10);
  const linked = ["dx", "dy", "scale"].filter((n) => ed.linked(n));
  let text = `dx ${val.dx}, dy ${val.dy}, scale ${val.scale.toFixed(2)}`;
  if (linked.length) text += ` · ${linked.join(", ")} linked (read only)`;
  if (cropped) text += " · the part past the frame will be cropped";
  if (!inside) text += " · the object leaves the image";
  if (note) text += ` · ${note}`;
  ed.setStatus(text, !inside);
}
