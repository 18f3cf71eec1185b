// The operator console: login, map, alarm list (ISA-18.2), site view, select-before-operate
// commands, area operations, incidents, forwarding and audit — live over Server-Sent Events.
//
// Rules the page keeps:
// - Worst first: alarms sort by priority, then age (oldest first); the map colours a site by its
//   worst active alarm, and shows offline and stale sites as such.
// - Every value shows its quality and its age; ages tick every second on the hub's clock.
// - Nothing is sent on one click: a command opens a confirm dialog (target, live values and
//   their age, the rule that fired, the camera snapshot, a countdown), and only "Execute" sends.
// - The hub decides who may do what; the page only hides what a role cannot do.
// - An escalated alert (a recipient that did not acknowledge in time) is a banner and a tone
//   until an operator acknowledges its alarm; an active exercise is a banner too, and every
//   command, operation and alert of an exercise carries the exercise mark wherever it is shown.
import { api, ApiError, serverNow, setCsrf } from "./api.js";
import { h, replace, s } from "./dom.js";
import { t, toggleLang, currentLang } from "./i18n.js";
import { Projection, boundaries, citiesOf, districtsOf, fit } from "./map.js";
import { lineChart } from "./charts.js";
import { startLive } from "./live.js";
import { isMuted, onSound, setDue, soundState, toggleMute, tonesPlayed } from "./sound.js";

const RANK = { critical: 0, high: 1, medium: 2, low: 3 };
const ROLE = { viewer: 0, operator: 1, supervisor: 2, admin: 3 };
const ACTIVE_STATES = new Set(["unacknowledged", "acknowledged", "rtn_unacknowledged"]);
const STALE_AFTER_S = 120; // the hub's default data-age limit (rules.data_age_limit_s)
const SELECT_TIMEOUT_S = 30; // select-before-operate: a selection not executed within this lapses
const CHART_POINTS = [["water_depth_cm", "cm"], ["displacement_mm", "mm"], ["rain_mm_10min", "mm"]];
const STATE_POINTS = ["barrier_state", "gate_state", "mode", "motor_fault", "barrier_cmd", "gate_cmd", "sign_message",
  "siren", "alarm_active"];
const SHELVE_TIMES = [["min15", 900], ["h1", 3600], ["h4", 14400], ["h8", 28800]];
const LINK_TIMES = [["min30", 1800], ["min15", 900], ["h1", 3600], ["h4", 14400]];

const S = {
  me: null, hub: "", view: "map", sites: [], places: [], alarms: [], incidents: [], commands: [],
  siteId: null, siteDetail: null, latest: [], history: {}, selectedAlarm: null, geo: null, proj: null,
  connected: false, lastEventAt: null, slowView: null, slowAt: 0, fitKey: null, cities: new Set(), viewBox: null,
  escalations: [], exercises: [], operations: [], events: [], requests: [],
};
const $ = (id) => document.getElementById(id);

// --- the action vocabulary ----------------------------------------------------------------------
// Served by the hub (GET /api/vocabulary, from shared/vocabulary.py) once after login; the page
// never repeats it: which buttons a device gets, which actions are openings, what an action's
// parameters may be and what block/evacuate send all come from here.

const V = { actions: new Map(), kinds: new Map() };

function setVocabulary(vocab) {
  V.actions = new Map(vocab.actions.map((a) => [a.action, a]));
  V.kinds = new Map(vocab.kinds.map((k) => [k.kind, k]));
}

const offers = (kind) => (V.kinds.has(kind) ? V.kinds.get(kind).actions : []);
const isOpening = (action) => V.actions.has(action) && V.actions.get(action).opening;
const argsOf = (step) => Object.fromEntries(step.args.map((a) => [a.name, a.value]));
const stepsOf = (kind, op) => (V.kinds.has(kind) ? V.kinds.get(kind)[op] : []);

/** An action's parameter defaults: what evacuate sends to this kind, else each parameter's first choice. */
function defaultParams(kind, action) {
  const step = stepsOf(kind, "evacuate").find((x) => x.action === action);
  const given = step ? argsOf(step) : {};
  return Object.fromEntries((V.actions.get(action) || { params: [] }).params.map((p) =>
    [p.name, p.name in given ? given[p.name] : (p.choices.length ? p.choices[0] : "")]));
}
const can = (role, me = S.me) => me && ROLE[me.role] >= ROLE[role];

// --- ages --------------------------------------------------------------------------------------

function fmtAge(sec) {
  if (sec < 0) sec = 0;
  if (sec < 90) return `${Math.round(sec)} ${t("seconds")}`;
  if (sec < 5400) return `${Math.round(sec / 60)} ${t("minutes")}`;
  return `${Math.floor(sec / 3600)} ${t("hours")} ${Math.round((sec % 3600) / 60)} ${t("minutes")}`;
}

/** An age that ticks: ``ts`` in hub epoch seconds; turns "old" past ``limit``. */
function age(ts, limit = STALE_AFTER_S) {
  if (ts === null || ts === undefined) return h("span", { class: "age" }, "—");
  return h("span", { class: "age", dataset: { ts: String(ts), limit: String(limit) } }, fmtAge(serverNow() - ts));
}

function countdown(until, labelKey, onZero) {
  const el = h("span", { class: "countdown", dataset: { until: String(until), label: labelKey } });
  el._onZero = onZero;
  tickOne(el);
  return el;
}

function tickOne(el) {
  if (el.dataset.ts) {
    const a = serverNow() - Number(el.dataset.ts);
    el.textContent = fmtAge(a);
    el.classList.toggle("old", a > Number(el.dataset.limit));
  } else if (el.dataset.until) {
    const left = Math.max(0, Number(el.dataset.until) - serverNow());
    el.textContent = `${t(el.dataset.label)} ${Math.ceil(left)} ${t("seconds")}`;
    el.classList.toggle("urgent", left < 10);
    if (left <= 0 && el._onZero) { const f = el._onZero; el._onZero = null; f(); }
  }
}

setInterval(() => {
  document.querySelectorAll("[data-ts], [data-until]").forEach(tickOne);
  renderConn();
}, 1000);

// --- refresh scheduling -------------------------------------------------------------------------

const dirty = new Set();
let timer = null;

function schedule(...parts) {
  parts.forEach((p) => dirty.add(p));
  if (!timer) timer = setTimeout(flush, 120);
}

async function flush() {
  timer = null;
  const parts = new Set(dirty);
  dirty.clear();
  const jobs = [];
  if (parts.has("sites")) jobs.push(api("GET", "/api/sites").then((x) => { S.sites = x; }));
  if (parts.has("alarms")) jobs.push(api("GET", "/api/alarms?limit=2000").then((x) => { S.alarms = x; }));
  if (parts.has("incidents")) jobs.push(api("GET", "/api/incidents").then((x) => { S.incidents = x; }));
  if (parts.has("commands")) jobs.push(api("GET", "/api/commands?limit=200").then((x) => { S.commands = x; }));
  if (parts.has("commands")) jobs.push(api("GET", "/api/operations?limit=50").then((x) => { S.operations = x; }));
  if (parts.has("escalations")) jobs.push(api("GET", "/api/escalations").then((x) => { S.escalations = x; }));
  if (parts.has("exercises")) jobs.push(api("GET", "/api/exercises").then((x) => { S.exercises = x; }));
  if (parts.has("requests")) jobs.push(api("GET", "/api/province-requests?limit=50").then((x) => { S.requests = x; }));
  if (parts.has("site") && S.siteId) jobs.push(loadSite());
  try {
    await Promise.all(jobs);
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) { showLogin(); return; }
    throw err;
  }
  render();
  if (parts.has("commands")) openDialogs.forEach((d) => d.refresh());
}

async function loadSite() {
  const id = S.siteId;
  const [detail, latest, events] = await Promise.all([
    api("GET", `/api/sites/${encodeURIComponent(id)}`),
    api("GET", `/api/sites/${encodeURIComponent(id)}/latest`),
    api("GET", `/api/sites/${encodeURIComponent(id)}/events?limit=15`),
  ]);
  if (id !== S.siteId) return;
  S.siteDetail = detail;
  S.latest = latest;
  S.events = events;
  const since = serverNow() - 3600;
  const hist = {};
  await Promise.all(CHART_POINTS.flatMap(([point]) => latest.filter((v) => v.point === point).map(async (v) => {
    const q = new URLSearchParams({ device: v.device, point, since: String(since), limit: "4000" });
    const res = await api("GET", `/api/sites/${encodeURIComponent(id)}/history?${q}`);
    const raw = res.raw.filter((p) => typeof p.value === "number").map((p) => [p.ts, p.value]);
    hist[`${v.device}/${point}`] = raw.length ? raw : res.downsampled.filter((p) => p.avg !== null).map((p) => [p.bucket, p.avg]);
  })));
  S.history = hist;
}

// --- live ---------------------------------------------------------------------------------------

let source = null;
const ALL_PARTS = ["sites", "alarms", "incidents", "commands", "site", "escalations", "exercises", "requests"];

function connectLive() {
  if (source) source.close();
  source = new EventSource("/api/events");
  source.onopen = () => {
    const wasDown = !S.connected;
    S.connected = true;
    S.lastEventAt = serverNow();
    if (wasDown) schedule(...ALL_PARTS);
    renderConn();
  };
  source.onerror = () => { S.connected = false; renderConn(); };
  const on = (kind, fn) => source.addEventListener(kind, (e) => {
    S.lastEventAt = serverNow();
    fn(JSON.parse(e.data));
  });
  on("alarm", (d) => schedule("alarms", "sites", ...(d.site === S.siteId ? ["site"] : [])));
  on("latest", (d) => { if (d.site === S.siteId) schedule("site"); });
  on("site", () => schedule("sites", "site"));
  on("command", () => schedule("commands", "site"));
  on("operation", () => schedule("commands"));
  on("incident", () => schedule("incidents", "alarms"));
  on("event", (d) => { if (d.site === S.siteId) schedule("site"); });
  on("escalation", () => schedule("escalations", "alarms"));
  on("exercise", () => schedule("exercises", "commands"));
  on("province_request", () => schedule("requests", "commands"));
  on("resync", () => schedule(...ALL_PARTS));
  // the hub ends the stream with the session (logout elsewhere, expiry, a disabled account)
  source.addEventListener("session_ended", () => showLogin());
}

function renderConn() {
  const el = $("conn");
  if (!el || !S.me) return;
  if (S.connected) {
    el.className = "conn ok";
    el.replaceChildren(`● ${t("live")} · ${t("last_event")} ${fmtAge(serverNow() - (S.lastEventAt || serverNow()))}`);
  } else {
    el.className = "conn down";
    el.replaceChildren(`■ ${t("disconnected")}`);
  }
}

// --- banners: escalations and exercises -----------------------------------------------------------

/** Escalations still waiting for an operator: their alarm is not acknowledged yet. */
function pendingEscalations() {
  return S.escalations.filter((e) => {
    const a = S.alarms.find((x) => x.id === e.alarm_id);
    return !a || a.state === "unacknowledged" || a.state === "rtn_unacknowledged";
  });
}

function renderBanners() {
  const box = $("banners");
  if (!box) return;
  const esc = pendingEscalations();
  setDue(esc.map((e) => e.delivery_id));
  const escRows = esc.map((e) => h("div", { class: "banner escalation", role: "alert", id: `esc-${e.delivery_id}`,
    dataset: { delivery: String(e.delivery_id), alarm: String(e.alarm_id) } },
  h("b", {}, `⚠ ${t("escalation")}`),
  h("span", { class: "esc-recipient" }, `${t("recipient")}: ${e.recipient}`),
  h("span", { class: "esc-alert" }, `${t("alert")}: ${e.alert_id} · ${siteName(e.site)}`),
  h("span", { class: "esc-since" }, `${t("since")} `, clock(e.since), " (", age(e.since, 1e9), ")"),
  soundState() === "blocked" ? h("button", { class: "sound-unlock", id: "sound-unlock", onclick: () => renderSound() }, t("sound_blocked")) : null,
  can("operator")
    ? h("button", { class: "primary esc-ack", dataset: { key: `esc-ack-${e.delivery_id}` }, onclick: () => alarmAction({ id: e.alarm_id }, "ack", {}) }, t("esc_ack"))
    : null));
  const exRows = S.exercises.map((x) => h("div", { class: "banner exercise-banner", id: `exercise-${x.id}`, dataset: { area: x.area } },
    h("b", {}, `▣ ${t("exercise_active")}: ${x.area}`), h("span", {}, x.reason),
    h("span", { class: "small" }, `${t("started_by")}: ${x.started_by} · `, age(x.started_at, 1e9)),
    h("span", { class: "small" }, t("exercise_note")),
    can("supervisor") ? h("button", { class: "exercise-end", dataset: { key: `ex-end-${x.id}` }, onclick: () => endExercise(x) }, t("exercise_end")) : null));
  // a request of the province waits for a city operator: it is acted on only through the dialog
  const reqRows = S.requests.filter((r) => r.state === "pending").map((r) => h("div", {
    class: "banner province-request", role: "alert", id: `preq-${r.request_id}`, dataset: { request: r.request_id } },
  h("b", {}, `▲ ${t("province_request")}: ${t(r.action === "block" ? "block_area" : "evacuate_area")} ${r.area}`),
  h("span", {}, r.reason), h("span", { class: "small" }, `${t("requested_by")}: ${r.requested_by} · `, age(r.requested_at, 1e9)),
  h("span", { class: "small" }, countdown(r.not_after, "request_expires")),
  can("operator") ? h("button", { class: "primary preq-review", dataset: { key: `preq-${r.request_id}` },
    onclick: () => operationDialog(r.action, r.area, r) }, t("review")) : null));
  replace(box, reqRows, escRows, exRows);
}

function renderSound() {
  const b = $("mute");
  if (!b) return;
  const st = soundState();
  b.textContent = isMuted() ? t("sound_off") : t("sound_on");
  b.setAttribute("aria-pressed", isMuted() ? "true" : "false");
  b.dataset.sound = st;
  b.dataset.tones = String(tonesPlayed());
  const unlock = $("sound-unlock");
  if (unlock && st !== "blocked") unlock.remove();
}

onSound(() => renderSound());

/** A wall-clock time on the hub's clock, in the operator's language. */
function clock(ts) {
  if (ts === null || ts === undefined) return "—";
  return new Date(ts * 1000).toLocaleTimeString(currentLang() === "ko" ? "ko-KR" : "en-GB");
}

function areaOf(site) {
  const st = S.sites.find((x) => x.site === site);
  const p = S.places.find((x) => x.site === site);
  return (st && st.area) || (p && p.area) || null;
}

const exerciseIn = (area) => S.exercises.find((x) => x.area === area) || null;
const exerciseMark = (x) => (x && x.exercise_id ? h("span", { class: "chip exercise", title: x.exercise_id }, t("exercise")) : null);

/** A "send as exercise" box when an exercise covers ``area``; unticked by default, so a real
 * emergency during a drill is never sent as a dry run by a forgotten click. */
function exerciseBox(area) {
  if (!exerciseIn(area)) return null;
  return h("input", { type: "checkbox", id: "send-exercise", dataset: { key: "send-exercise" } });
}

function exerciseStartDialog(area) {
  const areas = [...new Set([...S.places.map((p) => p.area), ...S.sites.map((x) => x.area)])].sort();
  const sel = h("select", { id: "ex-area" }, areas.map((a) => h("option", { value: a, selected: a === area }, a)));
  const reason = h("input", { id: "ex-reason", required: true, maxlength: 200 });
  const err = h("p", { class: "error", role: "alert", id: "ex-error" });
  const dlg = dialog("ex-dlg", t("exercise_start"), [h("p", { class: "note" }, t("exercise_note")),
    h("label", {}, t("area"), sel), h("label", {}, t("reason"), reason), err],
  [h("button", { class: "primary", id: "ex-ok", onclick: async () => {
    if (!reason.value.trim()) { err.textContent = t("reason"); reason.focus(); return; }
    try {
      await api("POST", "/api/exercises", { area: sel.value, reason: reason.value });
      dlg.close();
    } catch (ex) { if (!(ex instanceof ApiError)) throw ex; err.textContent = ex.message; }
    schedule("exercises");
  } }, t("exercise_start")), h("button", { onclick: () => dlg.close() }, t("cancel"))]);
  reason.focus();
}

async function endExercise(x) {
  try {
    await api("POST", `/api/exercises/${encodeURIComponent(x.id)}/end`, {});
  } catch (ex) {
    if (!(ex instanceof ApiError)) throw ex;
    toast(ex.message);
  }
  schedule("exercises");
}

// --- login --------------------------------------------------------------------------------------

function showLogin(message) {
  if (source) { source.close(); source = null; }
  S.me = null;
  const err = h("p", { class: "error", role: "alert", id: "login-error" }, message || "");
  const user = h("input", { id: "login-user", name: "username", autocomplete: "username", required: true, autofocus: true });
  const pass = h("input", { id: "login-pass", name: "password", type: "password", autocomplete: "current-password", required: true });
  const form = h("form", { class: "login", id: "login-form" },
    h("h1", {}, t("app")),
    h("label", {}, t("username"), user),
    h("label", {}, t("password"), pass),
    h("button", { type: "submit", class: "primary" }, t("login")),
    h("button", { type: "button", class: "link", onclick: () => { toggleLang(); showLogin(); } }, t("lang")),
    err);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const me = await api("POST", "/api/session", { username: user.value, password: pass.value });
      await start(me);
    } catch (ex) {
      if (!(ex instanceof ApiError)) throw ex;
      err.textContent = `${t("login_failed")}: ${ex.message}`;
    }
  });
  replace(document.body, form);
  user.focus();
}

async function start(me) {
  setCsrf(me.csrf);
  const health = await api("GET", "/api/health");
  if (health.cities !== undefined) { startProvince(me); return; } // the province's API (province/api.py)
  S.me = me;
  const [places, geo, vocab] = await Promise.all([
    api("GET", "/api/places"),
    fetch("/web/data/gyeonggi-municipalities-2018.geojson").then((r) => r.json()),
    api("GET", "/api/vocabulary"),
  ]);
  setVocabulary(vocab);
  S.places = places;
  S.hub = health.hub;
  S.geo = geo;
  S.proj = new Projection(geo);
  shell();
  connectLive();
  schedule(...ALL_PARTS);
}

// --- the shell ----------------------------------------------------------------------------------

const VIEWS = [["map", "1"], ["site", "2"], ["incidents", "3"], ["commands", "4"], ["forwarding", "5"], ["audit", "6"],
  ["quarantine", "7"]];
const SUPERVISOR_VIEWS = ["audit", "quarantine"];
const SLOW_VIEWS = { forwarding: forwardingView, audit: auditView, quarantine: quarantineView };

function shell() {
  const tabs = h("nav", { class: "tabs", "aria-label": "views" }, VIEWS
    .filter(([v]) => !SUPERVISOR_VIEWS.includes(v) || can("supervisor"))
    .map(([v, key]) => h("button", {
      id: `tab-${v}`, class: "tab", "aria-keyshortcuts": `Alt+${key}`, dataset: { key: `tab-${v}` },
      onclick: () => show(v),
    }, `${t(v)}`, h("kbd", {}, key))));
  const header = h("header", { class: "top" },
    h("strong", { class: "brand" }, t("app")), h("span", { class: "hub" }, S.hub), tabs,
    h("span", { id: "approvals", class: "approvals" }),
    h("span", { id: "conn", class: "conn" }),
    h("button", { id: "mute", class: "mute", onclick: () => toggleMute() }),
    h("span", { class: "me", id: "me" }, `${S.me.username} · ${S.me.role}`),
    h("button", { id: "lang", onclick: () => { toggleLang(); shell(); render(); } }, t("lang")),
    h("button", { id: "logout", onclick: logout }, t("logout")));
  const main = h("main", { class: "grid" },
    h("section", { id: "view", class: "view", "aria-live": "off" }),
    h("aside", { id: "alarms", class: "alarms", "aria-label": t("alarms") }));
  replace(document.body, header, h("div", { id: "banners", class: "banners" }), main,
    h("div", { id: "flood", class: "flood", hidden: true }));
  renderConn();
  renderSound();
}

document.addEventListener("keydown", (e) => {
  if (!S.me || !e.altKey) return;
  const v = VIEWS.find(([, k]) => k === e.key);
  if (v && $(`tab-${v[0]}`)) { e.preventDefault(); show(v[0]); $(`tab-${v[0]}`).focus(); }
  if (e.key === "a") { e.preventDefault(); const first = document.querySelector(".alarm-row button.ack"); if (first) first.focus(); }
});

async function logout() {
  await api("DELETE", "/api/session");
  showLogin();
}

function show(view) {
  S.view = view;
  render();
}

function openSite(site, alarmId) {
  S.siteId = site;
  S.selectedAlarm = alarmId || null;
  S.siteDetail = null;
  S.latest = [];
  S.history = {};
  S.view = "site";
  render();
  schedule("site");
}

function render() {
  if (!S.me || !$("view")) return;
  document.querySelectorAll(".tab").forEach((b) => b.setAttribute("aria-current", b.id === `tab-${S.view}` ? "page" : "false"));
  renderAlarms();
  renderApprovals();
  renderBanners();
  const v = $("view");
  if (S.view === "map") replace(v, mapView());
  else if (S.view === "site") replace(v, siteView());
  else if (S.view === "incidents") replace(v, incidentsView());
  else if (S.view === "commands") replace(v, commandsView());
  else if (SLOW_VIEWS[S.view]) {
    // these are fetched on entering the view and then at most every 10 s, not on every live event
    const now = Date.now();
    if (S.slowView !== S.view || now - S.slowAt > 10000) {
      S.slowView = S.view;
      S.slowAt = now;
      SLOW_VIEWS[S.view](v);
    }
  }
  if (!SLOW_VIEWS[S.view]) S.slowView = null;
}

// --- site status ----------------------------------------------------------------------------------

function siteName(id) {
  const p = S.places.find((x) => x.site === id);
  const st = S.sites.find((x) => x.site === id);
  return (p && p.name) || (st && st.name) || id;
}

/** The site's worst state: an alarm priority, else offline / stale / unknown / normal. */
function siteStatus(id) {
  const st = S.sites.find((x) => x.site === id);
  const active = S.alarms.filter((a) => a.site === id && a.active && ACTIVE_STATES.has(a.state));
  const worst = active.reduce((w, a) => (w === null || RANK[a.priority] < RANK[w] ? a.priority : w), null);
  let link = "normal";
  if (!st || st.state === "unknown") link = "unknown";
  else if (st.state === "offline") link = "offline";
  else if (serverNow() - st.last_seen > STALE_AFTER_S) link = "stale";
  return { worst: worst || (link === "normal" ? "normal" : link), link, site: st, active };
}

// --- map view -----------------------------------------------------------------------------------

function mapView() {
  const proj = S.proj;
  const placed = S.places.filter((p) => p.lat !== null);
  const key = placed.map((p) => `${p.lon},${p.lat}`).join(";");
  if (S.fitKey !== key) {
    // the jurisdiction: the cities holding the registered sites (the whole province if none)
    S.fitKey = key;
    S.cities = citiesOf(S.geo, placed.map((p) => [p.lon, p.lat]));
    S.viewBox = fit(S.geo, proj, S.cities);
  }
  const vb = S.viewBox;
  const u = Math.max(vb[2] / 860, vb[3] / 610); // viewBox units per screen pixel (map box ~860x610 at 1366x768)
  const svg = s("svg", { id: "map", viewBox: vb.map((n) => n.toFixed(1)).join(" "), role: "group", "aria-label": t("map") },
    ...boundaries(S.geo, proj, currentLang(), S.cities, u));
  const ids = new Set([...S.places.map((p) => p.site), ...S.sites.map((x) => x.site)]);
  const unplaced = [];
  // the worst are drawn last, so they sit on top where markers overlap
  const order = [...ids].sort((a, b) => statusRank(siteStatus(a)) - statusRank(siteStatus(b)));
  for (const id of order) {
    const p = S.places.find((x) => x.site === id);
    const st = siteStatus(id);
    if (!p || p.lat === null) { unplaced.push(id); continue; }
    const [x, y] = proj.xy(p.lon, p.lat);
    const label = `${siteName(id)} — ${t(st.worst)}${st.link !== "normal" && st.link !== st.worst ? ` (${t(st.link)})` : ""}`;
    svg.append(s("g", {
      class: `site-marker ${st.worst} link-${st.link}`, transform: `translate(${x.toFixed(1)},${y.toFixed(1)})`,
      tabindex: "0", role: "button", "aria-label": label, dataset: { site: id, key: `m-${id}` },
      onclick: () => openSite(id), onkeydown: (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); openSite(id); } },
    },
    s("title", {}, label),
    s("circle", { r: (9 * u).toFixed(1), class: "dot", "stroke-width": (2.5 * u).toFixed(1) }),
    st.link === "offline" ? s("path", { d: `M${-5 * u},${-5 * u}L${5 * u},${5 * u}M${5 * u},${-5 * u}L${-5 * u},${5 * u}`, class: "cross", "stroke-width": (3 * u).toFixed(1) }) : null,
    st.link === "stale" ? s("circle", { r: (14 * u).toFixed(1), class: "stale-ring", "stroke-width": (3 * u).toFixed(1), "stroke-dasharray": `${5 * u} ${4 * u}` }) : null,
    s("text", { x: (14 * u).toFixed(1), y: (5 * u).toFixed(1), class: "site-label", "font-size": (14 * u).toFixed(1), "stroke-width": (4 * u).toFixed(1) }, [siteName(id), st.worst !== "normal" ? t(st.worst) : null,
      st.link !== "normal" && st.link !== st.worst ? t(st.link) : null].filter(Boolean).join(" · "))));
  }
  const areas = [...new Set([...S.places.map((p) => p.area), ...S.sites.map((x) => x.area)])].sort();
  const areaSel = h("select", { id: "area-select", "aria-label": t("area") }, areas.map((a) => h("option", { value: a }, a)));
  const legend = h("div", { class: "legend", "aria-label": t("legend") },
    ["critical", "high", "medium", "low", "normal", "offline", "stale", "unknown"].map((k) =>
      h("span", { class: `chip ${k}` }, t(k))));
  return [
    h("div", { class: "map-bar" },
      h("label", {}, `${t("area")} `, areaSel),
      can("operator") ? h("button", { id: "block-area", class: "danger", onclick: () => operationDialog("block", areaSel.value) }, t("block_area")) : null,
      can("operator") ? h("button", { id: "evacuate-area", class: "danger", onclick: () => operationDialog("evacuate", areaSel.value) }, t("evacuate_area")) : null,
      can("supervisor") ? h("button", { id: "exercise-start", class: "exercise-btn", onclick: () => exerciseStartDialog(areaSel.value) }, t("exercise_start")) : null,
      legend),
    h("div", { class: "map-wrap" }, svg, h("p", { class: "attribution", id: "attribution" }, t("attribution"))),
    unplaced.length ? h("div", { class: "unplaced" }, h("h3", {}, t("unplaced")), unplaced.map((id) => {
      const st = siteStatus(id);
      return h("button", { class: `chip ${st.worst}`, dataset: { site: id, key: `u-${id}` }, onclick: () => openSite(id) },
        `${siteName(id)} · ${t(st.worst)}`);
    })) : null,
  ];
}

function statusRank(st) {
  if (st.worst in RANK) return 10 - RANK[st.worst];
  return { offline: 3, stale: 2, unknown: 1, normal: 0 }[st.worst];
}

// --- alarm list (ISA-18.2) ------------------------------------------------------------------------

function sortAlarms(list) {
  return [...list].sort((a, b) => (RANK[a.priority] - RANK[b.priority]) ||
    ((a.raised_at || a.changed_at) - (b.raised_at || b.changed_at)));
}

function renderAlarms() {
  const box = $("alarms");
  const active = sortAlarms(S.alarms.filter((a) => ACTIVE_STATES.has(a.state)));
  const shelved = sortAlarms(S.alarms.filter((a) => a.state === "shelved"));
  const oos = sortAlarms(S.alarms.filter((a) => a.state === "out_of_service"));
  const openInc = new Map(S.incidents.filter((i) => i.state === "open").map((i) => [i.id, i]));
  const rows = [];
  const grouped = new Map();
  for (const a of active) {
    if (a.incident_id !== null && openInc.has(a.incident_id)) {
      if (!grouped.has(a.incident_id)) { grouped.set(a.incident_id, []); rows.push(a.incident_id); }
      grouped.get(a.incident_id).push(a);
    } else rows.push(a);
  }
  const unack = active.filter((a) => a.state !== "acknowledged").length;
  replace(box,
    h("h2", {}, `${t("alarms")} `, h("span", { class: "count", id: "alarm-count" }, `${active.length}`),
      unack ? h("span", { class: "chip critical" }, `${t("unacknowledged")} ${unack}`) : null),
    grouped.size ? h("p", { class: "flood-note", id: "flood-note" }, t("incident_flood")) : null,
    active.length ? h("ol", { class: "alarm-list", id: "alarm-list" }, rows.map((r) => typeof r === "number"
      ? incidentGroup(openInc.get(r), grouped.get(r)) : alarmRow(r))) : h("p", { class: "empty" }, t("no_alarms")),
    shelved.length ? h("details", { class: "more", id: "shelved-list" }, h("summary", {}, `${t("shelved")} (${shelved.length})`),
      h("ol", { class: "alarm-list" }, shelved.map(alarmRow))) : null,
    oos.length ? h("details", { class: "more", id: "oos-list" }, h("summary", {}, `${t("out_of_service")} (${oos.length})`),
      h("ol", { class: "alarm-list" }, oos.map(alarmRow))) : null);
}

function incidentGroup(inc, alarms) {
  const worst = alarms[0].priority;
  return h("li", { class: `incident-row ${worst}` }, h("details", { open: alarms.length <= 3 },
    h("summary", { dataset: { key: `inc-${inc.id}` } }, h("span", { class: `prio ${worst}` }, t(worst)),
      ` #${inc.id} ${inc.area} — ${alarms.length} ${t("alarms_n")} `, age(inc.opened_at, 1e9)),
    h("ol", { class: "alarm-list" }, alarms.map(alarmRow))));
}

function alarmRow(a) {
  const acts = [h("button", { class: "live-open", dataset: { key: `lv-${a.id}` }, onclick: () => alarmDialog(a) }, t("live_view"))];
  if (can("operator")) {
    if (a.state === "unacknowledged" || a.state === "rtn_unacknowledged") {
      acts.push(h("button", { class: "ack primary", dataset: { key: `ack-${a.id}` }, onclick: () => alarmAction(a, "ack", {}) }, t("ack")));
    }
    if (ACTIVE_STATES.has(a.state)) acts.push(h("button", { class: "shelve", dataset: { key: `sh-${a.id}` }, onclick: () => shelveDialog(a) }, t("shelve")));
    if (a.state === "shelved") acts.push(h("button", { class: "unshelve", dataset: { key: `us-${a.id}` }, onclick: () => alarmAction(a, "unshelve", { reason: "unshelved" }) }, t("unshelve")));
  }
  if (can("supervisor")) {
    if (a.state === "out_of_service") acts.push(h("button", { class: "restore", dataset: { key: `rs-${a.id}` }, onclick: () => reasonDialog(a, "restore") }, t("restore")));
    else acts.push(h("button", { class: "remove", dataset: { key: `rm-${a.id}` }, onclick: () => reasonDialog(a, "remove") }, t("remove")));
  }
  return h("li", { class: `alarm-row ${a.priority} st-${a.state}${a.active ? "" : " inactive"}${a.late ? " late" : ""}`, id: `alarm-${a.id}`,
    dataset: { alarm: String(a.id), state: a.state, source: a.source } },
    h("span", { class: `prio ${a.priority}` }, t(a.priority)),
    h("button", { class: "alarm-open link", dataset: { key: `open-${a.id}` }, onclick: () => openSite(a.site, a.id) },
      h("b", {}, siteName(a.site)), " ", h("span", { class: "msg" }, a.message || a.rule)),
    h("span", { class: "alarm-meta" }, h("span", { class: "state" }, t(a.state)),
      a.state === "shelved" && a.shelved_until ? [" · ", a.shelve_reason, " · ", countdown(a.shelved_until, "shelved")] : null,
      " · ", age(a.raised_at || a.changed_at, 1e9), " · ", `${a.device}/${a.rule}`,
      a.source !== "rule" ? [" · ", h("span", { class: "source" }, t(`source_${a.source}`))] : null,
      a.late ? [" ", h("span", { class: "chip late", title: t("late_note") }, t("late"))] : null),
    h("span", { class: "acts" }, acts));
}

async function alarmAction(a, verb, body) {
  try {
    await api("POST", `/api/alarms/${a.id}/${verb}`, body);
  } catch (ex) {
    if (!(ex instanceof ApiError)) throw ex;
    toast(ex.message);
  }
  schedule("alarms", "sites");
}

// --- dialogs ------------------------------------------------------------------------------------

const openDialogs = new Set();

function dialog(cls, title, body, buttons, onClose) {
  const dlg = h("dialog", { class: `dlg ${cls}`, "aria-labelledby": `${cls}-title` },
    h("h2", { id: `${cls}-title` }, title), h("div", { class: "dlg-body" }, body),
    h("div", { class: "dlg-buttons" }, buttons));
  dlg.addEventListener("close", () => { openDialogs.delete(dlg); if (onClose) onClose(); dlg.remove(); });
  document.body.append(dlg);
  dlg.showModal();
  return dlg;
}

function toast(message) {
  const el = h("div", { class: "toast", role: "alert" }, message);
  document.body.append(el);
  setTimeout(() => el.remove(), 8000);
}

function shelveDialog(a) {
  const reason = h("input", { id: "shelve-reason", required: true, maxlength: 200 });
  const dur = h("select", { id: "shelve-duration" }, SHELVE_TIMES.map(([k, v]) => h("option", { value: String(v) }, t(k))));
  const err = h("p", { class: "error", role: "alert" });
  const dlg = dialog("shelve-dlg", `${t("shelve")}: ${siteName(a.site)} — ${a.message || a.rule}`,
    [h("label", {}, t("reason"), reason), h("label", {}, t("duration"), dur), err],
    [h("button", { class: "primary", id: "shelve-ok", onclick: async () => {
      if (!reason.value.trim()) { err.textContent = t("reason"); reason.focus(); return; }
      try {
        await api("POST", `/api/alarms/${a.id}/shelve`, { reason: reason.value, duration_s: Number(dur.value) });
        dlg.close();
      } catch (ex) { if (!(ex instanceof ApiError)) throw ex; err.textContent = ex.message; }
      schedule("alarms", "sites");
    } }, t("shelve")), h("button", { onclick: () => dlg.close() }, t("cancel"))]);
  reason.focus();
}

function reasonDialog(a, verb) {
  const reason = h("input", { id: `${verb}-reason`, required: true, maxlength: 200 });
  const err = h("p", { class: "error", role: "alert" });
  const dlg = dialog(`${verb}-dlg`, `${t(verb)}: ${siteName(a.site)} — ${a.message || a.rule}`,
    [h("label", {}, t("reason"), reason), err],
    [h("button", { class: "primary", id: `${verb}-ok`, onclick: async () => {
      if (!reason.value.trim()) { err.textContent = t("reason"); reason.focus(); return; }
      try { await api("POST", `/api/alarms/${a.id}/${verb}`, { reason: reason.value }); dlg.close(); }
      catch (ex) { if (!(ex instanceof ApiError)) throw ex; err.textContent = ex.message; }
      schedule("alarms", "sites");
    } }, t(verb)), h("button", { onclick: () => dlg.close() }, t("cancel"))]);
  reason.focus();
}

/** The camera snapshot linked to an alarm (GET /api/alarms/{id} ``evidence``), or an empty slot. */
function snapshotSlot(alarmId) {
  const slot = h("figure", { class: "snapshot", id: `snapshot-${alarmId || "none"}` },
    h("div", { class: "snap-empty" }, t("no_snapshot")), h("figcaption", {}, t("snapshot")));
  if (!alarmId) return slot;
  api("GET", `/api/alarms/${alarmId}`).then((d) => {
    const ev = (d.evidence || [])[0];
    if (!ev) return;
    slot.replaceChildren(h("img", { src: `/api/evidence/${encodeURIComponent(ev.id)}`, alt: t("snapshot") }),
      h("figcaption", {}, `${t("snapshot")} · ${ev.camera || ""} · `, age(ev.ts || ev.captured_at, 1e9)));
  }, (ex) => { if (!(ex instanceof ApiError)) throw ex; });
  return slot;
}

/**
 * The live video of the camera that sees ``site`` (the nearest: the one its alarms link to), over
 * WebRTC from the hub (hub/liveview.py). Starts at once; ``slot.stop()`` ends the view (the
 * dialog's close calls it). A refusal (e.g. the camera's viewer limit) is shown in the caption.
 */
function liveSlot(site) {
  const video = h("video", { class: "live-video", id: "live-video", autoplay: true, muted: true, playsinline: true });
  video.muted = true;
  const state = h("span", { class: "live-state", id: "live-state", role: "status" }, t("live_connecting"));
  const cam = h("span", { class: "live-camera" });
  const slot = h("figure", { class: "live" }, video, h("figcaption", {}, `${t("live_view")} `, cam, " · ", state));
  let live = null;
  let closed = false;
  slot.stop = () => { closed = true; if (live) live.stop(); };
  const say = (key, extra) => { state.textContent = extra ? `${t(key)}: ${extra}` : t(key); state.dataset.state = key; };
  (async () => {
    const seen = await api("GET", `/api/sites/${encodeURIComponent(site)}/cameras`);
    if (!seen.length) { say("live_no_camera"); video.hidden = true; return; }
    if (closed) return;
    const camera = seen[0].camera;
    cam.textContent = camera;
    slot.dataset.camera = camera;
    live = await startLive(video, (body) => api("POST", `/api/cameras/${encodeURIComponent(camera)}/live`, body),
      (view) => api("DELETE", `/api/live/${encodeURIComponent(view)}`), (st) => say(`live_${st}`));
    slot.dataset.view = live.view;
    if (closed) live.stop();
  })().catch((ex) => {
    if (!(ex instanceof ApiError)) throw ex;
    say("live_refused", ex.message);
    video.hidden = true;
  });
  return slot;
}

/** A 112/119 view link to the camera of ``slot`` (operators): recipient and lifetime in, the URL out once. */
function shareBox(slot) {
  const recipient = h("input", { id: "link-recipient", maxlength: 64, placeholder: "police-112" });
  const ttl = h("select", { id: "link-ttl" }, LINK_TIMES.map(([k, v]) => h("option", { value: String(v) }, t(k))));
  const out = h("p", { class: "link-out", id: "link-out", "aria-live": "polite" });
  const list = h("ul", { class: "link-list", id: "link-list" });
  const send = slot.alarmId ? h("input", { type: "checkbox", id: "link-send" }) : null;
  const refresh = async () => {
    const now = serverNow();
    const open = (await api("GET", "/api/camera-links")).filter((l) =>
      l.camera === slot.dataset.camera && !l.revoked_at && l.expires_at > now);
    replace(list, open.map((l) => h("li", { dataset: { link: String(l.id) } },
      `${l.recipient} · ${t("link_expires")} `, clock(l.expires_at), " ",
      h("button", { class: "link-revoke", onclick: async () => {
        try { await api("DELETE", `/api/camera-links/${l.id}`); } catch (ex) { if (!(ex instanceof ApiError)) throw ex; out.textContent = ex.message; }
        await refresh();
      } }, t("revoke")))));
  };
  const make = h("button", { id: "link-make", onclick: async () => {
    out.textContent = "";
    if (!slot.dataset.camera) { out.textContent = t("live_no_camera"); return; }
    try {
      const link = await api("POST", "/api/camera-links", { camera: slot.dataset.camera, recipient: recipient.value.trim(),
        ttl_s: Number(ttl.value), ...(send && send.checked ? { alarm: slot.alarmId } : {}) });
      out.replaceChildren(`${t("link_made")} · ${t("link_expires")} `, clock(link.expires_at), " ",
        h("input", { id: "link-url", readonly: true, value: link.url, size: 60 }),
        link.alert ? h("span", { class: "small", id: "link-alert" }, ` · CAP ${link.alert}`) : null);
    } catch (ex) { if (!(ex instanceof ApiError)) throw ex; out.textContent = ex.message; }
    await refresh();
  } }, t("make_link"));
  const box = h("details", { class: "share" }, h("summary", {}, t("share_link")),
    h("label", {}, t("recipient"), recipient), h("label", {}, t("link_ttl"), ttl),
    send ? h("label", { class: "exercise-check" }, h("span", {}, send, ` ${t("link_send")}`)) : null, make, out, list);
  box.addEventListener("toggle", () => { if (box.open) refresh().catch(() => {}); });
  return box;
}

/** One alarm: what it is, the snapshot taken when it was raised, and the camera's live video. */
function alarmDialog(a) {
  const live = liveSlot(a.site);
  live.alarmId = a.id; // a link made here goes out with this alarm's alert, when the hub forwards alerts
  const dlg = dialog("alarm-dlg", `${t("alarm")}: ${siteName(a.site)} — ${a.message || a.rule}`, [
    h("p", {}, h("span", { class: `prio ${a.priority}` }, t(a.priority)), ` ${t(a.state)} · ${a.device}/${a.rule} · `,
      age(a.raised_at || a.changed_at, 1e9)),
    h("div", { class: "media" }, snapshotSlot(a.id), live), driversSlot(a.id),
    can("operator") ? shareBox(live) : null,
  ], [h("button", { id: "alarm-close", onclick: () => dlg.close() }, t("close"))], () => live.stop());
}

/** The neighbours behind a network-forecast alarm (GET /api/alarms/{id} ``drivers``), heaviest first;
 * nothing for any other alarm. */
function driversSlot(alarmId) {
  const slot = h("div", { class: "forecast-drivers", id: `drivers-${alarmId || "none"}` });
  if (!alarmId) return slot;
  api("GET", `/api/alarms/${alarmId}`).then((d) => {
    const ds = d.drivers || [];
    if (!ds.length) return;
    slot.replaceChildren(h("h4", {}, t("forecast_drivers")), h("ol", { class: "drivers" }, ds.map((n) =>
      h("li", { dataset: { site: n.site } }, h("b", {}, siteName(n.site)), ` ${n.site} · ${n.distance_km.toFixed(2)} km · `,
        n.crossed_ago_s === null ? t("wet_now") : `${t("crossed_ago")} ${Math.round(n.crossed_ago_s / 60)} ${t("min_ago")}`,
        ` · ${n.depth_cm.toFixed(1)} cm · ${n.rise_cm_per_min >= 0 ? "+" : ""}${n.rise_cm_per_min.toFixed(2)} cm/min`))));
  }, (ex) => { if (!(ex instanceof ApiError)) throw ex; });
  return slot;
}

const KEY_POINTS = new Set(["water_depth_cm", "barrier_state", "gate_state", "mode", "motor_fault", "limit_closed",
  "limit_open", "displacement_mm", "rain_mm_10min", "alarm_active", "siren", "sign_message", "broadcast", "battery_v"]);

/** Values with quality and age; with ``device``, only the points an operator decides on. */
function valuesTable(latest, device) {
  const rows = latest.filter((v) => !device || (v.device === device && KEY_POINTS.has(v.point)));
  if (!rows.length) return h("p", { class: "empty" }, t("no_values"));
  return h("table", { class: "values" },
    h("thead", {}, h("tr", {}, [device ? null : "device", "point", "value", "quality", "age"].filter(Boolean).map((k) => h("th", {}, t(k))))),
    h("tbody", {}, rows.map((v) => h("tr", { class: `q-${v.quality}`, dataset: { point: `${v.device}/${v.point}` } },
      device ? null : h("td", {}, v.device), h("td", {}, v.point),
      h("td", { class: "num" }, `${typeof v.value === "number" ? Math.round(v.value * 100) / 100 : v.value} ${v.unit || ""}`),
      h("td", {}, h("span", { class: `q q-${v.quality}` }, t(v.quality))),
      h("td", {}, age(v.ts))))));
}

function ruleBlock(site) {
  const active = sortAlarms(S.alarms.filter((a) => a.site === site && a.active));
  if (!active.length) return [h("p", { class: "empty" }, t("no_rule")), null];
  const a = active[0];
  return [h("div", { class: "rule", id: "rule-fired" },
    h("span", { class: `prio ${a.priority}` }, t(a.priority)), " ", h("b", {}, a.rule), ` ${a.device}/${a.point} — ${a.message} · `,
    age(a.raised_at, 1e9)), a.id];
}

/** Select-before-operate for one device command; reopening waits for a second approver. */
function commandDialog(site, device, kind, action) {
  const opening = isOpening(action);
  const reason = h("input", { id: "cmd-reason", required: true, maxlength: 200 });
  const defaults = defaultParams(kind, action);
  const inputs = (V.actions.get(action) || { params: [] }).params.map((p) => [p, p.choices.length
    ? h("select", { id: `cmd-param-${p.name}`, dataset: { param: p.name } }, p.choices.map((c) =>
      h("option", { value: String(c), selected: c === defaults[p.name] }, c === "" ? t("sign_blank") : t(String(c)))))
    : h("input", { id: `cmd-param-${p.name}`, dataset: { param: p.name }, value: String(defaults[p.name]) })]);
  const err = h("p", { class: "error", role: "alert", id: "cmd-error" });
  const progress = h("div", { class: "progress", id: "cmd-progress", "aria-live": "polite" });
  const values = h("div", { class: "dlg-values" }, valuesTable(S.latest, device));
  const [rule, alarmId] = ruleBlock(site);
  const exBox = exerciseBox(areaOf(site));
  const exec = h("button", { class: "danger", id: "cmd-execute" }, `${t("execute")}: ${t(action)}`);
  const live = liveSlot(site);
  const cd = countdown(serverNow() + SELECT_TIMEOUT_S, "select_expires", () => {
    if (dlg.dataset.cmd) return;
    exec.disabled = true;
    err.textContent = t("select_expired");
  });
  const body = [
    h("p", { class: "note" }, t("selection_note")),
    h("dl", { class: "target" }, h("dt", {}, t("target")), h("dd", { id: "cmd-target" }, `${siteName(site)} (${site}) / ${device} / ${t(action)}`)),
    opening ? h("p", { class: "note warn" }, t("reopen_note")) : null,
    h("h3", {}, t("live_values")), values,
    h("h3", {}, t("rule_fired")), rule,
    h("div", { class: "media" }, snapshotSlot(alarmId), live), driversSlot(alarmId),
    h("label", {}, t("reason"), reason), inputs.map(([p, el]) => h("label", {}, t(p.name), el)),
    exBox ? h("label", { class: "exercise-check" }, h("span", {}, exBox, ` ${t("send_as_exercise")}`)) : null,
    h("p", { class: "select-cd" }, cd), err, progress,
  ];
  const dlg = dialog("cmd-dlg", `${t(action)} — ${siteName(site)}`, body,
    [exec, h("button", { id: "cmd-close", onclick: () => dlg.close() }, t("close"))], () => live.stop());
  const refreshValues = () => replace(values, valuesTable(S.latest, device));
  dlg.refresh = async () => {
    refreshValues();
    if (!dlg.dataset.cmd) return;
    const c = await api("GET", `/api/commands/${dlg.dataset.cmd}`);
    renderProgress(progress, c);
  };
  openDialogs.add(dlg);
  exec.addEventListener("click", async () => {
    if (!reason.value.trim()) { err.textContent = t("reason"); reason.focus(); return; }
    exec.disabled = true;
    err.textContent = "";
    try {
      const out = await api("POST", "/api/commands", {
        site, device, action, reason: reason.value, params: paramValues(inputs), ...(exBox && exBox.checked ? { exercise: true } : {}),
      });
      dlg.dataset.cmd = out.cmd_id;
      cd.remove();
      await dlg.refresh();
    } catch (ex) {
      if (!(ex instanceof ApiError)) throw ex;
      err.textContent = ex.message;
      exec.disabled = false;
    }
  });
  reason.focus();
}

/** The dialog's parameter values, typed as the vocabulary says (a select's value is a string). */
function paramValues(inputs) {
  return Object.fromEntries(inputs.map(([p, el]) => {
    const choice = p.choices.find((c) => String(c) === el.value);
    if (choice !== undefined) return [p.name, choice];
    if (p.type === "int" || p.type === "float") return [p.name, Number(el.value)];
    if (p.type === "bool") return [p.name, el.value === "true"];
    return [p.name, el.value];
  }));
}

function renderProgress(box, c) {
  const lines = [h("p", { class: `cmd-state st-${c.state}`, id: "cmd-state", dataset: { state: c.state } },
    exerciseMark(c), " ", `${t("state")}: `, h("b", {}, c.state === "verified" ? `✔ ${t("verified")}` : t(c.state)), c.detail ? ` — ${c.detail}` : "")];
  if (c.report.length) lines.push(reportTable(c.report));
  if (c.state === "awaiting_approval") lines.push(h("p", { class: "waiting", id: "cmd-waiting" }, `⏳ ${t("waiting_second")}`));
  if (c.not_after && !["verified", "rejected", "expired", "failed", "timed_out", "refused", "cancelled", "send_failed"].includes(c.state)) {
    lines.push(h("p", {}, countdown(c.not_after, "cmd_expires")));
  }
  lines.push(h("p", { class: "small" }, `${t("issued_by")}: ${c.issued_by}`, c.approved_by.length ? ` · ${t("approved_by")}: ${c.approved_by.join(", ")}` : ""));
  if (c.replies.length) lines.push(h("ol", { class: "replies" }, c.replies.map((r) => h("li", {}, `${r.status}${r.reason ? ` — ${r.reason}` : ""} · `, age(r.ts, 1e9)))));
  replace(box, lines);
}

/** A self-test's per-point report (the terminal reply's ``report``), failures first and marked; a
 * point the device's birth does not name is shown with "(?)": the hub shows a report, never trusts it. */
function reportTable(report) {
  const rows = [...report].sort((a, b) => Number(a.ok) - Number(b.ok));
  return [h("h3", {}, t("report")), h("table", { class: "values report", id: "cmd-report" },
    h("thead", {}, h("tr", {}, ["point", "value", "quality", "state", "why"].map((k) => h("th", {}, t(k))))),
    h("tbody", {}, rows.map((r) => h("tr", { class: r.ok ? "ok" : "fail", dataset: { point: r.point, ok: String(r.ok) } },
      h("td", {}, r.point, r.known === false ? h("span", { class: "small", title: t("unknown_point") }, " (?)") : null), h("td", { class: "num" }, r.value === null || r.value === undefined ? "—" : String(r.value)),
      h("td", {}, h("span", { class: `q q-${r.quality}` }, t(r.quality))),
      h("td", {}, h("b", {}, r.ok ? `✔ ${t("ok")}` : `✘ ${t("fail")}`)), h("td", {}, r.why || "")))))];
}

/** A supervisor's approval of an opening: the same select-before-operate view, then approve/reject. */
async function approvalDialog(c) {
  if (S.siteId !== c.site) { S.siteId = c.site; await loadSite(); }
  const reason = h("input", { id: "approve-reason", required: true, maxlength: 200, value: "" });
  const err = h("p", { class: "error", role: "alert", id: "approve-error" });
  const progress = h("div", { class: "progress", id: "approve-progress" });
  const [rule, alarmId] = ruleBlock(c.site);
  const ok = h("button", { class: "danger", id: "approve-ok" }, `${t("approve")}: ${t(c.action)}`);
  const no = h("button", { id: "approve-reject" }, t("reject"));
  const cd = countdown(serverNow() + SELECT_TIMEOUT_S, "select_expires", () => {
    if (dlg.dataset.done) return;
    ok.disabled = true;
    err.textContent = t("select_expired");
  });
  const values = h("div", { class: "dlg-values" }, valuesTable(S.latest, c.device));
  const dlg = dialog("approve-dlg", `${t("approve")}: ${t(c.action)} — ${siteName(c.site)}`, [
    h("p", { class: "note" }, t("selection_note")),
    c.exercise_id ? h("p", { class: "note warn", id: "approve-exercise" }, exerciseMark(c), ` ${t("exercise_cmd")}`) : null,
    h("dl", { class: "target" }, h("dt", {}, t("target")), h("dd", {}, `${siteName(c.site)} (${c.site}) / ${c.device} / ${t(c.action)}`),
      h("dt", {}, t("issued_by")), h("dd", {}, `${c.issued_by} — ${c.reason}`)),
    h("h3", {}, t("live_values")), values, h("h3", {}, t("rule_fired")), rule, snapshotSlot(alarmId), driversSlot(alarmId),
    h("label", {}, t("reason"), reason), h("p", { class: "select-cd" }, cd), err, progress,
  ], [ok, no, h("button", { onclick: () => dlg.close() }, t("close"))]);
  dlg.refresh = async () => {
    replace(values, valuesTable(S.latest, c.device));
    if (dlg.dataset.done) renderProgress(progress, await api("GET", `/api/commands/${c.cmd_id}`));
  };
  openDialogs.add(dlg);
  const decide = async (verb) => {
    ok.disabled = no.disabled = true;
    try {
      await api("POST", `/api/commands/${c.cmd_id}/${verb}`, { reason: reason.value || (verb === "approve" ? "approved" : "") });
      dlg.dataset.done = "1";
      cd.remove();
      await dlg.refresh();
    } catch (ex) {
      if (!(ex instanceof ApiError)) throw ex;
      err.textContent = ex.message;
      ok.disabled = no.disabled = false;
    }
    schedule("commands");
  };
  ok.addEventListener("click", () => decide("approve"));
  no.addEventListener("click", () => decide("reject"));
  reason.focus();
}

/** Block / evacuate an area: list what the hub will act on (the vocabulary's steps per kind, as
 * plan_operation), with each step's parameters as the vocabulary gives them (the sign's preset
 * text, the broadcast's value), then each device's state as the operation runs. */
async function operationDialog(kind, area, req = null) {
  const ids = [...new Set([...S.places.filter((p) => p.area === area).map((p) => p.site),
    ...S.sites.filter((x) => x.area === area).map((x) => x.site)])].sort();
  const details = await Promise.all(ids.map((id) => api("GET", `/api/sites/${encodeURIComponent(id)}`).then((d) => d, (ex) => {
    if (ex instanceof ApiError && ex.status === 404) return null;
    throw ex;
  })));
  const plan = [];
  for (const d of details.filter(Boolean)) for (const dev of d.devices) {
    for (const step of stepsOf(dev.kind, kind)) plan.push([d.site.site, dev.device, step]);
  }
  const reason = h("input", { id: "op-reason", required: true, maxlength: 200 });
  const err = h("p", { class: "error", role: "alert", id: "op-error" });
  const progress = h("div", { class: "progress", id: "op-progress", "aria-live": "polite" });
  const exBox = exerciseBox(area);
  const title = t(kind === "block" ? "block_area" : "evacuate_area");
  const exec = h("button", { class: "danger", id: "op-execute", disabled: !plan.length },
    `${t(req ? "accept_request" : "execute")}: ${title}`);
  const refuse = req ? h("button", { id: "op-refuse" }, t("refuse_request")) : null;
  const cd = countdown(serverNow() + SELECT_TIMEOUT_S, "select_expires", () => {
    if (dlg.dataset.op) return;
    exec.disabled = true;
    err.textContent = t("select_expired");
  });
  const dlg = dialog("op-dlg", `${title}: ${area}`, [
    req ? h("div", { class: "request-box", id: "op-request" }, h("b", {}, `▲ ${t("province_request")}`),
      h("p", {}, `${t("requested_by")}: ${req.requested_by} · `, clock(req.requested_at)), h("p", {}, `“${req.reason}”`))
      : null,
    h("p", { class: "note" }, t("selection_note")),
    h("h3", {}, `${t("devices_acted")} (${plan.length})`),
    plan.length ? h("ul", { class: "op-plan", id: "op-plan" }, plan.map(([site, dev, step]) => {
      const st = siteStatus(site);
      return h("li", { dataset: { action: step.action, device: dev } }, h("span", { class: `chip ${st.worst}` }, t(st.worst)),
        ` ${siteName(site)} (${site}) / ${dev} → ${t(step.action)}`, paramsText(step.action, argsOf(step)));
    })) : h("p", { class: "empty" }, t("no_devices")),
    h("label", {}, t("reason"), reason),
    exBox ? h("label", { class: "exercise-check" }, h("span", {}, exBox, ` ${t("send_as_exercise")}`)) : null,
    h("p", { class: "select-cd" }, cd), err, progress,
  ], [exec, refuse, h("button", { onclick: () => dlg.close() }, t("close"))]);
  dlg.refresh = async () => {
    if (!dlg.dataset.op) return;
    replace(progress, operationTable(await api("GET", `/api/operations/${encodeURIComponent(dlg.dataset.op)}`)));
  };
  openDialogs.add(dlg);
  exec.addEventListener("click", async () => {
    if (!reason.value.trim()) { err.textContent = t("reason"); reason.focus(); return; }
    exec.disabled = true;
    try {
      const out = req
        ? await api("POST", `/api/province-requests/${encodeURIComponent(req.request_id)}/accept`, { reason: reason.value })
        : await api("POST", "/api/operations", { kind, area, reason: reason.value, ...(exBox && exBox.checked ? { exercise: true } : {}) });
      dlg.dataset.op = out.operation_id;
      if (refuse) refuse.remove();
      cd.remove();
      await dlg.refresh();
    } catch (ex) {
      if (!(ex instanceof ApiError)) throw ex;
      err.textContent = ex.message;
      exec.disabled = false;
    }
  });
  if (refuse) refuse.addEventListener("click", async () => {
    if (!reason.value.trim()) { err.textContent = t("reason"); reason.focus(); return; }
    refuse.disabled = true;
    try {
      await api("POST", `/api/province-requests/${encodeURIComponent(req.request_id)}/refuse`, { reason: reason.value });
      dlg.close();
    } catch (ex) {
      if (!(ex instanceof ApiError)) throw ex;
      err.textContent = ex.message;
      refuse.disabled = false;
    }
  });
  reason.focus();
}

/** An action's parameters as an operator reads them (" · 표시 문구: “…”"): a value with a label
 * (a broadcast's "evacuate") is translated, free text is quoted as it will be shown. */
function paramsText(action, params) {
  const spec = V.actions.get(action);
  if (!spec) return "";
  return spec.params.filter((p) => p.name in params).map((p) => {
    const v = String(params[p.name]);
    const label = v === "" ? t("sign_blank") : t(v);
    return ` · ${t(p.name)}: ${label === v ? `“${v}”` : label}`;
  }).join("");
}

/** One operation, per device: what was planned, refused up front (with why), sent, and how it ended. */
function operationTable(op) {
  const counts = Object.entries(op.counts).filter(([, n]) => n > 0);
  return [
    h("p", { class: "op-counts", id: "op-counts" }, exerciseMark(op), " ", counts.map(([st, n]) =>
      h("span", { class: `chip count st-${st}`, dataset: { state: st, n: String(n) } }, `${t(st)} ${n}`))),
    h("table", { class: "grid-table op-devices", id: "op-devices" },
      h("thead", {}, h("tr", {}, [t("site"), t("device"), t("kind"), t("action"), t("state"), t("reason")].map((x) => h("th", {}, x)))),
      h("tbody", {}, op.devices.map((d) => h("tr", { class: `st-${d.state}`, dataset: { state: d.state, device: `${d.site}/${d.device}`, action: d.action } },
        h("td", {}, siteName(d.site)), h("td", {}, d.device), h("td", {}, d.kind),
        h("td", {}, t(d.action), paramsText(d.action, d.params || {})),
        h("td", {}, h("b", {}, t(d.state))), h("td", { class: "small" }, d.reason || ""))))),
  ];
}

async function operationView(id) {
  const box = h("div", { id: "op-progress" });
  const dlg = dialog("op-dlg", t("operation"), [box], [h("button", { onclick: () => dlg.close() }, t("close"))]);
  dlg.refresh = async () => replace(box, operationTable(await api("GET", `/api/operations/${encodeURIComponent(id)}`)));
  openDialogs.add(dlg);
  await dlg.refresh();
}

// --- site view ----------------------------------------------------------------------------------

function siteView() {
  if (!S.siteId) return h("p", { class: "empty" }, t("open_site"));
  const d = S.siteDetail;
  const st = siteStatus(S.siteId);
  const head = h("div", { class: `site-head ${st.worst}` },
    h("h2", { id: "site-title" }, `${siteName(S.siteId)} `, h("small", {}, S.siteId)),
    h("span", { class: `chip ${st.worst}`, id: "site-worst" }, t(st.worst)),
    h("span", { class: `chip link-${st.link}` }, t(st.link === "normal" ? "online" : st.link)),
    st.site ? h("span", {}, `${t("last_seen")} `, age(st.site.last_seen)) : null,
    st.site ? h("span", { class: "small" }, `${st.site.area} · ${st.site.agent_version}`) : null);
  if (!d) return head;
  const devices = d.devices.map((dev) => deviceCard(dev));
  const charts = CHART_POINTS.flatMap(([point, unit]) => S.latest.filter((v) => v.point === point).map((v) =>
    chartOf(v.device, point, unit)));
  const alarms = sortAlarms(S.alarms.filter((a) => a.site === S.siteId));
  const sel = S.selectedAlarm || (alarms[0] && alarms[0].id);
  const recent = S.commands.filter((c) => c.site === S.siteId).slice(0, 5);
  return [
    head,
    h("div", { class: "site-grid" },
      h("section", { class: "card", id: "site-controls" }, h("h3", {}, t("controls")), devices),
      h("section", { class: "card" }, h("h3", {}, t("history")), h("div", { class: "charts", id: "charts" }, charts)),
      h("section", { class: "card", id: "site-values" }, h("h3", {}, t("live_values")), valuesTable(S.latest)),
      h("section", { class: "card" }, h("h3", {}, t("alarms")),
        alarms.length ? h("ol", { class: "alarm-list" }, alarms.map(alarmRow)) : h("p", { class: "empty" }, t("no_alarms")),
        snapshotSlot(sel), driversSlot(sel),
        recent.length ? [h("h3", {}, t("commands")), h("ul", { class: "cmd-mini" }, recent.map((c) =>
          h("li", { class: `st-${c.state}` }, exerciseMark(c), ` ${t(c.action)} · ${c.device} · `, h("b", {}, t(c.state)), " · ", age(c.created_at, 1e9))))] : null),
      h("section", { class: "card wide", id: "site-events" }, h("h3", {}, t("events")), eventsList(S.events))),
  ];
}

/** The site's recent edge events, newest first: the hub alarm priority of a kind that raises one
 * (``alarm``), and a late mark for one replayed after an outage (``historical``). */
function eventsList(events) {
  if (!events.length) return h("p", { class: "empty" }, t("no_events"));
  return h("table", { class: "grid-table events" },
    h("thead", {}, h("tr", {}, [t("time"), t("kind"), t("device"), t("detail")].map((x) => h("th", {}, x)))),
    h("tbody", {}, events.map((e) => h("tr", { class: e.historical ? "late" : "", dataset: { kind: e.kind, seq: String(e.seq) } },
      h("td", {}, clock(e.ts), e.historical ? [" ", h("span", { class: "chip late", title: t("late_note") }, t("late"))] : null),
      h("td", {}, e.alarm ? [h("span", { class: `prio ${e.alarm}` }, t(e.alarm)), " "] : null, e.kind),
      h("td", {}, e.device || "—"), h("td", { class: "small" }, e.detail)))));
}

/** Up to the last hour; a shorter history is drawn over its own span (at least 10 minutes). */
function chartOf(device, point, unit) {
  const pts = S.history[`${device}/${point}`] || [];
  const now = serverNow();
  const since = Math.min(now - 600, Math.max(now - 3600, pts.length ? pts[0][0] : now - 3600));
  return lineChart(`${device} · ${point}`, unit, pts, since, now);
}

function deviceCard(dev) {
  const vals = S.latest.filter((v) => v.device === dev.device);
  const worstQ = vals.reduce((w, v) => (v.quality !== "good" ? v.quality : w), "good");
  const states = vals.filter((v) => STATE_POINTS.includes(v.point));
  // advisory actions (forecast.prealert) are the hub's own, sent by its forecast: no button
  const buttons = can("operator") ? offers(dev.kind).filter((act) => !(V.actions.get(act) || {}).advisory).map((act) =>
    h("button", { class: act.endsWith(".close") || act === "siren.on" ? "danger" : "", dataset: { action: act, device: dev.device, key: `c-${dev.device}-${act}` },
      onclick: () => commandDialog(S.siteId, dev.device, dev.kind, act) }, t(act))) : [];
  return h("div", { class: "device", dataset: { device: dev.device } },
    h("div", { class: "dev-head" }, h("b", {}, dev.device), ` ${dev.kind} · ${dev.profile} `,
      h("span", { class: `q q-${worstQ}`, title: t("health") }, `${t("health")}: ${t(worstQ)}`)),
    states.length ? h("div", { class: "states" }, states.map((v) => h("div", {
      class: `state-tile q-${v.quality} v-${String(v.value)}`, id: `state-${dev.device}-${v.point}`, dataset: { value: String(v.value) },
    }, h("span", { class: "small" }, v.point), h("b", {}, String(v.value)), age(v.ts)))) : null,
    buttons.length ? h("div", { class: "cmd-buttons" }, buttons) : (can("operator") ? null : h("p", { class: "small view-only" }, t("view_only"))));
}

// --- incidents, commands, forwarding, audit -----------------------------------------------------

function incidentsView() {
  const list = S.incidents;
  if (!list.length) return h("p", { class: "empty" }, t("no_incidents"));
  return h("table", { class: "grid-table", id: "incidents" },
    h("thead", {}, h("tr", {}, ["#", t("area"), t("state"), t("alarms"), t("age"), ""].map((x) => h("th", {}, x)))),
    h("tbody", {}, list.map((i) => h("tr", { class: `st-${i.state}` }, h("td", {}, String(i.id)), h("td", {}, `${i.area} — ${i.title}`),
      h("td", {}, t(i.state)), h("td", { class: "num" }, String(i.alarms)), h("td", {}, age(i.opened_at, 1e9)),
      h("td", {}, i.state === "open" && can("supervisor") ? h("button", { dataset: { key: `ci-${i.id}` }, onclick: async () => {
        await api("POST", `/api/incidents/${i.id}/close`, { reason: "closed from console" });
        schedule("incidents", "alarms");
      } }, t("close_incident")) : null)))));
}

function commandsView() {
  return [S.operations.length ? h("details", { class: "more", id: "operations", open: true }, h("summary", {}, `${t("operations")} (${S.operations.length})`),
    h("table", { class: "grid-table" },
      h("thead", {}, h("tr", {}, [t("time"), t("action"), t("area"), t("issued_by"), t("counts"), ""].map((x) => h("th", {}, x)))),
      h("tbody", {}, S.operations.map((o) => h("tr", { dataset: { op: o.id } },
        h("td", {}, age(o.created_at, 1e9)), h("td", {}, exerciseMark(o), " ", t(o.kind)), h("td", {}, o.area), h("td", {}, o.issued_by),
        h("td", {}, Object.entries(o.counts).filter(([, n]) => n > 0).map(([st, n]) => h("span", { class: `chip count st-${st}` }, `${t(st)} ${n}`))),
        h("td", {}, h("button", { dataset: { key: `op-${o.id}` }, onclick: () => operationView(o.id) }, t("view")))))))) : null,
  h("table", { class: "grid-table", id: "commands" },
    h("thead", {}, h("tr", {}, [t("time"), t("target"), t("action"), t("state"), t("issued_by"), t("approved_by"), ""].map((x) => h("th", {}, x)))),
    h("tbody", {}, S.commands.map((c) => h("tr", { class: `st-${c.state}`, dataset: { cmd: c.cmd_id } },
      h("td", {}, age(c.created_at, 1e9)), h("td", {}, `${siteName(c.site)} / ${c.device}`), h("td", {}, exerciseMark(c), " ", t(c.action)),
      h("td", {}, h("b", {}, t(c.state)), c.detail ? ` — ${c.detail}` : ""), h("td", {}, c.issued_by), h("td", {}, c.approved_by.join(", ")),
      h("td", {}, approvable(c) ? h("button", { class: "primary approve", dataset: { key: `ap-${c.cmd_id}` }, onclick: () => approvalDialog(c) }, t("approve")) : null)))))];
}

function approvable(c) {
  return c.state === "awaiting_approval" && can("supervisor") && c.issued_by !== S.me.username;
}

function renderApprovals() {
  const box = $("approvals");
  const pending = S.commands.filter(approvable);
  if (!pending.length) { box.replaceChildren(); return; }
  replace(box, h("button", { class: "warnbtn", id: "approvals-btn", dataset: { key: "approvals" }, onclick: () => show("commands") },
    `${t("pending_approvals")}: ${pending.length}`));
}

async function forwardingView(v) {
  let data;
  try {
    data = await api("GET", "/api/forwarding");
  } catch (ex) {
    if (!(ex instanceof ApiError)) throw ex;
    if (S.view === "forwarding") replace(v, h("p", { class: "empty", id: "forwarding-none" }, t("forwarding_none"), ` (${ex.status})`));
    return;
  }
  if (S.view !== "forwarding") return;
  const rows = data.deliveries || [];
  const order = { escalated: 0, retrying: 1, delivered: 2, acknowledged: 3 };
  rows.sort((a, b) => (order[a.state] ?? 1) - (order[b.state] ?? 1));
  const missed = Object.entries(data.not_forwarded).filter(([, n]) => n > 0);
  // an operation's alert is the thread "operation:<id>" (hub/alerting.py operation_notice)
  const drills = new Set(S.operations.filter((o) => o.exercise_id).map((o) => `operation:${o.id}`));
  const notForwarded = h("section", { class: "card", id: "not-forwarded" }, h("h3", {}, t("not_forwarded")),
    missed.length ? h("table", { class: "grid-table" }, h("thead", {}, h("tr", {}, [t("reason"), t("count")].map((x) => h("th", {}, x)))),
      h("tbody", {}, missed.map(([why, n]) => h("tr", { dataset: { reason: why } }, h("td", {}, t(why)), h("td", { class: "num" }, String(n))))))
      : h("p", { class: "empty" }, t("all_forwarded")));
  replace(v, notForwarded, h("h3", {}, t("deliveries")), rows.length ? h("table", { class: "grid-table", id: "forwarding" },
    h("thead", {}, h("tr", {}, [t("alert"), t("recipient"), t("state"), t("attempts"), t("age")].map((x) => h("th", {}, x)))),
    h("tbody", {}, rows.map((d) => h("tr", { class: `st-${d.state}`, dataset: { thread: d.thread } },
      h("td", {}, drills.has(d.thread) ? [h("span", { class: "chip exercise" }, t("exercise")), " "] : null, d.headline || d.alert_id),
      h("td", {}, d.recipient), h("td", {}, h("b", {}, t(d.state))), h("td", { class: "num" }, String(d.attempts ?? "")),
      h("td", {}, age(d.updated_at, 1e9)))))) : h("p", { class: "empty", id: "forwarding-empty" }, t("no_deliveries")));
}

async function auditView(v) {
  const rows = [];
  let after = 0;
  for (;;) {
    const page = await api("GET", `/api/audit?after=${after}&limit=5000`);
    rows.push(...page);
    if (page.length < 5000) break;
    after = page[page.length - 1].id;
  }
  if (S.view !== "audit") return;
  const last = rows.slice(-300).reverse();
  replace(v, h("table", { class: "grid-table audit", id: "audit" },
    h("thead", {}, h("tr", {}, ["#", t("time"), t("actor"), t("action"), t("target"), t("detail")].map((x) => h("th", {}, x)))),
    h("tbody", {}, last.map((r) => h("tr", {}, h("td", { class: "num" }, String(r.id)),
      h("td", {}, new Date(r.ts * 1000).toLocaleString(currentLang() === "ko" ? "ko-KR" : "en-GB")),
      h("td", {}, r.actor), h("td", {}, r.action), h("td", {}, r.target),
      h("td", { class: "small" }, JSON.stringify(r.detail)))))));
}

async function quarantineView(v) {
  // what the edges sent that the hub refused (supervisors): newest first, with the reason
  const rows = await api("GET", "/api/quarantine?limit=300");
  if (S.view !== "quarantine") return;
  replace(v, rows.length ? h("table", { class: "grid-table", id: "quarantine" },
    h("thead", {}, h("tr", {}, [t("time"), t("site_topic"), t("reason"), t("bytes"), t("detail")].map((x) => h("th", {}, x)))),
    h("tbody", {}, rows.map((r) => h("tr", { dataset: { reason: r.reason } },
      h("td", {}, new Date(r.received_at * 1000).toLocaleString(currentLang() === "ko" ? "ko-KR" : "en-GB")),
      h("td", {}, r.site || r.topic), h("td", {}, r.reason), h("td", { class: "num" }, String(r.size)),
      h("td", { class: "small" }, r.error)))))
    : h("p", { class: "empty", id: "quarantine-empty" }, t("no_quarantine")));
}

// --- the province view (province/api.py) ---------------------------------------------------------
// The same page against the provincial hub: every city with its link (from the city's status),
// the age of its newest committed record, its epoch and counts; a map of every city over the
// shipped boundaries with the active alarms and the cross-boundary incidents; all cities' alarms
// with their site's data age, worst first; and the province's requests to cities. A provincial
// operator may *ask* a city to block or evacuate one of its areas; the city's operators decide
// and act (hub/requestdesk.py), and the answer comes back here.

const P = { me: null, cities: [], alarms: [], incidents: [], requests: [], timer: null, geo: null, proj: null };

function startProvince(me) {
  P.me = me;
  const header = h("header", { class: "top" },
    h("strong", { class: "brand" }, t("app")), h("span", { class: "hub", id: "province-mode" }, t("province")),
    h("span", { class: "me", id: "me" }, `${me.username} · ${me.role}`),
    h("button", { id: "lang", onclick: () => { toggleLang(); startProvince(me); } }, t("lang")),
    h("button", { id: "logout", onclick: provinceLogout }, t("logout")));
  const main = h("main", { class: "grid" },
    h("section", { id: "view", class: "view", "aria-live": "off" }),
    h("aside", { id: "alarms", class: "alarms", "aria-label": t("alarms") }));
  replace(document.body, header, main);
  if (P.timer) clearInterval(P.timer);
  P.timer = setInterval(loadProvince, 5000);
  const geo = P.geo ? Promise.resolve(P.geo) : fetch("/web/data/gyeonggi-municipalities-2018.geojson").then((r) => r.json());
  geo.then((g) => { P.geo = g; P.proj = new Projection(g); loadProvince(); });
}

async function provinceLogout() {
  clearInterval(P.timer);
  P.timer = null;
  await api("DELETE", "/api/session");
  showLogin();
}

async function loadProvince() {
  try {
    [P.cities, P.alarms, P.incidents, P.requests] = await Promise.all([api("GET", "/api/cities"),
      api("GET", "/api/alarms?limit=2000"), api("GET", "/api/incidents"), api("GET", "/api/requests?limit=200")]);
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) { clearInterval(P.timer); P.timer = null; showLogin(); return; }
    throw err;
  }
  if (!$("view")) return;
  replace($("view"), h("h2", {}, t("cities")), P.cities.length ? h("table", { class: "grid-table", id: "city-list" },
    h("thead", {}, h("tr", {}, [t("city"), t("link"), t("data_age"), t("epoch"), t("records"), t("quarantine")]
      .map((x) => h("th", {}, x)))),
    h("tbody", {}, P.cities.map((c) => h("tr", { class: "city-row", dataset: { city: c.city, link: c.link } },
      h("td", {}, c.city), h("td", {}, h("span", { class: `chip link-${c.link === "online" ? "normal" : c.link}` }, t(c.link))),
      h("td", {}, age(c.last_record_ts)), h("td", {}, c.epoch === null ? "—" : String(c.epoch)),
      h("td", {}, String(c.records_committed)), h("td", {}, String(c.quarantined))))))
    : h("p", { class: "empty" }, t("no_cities")), provinceMap(), provinceRequests());
  const active = P.alarms.filter((a) => ACTIVE_STATES.has(a.state))
    .sort((a, b) => (RANK[a.severity] ?? 9) - (RANK[b.severity] ?? 9) || a.raised_at - b.raised_at);
  replace($("alarms"),
    h("h2", {}, `${t("alarms")} `, h("span", { class: "count", id: "alarm-count" }, `${active.length}`)),
    active.length ? h("ol", { class: "alarm-list", id: "alarm-list" }, active.map((a) =>
      h("li", { class: `alarm-row ${a.severity} st-${a.state}`, dataset: { city: a.city, alarm: a.alarm_id, state: a.state } },
        h("span", { class: `prio ${a.severity}` }, t(a.severity)),
        h("span", {}, h("b", {}, a.city), " ", a.site, " ", h("span", { class: "msg" }, a.rule)),
        h("span", { class: "alarm-meta" }, h("span", { class: "state" }, t(a.state)), " · ", age(a.raised_at, 1e9),
          " · ", t("data_age"), " ", a.data_age_s === null ? "—" : age(serverNow() - a.data_age_s)))))
      : h("p", { class: "empty" }, t("no_alarms")));
}

/** Every city over the shipped boundaries (the reporting ones marked), the active alarms at their
 * places, worst on top, and each cross-boundary incident's alarms ringed. */
function provinceMap() {
  if (!P.geo) return null;
  const reporting = new Set(P.cities.flatMap((c) => [...districtsOf(c.city)]));
  const vb = fit(P.geo, P.proj, new Set());
  const u = Math.max(vb[2] / 860, vb[3] / 610);
  const svg = s("svg", { id: "province-map", viewBox: vb.map((n) => n.toFixed(1)).join(" "), role: "group", "aria-label": t("map") },
    ...boundaries(P.geo, P.proj, currentLang(), reporting, u));
  const ringed = new Set(P.incidents.flatMap((i) => i.alarms.map((a) => `${a.city}/${a.alarm_id}`)));
  const active = P.alarms.filter((a) => ACTIVE_STATES.has(a.state) && a.lat !== null && a.lon !== null)
    .sort((a, b) => (RANK[b.severity] ?? 9) - (RANK[a.severity] ?? 9));
  for (const a of active) {
    const [x, y] = P.proj.xy(a.lon, a.lat);
    const label = `${a.city} ${a.site} — ${t(a.severity)} ${a.rule}`;
    svg.append(s("g", { class: `site-marker ${a.severity}`, transform: `translate(${x.toFixed(1)},${y.toFixed(1)})`,
      dataset: { city: a.city, alarm: a.alarm_id } },
    s("title", {}, label), s("circle", { r: (7 * u).toFixed(1), class: "dot", "stroke-width": (2 * u).toFixed(1) }),
    ringed.has(`${a.city}/${a.alarm_id}`) ? s("circle", { r: (13 * u).toFixed(1), class: "incident-ring", "stroke-width": (3 * u).toFixed(1) }) : null));
  }
  return h("div", { class: "province-map-box" }, h("h2", {}, `${t("map")} · ${t("incidents_cross")} `,
    h("span", { class: "count", id: "incident-count" }, String(P.incidents.length))), svg);
}

/** The province's requests with their cities' answers; an operator may send one. */
function provinceRequests() {
  const rows = P.requests.slice().reverse().map((r) => h("tr", { class: `request-row st-${r.state}`, dataset: { request: r.request_id, state: r.state } },
    h("td", {}, r.city), h("td", {}, t(r.action === "block" ? "block_area" : "evacuate_area")), h("td", {}, r.area),
    h("td", {}, h("b", {}, t(`req_${r.state}`))), h("td", {}, r.commands ? `${r.verified}/${r.commands}` : "—"),
    h("td", { class: "small" }, `${r.requested_by} · `, age(r.created_at, 1e9)), h("td", { class: "small" }, r.why || "")));
  const table = rows.length ? h("table", { class: "grid-table", id: "request-list" },
    h("thead", {}, h("tr", {}, [t("city"), t("action"), t("area"), t("state"), t("verified"), t("requested_by"), t("reason")]
      .map((x) => h("th", {}, x)))), h("tbody", {}, rows)) : h("p", { class: "empty" }, t("no_requests"));
  return h("div", { class: "requests" }, h("h2", {}, t("requests")), table, can("operator", P.me) ? requestForm() : null);
}

function requestForm() {
  const city = h("select", { id: "req-city", "aria-label": t("city") }, P.cities.map((c) => h("option", { value: c.city }, c.city)));
  const action = h("select", { id: "req-action", "aria-label": t("action") },
    ["evacuate", "block"].map((a) => h("option", { value: a }, t(a === "block" ? "block_area" : "evacuate_area"))));
  const area = h("input", { id: "req-area", required: true, maxlength: 64, placeholder: "gg-goyang" });
  const reason = h("input", { id: "req-reason", required: true, maxlength: 200 });
  const err = h("p", { class: "error", role: "alert", id: "req-error" });
  const send = h("button", { class: "danger", id: "req-send" }, t("send_request"));
  send.addEventListener("click", async () => {
    if (!area.value.trim() || !reason.value.trim()) { err.textContent = `${t("area")} · ${t("reason")}`; return; }
    send.disabled = true;
    try {
      await api("POST", "/api/requests", { city: city.value, action: action.value, area: area.value.trim(), reason: reason.value });
      err.textContent = "";
      await loadProvince();
    } catch (ex) {
      if (!(ex instanceof ApiError)) throw ex;
      err.textContent = ex.message;
      send.disabled = false;
    }
  });
  return h("div", { class: "request-form", id: "request-form" }, h("p", { class: "note" }, t("request_note")),
    h("label", {}, t("city"), city), h("label", {}, t("action"), action), h("label", {}, t("area"), area),
    h("label", {}, t("reason"), reason), send, err);
}

// --- boot ---------------------------------------------------------------------------------------

setInterval(() => { if (S.me) { schedule(...ALL_PARTS); } }, 30000);
setInterval(() => { if (S.me && S.view === "map") renderMapOnly(); }, 5000);

function renderMapOnly() { replace($("view"), mapView()); }

api("GET", "/api/session").then(start, (ex) => {
  if (!(ex instanceof ApiError)) throw ex;
  showLogin();
});
