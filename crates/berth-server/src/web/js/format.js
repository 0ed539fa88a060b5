// Small pieces of text and DOM the views share.

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) {
      node.append(child instanceof Node ? child : String(child));
    }
  }
  return node;
}

export const ENDED = ["succeeded", "failed", "cancelled", "timed_out"];

export function statusLabel(status) {
  return status.replace("_", " ");
}

export function badge(status) {
  return el("span", { class: "badge " + status, text: statusLabel(status) });
}

/// `owner/repo` of a repository URL.
export function shortRepo(url) {
  const path = url.replace(/\.git$/, "").replace(/^[a-z]+:\/\/[^/]+/, "").replace(/^[^@]+@[^:]+:/, "");
  return path.split("/").filter(Boolean).slice(-2).join("/") || url;
}

export function firstLine(text) {
  return (text.split("\n").find((line) => line.trim()) || "").trim();
}

const relative = new Intl.RelativeTimeFormat("en", { numeric: "auto" });
export function ago(iso) {
  const seconds = (Date.parse(iso) - Date.now()) / 1000;
  const steps = [[60, "second"], [60, "minute"], [24, "hour"], [7, "day"], [4.35, "week"], [12, "month"], [Infinity, "year"]];
  let value = seconds;
  for (const [size, unit] of steps) {
    if (Math.abs(value) < size) return relative.format(Math.round(value), unit);
    value /= size;
  }
  return iso;
}

export function cost(usd) {
  return usd ? "$" + (usd < 0.01 ? usd.toFixed(4) : usd.toFixed(2)) : "$0";
}

export function duration(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return s + " s";
  const m = Math.floor(s / 60);
  return m < 60 ? m + " min " + (s % 60) + " s" : Math.floor(m / 60) + " h " + (m % 60) + " min";
}

export function tokens(usage) {
  const n = usage.input_tokens + usage.output_tokens + usage.cache_write_tokens + usage.cache_read_tokens;
  return n >= 1000 ? (n / 1000).toFixed(1) + "k" : String(n);
}

/// A status text read out by screen readers and shown as a line.
export function notice(text, kind = "error") {
  return el("p", { class: "notice " + kind, role: kind === "error" ? "alert" : "status", text });
}
