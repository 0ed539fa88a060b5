// The event log as a person reads it: the model's text, each command with its output folded
// under it, each file edit as a small diff, status changes and errors as short lines.

import { el, statusLabel } from "./format.js";

const EDIT_TOOLS = ["str_replace_based_edit_tool", "str_replace_editor", "edit"];
const MAX_DIFF_LINES = 60;

function diffLines(removed, added) {
  const lines = [];
  for (const line of (removed || "").split("\n")) if (removed) lines.push(["del", "- " + line]);
  for (const line of (added || "").split("\n")) if (added) lines.push(["add", "+ " + line]);
  const shown = lines.slice(0, MAX_DIFF_LINES).map(([cls, text]) => el("span", { class: cls, text: text + "\n" }));
  if (lines.length > MAX_DIFF_LINES) shown.push(el("span", { class: "dim", text: `… ${lines.length - MAX_DIFF_LINES} more lines\n` }));
  return el("pre", { class: "diff small" }, shown);
}

function editStep(input) {
  const path = input.path || "";
  switch (input.command) {
    case "view":
      return el("div", { class: "step read" }, el("span", { class: "dim", text: "Read " }), el("code", { text: path }));
    case "create":
      return el("details", { class: "step edit" }, el("summary", {}, "Created ", el("code", { text: path })),
        diffLines("", input.file_text));
    case "insert":
      return el("details", { class: "step edit", open: true }, el("summary", {}, "Edited ", el("code", { text: path })),
        diffLines("", input.insert_text || input.new_str));
    default:
      return el("details", { class: "step edit", open: true }, el("summary", {}, "Edited ", el("code", { text: path })),
        diffLines(input.old_str, input.new_str));
  }
}

/// Renders events into `list` (an `<ol>`), keeping what later events need to find.
export class Steps {
  constructor(list) {
    this.list = list;
    this.calls = new Map();
    this.lastCommand = null;
    this.live = null;
    this.liveAttempt = 0;
    this.lastText = "";
  }

  add(node) {
    this.list.insertBefore(el("li", {}, node), this.live ? this.live.parentNode : null);
  }

  /// Text the model is writing now (a `text_delta` frame): shown growing, after everything.
  delta(frame) {
    if (frame.attempt < this.liveAttempt) return;
    this.liveAttempt = frame.attempt;
    if (!this.live) {
      this.live = el("div", { class: "step text live", "aria-busy": "true" });
      this.list.append(el("li", {}, this.live));
    }
    this.live.textContent += frame.text;
  }

  dropLive() {
    if (this.live) this.live.parentNode.remove();
    this.live = null;
  }

  event(event) {
    const p = event.payload || {};
    switch (event.kind) {
      case "status":
        this.add(el("div", { class: "step status " + p.status },
          "● " + statusLabel(p.status) + (p.reason ? ": " + p.reason : "")));
        break;
      case "assistant_text":
        if (event.attempt >= this.liveAttempt) this.dropLive();
        this.lastText = p.text || "";
        this.add(el("div", { class: "step text", text: p.text }));
        break;
      case "tool_call": this.call(p); break;
      case "command_output": {
        const call = this.calls.get(p.tool_use_id) || this.lastCommand;
        if (!call) break;
        call.streamed = true;
        call.output.append(el("span", { class: p.stream === "stderr" ? "stderr" : "", text: p.text }));
        call.node.classList.add("has-output");
        break;
      }
      case "tool_result": this.result(p); break;
      case "error":
        this.add(el("div", { class: "step error", role: "note", text: "Error: " + (p.message || "") }));
        break;
      case "egress":
        // Allowed requests are many and expected; a refused one explains a failing command.
        if (!p.allowed) {
          this.add(el("div", { class: "step status", role: "note",
            text: "✘ egress refused: " + p.method + " " + p.host + ":" + p.port + " (" + p.reason + ")" }));
        }
        break;
      default:
        break;
    }
  }

  call(p) {
    const input = p.input || {};
    if (EDIT_TOOLS.includes(p.name)) {
      const node = editStep(input);
      this.calls.set(p.id, { node, output: null, edit: true });
      this.add(node);
      return;
    }
    const command = input.command || JSON.stringify(input);
    const output = el("pre", { class: "output" });
    const node = el("details", { class: "step command" },
      el("summary", {}, el("code", { class: "cmd", text: "$ " + command })), output);
    const entry = { node, output, streamed: false };
    this.calls.set(p.id, entry);
    this.lastCommand = entry;
    this.add(node);
  }

  result(p) {
    const call = this.calls.get(p.tool_use_id);
    if (!call) return;
    if (p.is_error) call.node.classList.add("failed");
    if (call.edit) {
      if (p.is_error) call.node.append(el("pre", { class: "output stderr", text: p.content }));
      return;
    }
    if (!call.streamed && p.content) {
      call.output.append(el("span", { class: p.is_error ? "stderr" : "", text: p.content }));
      call.node.classList.add("has-output");
    }
    if (p.duration_ms !== undefined) {
      call.node.querySelector("summary").append(el("span", { class: "dim took", text: " " + (p.duration_ms / 1000).toFixed(1) + " s" }));
    }
  }
}
