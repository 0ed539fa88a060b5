// What every view shares: the connection line in the header (honest about being offline or
// reconnecting), and the tab title, which shows what is running while the app is open.

const $ = (id) => document.getElementById(id);
const WORDS = {
  connecting: "connecting…",
  live: "",
  reconnecting: "reconnecting…",
  ended: "",
  stopped: "not following",
  offline: "offline",
};

let streamState = "";
let title = { base: "Berth", running: 0, queued: 0 };

function show() {
  const text = navigator.onLine === false ? "offline" : WORDS[streamState] || "";
  $("connection").textContent = text;
  $("connection").dataset.state = navigator.onLine === false ? "offline" : streamState;
}

export function setConnection(state) {
  streamState = state;
  show();
}

window.addEventListener("online", show);
window.addEventListener("offline", show);

function showTitle() {
  const parts = [];
  if (title.running) parts.push(title.running + " running");
  if (title.queued) parts.push(title.queued + " queued");
  document.title = (parts.length ? "(" + parts.join(", ") + ") " : "") + title.base;
}

export function setTitleCounts(running, queued) {
  title = { ...title, running, queued };
  showTitle();
}

export function setTitle(base) {
  title = { base, running: 0, queued: 0 };
  showTitle();
}
