// The REST API, same origin, relative URLs ("v1/flows" resolves against /ui, so the console
// also works behind a path prefix). Errors come back as RFC 9457 problem details; every
// failure is thrown as an ApiError carrying the problem, for the console to show.

const TOKEN_KEY = "dwasm.console.token";

export function getToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  } catch {
    return "";
  }
}

export function setToken(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
}

export function clearToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.name = "ApiError";
    this.status = status;
    this.problem = problem;
  }

  get title() {
    return this.problem.title || `HTTP ${this.status}`;
  }
}

async function problemOf(response) {
  const type = response.headers.get("content-type") || "";
  const text = await response.text().catch(() => "");
  if (type.includes("json")) {
    try {
      const body = JSON.parse(text);
      if (body && typeof body === "object") {
        return { title: response.statusText || `HTTP ${response.status}`, ...body };
      }
    } catch {
      // fall through: not JSON after all
    }
  }
  return { title: `HTTP ${response.status} ${response.statusText}`.trim(),
           detail: text.slice(0, 500) || null };
}

/**
 * Calls the API. `path` is relative ("v1/flows/f-1"); `query` values that are empty are left
 * out; `json` is sent as a JSON body, `body` as is (with `contentType`). Returns the parsed JSON
 * (null for 204).
 */
export async function api(path, { method = "GET", query, json, body, contentType, signal } = {}) {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== undefined && v !== null && v !== "") params.set(k, String(v));
  }
  const url = params.toString() ? `${path}?${params}` : path;
  const headers = { Accept: "application/json, application/problem+json" };
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  let payload = body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(json);
  } else if (contentType) {
    headers["Content-Type"] = contentType;
  }
  let response;
  try {
    response = await fetch(url, { method, headers, body: payload, signal, cache: "no-store" });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, { title: "Cannot reach the server",
                            detail: `${err.message || err} (${method} ${url})` });
  }
  if (!response.ok) throw new ApiError(response.status, await problemOf(response));
  if (response.status === 204) return null;
  return response.json();
}

/** Path segment for an id (flow ids may contain characters that need escaping). */
export const seg = (id) => encodeURIComponent(id);
