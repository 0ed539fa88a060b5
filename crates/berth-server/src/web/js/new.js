// #/new: a task from a phone, its repository offered from those used recently and the
// caller's GitHub repositories. The request carries an Idempotency-Key made once for what the
// form sends, so a double tap or a retry on a flaky connection makes one task; a changed
// form gets a new key.

import { api, newKey } from "./api.js";
import { el, notice } from "./format.js";
import { setTitle } from "./shell.js";

const RECENT = "berth.recent-repos";

function recentRepos() {
  try { return JSON.parse(localStorage.getItem(RECENT)) || []; } catch { return []; }
}

function remember(repo) {
  const list = [repo, ...recentRepos().filter((r) => r !== repo)].slice(0, 10);
  localStorage.setItem(RECENT, JSON.stringify(list));
}

function field(label, input, hint) {
  const id = input.id;
  return el("div", { class: "field" }, el("label", { for: id, text: label }), input,
    hint ? el("small", { class: "hint", id: id + "-hint", text: hint }) : null);
}

export function newTask(view) {
  setTitle("New task · Berth");
  const repos = el("datalist", { id: "repo-list" }, recentRepos().map((r) => el("option", { value: r })));
  const repo = el("input", { id: "repo", name: "repo_url", type: "text", list: "repo-list", required: true,
    autocomplete: "off", inputmode: "url", placeholder: "https://github.com/owner/repo", "aria-describedby": "repo-hint" });
  const prompt = el("textarea", { id: "prompt", name: "prompt", rows: "6", required: true });
  const ref = el("input", { id: "ref", name: "ref", autocomplete: "off", placeholder: "default branch" });
  const model = el("input", { id: "model", name: "model", autocomplete: "off", placeholder: "server default" });
  const budget = el("input", { id: "max-usd", name: "max_usd", type: "number", min: "0", step: "0.01", inputmode: "decimal" });
  const turns = el("input", { id: "max-turns", name: "max_turns", type: "number", min: "1", step: "1", inputmode: "numeric" });
  const network = el("select", { id: "network", name: "network" },
    el("option", { value: "", text: "The server's default" }),
    el("option", { value: "none", text: "None (safest)" }),
    el("option", { value: "allowlist", text: "Allowed domains only" }),
    el("option", { value: "full", text: "Full" }));
  const pr = el("input", { id: "open-pr", name: "open_pull_request", type: "checkbox" });
  const status = el("div", { id: "new-status", "aria-live": "polite" });
  const send = el("button", { class: "primary", id: "create", text: "Start task" });
  let key = null;
  let sent = null;

  function body() {
    const task = { repo_url: repo.value.trim(), prompt: prompt.value, network: network.value || undefined, open_pull_request: pr.checked };
    if (ref.value.trim()) task.ref = ref.value.trim();
    if (model.value.trim()) task.model = model.value.trim();
    const limits = {};
    if (budget.value) limits.max_usd = Number(budget.value);
    if (turns.value) limits.max_turns = Number(turns.value);
    if (Object.keys(limits).length) task.budget = limits;
    return task;
  }

  const form = el("form", { id: "new-task", onsubmit: async (event) => {
    event.preventDefault();
    const task = body();
    const text = JSON.stringify(task);
    if (text !== sent) { key = newKey(); sent = text; }
    send.disabled = true;
    status.replaceChildren(el("p", { class: "hint", text: "Starting…" }));
    try {
      const created = await api("POST", "/v1/tasks", { body: task, headers: { "Idempotency-Key": key } });
      remember(task.repo_url);
      location.hash = "#/task/" + created.id;
    } catch (err) {
      status.replaceChildren(notice(err.status ? err.message : err.message + " — tap Start task again; it will not start twice."));
      send.disabled = false;
    }
  } },
  field("Repository", repo, "A git URL on one of the server's allowed hosts."), repos,
  field("Request", prompt),
  el("details", { class: "options" }, el("summary", { text: "Options" }),
    field("Branch, tag or commit to start from", ref),
    el("div", { class: "field check" }, pr, el("label", { for: "open-pr", text: "Open a pull request when done" })),
    field("Model", model),
    field("Budget in US dollars", budget),
    field("Most model turns", turns),
    field("Network while the agent works", network)),
  send, status);
  view.replaceChildren(el("a", { href: "#/tasks", class: "back", text: "← Tasks" }), el("h1", { text: "New task" }), form);
  repo.focus();
  const offer = (urls, label) => {
    const known = new Set([...repos.options].map((o) => o.value));
    repos.append(...urls.filter((u) => !known.has(u)).map((u) => el("option", { value: u, label: label(u) })));
  };
  const used = recentRepos().length ? Promise.resolve()
    : api("GET", "/v1/tasks?limit=50").then((page) => offer([...new Set(page.tasks.map((t) => t.repo_url))], () => undefined))
      .catch(() => {});
  // After the recently used ones, the caller's GitHub repositories where their GitHub sign-in
  // left a token (elsewhere the server answers 404, and there is nothing more to offer).
  Promise.all([used, api("GET", "/v1/me/github/repositories").catch(() => null)]).then(([, mine]) => {
    if (!mine) return;
    const names = new Map(mine.repositories.map((r) => [r.clone_url, r.full_name]));
    offer([...names.keys()], (u) => names.get(u));
  });
  return () => {};
}
