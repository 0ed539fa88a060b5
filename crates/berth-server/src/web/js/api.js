// The public HTTP API, as the web app calls it: same-origin requests that carry the session
// cookie, JSON errors turned into exceptions with the server's message, and a "signed out"
// signal when the session is gone.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const listeners = { signedOut: [], reachable: [] };
export function on(name, callback) { listeners[name].push(callback); }
function emit(name, value) { for (const callback of listeners[name]) callback(value); }

export async function api(method, path, { body, headers = {} } = {}) {
  const init = { method, headers: { ...headers }, credentials: "same-origin" };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    emit("reachable", false);
    throw new ApiError(0, "offline", "Berth cannot be reached: you or the server may be offline");
  }
  emit("reachable", true);
  if (response.status === 204) return null;
  const type = response.headers.get("Content-Type") || "";
  if (!response.ok) {
    const answer = type.includes("json") ? await response.json().catch(() => ({})) : {};
    const error = answer.error || {};
    if (response.status === 401) emit("signedOut");
    throw new ApiError(response.status, error.code || "http_" + response.status,
      error.message || response.statusText || "the server answered " + response.status);
  }
  return type.includes("json") ? response.json() : response.text();
}

/// A random key for one form: the same key on every retry of that form's request.
export function newKey() {
  return crypto.randomUUID ? crypto.randomUUID()
    : Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}
