// The night dashboard's page: state pushed by the server over server-sent events,
// drawn with the DOM. Every value is put in the page as text (textContent via el()),
// never as HTML: names, reasons and log lines come from anyone on the bus.
"use strict";

const SEVERITY = { 1: "NONE", 2: "WARNING", 3: "SERIOUS", 4: "CRITICAL" };
const LEVEL = { 10: "DEBUG", 20: "INFO", 30: "WARNING", 40: "ERROR", 50: "CRITICAL" };
const PLOTS = ["psfFwhm", "zeroPoint", "skyMean"];
const MAX_LOGS = 2000;

const state = {
  cscs: [], camera: {}, images: new Map(), alarms: [], jobs: [], logs: [],
  thresholds: [], commands: false, taiOffset: 0, selected: null, cscNames: new Set(),
};

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "on") for (const [ev, fn] of Object.entries(value)) node.addEventListener(ev, fn);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(child == null ? "" : String(child)));
  }
  return node;
}

const $ = (id) => document.getElementById(id);
const nowTai = () => Date.now() / 1000 + state.taiOffset;
const fixed = (v, digits) => (typeof v === "number" ? v.toFixed(digits) : "");
const age = (seconds) => (typeof seconds === "number" ? `${seconds.toFixed(1)} s` : "–");

function severityOf(metric, value, instrument) {
  let worst = 1;
  if (typeof value !== "number") return worst;
  for (const rule of state.thresholds) {
    if (rule.metric !== metric || (rule.instrument && rule.instrument !== instrument)) continue;
    [[2, rule.warning], [3, rule.serious], [4, rule.critical]].forEach(([level, limit]) => {
      if (typeof limit !== "number") return;
      if (rule.direction === "above" ? value >= limit : value <= limit) worst = Math.max(worst, level);
    });
  }
  return worst;
}

// ---- CSCs and camera ------------------------------------------------------------------

function drawCscs() {
  const rows = state.cscs.map((c) => {
    const lost = c.condition.startsWith("LOST") || c.condition.startsWith("NO HEARTBEAT");
    const state_ = c.state.replace(/[()]/g, "");
    return el("tr", { class: lost ? "lost" : "", "data-csc": c.csc },
      el("td", {}, c.csc), el("td", { class: state_ }, c.state), el("td", {}, age(c.heartbeatAge)),
      el("td", { "data-testid": "condition" }, lost ? `LOST — ${c.condition}` : c.condition),
      el("td", {}, c.version), el("td", {}, c.latestImage),
      el("td", { class: "wrap bad" }, c.error));
  });
  $("cscs").replaceChildren(...rows);
  for (const c of state.cscs) {
    if (!state.cscNames.has(c.csc)) {
      state.cscNames.add(c.csc);
      $("log-csc").append(el("option", { value: c.csc }, c.csc));
    }
  }
}

function drawExposure() {
  const e = state.camera.exposure || {};
  if (!e.image) return;
  let text = `${e.camera}: ${e.image} ${e.type} ${fixed(e.expTime, 1)} s — ${e.phase}`;
  if (e.phase === "integrating" && typeof e.expTime === "number") {
    const left = Math.max(0, e.startTai + e.expTime - nowTai());
    text += `, ${left.toFixed(1)} s left`;
  }
  $("exposure").textContent = text;
}

function drawCamera() {
  drawExposure();
  const archivers = Object.entries(state.camera.archivers || {}).map(([csc, a]) =>
    el("div", {}, `${csc}: queue ${a.queueDepth} sensors, ${((a.bytesPerSecond || 0) / 1e6).toFixed(0)} MB/s, `
      + `${a.filesArchived} files since start, ${((a.freeBytes || 0) / 1e9).toFixed(1)} GB free`));
  $("archivers").replaceChildren(...archivers);
  const headers = Object.entries(state.camera.headers || {}).map(([csc, h]) =>
    el("div", {}, `${csc}: latest header ${h.image}`,
      h.missingKeywords ? el("span", { class: "bad" }, ` — missing ${h.missingKeywords}`)
        : el("span", { class: "ok" }, " — complete")));
  $("headers").replaceChildren(...headers);
}

// ---- alarms and commands --------------------------------------------------------------
// A row's buttons act on that row's alarm alone: the server sends its name as an exact
// name, never as a glob (an alarm forged on the bus may be called "*").

async function command(name, params) {
  const result = $("command-result");
  result.className = "";
  result.textContent = `${name} ${params.name}: sent…`;
  try {
    const response = await fetch(`/api/${name}`, {
      method: "POST", headers: { "Content-Type": "application/json", "X-Dashboard": "1" },
      body: JSON.stringify(params),
    });
    const answer = response.ok ? await response.json() : { ok: false, ack: response.status, result: await response.text() };
    result.className = answer.ok ? "done" : "refused";
    result.textContent = `${name} ${params.name}: ${answer.ok ? "done" : "REFUSED"} (${answer.ack}) ${answer.result || ""}`;
  } catch (error) {
    result.className = "refused";
    result.textContent = `${name} ${params.name}: not sent: ${error}`;
  }
}

function alarmState(a) {
  let text = a.severity === 1 ? "stale" : a.acknowledged ? `acknowledged by ${a.acknowledgedBy}` : "ACTIVE";
  if (a.mutedSeverity > 1) text += `, muted to ${SEVERITY[a.mutedSeverity]} by ${a.mutedBy}`;
  return text;
}

function alarmActions(a) {
  if (!state.commands) return el("td", {});
  const severity = el("select", { "data-testid": "ack-severity", title: "acknowledge at" },
    ...[2, 3, 4].map((s) => el("option", { value: s, selected: s === a.maxSeverity ? "" : false }, SEVERITY[s])));
  const ack = el("button", { "data-testid": "acknowledge", on: { click: () =>
    command("acknowledge", { name: a.name, severity: Number(severity.value) }) } }, "Acknowledge");
  const mute = a.mutedSeverity > 1
    ? el("button", { "data-testid": "unmute", on: { click: () => command("unmute", { name: a.name }) } }, "Unmute")
    : el("button", { "data-testid": "mute", on: { click: () =>
      command("mute", { name: a.name, duration: 1800, severity: Math.max(2, a.maxSeverity) }) } }, "Mute 30 min");
  return el("td", {}, severity, " ", ack, " ", mute);
}

// One alarm changed: put it in its place (or take it out) as the server sorts them.
function updateAlarm(change) {
  state.alarms = state.alarms.filter((a) => a.name !== change.name);
  if (change.alarm) {
    state.alarms.push(change.alarm);
    state.alarms.sort((a, b) => b.severity - a.severity || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }
  drawAlarms();
}

function drawAlarms() {
  const rows = state.alarms.map((a) => el("tr", {
    class: `${a.severity > 1 ? `sev-${a.severity}` : "stale"}${a.mutedSeverity > 1 ? " muted" : ""}`,
    "data-alarm": a.name },
  el("td", {}, a.name), el("td", {}, SEVERITY[a.severity] || "?"), el("td", {}, SEVERITY[a.maxSeverity] || "?"),
  el("td", { "data-testid": "alarm-state" }, alarmState(a)), el("td", { class: "wrap" }, a.reason), alarmActions(a)));
  $("alarms").replaceChildren(...rows);
}

// ---- images, preview and QC -----------------------------------------------------------

function qcCell(row, metric, value, digits, judgedBy) {
  const level = severityOf(judgedBy || metric, judgedBy ? row.qc[judgedBy] : value, row.qc.instrument);
  return el("td", { class: level > 1 ? `cell-${level}` : "", "data-metric": metric }, fixed(value, digits));
}

function imageRow(row) {
  const qc = row.qc || {};
  const whole = row.sensors > 0 && row.archived === row.sensors;
  const verified = row.verified === row.archived && row.archived > 0;
  const header = row.archived === 0 ? "" : row.headerComplete ? "complete" : "INCOMPLETE";
  const tr = el("tr", { class: `clickable${state.selected === row.name ? " selected" : ""}`, "data-image": row.name,
    on: { click: () => select(row.name) } },
  el("td", {}, row.name), el("td", {}, row.type), el("td", {}, fixed(row.expTime, 1)),
  el("td", {}, row.filter || ""), el("td", {}, fixed(row.airmass, 2)),
  qcCell({ qc }, "psfFwhm", qc.psfFwhm, 2), qcCell({ qc }, "psfE1", qc.psfE1, 3, "ellipticity"),
  qcCell({ qc }, "psfE2", qc.psfE2, 3, "ellipticity"), qcCell({ qc }, "skyMean", qc.skyMean, 0),
  qcCell({ qc }, "zeroPoint", qc.zeroPoint, 2), qcCell({ qc }, "nSources", qc.nSources, 0),
  el("td", { class: whole ? "ok" : row.failed ? "bad" : "", "data-testid": "archived" },
    row.sensors ? `${row.archived}/${row.sensors}` : row.phase),
  el("td", { class: verified ? "ok" : row.verifyProblems.length ? "bad" : "dim", "data-testid": "verified",
    title: row.verifyProblems.join("\n") }, row.archived ? `${row.verified}/${row.archived}` : ""),
  el("td", { class: header === "complete" ? "ok" : "bad" }, header),
  oodsCell(row));
  return tr;
}

// In the OODS (the Butler repository): files registered of those archived; refused
// ones in red, the reason on hover; empty until the OODS has said anything of it.
function oodsCell(row) {
  const said = row.oods;
  if (!said) return el("td", { "data-testid": "oods" }, "");
  const whole = said.statusCode === 0 && said.sensors >= row.archived;
  return el("td", { class: said.statusCode !== 0 ? "bad" : whole ? "ok" : "", "data-testid": "oods",
    title: said.description }, said.statusCode !== 0 ? `refused (${said.sensors}/${row.archived})`
    : `${said.sensors}/${row.archived}`);
}

function upsertImage(row) {
  const known = state.images.has(row.name);
  state.images.set(row.name, row);
  const fresh = imageRow(row);
  const old = known ? document.querySelector(`#images tr[data-image="${CSS.escape(row.name)}"]`) : null;
  if (old) old.replaceWith(fresh);
  else $("images").prepend(fresh);
  if (state.selected === row.name) showPreview(row);
}

function select(name) {
  state.selected = name;
  document.querySelectorAll("#images tr.selected").forEach((tr) => tr.classList.remove("selected"));
  const tr = document.querySelector(`#images tr[data-image="${CSS.escape(name)}"]`);
  if (tr) tr.classList.add("selected");
  showPreview(state.images.get(name));
}

function showPreview(row) {
  $("preview-name").textContent = row.name;
  const img = $("preview");
  if (!row.preview) {
    $("preview-note").textContent = row.archived ? "the preview is being drawn…" : "not archived yet";
    img.hidden = true;
    return;
  }
  $("preview-note").textContent = "overscan removed, binned 8×8, asinh stretch";
  const src = `/preview/${encodeURIComponent(row.name)}.png`;
  if (img.getAttribute("src") !== src) img.setAttribute("src", src);
  img.alt = `preview of ${row.name}`;
  img.hidden = false;
}

function drawPlot(metric) {
  const svg = $(`plot-${metric}`);
  const points = [...state.images.values()].filter((r) => r.qc && typeof r.qc[metric] === "number");
  const levels = state.thresholds.filter((r) => r.metric === metric)
    .flatMap((r) => [[2, r.warning], [3, r.serious], [4, r.critical]].filter(([, v]) => typeof v === "number"));
  const ns = "http://www.w3.org/2000/svg";
  const make = (tag, attrs, text) => {
    const node = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  };
  const children = [make("line", { class: "axis", x1: 30, y1: 125, x2: 295, y2: 125 })];
  if (points.length) {
    const values = points.map((r) => r.qc[metric]).concat(levels.map(([, v]) => v));
    let [low, high] = [Math.min(...values), Math.max(...values)];
    if (high - low < 1e-9) { low -= 1; high += 1; }
    const times = points.map((r) => r.tai);
    const [t0, t1] = [Math.min(...times), Math.max(...times) + 1e-9];
    const x = (t) => 30 + 260 * (t - t0) / Math.max(t1 - t0, 1);
    const y = (v) => 120 - 110 * (v - low) / (high - low);
    children.push(make("text", { x: 0, y: 14 }, high.toFixed(2)), make("text", { x: 0, y: 122 }, low.toFixed(2)));
    for (const [level, value] of levels) {
      children.push(make("line", { class: `level-${level}`, x1: 30, x2: 295, y1: y(value), y2: y(value), "data-level": level }));
    }
    for (const r of points) {
      const dot = make("circle", { class: "point", cx: x(r.tai), cy: y(r.qc[metric]), r: 2.5 });
      dot.append(make("title", {}, `${r.name}: ${r.qc[metric]}`));
      children.push(dot);
    }
  }
  svg.replaceChildren(...children);
}

// ---- jobs and log ---------------------------------------------------------------------

function drawJobs() {
  $("jobs").replaceChildren(...state.jobs.slice().reverse().map((j) => el("tr", { "data-job": j.jobId },
    el("td", {}, j.jobId), el("td", {}, j.pipeline), el("td", {}, j.status),
    el("td", {}, el("progress", { max: j.tasksTotal || 1, value: j.tasksDone || 0 }), ` ${j.tasksDone ?? "?"}/${j.tasksTotal ?? "?"}`),
    el("td", { class: "wrap" }, j.message))));
}

function logShown(entry) {
  const csc = $("log-csc").value;
  return (!csc || entry.csc === csc) && entry.level >= Number($("log-level").value);
}

function logItem(entry) {
  return el("li", { class: `lvl-${entry.level}`, "data-csc": entry.csc },
    `${entry.csc} ${LEVEL[entry.level] || entry.level} ${entry.logger}: ${entry.message}`);
}

function drawLogs() {
  $("logs").replaceChildren(...state.logs.filter(logShown).slice(-500).map(logItem));
}

function addLog(entry) {
  state.logs.push(entry);
  if (state.logs.length > MAX_LOGS) state.logs.splice(0, state.logs.length - MAX_LOGS);
  if (logShown(entry)) {
    const list = $("logs");
    list.append(logItem(entry));
    while (list.childElementCount > 500) list.firstElementChild.remove();
  }
}

// ---- the stream -----------------------------------------------------------------------

function snapshot(s) {
  Object.assign(state, { cscs: s.cscs, camera: s.camera, alarms: s.alarms, jobs: s.jobs,
    thresholds: s.thresholds, commands: s.commands, logs: s.logs, taiOffset: s.tai - Date.now() / 1000 });
  state.images = new Map();
  $("images").replaceChildren();
  for (const row of s.images) upsertImage(row);
  drawCscs(); drawCamera(); drawAlarms(); drawJobs(); drawLogs(); PLOTS.forEach(drawPlot);
}

function connect() {
  const events = new EventSource("/events");
  const on = (name, fn) => events.addEventListener(name, (e) => fn(JSON.parse(e.data)));
  on("snapshot", (s) => { snapshot(s); $("connection").textContent = "live"; $("connection").className = "ok"; });
  on("cscs", (rows) => { state.cscs = rows; drawCscs(); });
  on("camera", (camera) => { state.camera = camera; drawCamera(); });
  on("alarms", (alarms) => { state.alarms = alarms; drawAlarms(); });
  on("alarm", updateAlarm);
  on("jobs", (jobs) => { state.jobs = jobs; drawJobs(); });
  on("image", (row) => { upsertImage(row); PLOTS.forEach(drawPlot); });
  on("log", addLog);
  on("thresholds", (rules) => { state.thresholds = rules; PLOTS.forEach(drawPlot); });
  on("tick", (t) => { state.taiOffset = t.tai - Date.now() / 1000; });
  events.onerror = () => { $("connection").textContent = "reconnecting…"; $("connection").className = "bad"; };
}

document.addEventListener("DOMContentLoaded", () => {
  $("log-csc").addEventListener("change", drawLogs);
  $("log-level").addEventListener("change", drawLogs);
  setInterval(() => {
    $("clock").textContent = `${new Date().toISOString().slice(0, 19).replace("T", " ")} UTC`;
    drawExposure();
  }, 250);
  connect();
});
