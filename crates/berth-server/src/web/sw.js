// The service worker: keeps the app shell so the app opens at once, also offline (where it
// says so), never caches the API, and shows a notification when a task ends (Web Push).

const CACHE = "berth-shell-v3";
const SHELL = ["/", "/app.js", "/app.css", "/manifest.webmanifest", "/icon.svg", "/icon-192.png",
  "/js/api.js", "/js/diff.js", "/js/format.js", "/js/list.js", "/js/live.js", "/js/new.js",
  "/js/notify.js", "/js/pull.js", "/js/shell.js", "/js/steps.js", "/js/task.js"];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(caches.keys()
    .then((keys) => Promise.all(keys.filter((key) => key !== CACHE).map((key) => caches.delete(key))))
    .then(() => self.clients.claim()));
});

// The shell from the cache at once, refreshed behind it for the next visit; the API and the
// streams always from the network.
self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || url.origin !== location.origin) return;
  const path = event.request.mode === "navigate" ? "/" : url.pathname;
  if (!SHELL.includes(path)) return;
  event.respondWith(caches.open(CACHE).then(async (cache) => {
    const cached = await cache.match(path);
    const fresh = fetch(path).then((response) => {
      if (response.ok) cache.put(path, response.clone());
      return response;
    });
    if (cached) {
      event.waitUntil(fresh.catch(() => {}));
      return cached;
    }
    return fresh;
  }));
});

self.addEventListener("push", (event) => {
  let message = {};
  try { message = event.data ? event.data.json() : {}; } catch { message = { title: event.data.text() }; }
  const title = message.title || "Berth";
  const options = {
    body: message.body || "",
    tag: message.task_id || "berth",
    data: { url: message.url || (message.task_id ? "/#/task/" + message.task_id : "/") },
    icon: "/icon-192.png",
  };
  event.waitUntil(self.registration.showNotification(title, options));
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const url = event.notification.data && event.notification.data.url || "/";
  event.waitUntil(self.clients.matchAll({ type: "window" }).then((windows) => {
    for (const client of windows) {
      if ("focus" in client) { client.navigate(url); return client.focus(); }
    }
    return self.clients.openWindow(url);
  }));
});
