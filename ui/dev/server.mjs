// DEV ONLY — never shipped, never used by the daemon. A throwaway server for working on the
// console before the daemon serves it: it serves ../../assets/console like the daemon will
// (GET / and /console/<file>, with the daemon's strict CSP), proxies the API to a running
// daemon, and emulates the console's three session routes on top of the daemon's OAuth2
// routes (/api/v1/auth/token, /refresh, /logout). With LOCKED=1 it plays a daemon whose data
// volume is locked (any Basic credentials and the passphrase "open" unlock it).
//
//   DAEMON=http://127.0.0.1:18470 PORT=18480 node dev/server.mjs
import { readFileSync } from "node:fs";
import http from "node:http";
import { extname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";

const daemon = new URL(process.env.DAEMON || "http://127.0.0.1:18470");
const port = Number(process.env.PORT || 18480);
const root = fileURLToPath(new URL("../../assets/console/", import.meta.url));
let locked = process.env.LOCKED === "1";
const COOKIE = "sparkbrain_session";
const TYPES = { ".html": "text/html; charset=utf-8", ".js": "text/javascript", ".css": "text/css" };

function problem(res, status, code, detail) {
  res.writeHead(status, { "Content-Type": "application/problem+json" });
  res.end(JSON.stringify({ type: `urn:sparkbrain:problem:${code}`, title: code, status, detail, code }));
}

function body(req) {
  return new Promise((resolve) => {
    const parts = [];
    req.on("data", (c) => parts.push(c));
    req.on("end", () => resolve(Buffer.concat(parts)));
  });
}

async function daemonCall(path, init) {
  const r = await fetch(new URL(path, daemon), init);
  return { status: r.status, json: await r.json().catch(() => null) };
}

function cookieOf(req) {
  const m = (req.headers.cookie || "").match(new RegExp(`(?:^|; )${COOKIE}=([^;]+)`));
  return m ? decodeURIComponent(m[1]) : null;
}

async function established(res, pair) {
  const me = await daemonCall("/api/v1/auth/me", { headers: { Authorization: `Bearer ${pair.access_token}` } });
  res.writeHead(200, {
    "Content-Type": "application/json",
    "Cache-Control": "no-store",
    "Set-Cookie": `${COOKIE}=${encodeURIComponent(pair.refresh_token)}; HttpOnly; SameSite=Strict; Path=/api/v1/auth/session`,
  });
  const { user_id, name, role } = me.json;
  res.end(JSON.stringify({ access_token: pair.access_token, token_type: "bearer", expires_in: pair.expires_in, user: { user_id, name, role } }));
}

function passOn(res, r) {
  res.writeHead(r.status, { "Content-Type": "application/problem+json" });
  res.end(JSON.stringify(r.json));
}

async function session(req, res, path) {
  if (req.method === "POST" && path === "/api/v1/auth/session") {
    const form = new URLSearchParams((await body(req)).toString());
    form.set("grant_type", "password");
    const r = await daemonCall("/api/v1/auth/token", { method: "POST", body: form });
    return r.status === 200 ? established(res, r.json) : passOn(res, r);
  }
  if (req.headers["x-sparkbrain-console"] !== "1") return problem(res, 403, "forbidden", "missing X-Sparkbrain-Console");
  const refresh = cookieOf(req);
  if (req.method === "POST" && path === "/api/v1/auth/session/refresh") {
    if (!refresh) return problem(res, 401, "unauthorized", "no session");
    const r = await daemonCall("/api/v1/auth/refresh", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ refresh_token: refresh }),
    });
    return r.status === 200 ? established(res, r.json) : passOn(res, r);
  }
  if (req.method === "DELETE" && path === "/api/v1/auth/session") {
    if (refresh)
      await daemonCall("/api/v1/auth/logout", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ refresh_token: refresh }),
      });
    res.writeHead(204, { "Set-Cookie": `${COOKIE}=; HttpOnly; SameSite=Strict; Path=/api/v1/auth/session; Max-Age=0` });
    return res.end();
  }
  return problem(res, 404, "not-found", `no route ${req.method} ${path}`);
}

async function lockedRoute(req, res, path) {
  if (path === "/readyz") return problem(res, 503, "not-ready", "volume: locked");
  if (path === "/api/v1/volumes" || /^\/api\/v1\/volumes\/[^/]+\/unlock$/.test(path)) {
    if (!(req.headers.authorization || "").startsWith("Basic ")) return problem(res, 401, "unauthorized", "send an admin's name and password as HTTP Basic credentials");
    const vol = { name: "data", device: "/dev/vdb", unlocked: false, present: true, data: true, mounted_at: null };
    if (req.method === "GET") {
      res.writeHead(200, { "Content-Type": "application/json" });
      return res.end(JSON.stringify({ volumes: [vol] }));
    }
    const { passphrase } = JSON.parse((await body(req)).toString() || "{}");
    if (passphrase !== "open") return problem(res, 403, "wrong-passphrase", "the passphrase does not open volume data");
    locked = false;
    res.writeHead(200, { "Content-Type": "application/json" });
    return res.end(JSON.stringify({ unlocked: true, volume: { ...vol, unlocked: true } }));
  }
  if (path === "/healthz" || path === "/metrics") return null;
  return problem(res, 503, "volume-locked", "volume locked: the data volume data is locked; an admin unlocks it with POST /api/v1/volumes/{name}/unlock");
}

function proxy(req, res) {
  const up = http.request(
    { host: daemon.hostname, port: daemon.port, method: req.method, path: req.url, headers: { ...req.headers, host: daemon.host } },
    (r) => {
      res.writeHead(r.statusCode, r.headers);
      r.pipe(res);
    },
  );
  up.on("error", (e) => problem(res, 502, "bad-gateway", String(e)));
  req.pipe(up);
}

function file(res, name) {
  const path = normalize(join(root, name));
  if (!path.startsWith(root)) return problem(res, 404, "not-found", name);
  try {
    const bytes = readFileSync(path);
    res.writeHead(200, {
      "Content-Type": TYPES[extname(path)] || "application/octet-stream",
      "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
      "X-Content-Type-Options": "nosniff",
      "Cache-Control": name === "index.html" ? "no-cache" : "public, max-age=31536000, immutable",
    });
    return res.end(bytes);
  } catch {
    return problem(res, 404, "not-found", name);
  }
}

http
  .createServer(async (req, res) => {
    const path = new URL(req.url, "http://x").pathname;
    try {
      if (req.method === "GET" && path === "/") return file(res, "index.html");
      if (req.method === "GET" && path.startsWith("/console/")) return file(res, path.slice("/console/".length));
      if (locked && (await lockedRoute(req, res, path)) !== null) return undefined;
      if (path.startsWith("/api/v1/auth/session")) return await session(req, res, path);
      return proxy(req, res);
    } catch (e) {
      return problem(res, 500, "internal", String(e));
    }
  })
  .listen(port, "127.0.0.1", () => console.log(`dev console on http://127.0.0.1:${port}/ → ${daemon}${locked ? " (locked)" : ""}`));
