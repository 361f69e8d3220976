// The console's one door to the daemon: fetch with the bearer token, the session (sign in,
// refresh through the HttpOnly cookie, sign out), problem+json errors, the volume-locked
// signal, a reader of server-sent events sent over POST, uploads with progress, and the
// unlock calls that work while the data volume is locked.

const CONSOLE = { "X-Sparkbrain-Console": "1" };

// The access token lives in memory only: a reload gets a new one from the refresh cookie.
let token = null;
let refreshTimer = 0;
let refreshing = null;
let notify = () => {};

/** An error answer, with the server's problem+json fields (or KServe's `{error}`). */
export class ApiError extends Error {
  constructor(status, title, detail, type = "") {
    super(detail);
    this.status = status;
    this.title = title;
    this.detail = detail;
    this.type = type;
  }
}

/** Whether an error says the data volume is locked. */
export const isLocked = (e) => e instanceof ApiError && e.status === 503 && /volume-locked$/.test(e.type);

/**
 * Receives session changes: `{kind: "session", user}`, `{kind: "signed-out"}`,
 * `{kind: "locked", detail}`.
 */
export function onSessionChange(fn) {
  notify = fn;
}

function problem(status, statusText, body) {
  const detail =
    (body && (body.detail || body.error)) || `the server answered ${status} ${statusText}`.trim();
  const err = new ApiError(status, (body && body.title) || statusText || "Error", detail, (body && body.type) || "");
  if (isLocked(err)) notify({ kind: "locked", detail });
  return err;
}

async function errorFrom(res) {
  let body = null;
  try {
    body = JSON.parse(await res.text());
  } catch {
    // Not JSON: the status line says it.
  }
  return problem(res.status, res.statusText, body);
}

function established(body) {
  token = body.access_token;
  clearTimeout(refreshTimer);
  const seconds = Math.max(10, (body.expires_in || 900) - 60);
  refreshTimer = setTimeout(() => refresh().catch(() => {}), seconds * 1000);
  notify({ kind: "session", user: body.user });
  return body.user;
}

/** Signs in with a name and password; the server sets the refresh cookie. */
export async function signIn(username, password) {
  const res = await fetch("/api/v1/auth/session", {
    method: "POST",
    body: new URLSearchParams({ username, password }),
    credentials: "same-origin",
  });
  if (!res.ok) throw await errorFrom(res);
  return established(await res.json());
}

/**
 * Gets a new access token with the refresh cookie. Resolves to the user, or null (and a
 * `signed-out` notice) when there is no session.
 */
export function refresh() {
  refreshing ||= (async () => {
    try {
      const res = await fetch("/api/v1/auth/session/refresh", {
        method: "POST",
        headers: CONSOLE,
        credentials: "same-origin",
      });
      if (res.status === 401) {
        token = null;
        notify({ kind: "signed-out" });
        return null;
      }
      if (!res.ok) throw await errorFrom(res);
      return established(await res.json());
    } catch (e) {
      // A network blip must not end the session: try again shortly.
      if (token) {
        clearTimeout(refreshTimer);
        refreshTimer = setTimeout(() => refresh().catch(() => {}), 15000);
      }
      throw e;
    } finally {
      refreshing = null;
    }
  })();
  return refreshing;
}

/** Signs out: revokes the session and clears the cookie. */
export async function signOut() {
  clearTimeout(refreshTimer);
  try {
    await fetch("/api/v1/auth/session", { method: "DELETE", headers: CONSOLE, credentials: "same-origin" });
  } finally {
    token = null;
    notify({ kind: "signed-out" });
  }
}

/** Sends a request with the bearer token (refreshing it once on 401); throws ApiError. */
export async function send(method, path, { json, signal } = {}) {
  const attempt = () => {
    const headers = {};
    if (token) headers.Authorization = `Bearer ${token}`;
    if (json !== undefined) headers["Content-Type"] = "application/json";
    return fetch(path, {
      method,
      headers,
      body: json === undefined ? undefined : JSON.stringify(json),
      signal,
    });
  };
  let res = await attempt();
  if (res.status === 401 && token && (await refresh())) res = await attempt();
  if (!res.ok) throw await errorFrom(res);
  return res;
}

/** Sends a request and parses the JSON answer (null for an empty one). */
export async function call(method, path, json) {
  const res = await send(method, path, { json });
  const text = await res.text();
  return text ? JSON.parse(text) : null;
}

/** GET and parse. */
export const get = (path) => call("GET", path);

/** Encodes one path segment. */
export const seg = encodeURIComponent;

/** Reads a server-sent event stream from a fetch response: yields `{event, data}`. */
export async function* serverEvents(res) {
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line === "" || line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") event = text;
        else if (field === "data") data.push(text);
      }
      if (data.length) yield { event, data: data.join("\n") };
    }
  }
}

/**
 * Uploads one file to a collection as multipart part `file`, reporting progress (0..1).
 * Resolves to `{status, body}` (202 queued, 200 duplicate); rejects with ApiError.
 */
export function uploadFile(collection, file, onProgress) {
  const once = () =>
    new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", `/api/v1/collections/${seg(collection)}/documents`);
      if (token) xhr.setRequestHeader("Authorization", `Bearer ${token}`);
      xhr.upload.onprogress = (e) => e.lengthComputable && onProgress(e.loaded / e.total);
      xhr.onload = () => {
        let body = null;
        try {
          body = JSON.parse(xhr.responseText);
        } catch {
          // Not JSON.
        }
        if (xhr.status >= 200 && xhr.status < 300) resolve({ status: xhr.status, body });
        else reject(problem(xhr.status, xhr.statusText, body));
      };
      xhr.onerror = () => reject(new ApiError(0, "Network error", "the connection broke during the upload"));
      const form = new FormData();
      form.append("file", file, file.name);
      xhr.send(form);
    });
  return once().catch(async (e) => {
    if (e.status === 401 && (await refresh())) return once();
    throw e;
  });
}

/**
 * Fetches `path` with the bearer token and opens it in a new tab (at `page` for a PDF). The
 * tab is opened at once, within the click, so that pop-up blockers let it through.
 */
export async function openFetched(path, page) {
  const tab = window.open("", "_blank");
  if (!tab) throw new ApiError(0, "Blocked", "the browser blocked the new tab: allow pop-ups for this console");
  try {
    const blob = await (await send("GET", path)).blob();
    const url = URL.createObjectURL(blob);
    tab.location.href = url + (page && blob.type === "application/pdf" ? `#page=${page}` : "");
    setTimeout(() => URL.revokeObjectURL(url), 5 * 60 * 1000);
  } catch (e) {
    tab.close();
    throw e;
  }
}

/** Opens a document's original file in a new tab, at `page` for a PDF. */
export const openDocument = (id, page) => openFetched(`/api/v1/documents/${seg(id)}/content`, page);

function basic(name, password) {
  const bytes = new TextEncoder().encode(`${name}:${password}`);
  return `Basic ${btoa(String.fromCharCode(...bytes))}`;
}

async function locked(method, path, name, password, json) {
  const res = await fetch(path, {
    method,
    headers: { Authorization: basic(name, password), ...(json ? { "Content-Type": "application/json" } : {}) },
    body: json ? JSON.stringify(json) : undefined,
  });
  if (!res.ok) throw await errorFrom(res);
  return res.json();
}

/** Lists the volumes with an admin's name and password (works while locked). */
export const lockedVolumes = (name, password) => locked("GET", "/api/v1/volumes", name, password);

/** Unlocks a volume with an admin's name and password and its passphrase. */
export const unlockVolume = (volume, name, password, passphrase) =>
  locked("POST", `/api/v1/volumes/${seg(volume)}/unlock`, name, password, passphrase ? { passphrase } : {});

/** Waits until `/readyz` answers 200. */
export async function waitReady(signal) {
  for (;;) {
    try {
      if ((await fetch("/readyz", { signal })).ok) return;
    } catch (e) {
      if (signal && signal.aborted) throw e;
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}
