// The poller's status page. Read-only: it GETs /pool and /events every second and builds
// the DOM with textContent only, so nothing a node sent is ever parsed as HTML.
"use strict";

const REFRESH_MS = 1000;
// At most this many rows are drawn each refresh: thousands of members stay a table a
// browser redraws every second without freezing; search and the state filter narrow it.
const ROW_LIMIT = 500;
const SVG = "http://www.w3.org/2000/svg";
let sortKey = "address";
let sortUp = true;
let lastPool = null;

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function ago(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  const s = Math.max(0, Date.now() / 1000 - seconds);
  if (s < 60) return `${s.toFixed(0)} s ago`;
  if (s < 3600) return `${(s / 60).toFixed(0)} min ago`;
  return `${(s / 3600).toFixed(1)} h ago`;
}

function state(member) {
  // An operator's hand on HAProxy wins: poller leaves such a server alone.
  if (member.set_aside) return member.set_aside === "maint" ? "maintenance" : "drained";
  // Its replica is being stopped, as DNS says (discovery.dns_names): out of HAProxy.
  if (member.leaving && member.serving) return "leaving";
  return member.draining ? "draining" : member.state;
}

function addressKey(member) {
  const parts = member.address.split(".").map(Number);
  return parts.length === 4 ? parts.reduce((a, b) => a * 256 + b, 0) * 65536 + member.port : member.address;
}

function sparkline(values) {
  const width = 90, height = 18;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.setAttribute("class", "spark");
  const ok = values.filter((v) => v !== null);
  const max = Math.max(1, ...ok);
  const step = values.length > 1 ? width / (values.length - 1) : width;
  const points = [];
  values.forEach((v, i) => {
    const x = (i * step).toFixed(1);
    if (v === null) {
      const dot = document.createElementNS(SVG, "circle");
      dot.setAttribute("cx", x);
      dot.setAttribute("cy", height - 2);
      dot.setAttribute("r", 2);
      dot.setAttribute("class", "fail");
      svg.appendChild(dot);
    } else {
      points.push(`${x},${(height - 1 - (v / max) * (height - 3)).toFixed(1)}`);
    }
  });
  const line = document.createElementNS(SVG, "polyline");
  line.setAttribute("points", points.join(" "));
  svg.appendChild(line);
  const title = document.createElementNS(SVG, "title");
  title.textContent = ok.length ? `max ${max.toFixed(1)} ms over the last ${values.length} probes` : "no answer";
  svg.appendChild(title);
  // The scale, in plain sight: the top of the line is this latency.
  const wrap = el("span", null, "spark-wrap");
  wrap.appendChild(svg);
  wrap.appendChild(el("span", ok.length ? `max ${max.toFixed(1)} ms` : "no answer", "spark-max"));
  return wrap;
}

function renderSummary(pool) {
  const counts = {};
  for (const m of pool.members) counts[state(m)] = (counts[state(m)] || 0) + 1;
  const serving = pool.members.filter((m) => m.serving).length;
  document.getElementById("counts").textContent =
    `${serving} serving · ` + Object.entries(counts).map(([k, v]) => `${v} ${k}`).join(" · ");

  const d = pool.discovery;
  const last = d.last_sweep;
  const lines = [`${d.subnets.join(", ")} × port ${d.ports.join(", ")} (${d.targets.toLocaleString()} targets, ${d.method})`];
  if (last) {
    const known = last.known ? `; ${last.known} members skipped (checked on their own)` : "";
    lines.push(`last sweep ${ago(last.at)}, ${last.duration_seconds.toFixed(2)} s, ` +
      `${last.answered} new answered, ${last.healthy} healthy${known}` +
      (last.failure ? ` — FAILED: ${last.failure}` : ""));
  } else {
    lines.push("no sweep yet");
  }
  if (d.next_sweep_at) lines.push(`next full sweep in ${Math.max(0, d.next_sweep_at - Date.now() / 1000).toFixed(1)} s`);
  const hot = d.last_hot_sweep;
  if (hot) {
    lines.push(`hot sweeps every ${d.interval_seconds} s: last ${ago(hot.at)}, ` +
      `${hot.targets} likely addresses, ${hot.healthy} healthy`);
  }
  const disc = document.getElementById("discovery");
  disc.replaceChildren(...lines.map((t) => el("span", t, "line")));

  const guard = document.getElementById("guard");
  guard.replaceChildren(pool.guard.holding
    ? el("span", `holding removals: ${pool.guard.reason}`, "warn")
    : el("span", "not holding anything", "okay"));

  const h = pool.haproxy;
  const change = h.last_change;
  const hap = document.getElementById("haproxy");
  hap.replaceChildren(
    el("span", `${h.live.length} servers live`, "line"),
    change ? el("span", `last change ${ago(change.at)}: ${change.method} ${change.result}` +
      (change.error ? ` — ${change.error}` : ""), change.result === "ok" ? "line" : "line warn") : el("span", "no change yet", "line"),
  );
  const link = document.getElementById("stats-link");
  if (h.stats_port) link.href = `${location.protocol}//${location.hostname}:${h.stats_port}/`;
}

function renderMembers(pool) {
  const filter = document.getElementById("filter").value;
  const search = document.getElementById("search").value.trim().toLowerCase();
  let rows = pool.members.filter((m) => !filter || state(m) === filter);
  if (search) {
    rows = rows.filter((m) => `${m.address}:${m.port}`.includes(search) ||
      (m.identity || "").toLowerCase().includes(search) || m.service === search);
  }
  // Several services: a service column, and sorting by it groups each service's members.
  const several = (pool.services || []).length > 1;
  document.getElementById("members").classList.toggle("services", several);
  const key = (m) => (sortKey === "address" ? addressKey(m) : sortKey === "state" ? state(m) :
    sortKey === "service" ? `${m.service} ${String(addressKey(m)).padStart(24, "0")}` : m[sortKey]);
  rows.sort((a, b) => {
    const x = key(a), y = key(b);
    const order = x === y ? 0 : (x === null || x === undefined) ? 1 : (y === null || y === undefined) ? -1 : x < y ? -1 : 1;
    return sortUp ? order : -order;
  });
  const body = document.querySelector("#members tbody");
  const fragment = document.createDocumentFragment();
  for (const m of rows.slice(0, ROW_LIMIT)) {
    const tr = el("tr");
    tr.dataset.member = `${m.address}:${m.port}`;
    tr.dataset.service = m.service;
    tr.appendChild(el("td", m.service, "service"));
    tr.appendChild(el("td", `${m.address}:${m.port}`, "mono"));
    tr.appendChild(el("td", state(m), `state ${state(m)}`));
    tr.appendChild(el("td", m.identity ?? "-", "identity"));
    tr.appendChild(el("td", ago(m.since)));
    tr.appendChild(el("td", m.last_result + (m.last_status ? ` (${m.last_status})` : "")));
    tr.appendChild(el("td", m.latency_ms === null ? "-" : `${m.latency_ms.toFixed(1)} ms`, "num"));
    const spark = el("td");
    spark.appendChild(sparkline(m.latency_history || []));
    tr.appendChild(spark);
    fragment.appendChild(tr);
  }
  body.replaceChildren(fragment);
  document.getElementById("shown").textContent = rows.length > ROW_LIMIT
    ? `the first ${ROW_LIMIT} of ${rows.length} matching shown (of ${pool.members.length}): search or filter to narrow`
    : `${rows.length} of ${pool.members.length} shown`;
  markSort();
}

function markSort() {
  // Which column orders the table, and which way: an arrow and aria-sort.
  for (const th of document.querySelectorAll("th[data-sort]")) {
    const active = th.dataset.sort === sortKey;
    th.setAttribute("aria-sort", active ? (sortUp ? "ascending" : "descending") : "none");
    th.dataset.arrow = active ? (sortUp ? " ▲" : " ▼") : "";
  }
}

function renderLog(id, items, line) {
  const list = document.getElementById(id);
  list.replaceChildren(...items.slice(0, 50).map((item) => {
    const li = el("li");
    li.appendChild(el("time", new Date(item.at * 1000).toLocaleTimeString()));
    li.appendChild(el("span", line(item)));
    return li;
  }));
}

function describeEvent(e) {
  const who = e.identity ? ` (${e.identity})` : "";
  const was = e.previous_identity ? ` was ${e.previous_identity}` : "";
  const service = e.service && e.service !== "default" ? `${e.service}: ` : "";
  return `${service}${e.kind} ${e.member}${who}${was}${e.reason ? ` — ${e.reason}` : ""}`;
}

function describeChange(c) {
  const moves = [...(c.added || []).map((n) => `+${n}`), ...(c.removed || []).map((n) => `-${n}`)].join(" ");
  const took = c.duration_seconds !== undefined ? ` in ${(c.duration_seconds * 1000).toFixed(0)} ms` : "";
  return `${c.method} ${c.result}${took} ${moves}${c.error ? ` — ${c.error}` : ""}`;
}

async function refresh() {
  try {
    const [pool, events] = await Promise.all([
      fetch("/pool", { cache: "no-store" }).then((r) => r.json()),
      fetch("/events", { cache: "no-store" }).then((r) => r.json()),
    ]);
    lastPool = pool;
    renderSummary(pool);
    renderMembers(pool);
    renderLog("events", events.events, describeEvent);
    renderLog("changes", pool.haproxy.changes || [], describeChange);
    document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
    document.body.classList.remove("stale");
  } catch (error) {
    document.getElementById("updated").textContent = `poller not answering (${error})`;
    document.body.classList.add("stale");
  } finally {
    setTimeout(refresh, REFRESH_MS);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  for (const th of document.querySelectorAll("th[data-sort]")) {
    th.addEventListener("click", () => {
      sortUp = sortKey === th.dataset.sort ? !sortUp : true;
      sortKey = th.dataset.sort;
      if (lastPool) renderMembers(lastPool);
    });
  }
  for (const id of ["filter", "search"]) {
    document.getElementById(id).addEventListener("input", () => lastPool && renderMembers(lastPool));
  }
  refresh();
});
