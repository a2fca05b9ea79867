// The operations dashboard: polls /health and /realtime/stats every 2 s (never faster than
// once a second per viewer) and follows admin:dashboard over an admin Socket.IO connection.
// Credentials live in sessionStorage and travel as headers or Socket.IO `auth`, never in a
// URL query. No framework, no request to any other host.
"use strict";

const $ = (id) => document.getElementById(id);
const POLL_MS = 2000;
const HISTORY_POINTS = 150; // 5 minutes at 2 s
const TAIL_MAX = 200;

const store = {
  get: () => ({ token: sessionStorage.getItem("rb.token") || "", apiKey: sessionStorage.getItem("rb.apiKey") || "" }),
  set: (token, apiKey) => { sessionStorage.setItem("rb.token", token); sessionStorage.setItem("rb.apiKey", apiKey); },
  clear: () => { sessionStorage.removeItem("rb.token"); sessionStorage.removeItem("rb.apiKey"); },
};

function headers() {
  const { token, apiKey } = store.get();
  return token ? { authorization: `Bearer ${token}` } : { "x-api-key": apiKey };
}

async function api(path, options = {}) {
  const res = await fetch(path, { ...options, headers: { ...headers(), ...(options.headers || {}) } });
  let body = null;
  try { body = await res.json(); } catch { /* not JSON */ }
  return { status: res.status, body };
}

function text(id, value) { $(id).textContent = value; }
function clear(el) { while (el.firstChild) el.removeChild(el.firstChild); }
function row(cells, cls) {
  const tr = document.createElement("tr");
  if (cls) tr.className = cls;
  for (const c of cells) { const td = document.createElement("td"); td.textContent = c; tr.appendChild(td); }
  return tr;
}

let timer = null;
let socket = null;
let previous = null; // last stats, for rates and lag trends
const series = { consumed: [], emitted: [] };

async function signIn(token, apiKey) {
  store.set(token, apiKey);
  const { status, body } = await api("/realtime/stats?top=5");
  if (status !== 200) {
    store.clear();
    text("sign-in-error", `Refused (${status}): ${body?.error ?? "no answer"}`);
    return;
  }
  text("sign-in-error", "");
  $("sign-in").hidden = true;
  $("board").hidden = false;
  $("sign-out").hidden = false;
  render(body, await api("/health"));
  timer = setInterval(poll, POLL_MS);
  if (token) follow(token); else text("tail-status", "live tail needs an admin token (API keys have no socket)");
}

function signOut() {
  clearInterval(timer);
  socket?.close();
  socket = null;
  store.clear();
  previous = null;
  $("board").hidden = true;
  $("sign-out").hidden = true;
  $("sign-in").hidden = false;
}

async function poll() {
  const [stats, health] = await Promise.all([api("/realtime/stats?top=5"), api("/health")]);
  if (stats.status === 401 || stats.status === 403) { signOut(); text("sign-in-error", `Signed out: ${stats.body?.error}`); return; }
  if (stats.status === 200) render(stats.body, health);
}

function render(stats, health) {
  text("node-info", `v${stats.version} · up ${Math.round(stats.uptimeSecs / 60)} min · group ${stats.kafka.group}`);
  // Components
  const list = $("component-list");
  clear(list);
  const h = health.body || {};
  const item = (name, state, ok) => { const li = document.createElement("li"); li.className = ok === true ? "up" : ok === false ? "down" : "warn"; li.textContent = `${name}: ${state}`; li.dataset.component = name; list.appendChild(li); };
  item("node", h.draining ? "draining" : h.status ?? "unknown", h.status === "ok" && !h.draining);
  item("kafka", `${h.kafka?.status ?? "?"} · ${h.kafka?.assignedPartitions ?? 0} partitions · DLQ ${h.kafka?.deadLetter ?? "?"}`, h.kafka?.status === "up");
  item("socket.io", `${h.socketio?.status ?? "?"} · ${h.socketio?.connections ?? 0} sockets`, h.socketio?.status === "up");
  item("redis", h.redis?.status ?? "?", h.redis?.status === "up" ? true : h.redis?.status === "disabled" ? undefined : false);
  // Cluster
  const cluster = stats.cluster ?? { connections: stats.connections, distinctUsers: stats.distinctUsers, nodes: [{ node: "this node", sockets: stats.connections }] };
  text("cluster-connections", cluster.connections);
  text("cluster-users", cluster.distinctUsers);
  const nodes = $("node-rows");
  clear(nodes);
  for (const n of cluster.nodes.length ? cluster.nodes : [{ node: "this node", sockets: stats.connections }]) nodes.appendChild(row([n.node, n.sockets]));
  const rooms = $("room-list");
  clear(rooms);
  for (const r of stats.rooms) { const li = document.createElement("li"); li.textContent = `${r.room} (${r.sockets})`; rooms.appendChild(li); }
  // Throughput
  const t = stats.totals;
  if (previous) {
    const secs = Math.max(0.001, (stats.uptimeSecs - previous.uptimeSecs) || POLL_MS / 1000);
    push(series.consumed, (t.recordsConsumed - previous.totals.recordsConsumed) / secs);
    push(series.emitted, (t.emits - previous.totals.emits) / secs);
    text("rate-consumed", series.consumed.at(-1).toFixed(1));
    text("rate-emitted", series.emitted.at(-1).toFixed(1));
    draw();
  }
  text("count-invalid", t.recordsInvalid);
  text("count-dlq", t.recordsDeadLettered);
  const lat = stats.latency;
  for (const q of ["p50", "p90", "p99"]) text(`lat-${q}`, lat && lat.samples > 0 ? lat[`${q}Ms`].toFixed(1) : "–");
  // Lag
  const lagRows = $("lag-rows");
  clear(lagRows);
  const before = new Map((previous?.kafka.assignment ?? []).map((a) => [`${a.topic}/${a.partition}`, a.lag]));
  for (const a of stats.kafka.assignment) {
    const was = before.get(`${a.topic}/${a.partition}`);
    lagRows.appendChild(row([a.topic, a.partition, a.lag ?? "–"], a.lag != null && was != null && a.lag > was ? "growing" : ""));
  }
  previous = stats;
}

function push(xs, v) { xs.push(Math.max(0, v)); if (xs.length > HISTORY_POINTS) xs.shift(); }

function draw() {
  const c = $("chart");
  const g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  const max = Math.max(1, ...series.consumed, ...series.emitted);
  const line = (xs, color) => {
    g.strokeStyle = color; g.lineWidth = 2; g.beginPath();
    xs.forEach((v, i) => { const x = (i / (HISTORY_POINTS - 1)) * c.width; const y = c.height - (v / max) * (c.height - 10) - 5; i ? g.lineTo(x, y) : g.moveTo(x, y); });
    g.stroke();
  };
  line(series.consumed, "#1565c0");
  line(series.emitted, "#2e7d32");
  g.fillStyle = "#555"; g.font = "11px sans-serif"; g.fillText(`max ${max.toFixed(0)}/s · blue records · green emits`, 6, 12);
}

// Live tail of admin:dashboard.
let paused = false;
function follow(token) {
  socket = io({ auth: { token }, transports: ["websocket"] });
  socket.on("connect_error", (e) => text("tail-status", `not connected: ${e.message}`));
  socket.on("connection:success", async () => {
    const ack = await socket.emitWithAck("subscribe:admin");
    text("tail-status", ack.ok ? "following" : `refused: ${ack.error}`);
  });
  socket.onAny((event, env) => {
    if (!event.startsWith("admin:") || paused) return;
    const li = document.createElement("li");
    const alert = /out-of-stock|low-stock/.test(event);
    li.className = alert ? "alert" : event.includes(":order:") ? "order" : "";
    li.dataset.event = event;
    const when = new Date().toLocaleTimeString();
    li.textContent = `${when} ${event} ${env?.message ?? JSON.stringify(env?.data ?? {})}`;
    const list = $("tail-list");
    list.insertBefore(li, list.firstChild);
    while (list.children.length > TAIL_MAX) list.removeChild(list.lastChild);
    applyFilter(li);
  });
}

function applyFilter(li) {
  const f = $("filter").value.trim().toLowerCase();
  li.hidden = f !== "" && !li.textContent.toLowerCase().includes(f);
}

async function sendBroadcast(event) {
  event.preventDefault();
  let data;
  try { data = JSON.parse($("b-data").value); } catch (e) { text("broadcast-answer", `Data is not JSON: ${e.message}`); return; }
  const { status, body } = await api("/realtime/broadcast/admin", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ event: $("b-event").value, data }) });
  text("broadcast-answer", status === 200 ? `Sent: ${JSON.stringify(body.deliveries ?? body, null, 1)}` : `Error ${status}${body?.field ? ` (${body.field})` : ""}: ${body?.error ?? ""}`);
}

document.addEventListener("DOMContentLoaded", () => {
  $("sign-in-form").addEventListener("submit", (e) => { e.preventDefault(); signIn($("token").value.trim(), $("api-key").value.trim()); });
  $("sign-out").addEventListener("click", signOut);
  $("pause").addEventListener("click", () => { paused = !paused; $("pause").textContent = paused ? "Resume" : "Pause"; });
  $("filter").addEventListener("input", () => { for (const li of $("tail-list").children) applyFilter(li); });
  $("broadcast-form").addEventListener("submit", sendBroadcast);
  // A link from the development banner carries the token in the fragment (never sent to a
  // server): take it, then remove it from the address bar.
  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.get("token")) {
    store.set(fragment.get("token"), "");
    history.replaceState(null, "", location.pathname);
  }
  const saved = store.get();
  if (saved.token || saved.apiKey) signIn(saved.token, saved.apiKey);
});
