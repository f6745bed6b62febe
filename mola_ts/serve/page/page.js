// The operator page of mola-ts serve: a live control chart drawn on a canvas (no library).
// History comes from /history, live rows and alarm changes from /events (server-sent events).
"use strict";

const S = { status: null, points: [], live: true, hours: 24, end: null, first: null, last: null,
            alarm: null, contribFor: null, dirty: false, blocks: [] };
const $ = (id) => document.getElementById(id);
const COLORS = { line: "#5ab0ff", limit: "#ff5a5f", alarm: "#d7263d", axis: "#93a1b0",
                 grid: "#222b35", block: "#c3a6ff" };

async function api(path, options) {
  const response = await fetch(path, Object.assign({ credentials: "same-origin" }, options));
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function fmtTime(iso) {
  return iso ? iso.replace("T", " ").replace(/(\.\d+)?\+00:00$/, " UTC") : "-";
}

function toPoint(row) {
  return { t: Date.parse(row.time), time: row.time, score: row.score, limit: row.limit,
           alarm: row.alarm, blocks: row.blocks || {}, seq: row.seq };
}

async function loadStatus() {
  const st = await api("status");
  S.status = st;
  S.blocks = st.blocks || [];
  $("title").textContent = `mola-ts monitor: ${st.model.monitor_class} (${st.model.features.length} variables)`;
  $("samples").textContent = `${st.samples} samples`;
  $("last-time").textContent = `last ${fmtTime(st.last_time)}`;
  S.first = st.first_time ? Date.parse(st.first_time) : null;
  S.last = st.last_time ? Date.parse(st.last_time) : null;
  $("blocks-panel").hidden = S.blocks.length === 0;
  setBanner(st.alarm_active, st.last_alarm);
}

function setBanner(active, alarm) {
  S.alarm = alarm;
  const banner = $("banner");
  const acked = alarm && alarm.acknowledged_at;
  banner.className = "banner " + (active ? "alarm" : "normal") + (active && acked ? " acknowledged" : "");
  $("banner-text").textContent = active ? "ALARM" : "NORMAL";
  let detail = "";
  if (active) detail = `since ${fmtTime(alarm.raised_time)}`;
  else if (alarm) detail = `last alarm ${fmtTime(alarm.raised_time)} - ${fmtTime(alarm.cleared_time)}`;
  if (acked) detail += `, acknowledged by ${alarm.acknowledged_by} at ${fmtTime(alarm.acknowledged_at)}`;
  $("banner-detail").textContent = detail;
  $("ack").hidden = !(alarm && !acked);
  if (alarm && alarm.id !== S.contribFor) loadContributions(alarm.id);
}

async function loadHistory() {
  if (S.last === null) { S.points = []; draw(); return; }
  const end = S.live ? S.last : (S.end || S.last);
  const start = end - S.hours * 3600e3;
  const q = new URLSearchParams({ start: new Date(start).toISOString(),
                                  end: new Date(end).toISOString(), max_points: "3000" });
  const body = await api(`history?${q}`);
  S.points = body.rows.map(toPoint);
  S.dirty = true;
}

async function loadAlarms() {
  const rows = await api("alarms?limit=8");
  const tbody = $("alarms").querySelector("tbody");
  tbody.innerHTML = "";
  for (const a of rows) {
    const tr = document.createElement("tr");
    for (const text of [fmtTime(a.raised_time), a.cleared_time ? fmtTime(a.cleared_time) : "active",
                        a.acknowledged_by ? `${a.acknowledged_by}` : "-"]) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.appendChild(td);
    }
    tbody.appendChild(tr);
  }
}

async function loadContributions(id) {
  S.contribFor = id;
  try {
    const body = await api(`alarms/${id}/contributions?top=8`);
    $("contrib-head").textContent = `at ${fmtTime(body.time)} (from the ${body.rows_used} samples before it)`;
    const list = $("contrib");
    list.innerHTML = "";
    for (const v of body.variables) {
      const li = document.createElement("li");
      li.textContent = `${v.variable}  ${(100 * v.share).toFixed(1)} %`;
      const bar = document.createElement("span");
      bar.className = "bar";
      bar.style.width = `${Math.round(160 * v.share)}px`;
      li.appendChild(bar);
      list.appendChild(li);
    }
  } catch (err) {
    $("contrib-head").textContent = `no contributions: ${err.message}`;
  }
}

// ------------------------------------------------------------------------- drawing
function drawSeries(canvas, points, value, limitOf, color) {
  const ratio = window.devicePixelRatio || 1;
  const cssW = canvas.clientWidth || 1200, cssH = canvas.clientHeight || 380;
  canvas.width = Math.round(cssW * ratio);
  canvas.height = Math.round(cssH * ratio);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, cssW, cssH);
  const left = 70, right = 16, top = 14, bottom = 34;
  const w = cssW - left - right, h = cssH - top - bottom;
  const end = points.length ? points[points.length - 1].t : Date.now();
  const x1 = S.live ? Math.max(end, S.last || end) : (S.end || end);
  const x0 = x1 - S.hours * 3600e3;
  const vals = points.map(value).filter((v) => v !== null && v > 0);
  const limits = points.map(limitOf).filter((v) => v !== null && v > 0);
  const limit = limits.length ? limits[limits.length - 1] : null;
  const ref = limit || (vals.length ? Math.max(...vals) : 1);
  const lo = Math.log10(Math.min(ref / 30, ...(vals.length ? [Math.min(...vals)] : [ref / 30])));
  const hi = Math.log10(Math.max(ref * 3, ...(vals.length ? [Math.max(...vals) * 1.2] : [ref * 3])));
  const X = (t) => left + ((t - x0) / (x1 - x0)) * w;
  const Y = (v) => top + h - ((Math.log10(Math.max(v, Math.pow(10, lo))) - lo) / (hi - lo)) * h;
  ctx.font = "13px system-ui, sans-serif";
  ctx.fillStyle = COLORS.axis;
  ctx.strokeStyle = COLORS.grid;
  ctx.lineWidth = 1;
  for (let e = Math.ceil(lo); e <= Math.floor(hi); e++) {  // decades
    const y = Y(Math.pow(10, e));
    ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(left + w, y); ctx.stroke();
    ctx.fillText(`1e${e}`, 8, y + 4);
  }
  for (let k = 0; k <= 4; k++) {  // time ticks
    const t = x0 + (k / 4) * (x1 - x0);
    const label = new Date(t).toISOString().slice(5, 16).replace("T", " ");
    ctx.fillText(label, Math.min(left + (k / 4) * w - 40, cssW - 100), cssH - 10);
  }
  // alarm rows: a red band under the line
  ctx.fillStyle = "rgba(215, 38, 61, 0.28)";
  for (let i = 0; i < points.length; i++) {
    if (!points[i].alarm) continue;
    const xa = X(points[i].t), xb = i + 1 < points.length ? X(points[i + 1].t) : xa + 2;
    ctx.fillRect(xa, top, Math.max(1, xb - xa), h);
  }
  ctx.strokeStyle = color;
  ctx.lineWidth = 2;
  ctx.beginPath();
  let started = false;
  for (const p of points) {
    const v = value(p);
    if (v === null) { started = false; continue; }
    const x = X(p.t), y = Y(v);
    if (started) ctx.lineTo(x, y); else { ctx.moveTo(x, y); started = true; }
  }
  ctx.stroke();
  let limitY = "";
  if (limit !== null) {
    limitY = Y(limit);
    ctx.strokeStyle = COLORS.limit;
    ctx.lineWidth = 2;
    ctx.setLineDash([10, 6]);
    ctx.beginPath(); ctx.moveTo(left, limitY); ctx.lineTo(left + w, limitY); ctx.stroke();
    ctx.setLineDash([]);
    ctx.fillStyle = COLORS.limit;
    ctx.fillText(`limit ${limit.toPrecision(3)}`, left + w - 90, limitY - 6);
  }
  canvas.dataset.points = String(points.length);
  canvas.dataset.limitY = limitY === "" ? "" : String(limitY * ratio);
  canvas.dataset.limit = limit === null ? "" : String(limit);
}

function draw() {
  S.dirty = false;
  drawSeries($("chart"), S.points, (p) => p.score, (p) => p.limit, COLORS.line);
  const holder = $("blocks");
  for (const name of S.blocks) {
    let canvas = document.getElementById(`block-${name}`);
    if (!canvas) {
      const title = document.createElement("div");
      title.className = "muted";
      title.textContent = `block ${name}`;
      canvas = document.createElement("canvas");
      canvas.id = `block-${name}`;
      canvas.width = 1200; canvas.height = 150;
      holder.appendChild(title); holder.appendChild(canvas);
    }
    drawSeries(canvas, S.points, (p) => (p.blocks[name] || [null])[0],
               (p) => (p.blocks[name] || [null, null])[1], COLORS.block);
  }
  const pts = S.points;
  $("range").textContent = pts.length
    ? `${fmtTime(pts[0].time)} to ${fmtTime(pts[pts.length - 1].time)}: ${pts.length} points${S.live ? " (live)" : ""}`
    : "no samples in this window";
}

// ------------------------------------------------------------------------- live events
function connect() {
  const source = new EventSource("events");
  source.onopen = () => { $("connection").textContent = "live"; $("connection").className = "pill up";
                          refresh(); };
  source.onerror = () => { $("connection").textContent = "reconnecting"; $("connection").className = "pill down"; };
  source.addEventListener("row", (e) => {
    const row = JSON.parse(e.data);
    S.last = Date.parse(row.time);
    if (S.first === null) S.first = S.last;
    $("samples").textContent = `${row.seq + 1} samples`;
    $("last-time").textContent = `last ${fmtTime(row.time)}`;
    if (!S.live) return;
    S.points.push(toPoint(row));
    const cut = S.last - S.hours * 3600e3;
    while (S.points.length && S.points[0].t < cut) S.points.shift();
    S.dirty = true;
  });
  source.addEventListener("alarm", () => { loadStatus().then(loadAlarms); });
  source.addEventListener("ack", () => { loadStatus().then(loadAlarms); });
}

async function refresh() {
  try {
    await loadStatus();
    await loadHistory();
    await loadAlarms();
    draw();
  } catch (err) {
    $("connection").textContent = `error: ${err.message}`;
    $("connection").className = "pill down";
  }
}

function scrollEnd() {
  if (S.first === null || S.last === null) return null;
  const span = Math.max(0, S.last - S.first);
  return S.first + (Number($("scroll").value) / 1000) * span;
}

$("window").addEventListener("change", () => { S.hours = Number($("window").value); refresh(); });
$("scroll").addEventListener("change", () => {
  S.live = Number($("scroll").value) >= 1000;
  S.end = S.live ? null : scrollEnd();
  loadHistory().then(draw);
});
$("live").addEventListener("click", () => { S.live = true; S.end = null; $("scroll").value = 1000; refresh(); });
$("ack").addEventListener("click", async () => {
  if (!S.alarm) return;
  await api(`alarms/${S.alarm.id}/acknowledge?by=operator`, { method: "POST" });
  await loadStatus();
  await loadAlarms();
});
window.addEventListener("resize", () => { S.dirty = true; });
setInterval(() => { if (S.dirty) draw(); }, 250);
refresh().then(connect);
