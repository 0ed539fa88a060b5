// The task's pull request as GitHub has it: its state, each check of its head on a line, and
// a Merge button that asks first in a dialog naming the pull request and its branch. Berth
// reads and merges with the owner's own GitHub token, so without one this only says why.

import { api } from "./api.js";
import { el, notice } from "./format.js";

const CHECK_WORD = { success: "passed", failure: "failed", pending: "running" };
const STATE_WORD = { open: "Open", merged: "Merged", closed: "Closed without merging" };
const METHODS = [["merge", "Merge commit"], ["squash", "Squash into one commit"], ["rebase", "Rebase onto the base"]];

export function pullRequestPanel(section, taskId) {
  const path = "/v1/tasks/" + taskId + "/pull_request";
  let pull = null;
  let opener = null;
  const status = el("div", { id: "merge-status", "aria-live": "polite" });
  const dialog = el("dialog", { id: "merge-dialog", "aria-labelledby": "merge-title", "aria-describedby": "merge-what" });
  dialog.addEventListener("close", () => { if (opener && opener.isConnected) opener.focus(); });

  async function load() {
    section.hidden = false;
    try {
      pull = await api("GET", path);
      show();
    } catch (err) {
      const kind = ["no_github_token", "no_pull_request"].includes(err.code) ? "info" : "error";
      section.replaceChildren(el("h2", { text: "Pull request" }), notice(err.message, kind), reloadButton());
    }
  }

  function reloadButton() {
    return el("button", { type: "button", class: "link", id: "checks-reload", onclick: load, text: "Check again" });
  }

  function checkLine(check) {
    const name = check.url ? el("a", { href: check.url, rel: "noopener", text: check.name }) : check.name;
    return el("li", { class: "check " + check.state },
      el("span", { class: "check-state", text: CHECK_WORD[check.state] }), " ", name);
  }

  function show() {
    const checks = pull.checks.length
      ? el("ul", { class: "checks", id: "checks", "aria-label": "Checks" }, pull.checks.map(checkLine))
      : el("p", { class: "hint", id: "checks", text: "No checks reported on this commit." });
    const parts = [el("h2", { id: "pull-title", tabindex: "-1", text: "Pull request" }),
      el("p", { id: "pr-state", class: "pr-state " + pull.state },
        el("strong", { text: STATE_WORD[pull.state] }), " · " + pull.repository + "#" + pull.number + " · ",
        el("code", { text: pull.head_branch }), " → ", el("code", { text: pull.base_branch })),
      checks];
    const row = el("div", { class: "actions" }, reloadButton());
    if (pull.state === "open") {
      row.prepend(el("button", { type: "button", class: "primary", id: "merge", onclick: confirm, text: "Merge…" }));
      if (pull.mergeable === false) parts.push(notice("GitHub says this pull request cannot be merged as it is (conflicts or a branch rule).", "info"));
    }
    section.replaceChildren(...parts, row, status);
  }

  function confirm(event) {
    opener = event.currentTarget;
    const method = el("select", { id: "merge-method", name: "method" },
      METHODS.map(([value, label]) => el("option", { value, text: label })));
    const unsure = pull.checks_state !== "success";
    const problem = el("div", { id: "merge-problem" });
    const go = el("button", { type: "button", class: "primary", id: "merge-confirm",
      text: unsure ? "Merge anyway" : "Merge", onclick: () => merge(method.value, unsure, go, problem) });
    const warning = unsure
      ? [notice(pull.checks_state === "failure" ? "Some checks failed." : "Some checks have not finished.", "error")] : [];
    dialog.replaceChildren(
      el("h2", { id: "merge-title", text: "Merge " + pull.repository + "#" + pull.number + "?" }),
      el("p", { id: "merge-what" }, "“" + pull.title + "”: merges branch ", el("code", { text: pull.head_branch }),
        " into ", el("code", { text: pull.base_branch }), " on GitHub, at the commit shown here (" + pull.head_sha.slice(0, 7) + ")."),
      ...warning,
      el("div", { class: "field" }, el("label", { for: "merge-method", text: "How" }), method),
      problem,
      el("div", { class: "actions" },
        el("button", { type: "button", id: "merge-cancel", onclick: () => dialog.close(), text: "Cancel" }), go));
    if (!dialog.isConnected) document.body.append(dialog);
    dialog.showModal();
    dialog.querySelector("#merge-cancel").focus();
  }

  async function merge(method, ignoreChecks, button, problem) {
    button.disabled = true;
    try {
      pull = await api("POST", path + "/merge", { body: { sha: pull.head_sha, method, ignore_checks: ignoreChecks } });
      dialog.close();
      show();
      status.replaceChildren(notice("Merged on GitHub.", "info"));
      section.querySelector("#pull-title").focus();
    } catch (err) {
      problem.replaceChildren(notice(err.message));
      button.disabled = false;
      // A head that moved or a changed state: show what GitHub has now behind the dialog.
      if (["head_moved", "not_mergeable", "checks_not_passed"].includes(err.code)) {
        const shownAt = pull.head_sha;
        pull = await api("GET", path).catch(() => pull);
        show();
        if (pull.head_sha !== shownAt) button.disabled = true;
      }
    }
  }

  return { load };
}
