// A site page's backups: its snapshots (time, size) with restore buttons, the latest backup
// runs (a failure shows; administrators see why), "back up now", and one path restored alone.
import { api } from "./lib/api.js";
import { h, toast } from "./lib/ui.js";

function size(bytes) {
  if (bytes === null || bytes === undefined) return "?";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}

function when(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString();
}

function restoreButton(site, snapshot, label, body, confirmText) {
  return h(
    "button",
    {
      type: "button",
      class: "button small",
      dataset: {
        apiAction: `/api/v1/sites/${encodeURIComponent(site)}/backups/${snapshot.id}/restore`,
        body: JSON.stringify(body),
        then: "operation",
        operationTarget: "#live-operation",
        confirm: confirmText,
      },
    },
    label,
  );
}

function renderSnapshots(root, site, hasDatabase, answer) {
  const list = root.querySelector("[data-backup-list]");
  const { snapshots, runs } = answer;
  const last = runs[0];
  const status = root.querySelector("[data-backup-status]");
  if (last && last.status === "failed") {
    status.replaceChildren(h("p", { class: "error-text", role: "alert" }, `The latest backup failed (${when(last.started_at)}): ${last.error}`));
  } else if (last && last.status === "running") {
    status.replaceChildren(h("p", { class: "muted" }, "A backup is running…"));
  } else {
    status.replaceChildren();
  }
  if (snapshots.length === 0) {
    list.replaceChildren(h("p", { class: "muted" }, "No backups yet."));
    return;
  }
  const rows = snapshots.map((snapshot) => {
    const stamp = when(snapshot.time);
    const buttons = [
      restoreButton(site, snapshot, "Restore files", { database: false }, `Put every file back as it was on ${stamp}? Files added since are removed.`),
    ];
    if (hasDatabase && snapshot.database) {
      buttons.push(restoreButton(site, snapshot, "Restore database", { files: false }, `Replace the database with its copy of ${stamp}? Changes since are lost.`));
    }
    return h(
      "tr",
      { dataset: { snapshot: snapshot.id } },
      h("td", {}, h("time", { datetime: snapshot.time }, stamp)),
      h("td", {}, size(snapshot.bytes)),
      h("td", {}, snapshot.database ? "files and database" : "files"),
      h("td", { class: "actions" }, buttons),
    );
  });
  const select = root.querySelector("[data-restore-snapshot]");
  select.replaceChildren(...snapshots.map((s) => h("option", { value: s.id }, when(s.time))));
  const pathForm = root.querySelector("[data-restore-path]");
  pathForm.hidden = false;
  pathForm.dispatchEvent(new Event("change"));
  list.replaceChildren(
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { class: "backups" },
        h("thead", {}, h("tr", {}, h("th", {}, "Taken"), h("th", {}, "Size"), h("th", {}, "Holds"), h("th", {}, "Restore"))),
        h("tbody", {}, rows),
      ),
    ),
  );
}

export function startBackups(root) {
  const site = root.dataset.site;
  const hasDatabase = root.dataset.hasDatabase === "yes";
  const load = () =>
    api("GET", `/api/v1/sites/${encodeURIComponent(site)}/backups`).then(
      (answer) => renderSnapshots(root, site, hasDatabase, answer),
      (error) => root.querySelector("[data-backup-list]").replaceChildren(h("p", { class: "muted" }, error.message)),
    );
  load();
  root.querySelector("[data-backup-now]")?.addEventListener("click", async (event) => {
    const button = event.currentTarget;
    button.disabled = true;
    try {
      await api("POST", `/api/v1/sites/${encodeURIComponent(site)}/backups`);
      toast("Backing up…", "ok");
      const poll = setInterval(async () => {
        const answer = await api("GET", `/api/v1/sites/${encodeURIComponent(site)}/backups`);
        renderSnapshots(root, site, hasDatabase, answer);
        if (!answer.runs[0] || answer.runs[0].status !== "running") {
          clearInterval(poll);
          button.disabled = false;
        }
      }, 2000);
    } catch (error) {
      toast(error.message, "error", 8);
      button.disabled = false;
    }
  });
  const form = root.querySelector("[data-restore-path]");
  if (!form) return;
  const button = form.querySelector("[data-restore-path-button]");
  const update = () => {
    const path = form.querySelector('[name="path"]').value.trim();
    const snapshot = form.querySelector("[data-restore-snapshot]").value;
    button.disabled = !path || !snapshot;
    Object.assign(button.dataset, {
      apiAction: `/api/v1/sites/${encodeURIComponent(site)}/backups/${snapshot}/restore`,
      body: JSON.stringify({ path, database: false }),
      then: "operation",
      operationTarget: "#live-operation",
      confirm: `Put ${path} back as it was then? The rest of the site stays as it is.`,
    });
  };
  form.addEventListener("input", update);
  form.addEventListener("change", update);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    update();
    if (!button.disabled) button.click();
  });
  update();
}
