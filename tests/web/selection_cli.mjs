// Reads a JSON list of {text, w, h} on stdin; writes, per item, the editor's reading of the
// selection: {"error": "..."} or {"shapes": [...], "formatted": "...", "rows": ["0110...", ...]}
// (the rasterised mask, one string per image row). Used by tests/test_web_selection.py to hold
// web/selection.js and nodes/convert.py (parse_selection, selection_mask) to the same pixels.
import { readFileSync } from "node:fs";

import { formatSelection, rasterSelection, trySelection } from "../../web/selection.js";

const items = JSON.parse(readFileSync(0, "utf8"));
const out = items.map(({ text, w, h, name }) => {
  const { shapes, error } = trySelection(text, name ?? "selection");
  if (error) return { error };
  const m = rasterSelection(shapes, w, h);
  const rows = [];
  for (let y = 0; y < h; y++) rows.push(Array.from(m.subarray(y * w, (y + 1) * w)).join(""));
  return { shapes, formatted: formatSelection(shapes), rows };
});
process.stdout.write(JSON.stringify(out));
