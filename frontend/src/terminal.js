// Terminals with xterm.js over /ws/sites/<name>/terminal: binary frames carry the bytes,
// JSON text frames carry resize and heartbeat. Used by the terminal page and editor panes.
import { FitAddon } from "@xterm/addon-fit";
import { Terminal } from "@xterm/xterm";
import { styleNonce } from "./lib/api.js";
import { LiveSocket } from "./lib/socket.js";
import { toast } from "./lib/ui.js";

// xterm.js adds <style> elements; the page's Content-Security-Policy admits only those
// carrying its nonce, so give every <style> this document creates the nonce.
let nonceInstalled = false;
function allowXtermStyles() {
  if (nonceInstalled) return;
  nonceInstalled = true;
  const nonce = styleNonce();
  const create = document.createElement.bind(document);
  document.createElement = (tag, options) => {
    const element = create(tag, options);
    if (nonce && String(tag).toLowerCase() === "style") element.nonce = nonce;
    return element;
  };
}

const encoder = new TextEncoder();

export class SiteTerminal {
  constructor(host, site, { onState = () => {} } = {}) {
    allowXtermStyles();
    this.site = site;
    this.onState = onState;
    this.term = new Terminal({
      cursorBlink: true,
      fontFamily: 'ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace',
      fontSize: 14,
      scrollback: 5000,
      theme: { background: "#161b26", foreground: "#e4e8f1", cursor: "#8b9bff", selectionBackground: "#3a4a7a" },
    });
    this.fit = new FitAddon();
    this.term.loadAddon(this.fit);
    this.term.open(host);
    this.term.attachCustomKeyEventHandler((event) => this.keys(event));
    this.term.onData((data) => this.send(encoder.encode(data)));
    this.term.onBinary((data) => this.send(Uint8Array.from(data, (c) => c.charCodeAt(0))));
    this.resizeObserver = new ResizeObserver(() => this.resize());
    this.resizeObserver.observe(host);
    this.heartbeat = setInterval(() => this.socket?.send({ heartbeat: Date.now() }), 60000);
    this.connect();
  }

  connect() {
    this.exited = false;
    this.started = false;
    this.onState("connecting", "Connecting…");
    this.socket?.close();
    this.socket = new LiveSocket(`/ws/sites/${encodeURIComponent(this.site)}/terminal`, {
      binary: true,
      reconnect: false,
      onMessage: (message) => this.received(message),
      onClose: (event) => this.closed(event),
      onFinal: (code, text) => {
        this.onState("bad", text);
        this.term.write(`\r\n\x1b[31m${text}\x1b[0m\r\n`);
      },
    });
  }

  received(message) {
    if (message instanceof ArrayBuffer) {
      this.term.write(new Uint8Array(message));
      if (!this.started) {
        // The first output means the shell runs: a size sent before it may have been lost.
        this.started = true;
        this.resize(true);
      }
      return;
    }
    if (message.connected) {
      this.onState("ok", "Connected");
      this.resize(true);
      this.term.focus();
    } else if ("exit" in message) {
      this.exited = true;
      this.onState("idle", `The shell exited (${message.exit ?? "?"}). Press Enter or Reconnect for a new one.`);
      this.term.write("\r\n\x1b[2m[shell exited — press Enter for a new one]\x1b[0m\r\n");
    } else if (message.error) {
      this.onState("bad", message.error);
      this.term.write(`\r\n\x1b[31m${message.error}\x1b[0m\r\n`);
    } else if (message.closed) {
      this.onState("idle", `Closed (${message.closed}). Reconnect to continue.`);
    }
  }

  closed(event) {
    if (this.exited || event.code === 4401 || event.code === 4403 || event.code === 4404) return;
    this.onState("bad", "Disconnected. Reconnecting…");
    clearTimeout(this.retry);
    this.retry = setTimeout(() => this.connect(), 2000);
  }

  send(bytes) {
    if (this.exited) {
      if (bytes.includes(13)) this.connect();
      return;
    }
    this.socket?.send(bytes);
  }

  resize(force = false) {
    try {
      this.fit.fit();
    } catch {
      return;
    }
    const size = [this.term.rows, this.term.cols];
    if (force || String(size) !== String(this.lastSize)) {
      this.lastSize = size;
      this.socket?.send({ resize: size });
    }
  }

  keys(event) {
    if (event.type !== "keydown" || !event.ctrlKey || !event.shiftKey) return true;
    if (event.code === "KeyC") {
      this.copy();
      return false;
    }
    if (event.code === "KeyV") {
      this.paste();
      return false;
    }
    return true;
  }

  async copy() {
    const text = this.term.getSelection();
    if (!text) return;
    try {
      await navigator.clipboard.writeText(text);
      toast("Copied", "ok", 2);
    } catch {
      toast("The browser refused clipboard access", "error");
    }
  }

  async paste() {
    try {
      this.term.paste(await navigator.clipboard.readText());
    } catch {
      toast("The browser refused clipboard access; use Ctrl+Shift+V or your browser's paste", "error");
    }
  }

  dispose() {
    clearInterval(this.heartbeat);
    clearTimeout(this.retry);
    this.resizeObserver.disconnect();
    this.socket?.close();
    this.term.dispose();
  }
}

export function startTerminalPage(page) {
  const state = page.querySelector("[data-terminal-state]");
  const terminal = new SiteTerminal(page.querySelector("[data-terminal-host]"), page.dataset.site, {
    onState: (kind, text) => {
      state.textContent = text;
      state.className = `terminal-state ${kind}`;
    },
  });
  page.querySelector("[data-terminal-reconnect]").addEventListener("click", () => terminal.connect());
  page.querySelector("[data-terminal-copy]").addEventListener("click", () => terminal.copy());
  page.querySelector("[data-terminal-paste]").addEventListener("click", () => terminal.paste());
}
