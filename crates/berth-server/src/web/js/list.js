// #/tasks: the caller's tasks, newest first, kept current by /v1/stream; a status filter;
// older pages load as the reader nears the end of the list.

import { api } from "./api.js";
import { follow } from "./live.js";
import { ago, badge, cost, el, firstLine, notice, shortRepo, statusLabel } from "./format.js";
import { setConnection, setTitleCounts } from "./shell.js";

const STATUSES = ["queued", "running", "cancelling", "succeeded", "failed", "cancelled", "timed_out"];

function row(task) {
  const meta = el("span", { class: "meta" },
    el("span", { class: "repo", text: shortRepo(task.repo_url) }),
    el("time", { datetime: task.created_at, text: ago(task.created_at) }),
    el("span", { class: "cost", text: cost(task.usage.cost_usd) }));
  return el("li", { class: "task", "data-id": task.id },
    el("a", { href: "#/task/" + task.id },
      el("span", { class: "line" }, badge(task.status),
        el("span", { class: "prompt", text: firstLine(task.prompt) })),
      meta));
}

export function taskList(view, params) {
  const filter = STATUSES.includes(params.get("status")) ? params.get("status") : "";
  const tasks = new Map();
  const list = el("ul", { class: "tasks", id: "tasks", "aria-label": "Tasks" });
  const more = el("p", { class: "hint more", text: "" });
  const select = el("select", { id: "status-filter", onchange: () => {
    location.hash = "#/tasks" + (select.value ? "?status=" + select.value : "");
  } }, el("option", { value: "", text: "All" }),
  STATUSES.map((s) => el("option", { value: s, text: statusLabel(s), selected: s === filter })));
  view.replaceChildren(
    el("div", { class: "heading" }, el("h1", { text: "Tasks" }),
      el("label", { class: "filter" }, "Status ", select)),
    list, more);

  let cursor = null;
  let oldest = null;
  let loading = false;
  let done = false;

  function counts() {
    const all = [...tasks.values()];
    setTitleCounts(all.filter((t) => t.status === "running" || t.status === "cancelling").length,
      all.filter((t) => t.status === "queued").length);
  }

  function place(task) {
    const shown = !filter || task.status === filter;
    const old = list.querySelector(`li[data-id="${task.id}"]`);
    if (!shown || (oldest && Date.parse(task.created_at) < oldest && !done)) {
      if (old) old.remove();
      return;
    }
    const fresh = row(task);
    if (old) { old.replaceWith(fresh); return; }
    const after = [...list.children].find((li) => Date.parse(tasks.get(li.dataset.id).created_at) < Date.parse(task.created_at));
    list.insertBefore(fresh, after || null);
  }

  async function page() {
    if (loading || done) return;
    loading = true;
    more.textContent = "Loading…";
    try {
      const query = new URLSearchParams({ limit: "50" });
      if (filter) query.set("status", filter);
      if (cursor) query.set("cursor", cursor);
      const answer = await api("GET", "/v1/tasks?" + query);
      for (const task of answer.tasks) {
        tasks.set(task.id, task);
        oldest = Date.parse(task.created_at);
        list.append(row(task));
      }
      cursor = answer.next_cursor;
      done = !cursor;
      more.textContent = done ? (tasks.size ? "" : "No tasks yet. Start one with New task.") : "";
      counts();
      return answer.tasks;
    } catch (err) {
      more.replaceChildren(notice(err.message));
    } finally {
      loading = false;
      // A sighting of the list's end while this page loaded was dropped, and the observer only
      // speaks on a change: observing afresh reports where the end is now.
      if (observing && !done) { observer.unobserve(more); observer.observe(more); }
    }
  }

  const observer = new IntersectionObserver((entries) => {
    if (entries.some((entry) => entry.isIntersecting)) page();
  }, { rootMargin: "600px" });
  let observing = false;
  let stream = null;
  page().then((first) => {
    observing = true;
    observer.observe(more);
    // Changes from the newest moment this page knows of: nothing after it is missed.
    const newest = (first || []).reduce((a, t) => (!a || t.updated_at > a.updated_at ? t : a), null);
    const after = newest ? Date.parse(newest.updated_at) + ":" + newest.id : "0";
    stream = follow("/v1/stream", after, (frame) => {
      if (frame.type !== "task") return undefined;
      tasks.set(frame.task.id, frame.task);
      place(frame.task);
      counts();
      return frame.cursor;
    }, setConnection);
  });
  return () => { observer.disconnect(); if (stream) stream.stop(); };
}
