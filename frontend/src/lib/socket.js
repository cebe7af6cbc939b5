// A websocket to the manager that reconnects with backoff and says so.
import { connectionLost } from "./ui.js";

const FINAL = new Map([
  [4401, "Your session ended. Sign in again."],
  [4404, "No such site, or you are no longer one of its members."],
  [4403, "An administrator disabled this site; ask them to enable it."],
  [4400, "The request was not understood."],
]);

export class LiveSocket {
  constructor(path, { onOpen, onMessage, onClose, onFinal, binary = false, reconnect = true } = {}) {
    this.path = path;
    this.onOpen = onOpen;
    this.onMessage = onMessage;
    this.onClose = onClose;
    this.onFinal = onFinal;
    this.binary = binary;
    this.reconnect = reconnect;
    this.delay = 1000;
    this.stopped = false;
    this.down = false;
    this.ws = null;
    this.connect();
  }

  url() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}${this.path}`;
  }

  connect() {
    if (this.stopped) return;
    const ws = new WebSocket(this.url());
    if (this.binary) ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.addEventListener("open", () => {
      this.delay = 1000;
      if (this.down) {
        this.down = false;
        connectionLost(-1);
      }
      this.onOpen?.(this);
    });
    ws.addEventListener("message", (event) => {
      if (typeof event.data === "string") {
        let message;
        try {
          message = JSON.parse(event.data);
        } catch {
          return;
        }
        this.onMessage?.(message, this);
      } else {
        this.onMessage?.(event.data, this);
      }
    });
    ws.addEventListener("close", (event) => {
      if (this.ws !== ws) return;
      this.onClose?.(event, this);
      if (FINAL.has(event.code)) {
        this.stopped = true;
        this.onFinal?.(event.code, FINAL.get(event.code));
        return;
      }
      if (this.stopped || !this.reconnect) return;
      if (!this.down) {
        this.down = true;
        connectionLost(+1);
      }
      setTimeout(() => this.connect(), this.delay);
      this.delay = Math.min(this.delay * 2, 30000);
    });
  }

  get open() {
    return this.ws && this.ws.readyState === WebSocket.OPEN;
  }

  send(data) {
    if (!this.open) return false;
    this.ws.send(typeof data === "string" || data instanceof ArrayBuffer || ArrayBuffer.isView(data) ? data : JSON.stringify(data));
    return true;
  }

  close() {
    this.stopped = true;
    if (this.down) {
      this.down = false;
      connectionLost(-1);
    }
    this.ws?.close(1000);
  }
}
