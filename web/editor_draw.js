// Canvas drawing for the DragonDiffusion editors: pictures, mask outlines and tints, arrows,
// points, messages. Only the 2D context; no ComfyUI. ComfyUI loads every .js file under
// WEB_DIRECTORY as an extension; this one only defines exports.

import * as G from "./editor_geometry.js";

/** A picture ({img, crop, w, h}) into display rect r; big pixels stay crisp. */
export function drawPicture(ctx, pic, r) {
  ctx.save();
  ctx.imageSmoothingEnabled = (r.scale * pic.w) / pic.crop.w < 2;
  const { x, y, w, h } = pic.crop;
  ctx.drawImage(pic.img, x, y, w, h, r.x, r.y, r.w, r.h);
  ctx.restore();
}

export function drawFrame(ctx, r) {
  ctx.strokeStyle = "rgba(255,255,255,0.25)";
  ctx.lineWidth = 1;
  ctx.strokeRect(r.x - 0.5, r.y - 0.5, r.w + 1, r.h + 1);
}

export function drawMessage(ctx, cw, ch, text) {
  ctx.fillStyle = "rgba(200,200,200,0.8)";
  ctx.font = "12px sans-serif";
  ctx.textAlign = "center";
  const lines = [];
  let line = "";
  for (const w of text.split(" ")) {
    if (ctx.measureText(`${line} ${w}`).width > cw - 24 && line) {
      lines.push(line);
      line = w;
    } else line = line ? `${line} ${w}` : w;
  }
  lines.push(line);
  lines.forEach((l, i) => ctx.fillText(l, cw / 2, ch / 2 + (i - (lines.length - 1) / 2) * 16));
}

/** Segments [x0, y0, x1, y1] in image coordinates (optionally moved by transform t), outlined. */
export function drawOutline(ctx, r, segs, t, style, dash = []) {
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

/** A canvas of the frame's size (a tint, a sprite) into display rect r, optionally moved by transform t. */
export function drawLayer(ctx, r, layer, alpha = 1, t = null) {
  ctx.save();
  ctx.beginPath();
  ctx.rect(r.x, r.y, r.w, r.h);
  ctx.clip();
  ctx.globalAlpha = alpha;
  const s = t ? t.scale : 1;
  ctx.imageSmoothingEnabled = r.scale * s < 2;
  const [ox, oy] = t ? G.toDisplay(r, t.cx * (1 - t.scale) + t.dx, t.cy * (1 - t.scale) + t.dy) : [r.x, r.y];
  ctx.drawImage(layer, ox, oy, layer.width * r.scale * s, layer.height * r.scale * s);
  ctx.restore();
}

export function drawArrow(ctx, a, b, colour, width) {
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

export function drawDot(ctx, [x, y], fill, radius, ring = null) {
  ctx.beginPath();
  ctx.arc(x, y, radius, 0, 2 * Math.PI);
  ctx.fillStyle = fill;
  ctx.fill();
  ctx.lineWidth = 1.5;
  ctx.strokeStyle = ring ?? "#fff";
  ctx.stroke();
}

export function drawLabel(ctx, [x, y], text) {
  ctx.font = "bold 11px sans-serif";
  ctx.textAlign = "left";
  ctx.lineWidth = 3;
  ctx.strokeStyle = "rgba(0,0,0,0.8)";
  ctx.strokeText(text, x, y);
  ctx.fillStyle = "#fff";
  ctx.fillText(text, x, y);
}

/** The shape being drawn (image coordinates): a box {a, b}, a lasso or a brush path, in display rect r. */
export function drawGesture(ctx, r, g, subtract) {
  const colour = subtract ? "#ff6b6b" : "#ffe14d";
  ctx.save();
  ctx.strokeStyle = colour;
  ctx.fillStyle = subtract ? "rgba(255,107,107,0.25)" : "rgba(255,225,77,0.25)";
  ctx.lineWidth = 1.6;
  ctx.setLineDash(g.tool === "brush" || g.tool === "erase" ? [] : [5, 3]);
  const pts = g.path.map(([x, y]) => G.toDisplay(r, x, y));
  if (g.tool === "box") {
    const [a, b] = [pts[0], pts[pts.length - 1]];
    ctx.fillRect(Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.abs(b[0] - a[0]), Math.abs(b[1] - a[1]));
    ctx.strokeRect(Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.abs(b[0] - a[0]), Math.abs(b[1] - a[1]));
  } else if (g.tool === "lasso") {
    ctx.beginPath();
    pts.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
    ctx.closePath();
    ctx.fill();
    ctx.stroke();
  } else {
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.strokeStyle = ctx.fillStyle;
    ctx.lineWidth = 2 * g.radius * r.scale;
    ctx.beginPath();
    pts.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
    if (pts.length === 1) ctx.lineTo(pts[0][0] + 0.01, pts[0][1]);
    ctx.stroke();
  }
  ctx.restore();
}

/** The brush's footprint around the pointer. */
export function drawBrushCursor(ctx, p, radius, subtract) {
  ctx.save();
  ctx.beginPath();
  ctx.arc(p[0], p[1], Math.max(1, radius), 0, 2 * Math.PI);
  ctx.strokeStyle = "rgba(0,0,0,0.7)";
  ctx.lineWidth = 3;
  ctx.stroke();
  ctx.strokeStyle = subtract ? "#ff6b6b" : "#fff";
  ctx.lineWidth = 1.2;
  ctx.stroke();
  ctx.restore();
}
