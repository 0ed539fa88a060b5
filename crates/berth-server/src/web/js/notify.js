// "Notify me": Web Push on this device. Where the server has push on (GET /v1/push/key) and the
// browser can take it, the button subscribes this browser with the server's key and hands the
// subscription to the server, which then pushes each ending of the user's tasks; pressing it
// again, or signing out, removes it from both. Elsewhere the button stays hidden.

import { api } from "./api.js";

const $ = (id) => document.getElementById(id);
let serverKey = null;

function supported() {
  return window.isSecureContext && "serviceWorker" in navigator && "PushManager" in window
    && "Notification" in window;
}

function bytes(base64url) {
  const base64 = base64url.replace(/-/g, "+").replace(/_/g, "/");
  const raw = atob(base64 + "=".repeat((4 - base64.length % 4) % 4));
  return Uint8Array.from(raw, (c) => c.charCodeAt(0));
}

/// Whether the subscription was made with the server's current key (an operator may change it).
function madeWithServerKey(subscription) {
  const key = subscription.options && subscription.options.applicationServerKey;
  if (!key || !serverKey) return false;
  const ours = bytes(serverKey);
  const theirs = new Uint8Array(key);
  return ours.length === theirs.length && ours.every((b, i) => b === theirs[i]);
}

async function current() {
  const registration = await navigator.serviceWorker.ready;
  return { registration, subscription: await registration.pushManager.getSubscription() };
}

function show(on, message = "") {
  const button = $("notify");
  button.textContent = on ? "Notifications on" : "Notify me";
  button.setAttribute("aria-pressed", on ? "true" : "false");
  $("notify-status").textContent = message;
}

async function turnOn() {
  if (await Notification.requestPermission() !== "granted") {
    return show(false, "Notifications are blocked for this site");
  }
  let { registration, subscription } = await current();
  if (subscription && !madeWithServerKey(subscription)) {
    await subscription.unsubscribe();
    subscription = null;
  }
  if (!subscription) {
    subscription = await registration.pushManager.subscribe({
      userVisibleOnly: true, applicationServerKey: bytes(serverKey) });
  }
  await api("POST", "/v1/push/subscriptions", { body: subscription.toJSON() });
  show(true);
}

/// Removes this device's subscription from the server and the browser (signing out does too).
export async function stopNotifications() {
  if (!supported() || !serverKey) return;
  const { subscription } = await current();
  if (subscription) {
    const body = { endpoint: subscription.endpoint };
    await api("DELETE", "/v1/push/subscriptions", { body }).catch(() => {});
    await subscription.unsubscribe();
  }
  show(false);
}

/// Once signed in: shows the button where push works, saying whether this device is on.
export async function offerNotifications() {
  const button = $("notify");
  button.hidden = true;
  $("notify-status").textContent = "";
  if (!supported()) return;
  try {
    serverKey = (await api("GET", "/v1/push/key")).public_key;
  } catch {
    serverKey = null;
    return;
  }
  show(false);
  button.hidden = false;
  const { subscription } = await current();
  show(Boolean(subscription && madeWithServerKey(subscription)
    && Notification.permission === "granted"));
}

export function hideNotifications() {
  $("notify").hidden = true;
  $("notify-status").textContent = "";
}

$("notify").addEventListener("click", async () => {
  const button = $("notify");
  button.disabled = true;
  try {
    if (button.getAttribute("aria-pressed") === "true") await stopNotifications();
    else await turnOn();
  } catch (err) {
    show(false, "Notifications could not be turned on here: " + err.message);
  } finally {
    button.disabled = false;
  }
});
