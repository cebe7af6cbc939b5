// The scheduled tasks page: the site's tasks with their last run, "run now", pause, delete,
// and each task's runs with their output (text only: output is never read as HTML).
import { api } from "./lib/api.js";
import { h, toast } from "./lib/ui.js";

const STATUS_TEXT = {
  running: "running",
  succeeded: "succeeded",
  failed: "failed",
  timed_out: "timed out",
  skipped: "skipped",
  interrupted: "interrupted",
};

const when = (iso) => (iso ? new Date(iso).toLocaleString() : "—");

function statusBadge(run) {
  if (!run) return h("span", { class: "muted small" }, "never run");
  const css = run.status === "timed_out" || run.status === "interrupted" ? "failed" : run.status === "skipped" ? "pending" : run.status;
  return h("span", { class: `operation-status status-${css}` }, STATUS_TEXT[run.status] || run.status);
}

function runView(run) {
  const code = run.exit_code === null ? "" : ` · exit ${run.exit_code}`;
  const duration = run.duration === null ? "" : ` · ${run.duration.toFixed(1)} s`;
  return h(
    "div",
    { class: "task-run" },
    h("p", {}, statusBadge(run), " ", h("span", { class: "small" }, `${when(run.started_at)}${duration}${code} · ${run.trigger === "manual" ? "run now" : "scheduled"}`)),
    run.message ? h("p", { class: "muted small" }, run.message) : null,
    run.output ? h("pre", { class: "task-output" }, run.output) : null,
    run.output_truncated ? h("p", { class: "muted small" }, "Only the beginning and the end of the output were kept.") : null,
  );
}

export function startTasks(root) {
  const site = root.dataset.site;
  const base = `/api/v1/sites/${encodeURIComponent(site)}/tasks`;
  const runsCard = document.querySelector("[data-task-runs]");
  const runsTitle = document.querySelector("[data-task-runs-title]");
  const runsList = document.querySelector("[data-task-runs-list]");
  let shown = null; // the task whose runs are open
  let timer = null;
  let generation = 0; // only the newest refresh renders (an older answer may come later)

  async function showRuns(task) {
    shown = task;
    const { runs } = await api("GET", `${base}/${task.id}/runs`);
    runsTitle.textContent = `Runs of ${task.name || task.command}`;
    runsList.replaceChildren(...(runs.length ? runs.map(runView) : [h("p", { class: "muted" }, "No runs yet.")]));
    runsCard.hidden = false;
    return runs;
  }

  async function act(button, method, url, body, message) {
    button.disabled = true;
    try {
      await api(method, url, body);
      if (message) toast(message, "ok");
    } catch (error) {
      toast(error.message, "error", 8);
    } finally {
      button.disabled = false;
    }
    await refresh();
  }

  function row(task) {
    const id = task.id;
    return h(
      "tr",
      {},
      h("td", {}, h("strong", {}, task.name || ""), task.name ? h("br") : null, h("code", { class: "small" }, task.command)),
      h("td", {}, h("code", {}, task.schedule), h("br"), h("span", { class: "muted small" }, task.enabled ? `next ${when(task.next_run_at)}` : "paused")),
      h("td", {}, `${task.timeout} s`),
      h("td", {}, statusBadge(task.last_run)),
      h(
        "td",
        { class: "task-actions" },
        h("button", { type: "button", class: "button small", onclick: (e) => act(e.target, "POST", `${base}/${id}/run`, null, "Started").then(() => showRuns(task)) }, "Run now"),
        h("button", { type: "button", class: "button small", onclick: () => showRuns(task) }, "Runs"),
        h("button", { type: "button", class: "button small", onclick: (e) => act(e.target, "PATCH", `${base}/${id}`, { enabled: !task.enabled }, task.enabled ? "Paused" : "Resumed") }, task.enabled ? "Pause" : "Resume"),
        h(
          "button",
          {
            type: "button",
            class: "button small danger",
            onclick: (e) => window.confirm("Delete this task and its runs?") && act(e.target, "DELETE", `${base}/${id}`, null, "Deleted"),
          },
          "Delete",
        ),
      ),
    );
  }

  async function refresh() {
    clearTimeout(timer);
    const mine = ++generation;
    let tasks = [];
    try {
      ({ tasks } = await api("GET", base));
    } catch (error) {
      if (mine === generation) root.replaceChildren(h("p", { class: "field-error", role: "alert" }, error.message));
      return;
    }
    if (mine !== generation) return;
    if (!tasks.length) {
      root.replaceChildren(h("p", { class: "muted" }, "No scheduled tasks yet. Add one with the form."));
    } else {
      root.replaceChildren(
        h(
          "div",
          { class: "table-wrap" },
          h(
            "table",
            { class: "tasks" },
            h("thead", {}, h("tr", {}, ["Command", "Schedule", "Time limit", "Last run", ""].map((t) => h("th", {}, t)))),
            h("tbody", {}, tasks.map(row)),
          ),
        ),
      );
    }
    let running = tasks.some((t) => t.last_run?.status === "running");
    if (shown) {
      const current = tasks.find((t) => t.id === shown.id);
      if (current) running = (await showRuns(current)).some((r) => r.status === "running") || running;
      else runsCard.hidden = true;
    }
    if (running && mine === generation) timer = setTimeout(refresh, 2000);
  }

  refresh();
}
