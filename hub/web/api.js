// The hub's JSON API: the session cookie rides by itself (HttpOnly); state-changing requests
// carry the session's CSRF token in X-CSRF-Token (hub/api.py rule 2).

export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

let csrf = "";
let offsetMs = 0;

export function setCsrf(token) { csrf = token; }

/** The hub's clock, in epoch seconds (from the Date header when ours is off by more than 2 s). */
export function serverNow() { return (Date.now() + offsetMs) / 1000; }

export async function api(method, path, body) {
  const opt = { method, headers: {}, credentials: "same-origin", cache: "no-store" };
  if (body !== undefined) {
    opt.headers["Content-Type"] = "application/json";
    opt.body = JSON.stringify(body);
  }
  if (method !== "GET") opt.headers["X-CSRF-Token"] = csrf;
  const resp = await fetch(path, opt);
  const date = resp.headers.get("Date");
  if (date) {
    const off = Date.parse(date) - Date.now();
    offsetMs = Math.abs(off) > 2000 ? off : 0;
  }
  let data = null;
  if (resp.status !== 204) {
    const text = await resp.text();
    const json = (resp.headers.get("Content-Type") || "").startsWith("application/json");
    data = json && text ? JSON.parse(text) : (text ? { error: text } : null);
  }
  if (!resp.ok) throw new ApiError(resp.status, (data && data.error) || resp.statusText);
  return data;
}
