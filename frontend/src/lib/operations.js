// Operation progress: rendered like the server renders it, kept live by /ws/events (with a
// slow poll as a safety net, so a missed event never leaves a spinner forever).
import { api } from "./api.js";
import { LiveSocket } from "./socket.js";
import { h } from "./ui.js";

// People-readable names (the server's templates use the same words).
const STEPS = {
  apply_orchestrator: "Set up files, web server and container",
  apply_router: "Publish the site's addresses",
  remove_old_router_name: "Retire the old address",
  restart_process: "Restart the process",
  build_image: "Build the image",
  create_database: "Create the database",
  drop_database: "Delete the database",
  set_database_password: "Set a new database password",
  remove_router: "Unpublish the addresses",
  remove_orchestrator: "Remove container, files and configuration",
  delete_records: "Forget the site",
};
const TYPES = {
  create_site: "Creating the site",
  update_site: "Applying changes",
  rename_site: "Renaming the site",
  set_domains: "Updating custom domains",
  restart: "Restarting",
  deploy: "Deploying (git push)",
  set_image: "Changing the image",
  create_database: "Adding a database",
  delete_database: "Deleting the database",
  regenerate_secrets: "Regenerating secrets",
  delete_site: "Deleting the site",
  repair: "Rewriting the configuration",
};
const pretty = (name) => STEPS[name] || name.replace(/_/g, " ");
const title = (type) => TYPES[type] || type.replace(/_/g, " ");

export function renderOperation(op, { retry = false } = {}) {
  const steps = op.actions.map((action) =>
    h(
      "li",
      { class: `step step-${action.status}` },
      h("span", { class: "step-icon", "aria-hidden": "true" }),
      h("span", { class: "step-name" }, pretty(action.name)),
      action.message ? [" ", h("span", { class: "step-message" }, action.message)] : null,
    ),
  );
  const element = h(
    "div",
    { class: "operation", "data-operation": "", "data-operation-id": op.id, "data-site": op.site, "data-status": op.status },
    h(
      "div",
      { class: "operation-head" },
      h("strong", { class: "operation-title" }, title(op.type)),
      h("span", { class: `operation-status status-${op.status}` }, op.status),
    ),
    h("ol", { class: "steps" }, steps),
  );
  if (op.status === "failed") {
    element.append(h("p", { class: "operation-error", role: "alert" }, failureText(op)));
    if (retry) {
      element.append(
        h(
          "div",
          { class: "operation-actions" },
          h("button", { type: "button", class: "button small", "data-api-action": `/api/v1/operations/${op.id}/retry`, "data-then": "reload" }, "Retry"),
        ),
      );
    }
  }
  return element;
}

export function failureText(op) {
  const failed = op.actions.find((a) => a.status === "failed");
  const reason = op.error || failed?.message || "an unknown error";
  return `${title(op.type)} failed${failed ? ` at “${pretty(failed.name)}”` : ""}: ${reason}`;
}

// One events socket per page, shared by every watcher.
const listeners = new Map();
let events = null;

function eventsSocket() {
  if (events) return events;
  events = new LiveSocket("/ws/events", {
    onOpen: (socket) => socket.send({ subscribe: [...listeners.keys()] }),
    onMessage: (message) => {
      if (message.type !== "operation" || !message.operation) return;
      for (const listener of listeners.get(message.operation.site) || []) listener(message.operation);
    },
  });
  return events;
}

/** Calls C{listener(op)} for every operation event of site C{site}; returns a stop function. */
export function onSiteOperations(site, listener) {
  const socket = eventsSocket();
  if (!listeners.has(site)) {
    listeners.set(site, new Set());
    socket.send({ subscribe: [site] });
  }
  listeners.get(site).add(listener);
  return () => listeners.get(site)?.delete(listener);
}

/**
 * Shows operation C{op} in C{container} and keeps it current until it finishes; resolves
 * with the final operation.
 */
export function watchOperation(op, container, { retry = false } = {}) {
  return new Promise((resolve) => {
    let done = false;
    let poll = null;
    const show = (current) => {
      if (done || current.id !== op.id) return;
      container.replaceChildren(renderOperation(current, { retry }));
      container.hidden = false;
      if (current.status === "succeeded" || current.status === "failed") {
        done = true;
        stop();
        clearInterval(poll);
        resolve(current);
      }
    };
    const stop = onSiteOperations(op.site, show);
    show(op);
    const refresh = () =>
      api("GET", `/api/v1/operations/${op.id}`).then(show, () => {
        /* the site may be gone (deleted): the event says so */
      });
    refresh();
    poll = setInterval(refresh, 4000);
  });
}
