// Terminals with xterm.js over /ws/sites/<name>/terminal: binary frames carry the bytes,
// JSON text frames carry resize and heartbeat. Used by the terminal page and editor panes.
// A terminal runs the login shell, or with shell "database" the site's psql or mysql; its
// colours and font size follow the editor's settings (theme, font size).
import { FitAddon } from "@xterm/addon-fit";
import { Terminal } from "@xterm/xterm";
import { styleNonce } from "./lib/api.js";
import { loadSettings } from "./lib/prefs.js";
import { LiveSocket } from "./lib/socket.js";
import { toast } from "./lib/ui.js";

// Light, and One Dark (as the editor's dark theme).
const THEMES = {
  light: { background: "#ffffff", foreground: "#24292f", cursor: "#4a5bd4", cursorAccent: "#ffffff", selectionBackground: "#c8d1f5" },
  dark: { background: "#282c34", foreground: "#abb2bf", cursor: "#528bff", cursorAccent: "#282c34", selectionBackground: "#3e4451" },
};
const SHELLS = { login: "", database: "?shell=database" };

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
  constructor(host, site, { onState = () => {}, shell = "login", settings = loadSettings() } = {}) {
    allowXtermStyles();
    this.host = host;
    this.site = site;
    this.onState = onState;
    this.shell = shell in SHELLS ? shell : "login";
    this.term = new Terminal({
      cursorBlink: true,
      fontFamily: 'ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace',
      scrollback: 5000,
    });
    this.applySettings(settings);
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

  /** The editor's theme and font size ({theme, fontSize}), now and whenever they change. */
  applySettings({ theme, fontSize }) {
    const colours = THEMES[theme] || THEMES.light;
    this.term.options.theme = colours;
    this.term.options.fontSize = Number(fontSize) || 14;
    this.host.style.background = colours.background;
    this.host.dataset.terminalTheme = theme in THEMES ? theme : "light";
    if (this.fit) this.resize();
  }

  /** Run the login shell or ("database") the site's database client from now on. */
  useShell(shell) {
    this.shell = shell in SHELLS ? shell : "login";
    this.term.reset();
    this.connect();
  }

  connect() {
    this.exited = false;
    this.started = false;
    this.opened = false;
    this.onState("connecting", "Connecting…");
    this.socket?.close();
    this.socket = new LiveSocket(`/ws/sites/${encodeURIComponent(this.site)}/terminal${SHELLS[this.shell]}`, {
      binary: true,
      reconnect: false,
      onOpen: () => (this.opened = true),
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
      const what = this.shell === "database" ? "The database shell" : "The shell";
      this.onState("idle", `${what} exited (${message.exit ?? "?"}). Press Enter or Reconnect for a new one.`);
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
    if (this.shell === "database" && !this.opened) {
      // Refused before the upgrade (409 no_database): trying again would not help.
      const text = "The database shell could not start: does the site still have a database? Reload the page.";
      this.onState("bad", text);
      this.term.write(`\r\n\x1b[31m${text}\x1b[0m\r\n`);
      return;
    }
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
  const toggle = page.querySelector("[data-terminal-shell]"); // only when the site has a database
  const wanted = toggle && new URLSearchParams(location.search).get("shell") === "database" ? "database" : "login";
  const terminal = new SiteTerminal(page.querySelector("[data-terminal-host]"), page.dataset.site, {
    shell: wanted,
    onState: (kind, text) => {
      state.textContent = text;
      state.className = `terminal-state ${kind}`;
    },
  });
  const label = () => {
    toggle.textContent = terminal.shell === "database" ? "Login shell" : "Database shell";
    toggle.setAttribute("aria-pressed", String(terminal.shell === "database"));
  };
  if (toggle) {
    label();
    toggle.addEventListener("click", () => {
      terminal.useShell(terminal.shell === "database" ? "login" : "database");
      label();
      const url = new URL(location.href);
      if (terminal.shell === "database") url.searchParams.set("shell", "database");
      else url.searchParams.delete("shell");
      history.replaceState(null, "", url);
    });
  }
  page.querySelector("[data-terminal-reconnect]").addEventListener("click", () => terminal.connect());
  page.querySelector("[data-terminal-copy]").addEventListener("click", () => terminal.copy());
  page.querySelector("[data-terminal-paste]").addEventListener("click", () => terminal.paste());
}
