// relayarr dashboard: a small page over the admin API. No build step, no dependencies.
// The admin token is kept in sessionStorage only (this tab), never in localStorage.
"use strict";

const TOKEN_KEY = "relayarr.token";
const REFRESH_MS = 2000;
const $ = (sel, root = document) => root.querySelector(sel);

let tab = "targets";
let timer = null;
let selectedEvent = null;

function token() { return sessionStorage.getItem(TOKEN_KEY); }

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else if (k === "text") e.textContent = v;
    else e[k] = v;
  }
  for (const c of children) if (c != null) e.append(c);
  return e;
}

class ApiError extends Error {}

async function api(path, opts = {}) {
  const headers = { Authorization: `Bearer ${token()}` };
  if (opts.body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, {
    method: opts.method || "GET",
    headers,
    body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
  });
  if (resp.status === 401) { signOut("The token was refused."); throw new ApiError("unauthorized"); }
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!resp.ok) {
    const msg = (data && (data.error || data.message)) || `${resp.status} ${resp.statusText}`;
    const err = new ApiError(msg);
    err.status = resp.status;
    throw err;
  }
  return data;
}

function status(msg, isError = false) {
  const s = $("#status");
  s.textContent = msg;
  s.className = isError ? "error" : "";
}

function signOut(reason) {
  sessionStorage.removeItem(TOKEN_KEY);
  if (timer) clearInterval(timer);
  timer = null;
  for (const s of document.querySelectorAll(".tab")) s.hidden = true;
  $("#tabs").hidden = true;
  $("#logout").hidden = true;
  $("#login").hidden = false;
  $("#login-error").textContent = reason || "";
}

function show(name) {
  tab = name;
  for (const b of document.querySelectorAll("#tabs button")) b.classList.toggle("active", b.dataset.tab === name);
  for (const s of document.querySelectorAll(".tab")) s.hidden = s.id !== name;
  refresh();
}

async function start() {
  $("#login").hidden = true;
  $("#tabs").hidden = false;
  $("#logout").hidden = false;
  show(tab);
  if (timer) clearInterval(timer);
  timer = setInterval(refresh, REFRESH_MS);
}

async function refresh() {
  try {
    if (tab === "targets") await loadTargets();
    else if (tab === "events") await loadEvents();
    else if (tab === "tree") await loadTree();
    else if (tab === "queues") await loadQueues();
  } catch (e) {
    if (!(e instanceof ApiError && e.message === "unauthorized")) status(`Could not refresh: ${e.message}`, true);
  }
}

// ------------------------------------------------------------------------------ targets

function targetCard(name) {
  const card = el("article", { class: "card", "data-target": name });
  const cap = el("input", { type: "number", min: 1, class: "cap", "aria-label": `max in flight for ${name}` });
  const rate = el("input", { type: "text", class: "rate", placeholder: "unlimited", "aria-label": `rate for ${name}` });
  const save = el("button", { type: "button", class: "save", text: "Save" });
  const toggle = el("button", { type: "button", class: "toggle secondary" });
  save.addEventListener("click", async () => {
    const body = {};
    const n = parseInt(cap.value, 10);
    if (Number.isFinite(n)) body.max_in_flight = n;
    body.rate = rate.value.trim() === "" ? null : rate.value.trim();
    try {
      await api(`/api/v1/admin/targets/${encodeURIComponent(name)}`, { method: "PATCH", body });
      status(`Saved limits of ${name}.`);
      cap.dataset.dirty = ""; rate.dataset.dirty = "";
      await loadTargets();
    } catch (e) { status(`Could not save ${name}: ${e.message}`, true); }
  });
  toggle.addEventListener("click", async () => {
    const enable = toggle.dataset.enabled !== "true";
    try {
      await api(`/api/v1/admin/targets/${encodeURIComponent(name)}`, { method: "PATCH", body: { enabled: enable } });
      status(`${enable ? "Enabled" : "Disabled"} ${name}.`);
      await loadTargets();
    } catch (e) { status(`Could not change ${name}: ${e.message}`, true); }
  });
  for (const i of [cap, rate]) i.addEventListener("input", () => { i.dataset.dirty = "1"; });
  card.append(
    el("h3", {}, el("span", { class: "name", text: name }), el("span", { class: "badge kind" }), el("span", { class: "badge state" })),
    el("div", { class: "counters" }),
    el("div", { class: "limits" },
      el("label", {}, "max in flight", cap),
      el("label", {}, "rate (e.g. 5/s)", rate),
      save, toggle),
    el("p", { class: "why" }),
  );
  return card;
}

function counter(label, value) {
  return el("div", {}, el("b", { text: String(value ?? 0) }), el("span", { text: label }));
}

async function loadTargets() {
  const data = await api("/api/v1/admin/targets");
  const list = $("#target-list");
  const seen = new Set();
  for (const t of data.targets || []) {
    const s = t.stats;
    seen.add(s.name);
    let card = list.querySelector(`[data-target="${CSS.escape(s.name)}"]`);
    if (!card) { card = targetCard(s.name); list.append(card); }
    $(".kind", card).textContent = s.kind;
    const state = $(".state", card);
    state.textContent = s.blocked ? "blocked" : s.enabled ? "enabled" : "disabled";
    state.className = `badge state ${s.blocked ? "warn" : s.enabled ? "ok" : "bad"}`;
    const d = t.deliveries || {};
    $(".counters", card).replaceChildren(
      counter("in flight", `${s.in_flight} / ${s.max_in_flight}`),
      counter("pending", d.pending),
      counter("queued", s.queued),
      counter("succeeded", s.succeeded),
      counter("failed", s.failed),
      counter("retried", s.retried),
    );
    const cap = $(".cap", card), rate = $(".rate", card);
    if (!cap.dataset.dirty && document.activeElement !== cap) cap.value = s.max_in_flight;
    if (!rate.dataset.dirty && document.activeElement !== rate) rate.value = s.rate || "";
    const toggle = $(".toggle", card);
    toggle.dataset.enabled = String(s.enabled);
    toggle.textContent = s.enabled ? "Disable" : "Enable";
    $(".why", card).textContent = s.blocked || (s.enabled ? "" : s.disabled_reason || "disabled");
  }
  for (const card of [...list.children]) if (!seen.has(card.dataset.target)) card.remove();
  if (!list.children.length) list.replaceChildren(el("p", { text: "No hooks or Plex servers are configured." }));
  $("#targets-updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
}

// ------------------------------------------------------------------------------- events

function summary(ev) {
  if (ev.summary) return ev.summary;
  const n = ev.normalized || ev.event || {};
  const title = n.media && n.media.title;
  const ep = (n.episodes || [])[0];
  const se = ep && ep.season != null && ep.episode != null
    ? ` S${String(ep.season).padStart(2, "0")}E${String(ep.episode).padStart(2, "0")}` : "";
  return title ? `${title}${se}` : (ev.event_type || "");
}

function deliveryText(ev) {
  const d = ev.deliveries;
  if (!d) return "";
  if (Array.isArray(d)) {
    return d.map((x) => {
      const parts = ["pending", "succeeded", "failed"].filter((k) => x[k]).map((k) => `${x[k]} ${k}`);
      return `${x.target}: ${parts.join(" ") || "none"}`;
    }).join(", ");
  }
  return Object.entries(d).map(([k, v]) => `${k}: ${typeof v === "object" ? Object.entries(v).map(([s, n]) => `${n} ${s}`).join(" ") : v}`).join(", ");
}

async function loadEvents() {
  const form = $("#event-filter");
  const q = new URLSearchParams({ limit: "50" });
  for (const f of ["source", "kind", "status"]) if (form.elements[f].value) q.set(f, form.elements[f].value.trim());
  const data = await api(`/api/v1/admin/events?${q}`);
  const rows = data.events || data.items || [];
  const body = $("#event-table tbody");
  body.replaceChildren(...rows.map((ev) => {
    const tr = el("tr", { "data-event-id": ev.id },
      el("td", { text: ev.received_at ? new Date(ev.received_at).toLocaleString() : "" }),
      el("td", { text: ev.source || "" }),
      el("td", { text: ev.kind || "" }),
      el("td", { text: summary(ev) }),
      el("td", { text: deliveryText(ev) }));
    if (ev.id === selectedEvent) tr.classList.add("selected");
    tr.addEventListener("click", () => openEvent(ev.id));
    return tr;
  }));
  if (!rows.length) body.replaceChildren(el("tr", {}, el("td", { colSpan: 5, text: "No events match." })));
  if (selectedEvent) await renderEvent(selectedEvent);
}

async function openEvent(id) {
  selectedEvent = id;
  for (const tr of document.querySelectorAll("#event-table tbody tr")) tr.classList.toggle("selected", tr.dataset.eventId === id);
  await renderEvent(id);
}

async function renderEvent(id) {
  const data = await api(`/api/v1/admin/events/${encodeURIComponent(id)}/explain`);
  const box = $("#event-detail");
  box.hidden = false;
  const card = el("div", { class: "card", "data-detail": id }, el("h3", { text: `Event ${id}` }));
  for (const d of data.deliveries || []) {
    card.append(el("p", {},
      el("b", { text: `${d.target || d.hook}` }),
      ` — ${d.state}, ${d.attempts ?? 0} attempt(s)`,
      d.last_status != null ? `, last status ${d.last_status}` : "",
      d.last_error ? `, ${d.last_error}` : ""));
  }
  const attempts = data.attempts || [];
  if (!attempts.length) card.append(el("p", { text: "No delivery attempts yet." }));
  for (const a of attempts) {
    const ok = a.status != null && a.status >= 200 && a.status < 300;
    card.append(el("div", { class: "attempt" },
      el("div", {},
        el("b", { text: `${a.hook || a.target} #${a.attempt}` }), " ",
        el("span", { class: `badge ${ok ? "ok" : "bad"}`, text: a.status != null ? String(a.status) : "no answer" }),
        ` ${a.latency_ms ?? "?"} ms`,
        a.error ? el("span", { class: "error", text: ` ${a.error}` }) : null),
      a.request_excerpt ? el("details", {}, el("summary", { text: "request" }), el("pre", { text: a.request_excerpt })) : null,
      el("div", {}, el("span", { class: "badge", text: "response" }), el("pre", { class: "response", text: a.response_excerpt || "(empty)" }))));
  }
  box.replaceChildren(card);
}

// --------------------------------------------------------------------------------- tree

function treeNode(n) {
  const badge = /running/i.test(n.status) ? "ok" : /restart|stopp|fail/i.test(n.status) ? "bad" : "";
  // The path has no test/embedding namespace prefix; its last segment is the actor.
  const label = n.path ? n.path.split("/").pop() : n.name;
  const li = el("li", {}, el("span", { class: "node", title: n.path || n.name },
    el("b", { text: label }),
    el("span", { class: `badge ${badge}`, text: n.status }),
    n.restarts ? el("span", { class: "badge warn", text: `${n.restarts} restart(s)` }) : null,
    n.last_failure ? el("span", { class: "error", text: typeof n.last_failure === "string" ? n.last_failure : (n.last_failure.error || n.last_failure.reason || JSON.stringify(n.last_failure)) }) : null,
    n.next_backoff_ms ? el("span", { class: "badge", text: `restarts in ${n.next_backoff_ms} ms` }) : null));
  if (n.children && n.children.length) li.append(el("ul", {}, ...n.children.map(treeNode)));
  return li;
}

async function loadTree() {
  const root = await api("/api/v1/actors");
  $("#tree-root").replaceChildren(treeNode(root));
}

// ------------------------------------------------------------------------------- queues

async function loadQueues() {
  const d = await api("/api/v1/admin/debouncer");
  $("#debounce-summary").textContent =
    `${d.open_groups} open group(s); ${d.debounced} event(s) debounced, ${d.coalesced} coalesced, ${d.fired} group(s) fired since start.`;
  const now = Date.now();
  const rows = (d.groups || []).map((g) => el("tr", {},
    el("td", { text: g.target }), el("td", { text: g.key }), el("td", { text: String(g.events) }),
    el("td", { text: `${Math.max(0, Math.round((g.due_at_ms - now) / 1000))} s` })));
  $("#debounce-table tbody").replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colSpan: 4, text: "Nothing is waiting." }))]));
  const p = await api("/api/v1/admin/pollers");
  const when = (t) => (t ? new Date(t).toLocaleString() : "never");
  const prow = (p.pollers || []).map((x) => el("tr", { "data-poller": x.name },
    el("td", { text: `${x.name}${x.kind ? ` (${x.kind})` : ""}` }),
    el("td", { text: when(x.last_poll_at) }),
    el("td", { text: when(x.last_success_at) }),
    el("td", { text: String(x.recovered ?? 0) }),
    el("td", { class: x.last_error ? "error" : "", text: x.last_error || "" })));
  $("#poller-table tbody").replaceChildren(...(prow.length ? prow : [el("tr", {}, el("td", { colSpan: 5, text: "No [[arr]] pollers are configured." }))]));
}

// -------------------------------------------------------------------------------- setup

document.addEventListener("DOMContentLoaded", () => {
  $("#login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("#token").value.trim());
    $("#token").value = "";
    try { await api("/api/v1/admin/targets"); start(); }
    catch (err) { if (err.message !== "unauthorized") $("#login-error").textContent = err.message; }
  });
  $("#logout").addEventListener("click", () => signOut("Signed out."));
  for (const b of document.querySelectorAll("#tabs button")) b.addEventListener("click", () => show(b.dataset.tab));
  $("#event-filter").addEventListener("submit", (e) => { e.preventDefault(); selectedEvent = null; $("#event-detail").hidden = true; refresh(); });
  if (token()) start(); else signOut();
});
