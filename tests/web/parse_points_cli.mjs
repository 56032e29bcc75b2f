// Reads a JSON list of points strings on stdin; writes, per string, the editor's reading of it:
// {"pairs": [[x1, y1, x2, y2], ...]} or {"error": "..."}. Used by tests/test_web_points.py to
// hold web/editor_geometry.js and dragon_core.regions.parse_points to the same format.
import { readFileSync } from "node:fs";

import { formatPoints, tryParsePoints } from "../../web/editor_geometry.js";

const texts = JSON.parse(readFileSync(0, "utf8"));
const out = texts.map((t) => {
  const { pairs, error } = tryParsePoints(t);
  return error ? { error } : { pairs, formatted: formatPoints(pairs) };
});
process.stdout.write(JSON.stringify(out));
