// A stream that survives phones: a single-use ticket per connection (browsers cannot set
// headers on a WebSocket), resume after the last position seen, back off while the server
// is away, stop on the codes that say "do not retry" (streaming.md).

import { api } from "./api.js";

const RESUME = (code) => (code >= 4000 && code < 4400) || code === 1006 || code === 1011 || code === 1001;

/// Follows `path` (a stream URL without its query) from `after`. `onFrame(frame)` returns the
/// position to resume from next time (a seq or a cursor), or undefined to keep the last one.
/// `onState` hears "connecting", "live", "reconnecting", "ended" or "stopped".
export function follow(path, after, onFrame, onState) {
  let stopped = false;
  let socket = null;
  let delay = 500;
  let timer = null;
  const wait = () => new Promise((wake) => { timer = setTimeout(wake, delay); delay = Math.min(delay * 2, 15000); });

  async function run() {
    onState("connecting");
    while (!stopped) {
      let ticket;
      try {
        ticket = (await api("POST", "/v1/stream-tickets")).ticket;
      } catch (err) {
        if (err.status === 401 || err.status === 403) { onState("stopped"); return; }
        onState("reconnecting");
        await wait();
        continue;
      }
      if (stopped) return;
      const scheme = location.protocol === "https:" ? "wss://" : "ws://";
      const url = scheme + location.host + path + "?after=" + encodeURIComponent(after);
      const code = await new Promise((resolve) => {
        socket = new WebSocket(url, ["berth.ticket." + ticket]);
        socket.onmessage = (message) => {
          const frame = JSON.parse(message.data);
          if (frame.type === "subscribed") { delay = 500; onState("live"); }
          const next = onFrame(frame);
          if (next !== undefined) after = next;
        };
        socket.onclose = (event) => resolve(event.code);
      });
      socket = null;
      if (stopped) return;
      if (code === 1000) { onState("ended"); return; }
      if (!RESUME(code)) { onState("stopped"); return; }
      onState("reconnecting");
      await wait();
    }
  }
  run();
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
      if (socket) socket.close(1000);
    },
    /// Opens again after `from` (a follow-up revived an ended task).
    restart(from) {
      after = from;
      if (stopped || socket) return;
      run();
    },
  };
}
