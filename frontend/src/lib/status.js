// Live status dots: one socket for every site named on the page.
import { LiveSocket } from "./socket.js";

export function describe(status) {
  if (!status) return ["off", "status unknown"];
  if (status.error === "unknown site") return ["off", "not deployed yet"];
  if (status.availability === "disabled") return ["off", "disabled by an administrator"];
  if (status.availability === "not-served") return ["off", "not served"];
  if (status.running) {
    if (status.type === "static") return ["up", "serving"];
    const since = status.start_time ? ` since ${new Date(status.start_time).toLocaleString()}` : "";
    return ["up", `running${since}`];
  }
  if (status.starting) return ["starting", "starting…"];
  if (status.type === "dynamic" && status.run_sh_exists === false) return ["down", "not running: no executable run.sh"];
  // why it does not run: the process's last log line (status.log, newest last)
  const log = Array.isArray(status.log) ? status.log.filter((line) => line.trim()) : [];
  const last = log.length ? ` (last log line: ${log[log.length - 1]})` : "";
  if (status.error) return ["down", `not running: ${status.error}${last}`];
  return ["down", `not running${last}`];
}

export function startStatusDots() {
  const names = new Set();
  for (const el of document.querySelectorAll("[data-status-site], [data-status-text]")) {
    names.add(el.dataset.statusSite || el.dataset.statusText);
  }
  if (names.size === 0) return null;
  return new LiveSocket("/ws/sites/status", {
    onOpen: (socket) => socket.send([...names]),
    onMessage: (message) => {
      if (!message.site) return;
      const [state, text] = describe(message.status);
      for (const dot of document.querySelectorAll(`[data-status-site="${CSS.escape(message.site)}"]`)) {
        dot.className = `dot ${state}`;
        dot.title = text;
        const label = dot.querySelector(".sr-only");
        if (label) label.textContent = text;
      }
      for (const el of document.querySelectorAll(`[data-status-text="${CSS.escape(message.site)}"]`)) {
        el.textContent = text;
      }
    },
  });
}
