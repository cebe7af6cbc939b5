// The database page: reveal the password on request, and an SQL console with history.
import { api } from "./lib/api.js";
import { h, toast } from "./lib/ui.js";

const HISTORY_LIMIT = 100;

function resultTable(result) {
  if (!result.columns || result.columns.length === 0) {
    return h("p", { class: "muted" }, `OK, ${result.rowcount ?? 0} row(s) affected.`);
  }
  const table = h(
    "table",
    {},
    h("thead", {}, h("tr", {}, result.columns.map((c) => h("th", {}, c)))),
    h(
      "tbody",
      {},
      result.rows.map((row) => h("tr", {}, row.map((v) => h("td", {}, v === null ? "NULL" : typeof v === "object" ? JSON.stringify(v) : String(v))))),
    ),
  );
  const note = h("p", { class: "muted small" }, `${result.rowcount} row(s)${result.truncated ? ", only the first ones shown" : ""}`);
  return h("div", {}, h("div", { class: "table-wrap" }, table), note);
}

/** An SQL console: C{form} holds the [data-sql-input] box, results go into C{output}. */
export function startConsole(form, output = document.querySelector("[data-sql-output]")) {
  const site = form.dataset.site;
  const input = form.querySelector("[data-sql-input]");
  const key = `director:sql:${site}`;
  let history = [];
  try {
    history = JSON.parse(localStorage.getItem(key) || "[]");
  } catch {
    history = [];
  }
  let position = history.length;

  async function run() {
    const sql = input.value.trim();
    if (!sql) return;
    history = [...history.filter((q) => q !== sql), sql].slice(-HISTORY_LIMIT);
    position = history.length;
    try {
      localStorage.setItem(key, JSON.stringify(history));
    } catch {
      /* storage full or off */
    }
    const entry = h("div", { class: "sql-entry" }, h("div", { class: "sql-query" }, sql), h("p", { class: "muted small" }, "Running…"));
    output.prepend(entry);
    try {
      const result = await api("POST", `/api/v1/sites/${encodeURIComponent(site)}/database/query`, { sql });
      entry.lastChild.replaceWith(resultTable(result));
    } catch (error) {
      entry.lastChild.replaceWith(h("p", { class: "field-error", role: "alert" }, error.message));
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    run();
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      run();
    } else if (event.key === "ArrowUp" && (input.value === "" || input.selectionStart === 0) && position > 0) {
      event.preventDefault();
      position -= 1;
      input.value = history[position];
    } else if (event.key === "ArrowDown" && input.selectionEnd === input.value.length && position < history.length) {
      event.preventDefault();
      position += 1;
      input.value = history[position] || "";
    }
  });
}

function startReveal(button) {
  let shown = false;
  button.addEventListener("click", async () => {
    const password = document.querySelector("[data-db-password]");
    const url = document.querySelector("[data-db-url]");
    if (shown) {
      password.textContent = "••••••••••";
      url.textContent = "hidden";
      button.textContent = "Show";
      shown = false;
      return;
    }
    try {
      const db = await api("GET", `/api/v1/sites/${encodeURIComponent(button.dataset.revealDatabase)}/database`);
      password.textContent = db.password;
      url.textContent = db.url;
      button.textContent = "Hide";
      shown = true;
    } catch (error) {
      toast(error.message, "error");
    }
  });
}

export function startDatabase(root) {
  const form = root.querySelector("[data-sql-console]");
  if (form) startConsole(form);
  const reveal = root.querySelector("[data-reveal-database]");
  if (reveal) startReveal(reveal);
}
