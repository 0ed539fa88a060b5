// Berth's web app: sign in, then hash routes — #/tasks, #/task/ID, #/new. It uses only the
// public API, with a session cookie made from a pasted token or GitHub sign-in (docs/web.md).

import { api, on } from "./js/api.js";
import { el, notice } from "./js/format.js";
import { taskList } from "./js/list.js";
import { taskView } from "./js/task.js";
import { newTask } from "./js/new.js";
import { hideNotifications, offerNotifications, stopNotifications } from "./js/notify.js";
import { setConnection, setTitle } from "./js/shell.js";

const $ = (id) => document.getElementById(id);
const view = $("view");
let leave = () => {};
let me = null;

function route() {
  leave();
  leave = () => {};
  setConnection("");
  if (!me) return;
  const [path, query] = location.hash.slice(1).split("?");
  const params = new URLSearchParams(query || "");
  const task = /^\/task\/([0-9a-f-]{36})$/.exec(path);
  if (task) leave = taskView(view, task[1]);
  else if (path === "/new") leave = newTask(view);
  else leave = taskList(view, params);
  if (document.activeElement === document.body) view.focus({ preventScroll: true });
}

async function githubSignIn() {
  // Where GitHub sign-in is configured its start answers a redirect; elsewhere 404.
  try {
    const answer = await fetch("/v1/auth/github/login", { redirect: "manual", credentials: "same-origin" });
    return answer.type === "opaqueredirect" || (answer.status >= 300 && answer.status < 400);
  } catch {
    return false;
  }
}

function signInView(message) {
  me = null;
  leave();
  leave = () => {};
  $("nav").hidden = true;
  hideNotifications();
  setTitle("Sign in · Berth");
  const token = el("input", { id: "token", name: "token", type: "password", autocomplete: "off", required: true,
    spellcheck: "false", placeholder: "berth_…", "aria-describedby": "token-hint" });
  const status = el("div", { id: "signin-status", "aria-live": "polite" }, message ? notice(message) : null);
  const github = el("p", { id: "github-sign-in", hidden: true },
    el("a", { class: "button primary", href: "/v1/auth/github/login", text: "Sign in with GitHub" }));
  const form = el("form", { id: "token-form", onsubmit: async (event) => {
    event.preventDefault();
    status.replaceChildren(el("p", { class: "hint", text: "Signing in…" }));
    try {
      me = await api("POST", "/v1/auth/session", { body: { token: token.value.trim() } });
      signedIn();
    } catch (err) {
      status.replaceChildren(notice(err.status === 401 ? "That token is unknown or revoked. Check it and paste it again." : err.message));
      token.focus();
    }
  } },
  el("label", { for: "token", text: "API token" }), token,
  el("small", { class: "hint", id: "token-hint" }, "Make one with ", el("code", { text: "berth token create" }),
    ". It is traded for a session cookie on this device; the page never keeps the token."),
  el("button", { class: "primary", text: "Sign in" }), status);
  view.replaceChildren(el("section", { class: "signin" }, el("h1", { text: "Sign in to Berth" }), github, form));
  githubSignIn().then((on) => { github.hidden = !on; });
}

function signedIn() {
  $("who").textContent = " (" + me.name + ")";
  $("nav").hidden = false;
  if (!location.hash.startsWith("#/")) history.replaceState(null, "", "#/tasks");
  route();
  offerNotifications().catch(() => {});
}

async function start() {
  // An older link may carry a token (#token=…&task=…): it is traded for a session and leaves
  // the address bar at once.
  const hash = new URLSearchParams(location.hash.slice(1));
  if (hash.get("token")) {
    const token = hash.get("token");
    const task = hash.get("task");
    history.replaceState(null, "", location.pathname + (task ? "#/task/" + task : ""));
    try {
      me = await api("POST", "/v1/auth/session", { body: { token } });
    } catch (err) {
      return signInView(err.status === 401 ? "The token in that link is unknown or revoked." : err.message);
    }
    return signedIn();
  }
  try {
    me = await api("GET", "/v1/me");
  } catch (err) {
    if (err.status === 0) return offline();
    return signInView(err.status === 401 || err.status === 403 ? "" : err.message);
  }
  signedIn();
}

/// The shell opened from the service worker's cache, but the server cannot be reached.
function offline() {
  setConnection("offline");
  setTitle("Offline · Berth");
  view.replaceChildren(el("h1", { text: "Offline" }),
    notice("Berth cannot be reached from here just now. This page tries again when the connection is back.", "info"),
    el("button", { type: "button", class: "primary", onclick: start, text: "Try again" }));
  const again = () => { window.removeEventListener("online", again); start(); };
  window.addEventListener("online", again);
  setTimeout(() => { if (!me) start(); }, 10000);
}

$("sign-out").addEventListener("click", async () => {
  // This device stops being told about the user's tasks before the session ends.
  try { await stopNotifications(); } catch { /* signing out goes on */ }
  try { await api("DELETE", "/v1/auth/session"); } catch { /* the cookie is cleared either way */ }
  history.replaceState(null, "", location.pathname);
  signInView("");
});
on("signedOut", () => { if (me) signInView("Your session ended. Sign in again."); });
on("reachable", (up) => { if (!up) setConnection("reconnecting"); });
window.addEventListener("hashchange", route);
if ("serviceWorker" in navigator && window.isSecureContext) {
  navigator.serviceWorker.register("/sw.js").catch(() => {});
}
start();
