// CaseBridge secretariat monitor: polls /api/figures every 2 s and draws the page.
// Only DOM APIs with textContent: nothing from the API is ever parsed as HTML.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const PLACES = { CN: [400, 60], MM: [120, 170], LA: [320, 180], VN: [500, 260], TH: [200, 300], KH: [370, 380] };
const DASH = "\u2013";

function el(name, attrs, text) {
  const node = name.startsWith("svg:") ? document.createElementNS(SVG, name.slice(4)) : document.createElement(name);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = String(text);
  return node;
}

function cell(value, cls) {
  return el("td", cls ? { class: cls } : {}, value === null || value === undefined ? "–" : value);
}

function fillTable(id, rows) {
  const body = document.querySelector(`#${id} tbody`);
  body.replaceChildren(...rows.map((cells) => {
    const tr = el("tr");
    tr.append(...cells);
    return tr;
  }));
}

function seconds(ms) {
  return ms === null || ms === undefined ? null : `${(ms / 1000).toFixed(2)} s`;
}

function duration(s) {
  if (s === null || s === undefined) return null;
  if (s < 120) return `${s.toFixed(0)} s`;
  if (s < 7200) return `${(s / 60).toFixed(0)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

function drawFlows(figures) {
  const svg = document.getElementById("flows");
  const max = Math.max(1, ...figures.corridors.map((c) => c.events));
  const edges = [];
  const labels = [];
  const domestic = {};
  for (const c of figures.corridors) {
    if (c.domestic) { domestic[c.a] = c.events; continue; }
    const [from, to] = [PLACES[c.a], PLACES[c.b]];
    if (!from || !to) continue;
    edges.push(el("svg:line", { x1: from[0], y1: from[1], x2: to[0], y2: to[1],
      "stroke-width": 2 + 14 * c.events / max, "data-corridor": c.corridor }));
    labels.push(el("svg:text", { class: "label", id: `corridor-${c.a}-${c.b}`, x: (from[0] + to[0]) / 2,
      y: (from[1] + to[1]) / 2 - 6, "data-events": c.events }, `${c.a}${DASH}${c.b}: ${c.events}`));
  }
  const nodes = Object.entries(PLACES).map(([code, [x, y]]) => {
    const g = el("svg:g", { class: "country", id: `country-${code}` });
    g.append(el("svg:circle", { cx: x, cy: y, r: 24 }), el("svg:text", { x, y }, code));
    if (domestic[code]) g.append(el("svg:text", { class: "domestic", x, y: y + 38 }, `domestic: ${domestic[code]}`));
    return g;
  });
  svg.replaceChildren(...edges, ...nodes, ...labels);
}

function draw(f) {
  drawFlows(f);
  const t = f.totals;
  document.getElementById("totals").textContent =
    `${t.events} events, ${t.deliveries} deliveries, ${t.receipts} receipts, ${t.quarantined} quarantined, ` +
    `${t.records} audit records` + (t.forwarded ? `, ${t.forwarded} forwarded across corridors` : "");
  fillTable("corridors", f.corridors.map((c) => [cell(`${c.a}${DASH}${c.b}`), cell(c.events, "num"),
    cell(c.deliveries, "num")]));
  const crossings = f.crossings || [];
  document.getElementById("mirrors").hidden = crossings.length === 0;
  fillTable("crossings", crossings.map((c) => [cell(`${c.from}\u2192${c.to}`), cell(c.forwarded, "num"),
    cell(c.delivered, "num"), cell(c.pending, "num"), cell(duration(c.oldest_pending_s), "num"),
    cell(c.refused, c.refused ? "num bad" : "num"), cell(seconds(c.mirror_lag.p50_ms), "num"),
    cell(seconds(c.mirror_lag.p99_ms), "num")]));
  const l = f.latency;
  fillTable("latency", [[cell(l.count, "num"), cell(seconds(l.p50_ms), "num"), cell(seconds(l.p90_ms), "num"),
    cell(seconds(l.p99_ms), "num"), cell(f.outstanding.count, "num"), cell(duration(f.outstanding.oldest_s), "num")]]);
  fillTable("overdue", f.overdue.map((o) => [cell(o.agreement_id), cell(o.case_ref), cell(o.parties.join(", ")),
    cell(o.breached_at), cell(duration(o.overdue_s), "num bad")]));
  fillTable("sla", f.sla.map((s) => [cell(s.agreement_id), cell(s.opened, "num"), cell(s.open, "num"),
    cell(s.met, "num"), cell(s.breached, "num"), cell(s.overdue, s.overdue ? "num bad" : "num")]));
  fillTable("quarantine", Object.entries(f.quarantine).map(([code, n]) => [cell(code), cell(n, "num")]));
  fillTable("chains", f.chains.map((c) => [cell(c.sender), cell(c.partition, "num"), cell(c.status, c.status === "ok" ? "" : "bad"),
    cell(c.links, "num"), cell(c.last_sequence, "num"),
    cell(c.findings.length ? `${c.findings[0].kind} at ${c.findings[0].sequence} ${c.findings[0].position}` : "")]));
}

async function refresh() {
  const status = document.getElementById("status");
  try {
    const response = await fetch("api/figures", { cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const figures = await response.json();
    draw(figures);
    status.textContent = `live · figures of ${figures.generated_at}`;
    status.classList.remove("stale");
  } catch (err) {
    status.textContent = `not updated: ${err.message}`;
    status.classList.add("stale");
  }
}

refresh();
setInterval(refresh, 2000);
