// #/task/ID: one task, followed live from its stream — the steps, the facts (status, duration,
// turns, tokens, cost), cancel, reply, the branch and pull request, and the whole diff.

import { api, newKey } from "./api.js";
import { follow } from "./live.js";
import { Steps } from "./steps.js";
import { renderDiff } from "./diff.js";
import { pullRequestPanel } from "./pull.js";
import { ENDED, badge, cost, duration, el, firstLine, notice, shortRepo, statusLabel } from "./format.js";
import { setConnection, setTitle } from "./shell.js";

function nearBottom() {
  return window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 120;
}

export function taskView(view, id) {
  let task = null;
  let lastSeq = 0;
  const usage = { turns: 0, tokens: 0, cost: 0 };
  const facts = el("dl", { class: "facts", id: "facts" });
  const actions = el("div", { class: "actions" });
  const steps = el("ol", { class: "steps", id: "steps", "aria-label": "Steps" });
  const summary = el("section", { class: "summary", id: "summary", hidden: true });
  const reply = el("section", { class: "reply", id: "reply", hidden: true });
  const pullSection = el("section", { class: "pull", id: "pull", hidden: true });
  const pull = pullRequestPanel(pullSection, id);
  let pullShown = null;
  const diff = el("section", { class: "diff-section", id: "diff", hidden: true });
  const title = el("h1", { class: "task-title", text: "Task" });
  const messages = el("div", { id: "task-messages" });
  view.replaceChildren(el("a", { href: "#/tasks", class: "back", text: "← Tasks" }),
    title, messages, facts, actions, pullSection, steps, summary, reply, diff);
  const log = new Steps(steps);
  let tick = null;
  let refreshTimer = null;

  function showFacts() {
    if (!task) return;
    const end = task.finished_at ? Date.parse(task.finished_at) : Date.now();
    const took = task.started_at ? duration(end - Date.parse(task.started_at)) : "—";
    const spent = usage.turns ? usage.cost : task.usage.cost_usd;
    const used = usage.turns ? usage.tokens
      : task.usage.input_tokens + task.usage.output_tokens + task.usage.cache_read_tokens + task.usage.cache_write_tokens;
    const rows = [
      ["Status", badge(task.status)],
      ["Repository", task.repo_url.startsWith("https://")
        ? el("a", { href: task.repo_url, rel: "noopener", text: shortRepo(task.repo_url) }) : shortRepo(task.repo_url)],
      ["Duration", took], ["Turns", String(usage.turns)], ["Tokens", String(used)], ["Cost", cost(spent)],
    ];
    if (task.result.branch) rows.push(["Branch", branchLink(task)]);
    if (task.result.pull_request_url) {
      rows.push(["Pull request", el("a", { href: task.result.pull_request_url, rel: "noopener", id: "pull-request", text: task.result.pull_request_url.replace(/^[a-z]+:\/\/[^/]+\//, "") })]);
    }
    if (task.error) rows.push(["Why", task.error]);
    facts.replaceChildren(...rows.flatMap(([name, value]) => [el("dt", { text: name }), el("dd", {}, value)]));
    setTitle(statusLabel(task.status) + " · " + firstLine(task.prompt).slice(0, 40) + " · Berth");
    showActions();
  }

  function branchLink(t) {
    const web = t.repo_url.startsWith("https://") ? t.repo_url.replace(/\.git$/, "") + "/tree/" + t.result.branch : null;
    return web ? el("a", { href: web, rel: "noopener", id: "branch", text: t.result.branch }) : el("code", { id: "branch", text: t.result.branch });
  }

  function showActions() {
    const ended = ENDED.includes(task.status);
    actions.replaceChildren();
    if (!ended && task.status !== "cancelling") {
      actions.append(el("button", { type: "button", class: "danger", id: "cancel", onclick: cancel, text: "Cancel task" }));
    }
    reply.hidden = !ended;
    if (ended && log.lastText) {
      summary.hidden = false;
      summary.replaceChildren(el("h2", { text: "Summary" }), el("div", { class: "step text", text: log.lastText }));
    } else {
      summary.hidden = true;
    }
    if (ended && task.result.has_diff && diff.hidden) loadDiff();
    // Its checks and merging, once the task has ended with a pull request (again after a reply's
    // run opens one).
    if (ended && task.result.pull_request_url && pullShown !== task.result.pull_request_url) {
      pullShown = task.result.pull_request_url;
      pull.load();
    }
    clearInterval(tick);
    if (!ended && task.started_at) tick = setInterval(showFacts, 1000);
  }

  async function refresh() {
    clearTimeout(refreshTimer);
    try {
      task = await api("GET", "/v1/tasks/" + id);
      showFacts();
    } catch (err) {
      messages.replaceChildren(notice(err.message));
    }
  }
  const refreshSoon = () => { clearTimeout(refreshTimer); refreshTimer = setTimeout(refresh, 300); };

  async function cancel(event) {
    event.target.disabled = true;
    try {
      task = await api("POST", "/v1/tasks/" + id + "/cancel");
      showFacts();
    } catch (err) {
      messages.replaceChildren(notice(err.message));
      event.target.disabled = false;
    }
  }

  async function loadDiff() {
    diff.hidden = false;
    diff.replaceChildren(el("h2", { text: "Changes" }), el("p", { class: "hint", text: "Loading the diff…" }));
    try {
      const text = await api("GET", "/v1/tasks/" + id + "/diff");
      diff.replaceChildren(el("h2", { text: "Changes" }), renderDiff(text));
    } catch (err) {
      diff.replaceChildren(el("h2", { text: "Changes" }), notice(err.message));
    }
  }

  function replyForm() {
    let key = newKey();
    const text = el("textarea", { id: "reply-text", name: "prompt", rows: "3", required: true });
    const status = el("div", { "aria-live": "polite" });
    const form = el("form", { onsubmit: async (event) => {
      event.preventDefault();
      const button = form.querySelector("button");
      button.disabled = true;
      try {
        await api("POST", "/v1/tasks/" + id + "/messages", { body: { prompt: text.value }, headers: { "Idempotency-Key": key } });
        key = newKey();
        text.value = "";
        status.replaceChildren();
        reply.hidden = true;
        diff.hidden = true;
        await refresh();
        stream.restart(lastSeq);
      } catch (err) {
        status.replaceChildren(notice(err.message));
      } finally {
        button.disabled = false;
      }
    } }, el("label", { for: "reply-text", text: "Reply: ask for more on this task" }), text,
    el("button", { class: "primary", text: "Send reply" }), status);
    reply.replaceChildren(el("h2", { text: "Reply" }), form);
  }
  replyForm();

  const stream = follow("/v1/tasks/" + id + "/stream", 0, (frame) => {
    if (frame.type === "text_delta") {
      const follow = nearBottom();
      log.delta(frame);
      if (follow) window.scrollTo(0, document.documentElement.scrollHeight);
      return undefined;
    }
    if (frame.type === "end" || (frame.type === "subscribed" && frame.status && task && frame.status !== task.status)) refreshSoon();
    if (frame.type !== "event" || frame.event.seq <= lastSeq) return undefined;
    const event = frame.event;
    const follow = nearBottom();
    lastSeq = event.seq;
    log.event(event);
    if (event.kind === "usage") {
      usage.turns += 1;
      usage.tokens += event.payload.total_tokens || 0;
      usage.cost += event.payload.cost_usd || 0;
    }
    if (["status", "usage", "result"].includes(event.kind)) refreshSoon();
    if (follow) window.scrollTo(0, document.documentElement.scrollHeight);
    return lastSeq;
  }, (state) => {
    setConnection(state);
    steps.setAttribute("aria-busy", state === "live" ? "false" : "true");
  });

  refresh().then(() => {
    if (task) title.textContent = firstLine(task.prompt);
  });
  return () => { stream.stop(); clearInterval(tick); clearTimeout(refreshTimer); };
}
