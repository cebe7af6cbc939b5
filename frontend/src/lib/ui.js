// Small DOM helpers: element creation (text only, never HTML), toasts, busy buttons, field errors.

export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes || {})) {
    if (value === false || value === null || value === undefined) continue;
    if (key === "class") element.className = value;
    else if (key === "text") element.textContent = value;
    else if (key.startsWith("on") && typeof value === "function") element.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(element.dataset, value);
    else element.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

export function toast(message, kind = "info", seconds = 4) {
  const host = document.getElementById("toasts");
  if (!host) return;
  const item = h("div", { class: `toast ${kind}`, role: kind === "error" ? "alert" : "status" }, message);
  host.append(item);
  setTimeout(() => item.remove(), seconds * 1000);
}

export function busy(button, isBusy) {
  if (!button) return;
  button.toggleAttribute("aria-busy", isBusy);
  if (isBusy) button.setAttribute("aria-busy", "true");
  button.disabled = isBusy;
}

export function clearErrors(form) {
  for (const holder of form.querySelectorAll("[data-error-for]")) {
    holder.hidden = true;
    holder.textContent = "";
  }
  for (const input of form.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
}

/** Shows an API error next to the field it names (or at the form's end), keeping what was typed. */
export function showError(form, error) {
  const field = error.field || "";
  const base = field.split(".")[0];
  let holder =
    form.querySelector(`[data-error-for="${CSS.escape(field)}"]`) ||
    form.querySelector(`[data-error-for="${CSS.escape(base)}"]`) ||
    form.querySelector('[data-error-for="form"]') ||
    form.closest("section, .card")?.querySelector('[data-error-for="form"]');
  const text = error.field ? `${prettyField(error.field)}: ${error.message}` : error.message;
  if (!holder) {
    toast(text, "error");
    return;
  }
  holder.textContent = error.field && holder.dataset.errorFor === field ? error.message : text;
  holder.hidden = false;
  const input = form.querySelector(`[name="${CSS.escape(field)}"]`) || form.querySelector(`[name="${CSS.escape(base)}"]`);
  if (input) {
    input.setAttribute("aria-invalid", "true");
    input.setAttribute("aria-describedby", [input.getAttribute("aria-describedby"), holder.id].filter(Boolean).join(" "));
    input.focus();
  }
}

function prettyField(field) {
  return field.replace(/_/g, " ").replace(/\./g, " ");
}

let lost = 0;
/** The banner saying live updates are interrupted; counted so several sockets share it. */
export function connectionLost(delta) {
  lost = Math.max(0, lost + delta);
  const banner = document.querySelector(".connection-banner");
  if (!banner) return;
  banner.textContent = "Connection lost — reconnecting…";
  banner.hidden = lost === 0;
}
