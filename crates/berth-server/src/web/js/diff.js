// The task's whole change, file by file, each folded under its name and counts, with lines
// that wrap so that a narrow screen can read them.

import { el } from "./format.js";

/// Splits a git diff into files: { path, added, removed, lines }.
export function parseDiff(text) {
  const files = [];
  let file = null;
  for (const line of text.replace(/\n$/, "").split("\n")) {
    if (line.startsWith("diff --git ")) {
      const match = / b\/(.*)$/.exec(line);
      file = { path: match ? match[1] : line.slice(11), added: 0, removed: 0, lines: [] };
      files.push(file);
      continue;
    }
    if (!file) continue;
    if (line.startsWith("+++ ") || line.startsWith("--- ") || line.startsWith("index ")) continue;
    if (line.startsWith("+")) file.added++;
    else if (line.startsWith("-")) file.removed++;
    file.lines.push(line);
  }
  return files;
}

function lineClass(line) {
  if (line.startsWith("@@")) return "hunk";
  if (line.startsWith("+")) return "add";
  if (line.startsWith("-")) return "del";
  if (line.startsWith("new file") || line.startsWith("deleted file") || line.startsWith("Binary")) return "dim";
  return "";
}

export function renderDiff(text) {
  const files = parseDiff(text);
  if (!files.length) return el("p", { class: "hint", text: "The change is empty." });
  return el("div", { class: "files" }, files.map((file) =>
    el("details", { class: "file" },
      el("summary", {}, el("code", { class: "path", text: file.path }),
        el("span", { class: "counts" },
          el("span", { class: "add", text: "+" + file.added }), " ",
          el("span", { class: "del", text: "−" + file.removed }))),
      el("pre", { class: "diff" }, file.lines.map((line) =>
        el("span", { class: lineClass(line), text: line + "\n" }))))));
}
