// The online editor: a live file tree (the file-monitor websocket, or polling when it is not
// available), CodeMirror 6 for the open file, and bottom panes for the site's log and terminals.
import { indentWithTab } from "@codemirror/commands";
import { Compartment, EditorState, Prec } from "@codemirror/state";
import { keymap } from "@codemirror/view";
import { EditorView, basicSetup } from "codemirror";
import { api, fileUrl, styleNonce } from "./lib/api.js";
import { watchOperation } from "./lib/operations.js";
import { LAYOUT_DEFAULTS, SETTINGS_DEFAULTS, loadLayout, loadSettings, loadShowHidden, resetAll, saveLayout, saveSettings, saveShowHidden } from "./lib/prefs.js";
import { LiveSocket } from "./lib/socket.js";
import { h, toast } from "./lib/ui.js";

const MAX_EDIT_BYTES = 5 * 1024 * 1024;
const LOG_LINES = 5000;
const decoder = new TextDecoder("utf-8", { fatal: true });

const join = (dir, name) => (dir ? `${dir}/${name}` : name);
const parentOf = (path) => (path.includes("/") ? path.slice(0, path.lastIndexOf("/")) : "");
const baseName = (path) => path.slice(path.lastIndexOf("/") + 1);
const isHidden = (name) => name.startsWith(".");
const isExecutable = (entry) => entry.type === "file" && (parseInt(entry.mode || "0", 8) & 0o111) !== 0;

/** The CodeMirror language for a file name, loaded only when first needed. */
async function languageFor(path) {
  const name = baseName(path).toLowerCase();
  const ext = name.includes(".") ? name.slice(name.lastIndexOf(".") + 1) : "";
  if (["html", "htm", "jinja", "j2"].includes(ext)) return (await import("@codemirror/lang-html")).html();
  if (["css", "scss"].includes(ext)) return (await import("@codemirror/lang-css")).css();
  if (["js", "mjs", "cjs", "jsx", "ts", "tsx"].includes(ext)) {
    return (await import("@codemirror/lang-javascript")).javascript({ jsx: ext.includes("x"), typescript: ext.startsWith("t") });
  }
  if (ext === "json") return (await import("@codemirror/lang-json")).json();
  if (["md", "markdown"].includes(ext)) return (await import("@codemirror/lang-markdown")).markdown();
  if (ext === "py") return (await import("@codemirror/lang-python")).python();
  if (ext === "php") return (await import("@codemirror/lang-php")).php();
  if (ext === "sql") return (await import("@codemirror/lang-sql")).sql();
  if (["yml", "yaml"].includes(ext)) return (await import("@codemirror/lang-yaml")).yaml();
  if (["sh", "bash"].includes(ext) || name === "run.sh" || name === ".bashrc" || name === ".profile") {
    const [{ StreamLanguage }, { shell }] = await Promise.all([
      import("@codemirror/language"),
      import("@codemirror/legacy-modes/mode/shell"),
    ]);
    return StreamLanguage.define(shell);
  }
  return [];
}

class Panes {
  constructor(root) {
    this.root = root;
    this.tabs = root.querySelector("[data-pane-tabs]");
    this.bodies = root.querySelector("[data-pane-bodies]");
    this.panes = [];
    this.update();
  }

  add(title, body, { closable = true, onClose, onShow } = {}) {
    const pane = { title, body, onClose, onShow };
    const close = closable
      ? h("span", { class: "close", role: "button", "aria-label": `Close ${title}`, title: "Close" }, "×")
      : null;
    pane.tab = h("button", { type: "button", class: "pane-tab", role: "tab", "aria-selected": "false" }, title, close);
    pane.tab.addEventListener("click", (event) => {
      if (close && event.target === close) this.remove(pane);
      else this.show(pane);
    });
    body.classList.add("pane-body");
    body.setAttribute("role", "tabpanel");
    this.tabs.append(pane.tab);
    this.bodies.append(body);
    this.panes.push(pane);
    this.show(pane);
    return pane;
  }

  show(pane) {
    for (const p of this.panes) {
      p.tab.setAttribute("aria-selected", String(p === pane));
      p.body.hidden = p !== pane;
    }
    this.update();
    pane.onShow?.();
  }

  remove(pane) {
    pane.onClose?.();
    pane.tab.remove();
    pane.body.remove();
    this.panes = this.panes.filter((p) => p !== pane);
    if (this.panes.length) this.show(this.panes.at(-1));
    this.update();
  }

  update() {
    this.root.hidden = this.panes.length === 0;
  }
}

export class SiteEditor {
  constructor(root) {
    this.root = root;
    this.site = root.dataset.site;
    this.dynamic = root.dataset.siteType === "dynamic";
    this.treeElement = root.querySelector("[data-tree]");
    this.codeHost = root.querySelector("[data-code-host]");
    this.fileLabel = root.querySelector("[data-current-file]");
    this.saveState = root.querySelector("[data-save-state]");
    this.saveButton = root.querySelector("[data-save]");
    this.menu = root.querySelector("[data-context-menu]");
    this.dirs = new Map(); // dir path -> Map(name -> entry)
    this.expanded = new Set([""]);
    this.listing = new Map(); // dir path -> names seen while (re)listing it through the monitor
    this.selected = null;
    this.docs = new Map(); // path -> { state, dirty }
    this.current = null;
    this.view = null;
    this.language = new Compartment();
    this.preferences = new Compartment(); // key map, theme and font size: the settings
    this.settings = loadSettings();
    this.layout = loadLayout();
    this.showHidden = loadShowHidden();
    this.keymaps = { default: [] };
    this.panes = new Panes(root.querySelector("[data-bottom-panes]"));
    this.terminals = 0;
    this.openTerminals = new Set(); // their theme and font size follow the settings
    this.renderQueued = false;
  }

  start() {
    this.bindSettings();
    this.bindLayout();
    this.bindToolbar();
    this.bindTree();
    this.bindKeys();
    this.refresh("").then(() => {
      if (this.dirs.get("")?.has("public")) this.toggle("public", true);
    });
    this.startMonitor();
    if (this.dynamic) this.openLog();
    window.addEventListener("beforeunload", (event) => {
      if ([...this.docs.values()].some((d) => d.dirty)) event.preventDefault();
    });
  }

  // -- the tree ---------------------------------------------------------------------------

  async refresh(dir) {
    try {
      const listing = await api("GET", fileUrl(this.site, dir, dir !== ""));
      const entries = new Map(listing.entries.map((e) => [e.name, e]));
      this.dirs.set(dir, entries);
      for (const known of [...this.dirs.keys()]) {
        if (parentOf(known) === dir && known !== dir && !entries.has(baseName(known))) this.forget(known);
      }
    } catch (error) {
      if (error.status === 404 && dir) {
        this.forget(dir);
      } else {
        toast(`Cannot list ${dir || "the site"}: ${error.message}`, "error");
      }
    }
    this.render();
  }

  refreshAll() {
    return Promise.all([...this.expanded].map((dir) => this.refresh(dir)));
  }

  forget(dir) {
    for (const key of [...this.dirs.keys()]) {
      if (key === dir || key.startsWith(dir + "/")) this.dirs.delete(key);
    }
    for (const key of [...this.expanded]) {
      if (key === dir || key.startsWith(dir + "/")) this.expanded.delete(key);
    }
  }

  entry(path) {
    return this.dirs.get(parentOf(path))?.get(baseName(path));
  }

  async toggle(path, open = !this.expanded.has(path)) {
    if (open) {
      this.expanded.add(path);
      this.monitor?.send({ action: "add", path });
      await this.refresh(path);
    } else {
      for (const key of [...this.expanded]) {
        if (key === path || key.startsWith(path + "/")) {
          this.expanded.delete(key);
          this.monitor?.send({ action: "remove", path: key });
        }
      }
      this.render();
    }
  }

  render() {
    if (this.renderQueued) return;
    this.renderQueued = true;
    requestAnimationFrame(() => {
      this.renderQueued = false;
      this.renderNow();
    });
  }

  visibleItems(dir = "", level = 1, out = []) {
    const entries = [...(this.dirs.get(dir)?.values() || [])].sort((a, b) => {
      const ad = a.type === "dir" ? 0 : 1;
      const bd = b.type === "dir" ? 0 : 1;
      return ad - bd || a.name.localeCompare(b.name);
    });
    for (const entry of entries) {
      if (!this.showHidden && isHidden(entry.name)) continue;
      const path = join(dir, entry.name);
      out.push({ path, entry, level });
      if (entry.type === "dir" && this.expanded.has(path)) this.visibleItems(path, level + 1, out);
    }
    return out;
  }

  renderNow() {
    const items = this.visibleItems();
    const focused = this.treeElement.contains(document.activeElement) && document.activeElement !== this.treeElement;
    const nodes = items.map(({ path, entry, level }) => {
      const dir = entry.type === "dir";
      const open = dir && this.expanded.has(path);
      const node = h(
        "div",
        {
          class: `tree-item${isExecutable(entry) ? " executable" : ""}${this.docs.get(path)?.dirty ? " dirty" : ""}`,
          role: "treeitem",
          "aria-level": level,
          "aria-selected": String(this.selected === path),
          "aria-expanded": dir ? String(open) : null,
          draggable: "true",
          title: `${path}${entry.type === "link" ? ` → ${entry.target}` : ""} (${entry.mode || ""})`,
          dataset: { path, type: entry.type },
        },
        h("span", { class: "twisty", "aria-hidden": "true" }, dir ? (open ? "▾" : "▸") : ""),
        h("span", { class: `icon icon-${dir ? "dir" : entry.type === "link" ? "link" : "file"}${open ? " open" : ""}`, "aria-hidden": "true" }),
        h("span", { class: "name" }, entry.name),
      );
      node.style.paddingLeft = `${(level - 1) * 14 + 6}px`;
      return node;
    });
    if (this.pendingInput) {
      const { dir, node } = this.pendingInput;
      const index = dir === "" ? 0 : nodes.findIndex((n) => n.dataset.path === dir) + 1;
      nodes.splice(Math.max(0, index), 0, node);
    }
    this.treeElement.replaceChildren(...nodes);
    if (this.pendingInput) this.pendingInput.input.focus();
    else if (focused && this.selected) this.itemFor(this.selected)?.focus();
  }

  itemFor(path) {
    return this.treeElement.querySelector(`[data-path="${CSS.escape(path)}"]`);
  }

  select(path) {
    this.selected = path;
    for (const item of this.treeElement.querySelectorAll("[role=treeitem]")) {
      item.setAttribute("aria-selected", String(item.dataset.path === path));
    }
    const item = this.itemFor(path);
    if (item) {
      item.tabIndex = 0;
      item.focus({ preventScroll: false });
    }
  }

  /** The directory new files go into: the selected directory, or the selected file's. */
  targetDir() {
    if (this.selected === null) return "";
    const entry = this.entry(this.selected);
    return entry?.type === "dir" ? this.selected : parentOf(this.selected);
  }

  bindTree() {
    const tree = this.treeElement;
    tree.addEventListener("click", (event) => {
      const item = event.target.closest("[role=treeitem]");
      if (!item) return;
      this.select(item.dataset.path);
      if (item.dataset.type === "dir") this.toggle(item.dataset.path);
      else this.open(item.dataset.path);
    });
    tree.addEventListener("contextmenu", (event) => {
      const item = event.target.closest("[role=treeitem]");
      event.preventDefault();
      if (item) this.select(item.dataset.path);
      this.showMenu(event.clientX, event.clientY, item ? item.dataset.path : null);
    });
    tree.addEventListener("keydown", (event) => this.treeKey(event));
    tree.addEventListener("focus", () => {
      if (this.selected === null) {
        const first = tree.querySelector("[role=treeitem]");
        if (first) this.select(first.dataset.path);
      }
    });
    // Drag and drop: entries onto folders move them; files from the computer upload.
    tree.addEventListener("dragstart", (event) => {
      const item = event.target.closest("[role=treeitem]");
      if (!item) return;
      event.dataTransfer.setData("application/x-director-path", item.dataset.path);
      event.dataTransfer.effectAllowed = "move";
    });
    tree.addEventListener("dragover", (event) => {
      event.preventDefault();
      const item = event.target.closest("[role=treeitem]");
      for (const el of tree.querySelectorAll(".drop-into")) el.classList.remove("drop-into");
      if (item?.dataset.type === "dir") item.classList.add("drop-into");
      tree.classList.toggle("drop-target", !item || item.dataset.type !== "dir");
    });
    tree.addEventListener("dragleave", () => tree.classList.remove("drop-target"));
    tree.addEventListener("drop", (event) => {
      event.preventDefault();
      tree.classList.remove("drop-target");
      for (const el of tree.querySelectorAll(".drop-into")) el.classList.remove("drop-into");
      const item = event.target.closest("[role=treeitem]");
      const dir = item ? (item.dataset.type === "dir" ? item.dataset.path : parentOf(item.dataset.path)) : "";
      const moving = event.dataTransfer.getData("application/x-director-path");
      if (moving) {
        if (moving !== dir && parentOf(moving) !== dir && !dir.startsWith(moving + "/")) this.move(moving, join(dir, baseName(moving)));
      } else if (event.dataTransfer.files.length) {
        this.upload(dir, event.dataTransfer.files);
      }
    });
  }

  treeKey(event) {
    if (event.target.tagName === "INPUT") return;
    const items = [...this.treeElement.querySelectorAll("[role=treeitem]")];
    const index = items.findIndex((i) => i.dataset.path === this.selected);
    const current = items[index];
    const go = (i) => {
      if (items[i]) this.select(items[i].dataset.path);
    };
    switch (event.key) {
      case "ArrowDown":
        go(index + 1);
        break;
      case "ArrowUp":
        go(Math.max(0, index - 1));
        break;
      case "ArrowRight":
        if (current?.dataset.type === "dir" && !this.expanded.has(current.dataset.path)) this.toggle(current.dataset.path, true);
        else go(index + 1);
        break;
      case "ArrowLeft":
        if (current?.dataset.type === "dir" && this.expanded.has(current.dataset.path)) this.toggle(current.dataset.path, false);
        else if (current && parentOf(current.dataset.path)) this.select(parentOf(current.dataset.path));
        break;
      case "Enter":
        if (!current) return;
        if (current.dataset.type === "dir") this.toggle(current.dataset.path);
        else this.open(current.dataset.path);
        break;
      case "F2":
        if (current) this.startRename(current.dataset.path);
        break;
      case "Delete":
        if (current) this.remove(current.dataset.path);
        break;
      case "ContextMenu": {
        const rect = current?.getBoundingClientRect();
        this.showMenu(rect ? rect.left + 20 : 40, rect ? rect.bottom : 40, this.selected);
        break;
      }
      default:
        return;
    }
    event.preventDefault();
  }

  // -- inline name input (new file, new folder, rename) ------------------------------------

  askName(dir, initial, placeholder) {
    return new Promise((resolve) => {
      this.pendingInput?.cancel();
      const input = h("input", { class: "tree-input", value: initial, placeholder, "aria-label": placeholder, spellcheck: "false", autocapitalize: "none" });
      const node = h("div", { class: "tree-item" }, input);
      let settled = false;
      const finish = (value) => {
        if (settled) return;
        settled = true;
        this.pendingInput = null;
        this.render();
        resolve(value);
      };
      input.addEventListener("keydown", (event) => {
        if (event.key === "Enter") {
          event.preventDefault();
          finish(input.value.trim() || null);
        } else if (event.key === "Escape") {
          event.preventDefault();
          finish(null);
        }
      });
      input.addEventListener("blur", () => setTimeout(() => finish(null), 150));
      this.pendingInput = { dir, node, input, cancel: () => finish(null) };
      this.renderNow();
      input.select();
    });
  }

  async newEntry(kind, dir = this.targetDir()) {
    if (dir && !this.expanded.has(dir)) await this.toggle(dir, true);
    const name = await this.askName(dir, "", kind === "dir" ? "new folder name" : "new file name (e.g. index.html)");
    if (!name) return;
    const path = join(dir, name.replace(/^\/+/, ""));
    try {
      if (kind === "dir") await api("PUT", fileUrl(this.site, path, true), "");
      else await api("PUT", fileUrl(this.site, path) + "?exclusive=1", "");
      await this.refreshParents(path);
      if (kind === "dir") await this.toggle(path, true);
      else await this.open(path);
      this.select(path);
    } catch (error) {
      toast(error.message, "error", 8);
    }
  }

  async refreshParents(path) {
    const parts = path.split("/");
    for (let i = 0; i < parts.length; i += 1) {
      const dir = parts.slice(0, i).join("/");
      if (i > 0 && !this.expanded.has(dir)) this.expanded.add(dir);
    }
    await this.refresh(parentOf(path));
  }

  async startRename(path) {
    const name = await this.askName(parentOf(path), path, "new path");
    if (name && name !== path) await this.move(path, name.replace(/^\/+/, ""));
  }

  async move(from, to) {
    try {
      await api("PATCH", fileUrl(this.site, from), { move_to: to });
      for (const [path, doc] of [...this.docs]) {
        if (path === from || path.startsWith(from + "/")) {
          this.docs.delete(path);
          this.docs.set(to + path.slice(from.length), doc);
          if (this.current === path) this.setCurrent(to + path.slice(from.length));
        }
      }
      this.forget(from);
      await Promise.all([this.refresh(parentOf(from)), this.refreshParents(to)]);
      toast(`Moved to ${to}`, "ok", 2);
    } catch (error) {
      toast(error.message, "error", 8);
    }
  }

  async remove(path) {
    const entry = this.entry(path);
    const dir = entry?.type === "dir";
    if (!window.confirm(`Delete ${path}${dir ? " and everything in it" : ""}?`)) return;
    try {
      await api("DELETE", fileUrl(this.site, path) + (dir ? "?recursive=1" : ""));
      for (const open of [...this.docs.keys()]) {
        if (open === path || open.startsWith(path + "/")) this.close(open);
      }
      this.forget(path);
      await this.refresh(parentOf(path));
    } catch (error) {
      toast(error.message, "error", 8);
    }
  }

  async toggleExecutable(path) {
    const entry = this.entry(path);
    if (!entry) return;
    const mode = isExecutable(entry) ? "644" : "755";
    try {
      await api("PATCH", fileUrl(this.site, path), { mode });
      await this.refresh(parentOf(path));
      toast(`${path} is ${mode === "755" ? "now executable" : "no longer executable"}`, "ok", 2);
    } catch (error) {
      toast(error.message, "error", 8);
    }
  }

  download(path) {
    const entry = this.entry(path);
    const link = h("a", { href: fileUrl(this.site, path) + (entry?.type === "dir" ? "?zip=1" : ""), download: baseName(path) + (entry?.type === "dir" ? ".zip" : "") });
    document.body.append(link);
    link.click();
    link.remove();
  }

  async upload(dir, files) {
    for (const file of files) {
      const path = join(dir, file.name);
      try {
        await api("PUT", fileUrl(this.site, path), file);
      } catch (error) {
        toast(`${file.name}: ${error.message}`, "error", 8);
      }
    }
    if (dir && !this.expanded.has(dir)) this.expanded.add(dir);
    await this.refresh(dir);
    toast(`Uploaded ${files.length} file(s)`, "ok", 2);
  }

  // -- context menu ---------------------------------------------------------------------------

  showMenu(x, y, path) {
    const entry = path ? this.entry(path) : null;
    const dir = entry?.type === "dir";
    const target = path ? (dir ? path : parentOf(path)) : "";
    const items = [];
    if (entry && !dir) items.push(["Open", () => this.open(path)]);
    items.push(["New file here", () => this.newEntry("file", target)]);
    items.push(["New folder here", () => this.newEntry("dir", target)]);
    if (entry) {
      items.push(["Rename or move…", () => this.startRename(path)]);
      items.push([dir ? "Download as zip" : "Download", () => this.download(path)]);
      if (!dir) items.push([isExecutable(entry) ? "Make not executable" : "Make executable", () => this.toggleExecutable(path)]);
      items.push(["Delete", () => this.remove(path), "danger"]);
    } else {
      items.push(["Download the site as zip", () => this.download("")]);
    }
    this.menu.replaceChildren(
      ...items.map(([label, action, kind]) =>
        h("li", { role: "none" }, h("button", { type: "button", role: "menuitem", class: kind || "", onclick: () => { this.hideMenu(); action(); } }, label)),
      ),
    );
    this.menu.hidden = false;
    const width = this.menu.offsetWidth;
    const height = this.menu.offsetHeight;
    this.menu.style.left = `${Math.min(x, window.innerWidth - width - 8)}px`;
    this.menu.style.top = `${Math.min(y, window.innerHeight - height - 8)}px`;
    this.menu.querySelector("button")?.focus();
  }

  hideMenu() {
    this.menu.hidden = true;
  }

  // -- files in the code editor ---------------------------------------------------------------

  extensions(language) {
    return [
      this.preferences.of(this.preferenceExtensions()), // first: a vim or emacs key map goes before the others
      basicSetup,
      Prec.high(
        keymap.of([
          { key: "Mod-s", preventDefault: true, run: () => (this.save(), true) },
          { key: "Alt-Enter", preventDefault: true, run: () => (this.restart(), true) },
          indentWithTab,
        ]),
      ),
      this.language.of(language),
      EditorView.cspNonce.of(styleNonce()),
      EditorView.updateListener.of((update) => {
        if (update.docChanged && this.current) this.markDirty(this.current, true);
      }),
    ];
  }

  async open(path) {
    const entry = this.entry(path);
    if (entry && entry.size > MAX_EDIT_BYTES) {
      toast(`${path} is too large to edit here; download it instead`, "error");
      return;
    }
    if (this.current && this.view) this.docs.get(this.current).state = this.view.state;
    let doc = this.docs.get(path);
    if (!doc) {
      let text;
      try {
        const response = await api("GET", fileUrl(this.site, path), undefined, { raw: true });
        text = decoder.decode(await response.arrayBuffer());
      } catch (error) {
        toast(error instanceof TypeError ? `${path} is not a text file; download it instead` : error.message, "error");
        return;
      }
      const language = await languageFor(path);
      doc = { state: EditorState.create({ doc: text, extensions: this.extensions(language) }), dirty: false };
      this.docs.set(path, doc);
    }
    if (!this.view) {
      this.codeHost.replaceChildren();
      this.view = new EditorView({ state: doc.state, parent: this.codeHost });
    } else {
      this.view.setState(doc.state);
    }
    // A file opened before the settings last changed still has the old ones.
    this.view.dispatch({ effects: this.preferences.reconfigure(this.preferenceExtensions()) });
    this.setCurrent(path);
    this.view.focus();
  }

  setCurrent(path) {
    this.current = path;
    this.fileLabel.textContent = path;
    this.saveButton.disabled = false;
    this.showDirty();
    document.title = `${baseName(path)} · ${this.site} · Director`;
  }

  close(path) {
    this.docs.delete(path);
    if (this.current === path) {
      this.current = null;
      this.view?.destroy();
      this.view = null;
      this.codeHost.replaceChildren(h("div", { class: "editor-welcome" }, h("p", {}, "The file was deleted.")));
      this.fileLabel.textContent = "No file open";
      this.saveButton.disabled = true;
    }
  }

  markDirty(path, dirty) {
    const doc = this.docs.get(path);
    if (!doc || doc.dirty === dirty) return;
    doc.dirty = dirty;
    this.itemFor(path)?.classList.toggle("dirty", dirty);
    if (path === this.current) this.showDirty();
  }

  showDirty() {
    const dirty = this.docs.get(this.current)?.dirty;
    this.saveState.textContent = dirty ? "Unsaved changes" : "Saved";
    this.saveState.classList.toggle("dirty", Boolean(dirty));
  }

  async save() {
    const path = this.current;
    if (!path || !this.view) return;
    const text = this.view.state.doc.toString();
    this.saveState.textContent = "Saving…";
    try {
      await api("PUT", fileUrl(this.site, path), text);
      this.docs.get(path).state = this.view.state;
      this.markDirty(path, false);
      this.showDirty();
      this.saveState.textContent = `Saved ${new Date().toLocaleTimeString()}`;
    } catch (error) {
      this.saveState.textContent = "Not saved";
      toast(`Could not save ${path}: ${error.message}`, "error", 10);
    }
  }

  async restart() {
    if (!this.dynamic) {
      toast("Static sites have no process to restart", "info");
      return;
    }
    toast("Restarting…", "info", 2);
    try {
      const result = await api("POST", `/api/v1/sites/${encodeURIComponent(this.site)}/restart`);
      const holder = h("div");
      const final = await watchOperation(result.operation, holder);
      if (final.status === "succeeded") toast("Restarted", "ok", 3);
      else toast(`Restart failed: ${final.error || "see the site page"}`, "error", 10);
    } catch (error) {
      toast(error.message, "error", 8);
    }
  }

  // -- settings and layout, kept in this browser -------------------------------------------------

  preferenceExtensions() {
    const { theme, keymap: map } = this.settings;
    return [this.keymaps[map] || [], theme === "dark" && this.darkTheme ? this.darkTheme : []];
  }

  /** Loads what the settings need (the vim and emacs key maps, the dark theme) the first time. */
  async loadPreferenceModules() {
    const { theme, keymap: map } = this.settings;
    if (map === "vim" && !this.keymaps.vim) {
      const { vim, Vim } = await import("@replit/codemirror-vim");
      // :w saves, :wq and :x too (the page stays: there is nothing to quit to).
      for (const [name, short] of [["write", "w"], ["wq", "wq"], ["xit", "x"]]) Vim.defineEx(name, short, () => this.save());
      this.keymaps.vim = vim();
    }
    if (map === "emacs" && !this.keymaps.emacs) {
      const { emacs, EmacsHandler } = await import("@replit/codemirror-emacs");
      // C-s is emacs's search; C-x C-s saves, as in emacs.
      EmacsHandler.bindKey("C-x C-s", { exec: () => void this.save() });
      this.keymaps.emacs = emacs();
    }
    if (theme === "dark" && !this.darkTheme) {
      const { oneDark } = await import("@codemirror/theme-one-dark");
      this.darkTheme = oneDark;
    }
  }

  async applySettings() {
    const { theme, keymap: map, fontSize } = this.settings;
    try {
      await this.loadPreferenceModules();
    } catch (error) {
      toast(`Could not load the ${map} key map or the theme: ${error.message}`, "error");
    }
    this.root.classList.toggle("theme-dark", theme === "dark");
    this.root.dataset.keymap = map;
    this.codeHost.style.setProperty("--editor-font-size", `${fontSize}px`);
    for (const [name, value] of Object.entries(this.settings)) {
      const field = this.settingsForm.elements[name];
      if (field) field.value = String(value);
    }
    this.view?.dispatch({ effects: this.preferences.reconfigure(this.preferenceExtensions()) });
    this.view?.requestMeasure();
    for (const terminal of this.openTerminals) terminal.applySettings(this.settings);
  }

  bindSettings() {
    this.settingsForm = this.root.querySelector("[data-settings]");
    const button = this.root.querySelector("[data-settings-button]");
    const show = (open) => {
      this.settingsForm.hidden = !open;
      button.setAttribute("aria-expanded", String(open));
      if (open) this.settingsForm.elements.theme.focus();
      else if (this.settingsForm.contains(document.activeElement)) button.focus();
    };
    button.addEventListener("click", () => show(this.settingsForm.hidden));
    this.settingsForm.querySelector("[data-settings-close]").addEventListener("click", () => show(false));
    this.settingsForm.addEventListener("submit", (event) => event.preventDefault());
    this.settingsForm.addEventListener("keydown", (event) => {
      if (event.key === "Escape") show(false);
    });
    this.settingsForm.addEventListener("change", () => {
      const fields = this.settingsForm.elements;
      this.settings = { theme: fields.theme.value, keymap: fields.keymap.value, fontSize: Number(fields.fontSize.value) };
      saveSettings(this.settings);
      this.applySettings();
    });
    this.settingsForm.querySelector("[data-reset-layout]").addEventListener("click", () => {
      resetAll();
      this.settings = { ...SETTINGS_DEFAULTS };
      this.layout = { ...LAYOUT_DEFAULTS };
      this.showHidden = false;
      this.applySettings();
      this.applyLayout();
      this.applyShowHidden();
      toast("Layout and settings reset", "ok", 2);
    });
    this.applySettings();
  }

  applyShowHidden() {
    this.root.querySelector("[data-toggle-hidden]").setAttribute("aria-pressed", String(this.showHidden));
    this.render();
  }

  applyLayout() {
    const body = this.root.querySelector(".editor-body");
    const { filesWidth, bottomHeight, filesOpen, bottomOpen } = this.layout;
    body.style.setProperty("--files-width", filesWidth ? `${filesWidth}px` : "");
    if (!filesWidth) body.style.removeProperty("--files-width");
    const bottom = this.panes.root;
    if (bottomHeight) bottom.style.setProperty("--bottom-height", `${bottomHeight}px`);
    else bottom.style.removeProperty("--bottom-height");
    body.classList.toggle("files-hidden", !filesOpen);
    bottom.classList.toggle("collapsed", !bottomOpen);
    this.root.querySelector("[data-toggle-files]").setAttribute("aria-pressed", String(filesOpen));
    this.root.querySelector("[data-toggle-bottom]").setAttribute("aria-pressed", String(bottomOpen));
    this.view?.requestMeasure();
    for (const pane of this.panes.panes) pane.onShow?.();
  }

  setLayout(changes) {
    this.layout = { ...this.layout, ...changes };
    saveLayout(this.layout);
    this.applyLayout();
  }

  bindLayout() {
    this.root.querySelector("[data-toggle-hidden]").addEventListener("click", () => {
      this.showHidden = !this.showHidden;
      saveShowHidden(this.showHidden);
      this.applyShowHidden();
    });
    this.root.querySelector("[data-toggle-files]").addEventListener("click", () => this.setLayout({ filesOpen: !this.layout.filesOpen }));
    this.root.querySelector("[data-toggle-bottom]").addEventListener("click", () => this.setLayout({ bottomOpen: !this.layout.bottomOpen }));
    // A pane's tab clicked, or a new pane, while the panes are folded away opens them again.
    this.panes.tabs.addEventListener("click", () => this.layout.bottomOpen || this.setLayout({ bottomOpen: true }));
    const body = this.root.querySelector(".editor-body");
    const codePane = this.root.querySelector(".code-pane");
    const clamp = (value, low, high) => Math.round(Math.max(low, Math.min(high, value)));
    const sizes = {
      files: (x) => ({ filesWidth: clamp(x - body.getBoundingClientRect().left, 140, body.clientWidth - 240) }),
      bottom: (_, y) => ({ bottomHeight: clamp(codePane.getBoundingClientRect().bottom - y, 140, codePane.clientHeight - 60) }),
    };
    for (const splitter of this.root.querySelectorAll("[data-splitter]")) {
      const which = splitter.dataset.splitter;
      splitter.addEventListener("pointerdown", (event) => {
        event.preventDefault();
        splitter.setPointerCapture(event.pointerId);
        splitter.classList.add("dragging");
        const move = (e) => {
          this.layout = { ...this.layout, ...sizes[which](e.clientX, e.clientY) };
          this.applyLayout();
        };
        const up = () => {
          splitter.classList.remove("dragging");
          splitter.removeEventListener("pointermove", move);
          splitter.removeEventListener("pointerup", up);
          saveLayout(this.layout);
        };
        splitter.addEventListener("pointermove", move);
        splitter.addEventListener("pointerup", up);
      });
      splitter.addEventListener("keydown", (event) => {
        const step = event.shiftKey ? 60 : 20;
        const now = which === "files" ? this.root.querySelector(".files-pane").getBoundingClientRect() : this.panes.root.getBoundingClientRect();
        let change = null;
        if (which === "files" && (event.key === "ArrowLeft" || event.key === "ArrowRight")) {
          change = sizes.files(now.right + (event.key === "ArrowLeft" ? -step : step), 0);
        } else if (which === "bottom" && (event.key === "ArrowUp" || event.key === "ArrowDown")) {
          change = sizes.bottom(0, now.top + (event.key === "ArrowUp" ? -step : step));
        }
        if (!change) return;
        event.preventDefault();
        this.setLayout(change);
      });
    }
    this.applyLayout();
    this.applyShowHidden();
  }

  // -- toolbar, keys ----------------------------------------------------------------------------

  bindToolbar() {
    this.root.addEventListener("click", (event) => {
      const action = event.target.closest("[data-file-action]")?.dataset.fileAction;
      if (action === "new-file") this.newEntry("file");
      else if (action === "new-folder") this.newEntry("dir");
      else if (action === "refresh") this.refreshAll();
      if (!event.target.closest("[data-context-menu]")) this.hideMenu();
    });
    this.saveButton.addEventListener("click", () => this.save());
    this.root.querySelector("[data-restart]")?.addEventListener("click", () => this.restart());
    this.root.querySelector("[data-new-terminal]").addEventListener("click", () => this.openTerminal());
    this.root.querySelector("[data-open-sql]")?.addEventListener("click", () => this.openSql());
    this.root.querySelector("[data-open-db-shell]")?.addEventListener("click", () => this.openTerminal("database"));
    const upload = this.root.querySelector("[data-upload]");
    upload.addEventListener("change", () => {
      if (upload.files.length) this.upload(this.targetDir(), upload.files).then(() => (upload.value = ""));
    });
  }

  bindKeys() {
    document.addEventListener("keydown", (event) => {
      if ((event.ctrlKey || event.metaKey) && event.key.toLowerCase() === "s") {
        if (this.settings.keymap === "emacs" && this.view?.dom.contains(event.target)) return; // emacs: search
        event.preventDefault();
        this.save();
      } else if (event.altKey && event.key === "Enter") {
        event.preventDefault();
        this.restart();
      } else if (event.altKey && event.code === "KeyC" && this.root.querySelector("[data-open-sql]")) {
        event.preventDefault();
        this.openSql();
      } else if (event.key === "Escape") {
        this.hideMenu();
      }
    });
  }

  // -- live tree: the file monitor ----------------------------------------------------------------

  startMonitor() {
    let failures = 0;
    this.monitor = new LiveSocket(`/ws/sites/${encodeURIComponent(this.site)}/files/monitor`, {
      onMessage: (message) => {
        if (message.connected) {
          failures = 0;
          for (const dir of this.expanded) this.watch(dir);
        } else if (message.event) {
          this.monitorEvent(message);
        }
      },
      onClose: (event) => {
        failures += 1;
        if (failures >= 3 && !this.polling) {
          // No monitor on this orchestrator: poll the open folders instead.
          this.monitor.close();
          this.monitor = null;
          this.polling = setInterval(() => {
            if (document.visibilityState === "visible") this.refreshAll();
          }, 10000);
        }
      },
    });
  }

  watch(dir) {
    this.listing.set(dir, new Set());
    this.monitor?.send({ action: "add", path: dir });
  }

  monitorEvent(message) {
    const { event, path } = message;
    const dir = parentOf(path || "");
    if (event === "create" || event === "update") {
      if (!this.dirs.has(dir)) return;
      this.dirs.get(dir).set(baseName(path), { name: baseName(path), type: message.type, mode: message.mode, size: message.size, mtime: message.mtime, target: message.target });
      this.listing.get(dir)?.add(baseName(path));
    } else if (event === "delete") {
      this.dirs.get(dir)?.delete(baseName(path));
      if (message.type === "dir") this.forget(path);
    } else if (event === "move") {
      const from = message.from || "";
      this.dirs.get(parentOf(from))?.delete(baseName(from));
      this.forget(from);
      if (this.dirs.has(dir)) {
        this.dirs.get(dir).set(baseName(path), { name: baseName(path), type: message.type, mode: message.mode, size: message.size, mtime: message.mtime, target: message.target });
      }
    } else if (event === "watched") {
      const seen = this.listing.get(path);
      const entries = this.dirs.get(path);
      if (seen && entries) {
        for (const name of [...entries.keys()]) if (!seen.has(name)) entries.delete(name);
      }
      this.listing.delete(path);
    } else if (event === "overflow") {
      for (const watched of this.expanded) this.watch(watched);
    } else if (event === "unwatched" && message.reason !== "removed") {
      this.forget(path);
    }
    this.render();
  }

  // -- bottom panes: log and terminals ------------------------------------------------------------

  openLog() {
    const output = h("pre", { class: "log-output", "aria-live": "off" });
    const body = h("div", {}, output);
    const note = (text) => output.append(h("span", { class: "log-note" }, `${text}\n`));
    const socket = new LiveSocket(`/ws/sites/${encodeURIComponent(this.site)}/logs?tail=200`, {
      onOpen: () => output.replaceChildren(),
      onMessage: (message) => {
        if (message.line === undefined) {
          if (message.error) note(message.error);
          return;
        }
        const atBottom = output.scrollTop + output.clientHeight >= output.scrollHeight - 20;
        output.append(document.createTextNode(message.line.endsWith("\n") ? message.line : message.line + "\n"));
        while (output.childNodes.length > LOG_LINES) output.firstChild.remove();
        if (atBottom) output.scrollTop = output.scrollHeight;
      },
      onClose: () => note("[log connection closed; reconnecting]"),
    });
    setInterval(() => socket.send({ heartbeat: Date.now() }), 30000);
    this.panes.add("Log", body, { closable: false });
  }

  /** The SQL console on the site's database, in a pane (one; opened again, it is shown). */
  async openSql() {
    if (!this.layout.bottomOpen) this.setLayout({ bottomOpen: true });
    if (this.sqlPane && this.panes.panes.includes(this.sqlPane)) {
      this.panes.show(this.sqlPane);
    } else {
      const { startConsole } = await import("./database.js");
      const input = h("textarea", { name: "sql", rows: "3", spellcheck: "false", placeholder: "SELECT 1;", "aria-label": "SQL", dataset: { sqlInput: "" } });
      const form = h(
        "form",
        { class: "sql-console", dataset: { site: this.site } },
        input,
        h("div", { class: "row" }, h("button", { class: "button small primary", type: "submit" }, "Run"), h("span", { class: "muted small" }, "Ctrl+Enter runs · ↑/↓ walk the history · one statement at a time")),
      );
      const output = h("div", { class: "sql-output", "aria-live": "polite" });
      startConsole(form, output);
      this.sqlPane = this.panes.add("SQL", h("div", { class: "pane-sql" }, form, output), {
        onShow: () => requestAnimationFrame(() => input.focus()),
      });
    }
  }

  /** A terminal pane: the login shell, or ("database") the site's psql or mysql. */
  async openTerminal(shell = "login") {
    const { SiteTerminal } = await import("./terminal.js");
    if (!this.layout.bottomOpen) this.setLayout({ bottomOpen: true });
    this.terminals += 1;
    const host = h("div", { class: "pane-terminal", dataset: { shell } });
    const body = h("div", {}, host);
    let terminal = null;
    const client = this.root.querySelector("[data-open-db-shell]")?.dataset.client || "SQL";
    const title = shell === "database" ? `${client} ${this.terminals}` : `Terminal ${this.terminals}`;
    const pane = this.panes.add(title, body, {
      onClose: () => {
        this.openTerminals.delete(terminal);
        terminal?.dispose();
      },
      onShow: () => requestAnimationFrame(() => terminal?.resize()),
    });
    host.style.height = "100%";
    terminal = new SiteTerminal(host, this.site, {
      shell,
      settings: this.settings,
      onState: (kind, text) => {
        pane.tab.title = text;
      },
    });
    this.openTerminals.add(terminal);
  }
}

export function startEditor(root) {
  const editor = new SiteEditor(root);
  editor.start();
  return editor;
}
