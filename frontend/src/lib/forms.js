// Forms and buttons that act through the API: data-api forms, data-api-action buttons,
// data-api-change controls, and "type the name to confirm" forms.
import { api, fileUrl } from "./api.js";
import { watchOperation } from "./operations.js";
import { busy, clearErrors, h, showError, toast } from "./ui.js";

function setPath(target, path, value) {
  const parts = path.split(".");
  let node = target;
  for (const part of parts.slice(0, -1)) node = node[part] ??= {};
  node[parts.at(-1)] = value;
}

export function formBody(form) {
  const body = {};
  const skipEmpty = form.hasAttribute("data-skip-empty");
  for (const element of form.elements) {
    const name = element.name;
    if (!name || element.disabled || element.hasAttribute("data-no-submit") || element.hasAttribute("data-local")) continue;
    if (element.type === "radio") {
      if (element.checked) setPath(body, name, element.value);
      continue;
    }
    if (element.type === "checkbox") {
      setPath(body, name, element.checked);
      continue;
    }
    const raw = element.value;
    const type = element.dataset.type;
    if (type === "list") setPath(body, name, raw.split(/[\s,]+/).filter(Boolean));
    else if (type === "words") setPath(body, name, raw.split(/\s+/).filter(Boolean));
    else if (type === "lines") setPath(body, name, raw.split("\n").map((l) => l.trim()).filter(Boolean));
    else if (type === "number") {
      if (raw.trim() !== "") setPath(body, name, Number(raw));
    } else if (!(skipEmpty && raw === "")) setPath(body, name, raw);
  }
  return body;
}

/** What to do with an API answer, as a form's or button's data-then says. */
async function then(source, how, result, context) {
  how = how || "reload";
  if (how === "reload") return location.reload();
  if (how.startsWith("toast:")) return toast(how.slice(6), "ok");
  if (how.startsWith("redirect:")) {
    const name = result?.site?.name || context.name || "";
    return location.assign(how.slice(9).replace("{name}", encodeURIComponent(name)));
  }
  if (how === "show-token") {
    const out = document.querySelector("[data-token-output]");
    out.textContent = `${result.token}\n\nCopy it now: it is not shown again.`;
    out.hidden = false;
    return;
  }
  if (how === "operation" || how === "operation-reload") {
    const op = result?.operation || (result?.actions ? result : null);
    if (!op) {
      toast("Saved", "ok");
      if (how === "operation-reload") location.reload();
      return;
    }
    const target = document.querySelector(source.dataset.operationTarget || "#live-operation");
    if (!target) return;
    const card = target.closest("[hidden]");
    if (card) card.hidden = false;
    target.hidden = false;
    const final = await watchOperation(op, target);
    await finished(final, target, how);
  }
}

async function finished(op, target, how) {
  if (op.status === "failed") return;
  if (op.type === "delete_site") {
    for (const el of document.querySelectorAll(".site-deleted")) el.hidden = false;
    target.append(h("p", { class: "operation-done" }, "The site was deleted. ", h("a", { href: "/" }, "Back to your sites")));
    return;
  }
  if (op.type === "create_site") {
    target.append(
      h(
        "p",
        { class: "operation-done actions" },
        h("a", { class: "button primary", href: `/sites/${op.site}` }, `Open ${op.site}`),
        h("a", { class: "button", href: `/sites/${op.site}/files` }, "Open the editor"),
      ),
    );
    return;
  }
  if (how === "operation-reload" || op.type === "rename_site") {
    setTimeout(() => location.reload(), 600);
    return;
  }
  toast(`${op.type.replace(/_/g, " ")}: done`, "ok");
}

async function submitForm(form, event) {
  event.preventDefault();
  const confirmName = form.dataset.confirmName;
  if (confirmName !== undefined) {
    const typed = form.querySelector('[name="confirm"]')?.value;
    if (typed !== confirmName) return;
  }
  clearErrors(form);
  const button = event.submitter || form.querySelector('[type="submit"]');
  const body = formBody(form);
  const method = form.dataset.method || "POST";
  busy(button, true);
  try {
    const result = await api(method, form.dataset.api, method === "DELETE" ? undefined : body);
    if (form.dataset.runShTemplates && form.querySelector('[name="write_run_sh"]')?.checked) {
      const templates = JSON.parse(form.dataset.runShTemplates);
      const text = templates[body.image] || Object.values(templates)[0];
      const site = result?.site?.name;
      if (text && site) await api("PUT", fileUrl(site, "run.sh") + "?mode=755", text);
    }
    if (form.hasAttribute("data-hide-on-success")) form.hidden = true;
    if (form.hasAttribute("data-reset")) form.reset();
    await then(form, form.dataset.then, result, body);
  } catch (error) {
    if (error.status !== undefined) showError(form, error);
    else throw error;
  } finally {
    busy(button, false);
    if (confirmName !== undefined) updateConfirm(form);
  }
}

async function clickAction(button) {
  if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
  busy(button, true);
  try {
    const body = button.dataset.body ? JSON.parse(button.dataset.body) : undefined;
    const result = await api(button.dataset.method || "POST", button.dataset.apiAction, body);
    await then(button, button.dataset.then, result, {});
  } catch (error) {
    toast(error.message, "error", 8);
  } finally {
    busy(button, false);
  }
}

async function changeControl(control) {
  const value = control.type === "checkbox" ? control.checked : control.value;
  try {
    await api("PATCH", control.dataset.apiChange, { [control.dataset.field]: value });
    toast("Saved", "ok");
  } catch (error) {
    toast(error.message, "error", 8);
    if (control.type === "checkbox") control.checked = !control.checked;
  }
}

function updateConfirm(form) {
  const input = form.querySelector('[name="confirm"]');
  const button = form.querySelector('[type="submit"]');
  if (input && button) button.disabled = input.value !== form.dataset.confirmName;
}

async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    toast("Copied", "ok", 2);
  } catch {
    toast("The browser refused clipboard access; select the text and copy it", "error");
  }
}

export function startForms(root = document) {
  root.addEventListener("submit", (event) => {
    const form = event.target.closest("form[data-api]");
    if (form) submitForm(form, event);
  });
  root.addEventListener("click", (event) => {
    const button = event.target.closest("[data-api-action]");
    if (button) clickAction(button);
    const copy = event.target.closest("[data-copy]");
    if (copy) copyText(copy.dataset.copy);
  });
  root.addEventListener("change", (event) => {
    const control = event.target.closest("[data-api-change]");
    if (control) changeControl(control);
  });
  root.addEventListener("input", (event) => {
    const form = event.target.closest("form[data-confirm-name]");
    if (form) updateConfirm(form);
  });
}
