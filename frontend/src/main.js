// Every dashboard page loads this module; heavier parts (editor, terminal) load on demand.
import { startForms } from "./lib/forms.js";
import { onSiteOperations, renderOperation, watchOperation } from "./lib/operations.js";
import { startStatusDots } from "./lib/status.js";

function startMenu() {
  const toggle = document.querySelector(".menu-toggle");
  const nav = document.getElementById("main-nav");
  if (!toggle || !nav) return;
  toggle.addEventListener("click", () => {
    const open = nav.classList.toggle("open");
    toggle.setAttribute("aria-expanded", String(open));
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && nav.classList.contains("open")) {
      nav.classList.remove("open");
      toggle.setAttribute("aria-expanded", "false");
      toggle.focus();
    }
  });
}

/** A site page's operation box: shows whatever operation runs on the site, live. */
function startLiveOperations() {
  for (const slot of document.querySelectorAll("[data-live-operation]")) {
    const site = slot.dataset.site;
    const retry = slot.querySelector("[data-operation]")?.dataset.retry === "yes";
    const existing = slot.querySelector("[data-operation]");
    if (existing && ["pending", "running"].includes(existing.dataset.status)) {
      fetch(`/api/v1/operations/${existing.dataset.operationId}`, { credentials: "same-origin" })
        .then((r) => (r.ok ? r.json() : null))
        .then((op) => op && watchOperation(op, slot, { retry }).then(() => reloadSoon(op)));
    }
    onSiteOperations(site, (op) => {
      const shown = slot.querySelector("[data-operation]");
      if (shown && Number(shown.dataset.operationId) === op.id) return; // a watcher has it
      if (op.status === "pending" || op.status === "running") {
        const card = slot.closest("[hidden]");
        if (card) card.hidden = false;
        slot.hidden = false;
        slot.replaceChildren(renderOperation(op));
        watchOperation(op, slot).then(reloadSoon);
      }
    });
  }
}

function reloadSoon(op) {
  if (op.status === "succeeded" && op.type !== "delete_site" && !document.querySelector("[data-editor]")) {
    setTimeout(() => location.reload(), 800);
  }
}

function startNamePreview() {
  const form = document.querySelector('form[data-api="/api/v1/sites"]');
  const input = form?.querySelector('input[name="name"]');
  const preview = document.querySelector("[data-url-preview]");
  if (!input || !preview) return;
  // purpose -> [before the name, after it], from the purposes' URL formats
  const formats = JSON.parse(preview.dataset.urlFormats);
  const purpose = form.querySelector('[name="purpose"]');
  const update = () => {
    const [before, after] = formats[purpose?.value] || formats.project;
    preview.textContent = before + (input.value.trim().toLowerCase() || "name") + after;
  };
  input.addEventListener("input", update);
  purpose?.addEventListener("change", update);
}

async function startPageModules() {
  const editor = document.querySelector("[data-editor]");
  if (editor) (await import("./editor.js")).startEditor(editor);
  const terminal = document.querySelector("[data-terminal-page]");
  if (terminal) (await import("./terminal.js")).startTerminalPage(terminal);
  const tasks = document.querySelector("[data-tasks]");
  if (tasks) (await import("./tasks.js")).startTasks(tasks);
  const backups = document.querySelector("[data-backups]");
  if (backups) (await import("./backups.js")).startBackups(backups);
  if (document.querySelector("[data-sql-console], [data-reveal-database]")) {
    (await import("./database.js")).startDatabase(document);
  }
}

function start() {
  startMenu();
  startForms();
  startNamePreview();
  startStatusDots();
  startLiveOperations();
  startPageModules().catch((error) => console.error("page module failed", error));
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
else start();
