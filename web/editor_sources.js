// Where the DragonDiffusion editors find their pictures and masks in the graph, and loading them.
//
// A picture for a node input (most recent first): an image loader wired straight in (LoadImage:
// its chosen picture, before anything runs), or through ComfyUI's ImageScale (the loader's
// picture with that node's crop and size); the node's own preview (the nodes send the images and
// wired masks they got, also when they refuse their settings); a PreviewImage / SaveImage node or
// another DragonDiffusion editor on the same output. A wired mask: a loader's painted mask
// (LoadImage: mask = 1 - alpha) or the node's own preview of it.
//
// ComfyUI loads every .js file under WEB_DIRECTORY as an extension; this one only defines exports.

import { api } from "../../scripts/api.js";
import { app } from "../../scripts/app.js";
import * as G from "./editor_geometry.js";

const IMAGE_VIEWERS = new Set(["PreviewImage", "SaveImage"]); // their ui images are their input, unchanged

let seqCounter = 0;
export const nextSeq = () => ++seqCounter;
export const executedSeq = new Map(); // node id -> order of its last "executed" message

function getLink(graph, id) {
  const links = graph?.links;
  if (!links || id == null) return null;
  return typeof links.get === "function" ? links.get(id) : links[id];
}

/** The node and output slot feeding input `name` of `node` (through legacy Reroute nodes), or null. */
export function originOf(node, name) {
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

/**
 * An image loader (LoadImage and the like): a picture chosen in its `image` widget, with an upload
 * button or shown as node.imgs. Told by its widgets, not by node.imgs alone: the frontend updates
 * node.imgs only when it draws the loader, so a picture chosen while the loader is off screen
 * would go unseen.
 */
export function isLoader(node) {
  const image = node.widgets?.find((w) => w.name === "image");
  if (typeof image?.value !== "string") return false;
  return !!node.imgs?.[0]?.src || !!node.widgets.some((w) => w.name === "upload" && w.type === "button");
}

export function viewURL(info) {
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
  if (!m || !m[1]) return node.imgs?.[0]?.src ?? null;
  const path = m[1];
  const cut = path.lastIndexOf("/");
  return viewURL({ filename: path.slice(cut + 1), subfolder: cut >= 0 ? path.slice(0, cut) : "", type: m[2] ?? "input" });
}

function widgetValue(node, name) {
  if (node.inputs?.some((i) => i.widget?.name === name && i.link != null)) return undefined; // set by a link
  return node.widgets?.find((w) => w.name === name)?.value;
}

/** An ImageScale on a loader: the loader's picture and the node's settings (applied once the picture's size is known). */
function scaledLoader(node) {
  if (node.comfyClass !== "ImageScale" && node.type !== "ImageScale") return null;
  const from = originOf(node, "image");
  if (!from || !isLoader(from.node) || from.node.outputs?.[from.slot]?.type !== "IMAGE") return null;
  const width = Number(widgetValue(node, "width"));
  const height = Number(widgetValue(node, "height"));
  const crop = widgetValue(node, "crop");
  if (!Number.isInteger(width) || !Number.isInteger(height) || typeof crop !== "string") return null;
  return { url: loaderURL(from.node), seq: Infinity, scale: { width, height, crop } };
}

/** Where an IMAGE output's picture can be seen: [{url, seq, scale?}] (seq Infinity: a loader's live picture). */
function imageSources(origin, self) {
  const found = [];
  const { node, slot } = origin;
  if (isLoader(node) && node.outputs?.[slot]?.type === "IMAGE") found.push({ url: loaderURL(node), seq: Infinity });
  const scaled = scaledLoader(node);
  if (scaled) found.push(scaled);
  for (const c of consumersOf(node, slot)) {
    const own = c.node !== self && c.node.dragonEditor?.own;
    const name = c.node.inputs?.[c.input]?.name;
    const info = own && own.output?.[`dragon_${name}`];
    if (info?.length) found.push({ url: viewURL(info[0]), seq: own.seq });
    if (IMAGE_VIEWERS.has(c.node.comfyClass) && name === "images") {
      const images = app.nodeOutputs?.[String(c.node.id)]?.images;
      if (images?.length) found.push({ url: viewURL(images[0]), seq: executedSeq.get(String(c.node.id)) ?? 0 });
    }
  }
  return found;
}

function newest(sources) {
  return sources.reduce((a, b) => (b && (!a || b.seq > a.seq) ? b : a), null);
}

/** The node's own preview `dragon_<input>` as a source, or null. */
function ownSource(node, input, extra = {}) {
  const own = node.dragonEditor?.own;
  const info = own?.output?.[`dragon_${input}`];
  return info?.length ? { url: viewURL(info[0]), seq: own.seq, ...extra } : null;
}

/**
 * The newest picture for IMAGE input `input` of `node`; `fallback` names a MASK input whose
 * origin's IMAGE output stands in when `input` is not wired (a LoadImage or a Shapes Scene
 * wired into the mask only, as older workflows do).
 */
export function pictureSource(node, input, fallback = null) {
  const own = ownSource(node, input);
  const origin = originOf(node, input);
  if (origin) return newest([own, ...imageSources(origin, node)]);
  const maskOrigin = fallback && originOf(node, fallback);
  if (!maskOrigin) return own;
  const slot = maskOrigin.node.outputs?.findIndex((o) => o.type === "IMAGE") ?? -1;
  return newest([own, ...(slot >= 0 ? imageSources({ node: maskOrigin.node, slot }, node) : [])]);
}

/** The wired MASK input `input` of `node`: {url, seq, channel} or null when it is not wired (or not seen yet: {url: null}). */
export function maskSource(node, input) {
  const origin = originOf(node, input);
  if (!origin) return null;
  if (isLoader(origin.node) && origin.node.outputs?.[origin.slot]?.type === "MASK") {
    return { url: loaderURL(origin.node), seq: Infinity, channel: "alpha" }; // LoadImage: mask = 1 - alpha
  }
  return ownSource(node, input, { channel: "red" }) ?? { url: null, seq: 0, channel: "red" };
}

// -- loading ---------------------------------------------------------------------------------------------

const pictureCache = new Map(); // url -> Promise<HTMLImageElement>

function loadImage(url) {
  if (!pictureCache.has(url)) {
    if (pictureCache.size > 64) pictureCache.delete(pictureCache.keys().next().value);
    const loading = new Promise((resolve, reject) => {
      const img = new Image();
      img.onload = () => resolve(img);
      img.onerror = () => reject(new Error(`could not load ${url}`));
      img.src = url;
    });
    // a failure is not kept: the file may exist when the editor asks again
    loading.catch(() => pictureCache.get(url) === loading && pictureCache.delete(url));
    pictureCache.set(url, loading);
  }
  return pictureCache.get(url);
}

/** A picture source -> {img, url, w, h, crop}: the frame w x h (image pixels) shows `crop` of img. */
export async function loadPicture(source) {
  const img = await loadImage(source.url);
  const iw = img.naturalWidth;
  const ih = img.naturalHeight;
  if (!source.scale) return { img, url: source.url, w: iw, h: ih, crop: { x: 0, y: 0, w: iw, h: ih } };
  const { width, height, crop } = source.scale;
  const g = G.imageScaleGeometry(iw, ih, width, height, crop);
  return { img, url: source.url, w: g.w, h: g.h, crop: g.crop };
}

/** A mask source -> {data, w, h, bbox, outline, url, channel}. */
export async function loadMask(source) {
  const img = await loadImage(source.url);
  const w = img.naturalWidth;
  const h = img.naturalHeight;
  const c = document.createElement("canvas");
  c.width = w;
  c.height = h;
  const ctx = c.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(img, 0, 0);
  const data = G.maskFromRGBA(ctx.getImageData(0, 0, w, h).data, w, h, source.channel);
  return { data, w, h, url: source.url, channel: source.channel };
}

/** The picture at its frame size, as a canvas (the crop and scale applied). */
export function frameCanvas(pic) {
  const c = document.createElement("canvas");
  c.width = pic.w;
  c.height = pic.h;
  const ctx = c.getContext("2d", { willReadFrequently: true });
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(pic.img, pic.crop.x, pic.crop.y, pic.crop.w, pic.crop.h, 0, 0, pic.w, pic.h);
  return c;
}

/** The object alone (the picture where the mask is, transparent elsewhere), to preview a move or paste. */
export function objectSprite(pic, mask) {
  if (!pic || !mask || pic.w !== mask.w || pic.h !== mask.h) return null;
  const c = frameCanvas(pic);
  const ctx = c.getContext("2d", { willReadFrequently: true });
  const px = ctx.getImageData(0, 0, mask.w, mask.h);
  for (let i = 0; i < mask.data.length; i++) px.data[4 * i + 3] = mask.data[i] ? 255 : 0;
  ctx.putImageData(px, 0, 0);
  return c;
}

/** A tint over the selected pixels, as a canvas of the mask's size. */
export function maskTint(mask, rgba) {
  const c = document.createElement("canvas");
  c.width = mask.w;
  c.height = mask.h;
  const ctx = c.getContext("2d");
  const px = ctx.createImageData(mask.w, mask.h);
  for (let i = 0; i < mask.data.length; i++) {
    if (mask.data[i]) px.data.set(rgba, 4 * i);
  }
  ctx.putImageData(px, 0, 0);
  return c;
}
