// Berth in a browser: list your tasks and follow one live. The token stays in this tab
// (sessionStorage); streams are opened with single-use tickets, since a browser cannot set
// headers on a WebSocket. A dropped connection resumes after the last event shown.
"use strict";

const $ = (id) => document.getElementById(id);
const RESUME = (code) => (code >= 4000 && code < 4400) || code === 1006 || code === 1011;

function token() { return sessionStorage.getItem("berth.token"); }

async function api(method, path) {
  const response = await fetch(path, { method, headers: { Authorization: "Bearer " + token() } });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    const error = new Error((body.error && body.error.message) || response.statusText);
    error.status = response.status;
    throw error;
  }
  return response.json();
}

function line(text, cls) {
  const span = document.createElement("span");
  if (cls) span.className = cls;
  span.textContent = text;
  $("log").appendChild(span);
}

function render(event) {
  const p = event.payload || {};
  switch (event.kind) {
    case "status": line("● " + p.status + (p.reason ? ": " + p.reason : "") + "\n", "dim"); break;
    case "assistant_text": line(p.text + "\n"); break;
    case "tool_call": line("$ " + ((p.input && (p.input.command || p.input.path)) || p.name) + "\n", "cmd"); break;
    case "command_output": line(p.text, p.stream === "stderr" ? "dim" : ""); break;
    case "tool_result": if (p.is_error) line("✘ " + p.content + "\n", "err"); break;
    case "error": line("error: " + p.message + "\n", "err"); break;
  }
}

async function follow(id) {
  $("follow").hidden = false;
  $("task-id").textContent = id;
  $("log").textContent = "";
  let lastSeq = 0;
  let delay = 500;
  const pause = async () => {
    await new Promise((wake) => setTimeout(wake, delay));
    delay = Math.min(delay * 2, 30000);
  };
  for (;;) {
    let ticket;
    try {
      ticket = await api("POST", "/v1/stream-tickets");
    } catch (error) {
      // The server may be restarting or the network gone: try again, unless we were refused.
      if (error.status === 401 || error.status === 403) { $("status").textContent = "signed out"; return; }
      await pause();
      continue;
    }
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const url = scheme + location.host + "/v1/tasks/" + id + "/stream?after=" + lastSeq;
    const closed = await new Promise((resolve) => {
      const socket = new WebSocket(url, ["berth.ticket." + ticket.ticket]);
      socket.onmessage = (message) => {
        const frame = JSON.parse(message.data);
        if (frame.type === "subscribed" && frame.status) $("status").textContent = frame.status;
        if (frame.type === "event" && frame.event.seq > lastSeq) {
          lastSeq = frame.event.seq;
          render(frame.event);
          if (frame.event.kind === "status") $("status").textContent = frame.event.payload.status;
          delay = 500;
        }
        if (frame.type === "end") $("status").textContent = frame.status;
      };
      socket.onclose = (event) => resolve(event.code);
    });
    if (!RESUME(closed)) return;
    await pause();
  }
}

async function start() {
  // A link may carry the token once (#token=…); it is moved into this tab's storage at once.
  const hash = new URLSearchParams(location.hash.slice(1));
  if (hash.get("token")) {
    sessionStorage.setItem("berth.token", hash.get("token"));
    hash.delete("token");
    history.replaceState(null, "", location.pathname + (hash.toString() ? "#" + hash : ""));
  }
  if (!token()) { $("signin").hidden = false; return; }
  try {
    $("who").textContent = (await api("GET", "/v1/me")).name;
  } catch (err) {
    sessionStorage.removeItem("berth.token");
    $("signin").hidden = false;
    return;
  }
  $("app").hidden = false;
  const page = await api("GET", "/v1/tasks?limit=50");
  for (const task of page.tasks) {
    const row = document.createElement("tr");
    for (const text of [task.status, task.repo_url, task.prompt.slice(0, 80)]) {
      const cell = document.createElement("td");
      cell.textContent = text;
      row.appendChild(cell);
    }
    row.onclick = () => { location.hash = "task=" + task.id; follow(task.id); };
    $("tasks").appendChild(row);
  }
  if (hash.get("task")) follow(hash.get("task"));
}

$("token-form").onsubmit = (event) => {
  event.preventDefault();
  sessionStorage.setItem("berth.token", $("token").value.trim());
  location.reload();
};
start();
