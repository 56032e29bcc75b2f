// The bars of the DragonDiffusion editor (web/dragon_editor.js): the tool row (targets, tools,
// brush size) above the picture and the status and action row below it. DOM only; buttons carry
// data-tool / data-target / data-action attributes (the browser tests find them by these).
// ComfyUI loads every .js file under WEB_DIRECTORY as an extension; this one only defines exports.

const TOOLS = {
  box: ["Box", "Drag a box around the object (Shift adds, Alt removes)"],
  lasso: ["Lasso", "Draw around the object (Shift adds, Alt removes)"],
  brush: ["Brush", "Paint onto the selection"],
  erase: ["Erase", "Paint to remove from the selection"],
  move: ["Move", "Drag the object; the square handle at its corner resizes it"],
  points: ["Points", "Click a handle point, then its target"],
};

function button(label, title, onClick, data = {}) {
  const b = document.createElement("button");
  b.textContent = label;
  b.title = title;
  Object.assign(b.dataset, data);
  Object.assign(b.style, {
    font: "inherit", padding: "2px 6px", borderRadius: "4px", cursor: "pointer",
    border: "1px solid var(--border-color, #555)", background: "var(--comfy-input-bg, #333)",
    color: "var(--input-text, #ddd)",
  });
  b.addEventListener("click", (e) => {
    e.stopPropagation();
    onClick();
  });
  return b;
}

function row() {
  const r = document.createElement("div");
  Object.assign(r.style, { display: "flex", gap: "4px", alignItems: "center", flex: "0 0 auto", flexWrap: "wrap" });
  return r;
}

/** Target and tool buttons, the brush size (null when the node has a single tool). */
export function toolRow(ed) {
  const { targets, tools } = ed.spec;
  if (tools.length < 2 && targets.length < 2) return null;
  const r = row();
  ed.targetButtons = targets.length > 1
    ? targets.map((t, i) => button(t.label, `Select the ${t.label.toLowerCase()} (on ${t.picture})`,
      () => ed.setTarget(i), { target: String(i) }))
    : [];
  ed.toolButtons = tools.map((t) => button(TOOLS[t][0], TOOLS[t][1], () => ed.setTool(t), { tool: t }));
  const sep = document.createElement("span");
  sep.style.width = "4px";
  ed.brushInput = document.createElement("input");
  Object.assign(ed.brushInput, { type: "range", min: "1", max: "100", value: String(ed.brush), title: "Brush size" });
  ed.brushInput.style.width = "60px";
  ed.brushInput.addEventListener("input", () => {
    ed.brush = Number(ed.brushInput.value);
    ed.render(true);
  });
  ed.brushInput.addEventListener("pointerdown", (e) => e.stopPropagation());
  r.append(...ed.targetButtons, ...(ed.targetButtons.length ? [sep] : []), ...ed.toolButtons, ed.brushInput);
  return r;
}

/** The status line and the buttons acting on the current tool's values. */
export function actionRow(ed) {
  const r = row();
  r.style.flexWrap = "nowrap";
  ed.status = document.createElement("span");
  Object.assign(ed.status.style, { flex: "1 1 auto", overflow: "hidden", textOverflow: "ellipsis", whiteSpace: "nowrap" });
  ed.actions = {
    select: [button("Clear", "Clear the selection", () => ed.clearSelection(), { action: "clear-selection" })],
    move: [button("Reset", "dx = dy = 0, scale = 1", () => ed.setMove(0, 0, 1), { action: "reset-move" })],
    points: [
      button("Delete pair", "Delete the selected pair (else the last one)", () => ed.deletePair(), { action: "delete-pair" }),
      button("Clear", "Delete every pair", () => ed.clearPairs(), { action: "clear-points" }),
    ],
  };
  r.append(ed.status, ...Object.values(ed.actions).flat());
  return r;
}

/** Highlight the current tool and target, show the actions and controls that apply to it. */
export function updateBars(ed, kind) {
  const on = (b, active) => {
    b.style.background = active ? "var(--comfy-menu-bg, #555)" : "var(--comfy-input-bg, #333)";
    b.style.borderColor = active ? "#ffe14d" : "var(--border-color, #555)";
  };
  ed.toolButtons?.forEach((b) => on(b, b.dataset.tool === ed.tool));
  ed.targetButtons?.forEach((b, i) => on(b, i === ed.target));
  if (ed.brushInput) ed.brushInput.style.display = ["brush", "erase"].includes(ed.tool) ? "" : "none";
  for (const [k, buttons] of Object.entries(ed.actions)) {
    buttons.forEach((b) => { b.style.display = k === kind ? "" : "none"; });
  }
}
