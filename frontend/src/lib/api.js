// Calls to Director's REST API with the session cookie and the page's CSRF token.

const meta = (name) => document.querySelector(`meta[name="${name}"]`)?.content || "";

export const csrfToken = () => meta("csrf-token");
export const styleNonce = () => meta("style-nonce");

/** An error answer from the API, with the field it names when it is a validation error. */
export class ApiError extends Error {
  constructor(status, code, message, field = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
  }
}

/** Parses "name: 2-32 characters..." into ["name", "2-32 characters..."]. */
export function splitFieldMessage(message) {
  const match = /^([a-z_]+(?:\.[a-z_]+)?): (.+)$/s.exec(message || "");
  return match ? [match[1], match[2]] : [null, message];
}

export async function api(method, url, body, { raw = false, headers = {} } = {}) {
  const init = {
    method,
    credentials: "same-origin",
    headers: { "X-CSRF-Token": csrfToken(), Accept: "application/json", ...headers },
  };
  if (body !== undefined && body !== null) {
    if (body instanceof Blob || body instanceof ArrayBuffer || typeof body === "string") {
      init.body = body;
    } else {
      init.body = JSON.stringify(body);
      init.headers["Content-Type"] = "application/json";
    }
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch {
    throw new ApiError(0, "network", "Director could not be reached. Check your connection and try again.");
  }
  if (!response.ok) {
    let payload = {};
    try {
      payload = await response.json();
    } catch {
      /* not JSON */
    }
    if (response.status === 401) {
      window.location.assign("/login?next=" + encodeURIComponent(location.pathname + location.search));
    }
    const [field, text] = splitFieldMessage(payload.message || `${response.status} ${response.statusText}`);
    throw new ApiError(response.status, payload.error || "error", text, field);
  }
  if (raw) return response;
  const type = response.headers.get("content-type") || "";
  return type.includes("json") ? response.json() : response.text();
}

/** The API URL of a site's file (each path segment encoded). */
export function fileUrl(site, path, trailingSlash = false) {
  const encoded = path.split("/").filter(Boolean).map(encodeURIComponent).join("/");
  return `/api/v1/sites/${encodeURIComponent(site)}/files/${encoded}${trailingSlash ? "/" : ""}`;
}
